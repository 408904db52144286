//! What an agent can plant in its trees, and what the host's folder creation and chown walk do
//! with it: never follow, never block, never touch anything outside the tree.
//!
//! Ownership assertions need root (changing a file's owner does); the test machines run tests as
//! root. Elsewhere those assertions are skipped with a note on stderr, and everything else (no
//! hang, nothing followed, caps) is still checked.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::infra::paths::Home;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The owner a chown test hands trees to: uid/gid 1000 as root, else our own ids (so the walk
/// still runs but changes nothing, and ownership checks are skipped).
fn agent() -> Owner {
    if is_root() {
        Owner {
            uid: 1000,
            gid: 1000,
        }
    } else {
        eprintln!("not root: ownership assertions in untrusted::tests are skipped");
        // SAFETY: getuid/getgid cannot fail.
        unsafe {
            Owner {
                uid: libc::getuid(),
                gid: libc::getgid(),
            }
        }
    }
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {p:?}"
    );
}

/// Run `f` on a thread and fail (instead of hanging the suite) if it takes over 20 s.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung (blocked on a FIFO?)"))
}

/// uid, gid and content (files) of everything under `p`, links not followed.
fn fingerprint(p: &Path) -> Vec<(PathBuf, u32, u32, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let m = std::fs::symlink_metadata(p).unwrap();
    let content = m.is_file().then(|| std::fs::read(p).unwrap());
    out.push((p.to_path_buf(), m.uid(), m.gid(), content));
    if m.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            out.extend(fingerprint(&n));
        }
    }
    out
}

/// A home with its top folders, and an "outside" host folder with a file and a subfolder.
struct Fixture {
    _t: tempfile::TempDir,
    home: Home,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        let home = Home::new(t.path().join("home"));
        std::fs::create_dir(&home.root).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("host.txt"), b"host file").unwrap();
        std::fs::write(outside.join("sub/deep.txt"), b"deep").unwrap();
        Parents::open(&home).unwrap();
        Fixture {
            _t: t,
            home,
            outside,
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.home.root.join(rel)
    }
}

#[test]
fn memory_file_in_any_form_is_left_alone_and_never_written_through() {
    // (what is planted at groups/F/AGENTS.md, what must be there after)
    type Plant = fn(&Fixture, &Path);
    let cases: &[(&str, Plant)] = &[
        ("nothing", |_, _| {}),
        ("regular file", |_, p| {
            std::fs::write(p, "agent notes").unwrap()
        }),
        ("link to a missing host path", |f, p| {
            symlink(f.outside.join("created-by-host"), p).unwrap()
        }),
        ("link to an existing host file", |f, p| {
            symlink(f.outside.join("host.txt"), p).unwrap()
        }),
        ("FIFO", |_, p| mkfifo(p)),
        ("directory", |_, p| std::fs::create_dir(p).unwrap()),
    ];
    for (what, plant) in cases {
        let f = Fixture::new();
        std::fs::create_dir_all(f.p("groups/fam")).unwrap();
        let memory = f.p("groups/fam/AGENTS.md");
        plant(&f, &memory);
        let before = fingerprint(&f.outside);
        let home = f.home.clone();
        let done = within(what, move || create_group(&home, "fam", "SEED").unwrap());
        assert_eq!(done.memory_created, *what == "nothing", "{what}");
        let m = std::fs::symlink_metadata(&memory).unwrap();
        match *what {
            "nothing" => assert_eq!(std::fs::read_to_string(&memory).unwrap(), "SEED"),
            "regular file" => assert_eq!(std::fs::read_to_string(&memory).unwrap(), "agent notes"),
            "FIFO" => assert!(m.file_type().is_fifo_like(), "{what}"),
            "directory" => assert!(m.is_dir()),
            _ => assert!(
                m.file_type().is_symlink(),
                "{what}: link replaced or removed"
            ),
        }
        assert_eq!(fingerprint(&f.outside), before, "{what}: outside changed");
        assert!(!f.outside.join("created-by-host").exists(), "{what}");
        // Global memory follows the same rule.
        let g = f.p("groups/global/AGENTS.md");
        std::fs::create_dir_all(f.p("groups/global")).unwrap();
        let _ = std::fs::remove_file(&g);
        symlink(f.outside.join("created-by-host"), &g).unwrap();
        let home = f.home.clone();
        assert!(!within("global", move || create_global(&home, "G").unwrap()).memory_created);
        assert!(!f.outside.join("created-by-host").exists());
    }
}

/// `is_fifo` lives on a unix extension trait; a tiny shim keeps the table readable.
trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn planted_things_where_folders_belong_are_replaced_not_followed() {
    // (path relative to the home, what is planted there)
    type Plant = fn(&Fixture, &Path);
    let link_out: Plant = |f, p| symlink(&f.outside, p).unwrap();
    let dangling: Plant = |f, p| symlink(f.outside.join("nope"), p).unwrap();
    let fifo: Plant = |_, p| mkfifo(p);
    let file: Plant = |_, p| std::fs::write(p, "x").unwrap();
    let cases: &[(&str, Plant)] = &[
        ("ipc/fam/messages", link_out),
        ("ipc/fam/tasks", fifo),
        ("ipc/fam/replies", file),
        ("ipc/fam/messages", dangling),
        ("sessions/fam", link_out),
        ("groups/fam", fifo),
        ("ipc/fam", link_out),
    ];
    for (rel, plant) in cases {
        let f = Fixture::new();
        let path = f.p(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        plant(&f, &path);
        let before = fingerprint(&f.outside);
        let home = f.home.clone();
        let done = within(rel, move || create_group(&home, "fam", "SEED").unwrap());
        assert_eq!(done.displaced.len(), 1, "{rel}: {done:?}");
        for d in [
            "groups/fam",
            "sessions/fam",
            "ipc/fam/messages",
            "ipc/fam/tasks",
        ] {
            let m = std::fs::symlink_metadata(f.p(d)).unwrap();
            assert!(m.is_dir(), "{rel}: {d} is not a real folder");
        }
        assert_eq!(fingerprint(&f.outside), before, "{rel}: outside changed");
        assert!(!f.outside.join("messages").exists() && !f.outside.join("AGENTS.md").exists());
    }
}

#[test]
fn names_that_are_not_one_component_are_refused() {
    let f = Fixture::new();
    for bad in ["", ".", "..", "a/b", "../outside"] {
        assert!(create_group(&f.home, bad, "x").is_err(), "{bad}");
        assert!(
            chown_group(&f.home, bad, false, agent(), 10).is_err(),
            "{bad}"
        );
    }
}

/// A group tree with one of each thing an agent might plant, for the chown table.
fn planted_tree(f: &Fixture) -> PathBuf {
    let t = f.p("groups/fam");
    std::fs::create_dir_all(t.join("a/b")).unwrap();
    std::fs::write(t.join("AGENTS.md"), "m").unwrap();
    std::fs::write(t.join("a/b/f"), "f").unwrap();
    symlink(&f.outside, t.join("to-dir")).unwrap();
    symlink(f.outside.join("host.txt"), t.join("to-file")).unwrap();
    std::fs::hard_link(f.outside.join("host.txt"), t.join("hard")).unwrap();
    mkfifo(&t.join("fifo"));
    t
}

#[test]
fn chown_changes_the_tree_only_never_links_hard_links_or_fifos() {
    let f = Fixture::new();
    let t = planted_tree(&f);
    let before = fingerprint(&f.outside);
    let owner = agent();
    let home = f.home.clone();
    let r = within("chown", move || {
        chown_group(&home, "fam", false, owner, 1000).unwrap()
    });
    assert!(!r.truncated, "{r:?}");
    assert_eq!(r.hard_linked, u64::from(is_root()), "{r:?}");
    assert_eq!(r.special, u64::from(is_root()), "{r:?}");
    assert_eq!(fingerprint(&f.outside), before, "outside changed: {r:?}");
    if !is_root() {
        return;
    }
    // (entry, whether it must now belong to the agent)
    let table = [
        ("", true),
        ("AGENTS.md", true),
        ("a", true),
        ("a/b", true),
        ("a/b/f", true),
        ("to-dir", true),
        ("to-file", true),
        ("hard", false),
        ("fifo", false),
    ];
    for (rel, mine) in table {
        let m = std::fs::symlink_metadata(t.join(rel)).unwrap();
        assert_eq!(m.uid() == 1000 && m.gid() == 1000, mine, "{rel}: {r:?}");
    }
    // A second walk finds nothing to change.
    let again = chown_group(&f.home, "fam", false, owner, 1000).unwrap();
    assert_eq!(again.changed, 0, "{again:?}");
}

#[test]
fn chown_of_a_root_that_is_a_link_changes_nothing() {
    let f = Fixture::new();
    symlink(&f.outside, f.p("groups/fam")).unwrap();
    let before = fingerprint(&f.outside);
    let parents = Parents::open(&f.home).unwrap();
    let err = chown_tree(&parents.groups, "fam", agent(), 100).unwrap_err();
    assert!(err.to_string().contains("not followed"), "{err}");
    assert_eq!(fingerprint(&f.outside), before);
    // A missing root is simply nothing to do.
    let r = chown_tree(&parents.sessions, "nobody", agent(), 100).unwrap();
    assert_eq!(r, ChownReport::default());
}

#[test]
fn chown_stops_at_its_caps_and_says_so() {
    let f = Fixture::new();
    let t = f.p("groups/fam");
    std::fs::create_dir_all(&t).unwrap();
    for i in 0..50 {
        std::fs::write(t.join(i.to_string()), b"x").unwrap();
    }
    let parents = Parents::open(&f.home).unwrap();
    let r = chown_tree(&parents.groups, "fam", agent(), 10).unwrap();
    assert!(r.truncated && r.visited == 10, "{r:?}");
    let mut deep = f.p("groups/deep");
    for _ in 0..MAX_DEPTH + 3 {
        deep = deep.join("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"x").unwrap();
    let r = chown_tree(&parents.groups, "deep", agent(), 100_000).unwrap();
    assert!(r.truncated, "{r:?}");
    if is_root() {
        assert_eq!(std::fs::metadata(deep.join("bottom")).unwrap().uid(), 0);
    }
}

/// Atomically exchange two names (`renameat2(RENAME_EXCHANGE)`): the tightest swap an agent can do.
fn exchange(a: &Path, b: &Path) {
    let ca = std::ffi::CString::new(a.as_os_str().as_encoded_bytes()).unwrap();
    let cb = std::ffi::CString::new(b.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
}

#[test]
fn a_directory_swapped_for_a_link_during_the_walk_never_leads_outside() {
    let f = Fixture::new();
    for i in 0..40 {
        std::fs::write(f.outside.join(format!("o{i}")), b"o").unwrap();
    }
    // Eight pairs (real folder `xN`, link `lN` to the host folder), exchanged by one thread.
    let t = f.p("groups/fam");
    let mut pairs = Vec::new();
    for p in 0..8 {
        let x = t.join(format!("x{p}"));
        std::fs::create_dir_all(x.join("inner")).unwrap();
        for i in 0..10 {
            std::fs::write(x.join(format!("f{i}")), b"f").unwrap();
            std::fs::write(x.join(format!("inner/g{i}")), b"g").unwrap();
        }
        let l = t.join(format!("l{p}"));
        symlink(&f.outside, &l).unwrap();
        pairs.push((x, l));
    }
    std::fs::set_permissions(&f.outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = fingerprint(&f.outside);
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (x, l) in &pairs {
                    exchange(x, l);
                    n += 1;
                }
            }
            n
        })
    };
    let parents = Parents::open(&f.home).unwrap();
    let base = agent();
    for i in 0..200 {
        // Alternate owners so every walk has work to do on every entry.
        let owner = if is_root() {
            Owner {
                uid: base.uid + (i % 2),
                gid: base.gid + (i % 2),
            }
        } else {
            base
        };
        chown_tree(&parents.groups, "fam", owner, 100_000)
            .unwrap_or_else(|e| panic!("walk {i} failed: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 200, "the swapper barely ran ({swaps} swaps)");
    assert_eq!(
        fingerprint(&f.outside),
        before,
        "the host folder changed owner or content after {swaps} swaps"
    );
}

#[test]
fn half_written_requests_of_a_dead_writer_are_cleared_without_following() {
    let f = Fixture::new();
    create_group(&f.home, "g", "m").unwrap();
    let outside = f.outside.clone();
    std::fs::write(outside.join("keep"), "k").unwrap();
    let msgs = f.p("ipc/g/messages");
    std::fs::write(msgs.join(".tmp-1"), "{").unwrap();
    std::fs::write(msgs.join("done.json"), "{}").unwrap();
    symlink(&outside, msgs.join(".tmp-link")).unwrap();
    std::fs::create_dir_all(f.p("ipc/g/tasks/.tmp-dir/x")).unwrap();
    mkfifo(&f.p("ipc/g/tasks/.fifo"));
    let n = within("clearing", {
        let home = f.home.clone();
        move || clear_abandoned_requests(&home, "g", 1000).unwrap()
    });
    assert_eq!(n, 4);
    assert!(
        msgs.join("done.json").exists(),
        "finished requests stay for ipc-apply"
    );
    assert!(outside.join("keep").exists());
    assert_eq!(std::fs::read_dir(f.p("ipc/g/tasks")).unwrap().count(), 0);
    assert_eq!(clear_abandoned_requests(&f.home, "nope", 10).unwrap(), 0);
}
