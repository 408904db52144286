//! `claw prune` and tick's hourly housekeeping: audit retention and `ipc/errors/` by age and size,
//! with ages faked through `at` values and file times.

#[path = "support/ipc.rs"]
mod ipc;

use assert_cmd::Command;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(86_400);

fn claw(e: &ipc::Env) -> Command {
    let mut c = Command::cargo_bin("claw").unwrap();
    c.arg("--home").arg(&e.home.root).env_remove("CLAW_LOG");
    c.timeout(Duration::from_secs(120));
    c
}

fn json(e: &ipc::Env, args: &[&str]) -> serde_json::Value {
    let out = claw(e).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Set a path's modification time without following it (works for links too).
fn set_mtime(p: &Path, ago: Duration) {
    let t = SystemTime::now() - ago;
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "{}", p.display());
}

/// A rejected file as ipc-apply leaves it: `NAME.json` and `NAME.reason.txt`, put there `ago`.
/// The request file's own time is what the agent chose (here: brand new).
fn rejected(errors: &Path, name: &str, bytes: usize, ago: Duration) {
    std::fs::write(errors.join(format!("{name}.json")), vec![b'x'; bytes]).unwrap();
    let reason = errors.join(format!("{name}.reason.txt"));
    std::fs::write(&reason, "ipc/fam/messages/x\nreason: test\n").unwrap();
    set_mtime(&reason, ago);
}

fn config(e: &ipc::Env, from: &str, to: &str) {
    let text = std::fs::read_to_string(e.home.config()).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(e.home.config(), text.replace(from, to)).unwrap();
}

fn audit_rows(e: &ipc::Env) -> i64 {
    e.store
        .conn
        .query_row(
            "SELECT count(*) FROM audit WHERE kind = 'test.old' OR kind = 'test.new'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn prune_removes_old_audit_rows_and_old_rejected_files_with_their_reasons() {
    let e = ipc::env();
    let now = claw::infra::time::now_ms();
    for (kind, days) in [
        ("test.old", 100),
        ("test.old", 91),
        ("test.new", 89),
        ("test.new", 1),
    ] {
        e.store
            .conn
            .execute(
                "INSERT INTO audit (at, folder, run_id, kind, detail) VALUES (?1, 'fam', NULL, ?2, '{}')",
                rusqlite::params![now - days * 86_400_000, kind],
            )
            .unwrap();
    }
    let errors = e.home.ipc_errors();
    std::fs::create_dir_all(&errors).unwrap();
    rejected(&errors, "fam-old-1", 1000, 20 * DAY);
    rejected(&errors, "fam-new-1", 1000, DAY);
    // A whole directory moved aside (with a link out of the tree inside), old.
    let keep = e.outside.join("keep.txt");
    std::fs::write(&keep, "host file").unwrap();
    let moved = errors.join("fam-messages-1.json");
    std::fs::create_dir_all(moved.join("deep/er")).unwrap();
    std::fs::write(moved.join("deep/er/f.json"), "x").unwrap();
    symlink(&keep, moved.join("deep/link")).unwrap();
    symlink(&e.outside, moved.join("dirlink")).unwrap();
    let reason = errors.join("fam-messages-1.reason.txt");
    std::fs::write(&reason, "moved aside").unwrap();
    set_mtime(&reason, 15 * DAY);
    // A link moved aside without a reason file: dated by its own time.
    symlink(&keep, errors.join("fam-link-1.json")).unwrap();
    set_mtime(&errors.join("fam-link-1.json"), 30 * DAY);

    let dry = json(&e, &["prune", "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["audit"]["deleted"], 2);
    assert_eq!(dry["ipc_errors"]["removed_entries"], 3, "{dry}");
    assert_eq!(audit_rows(&e), 4);
    assert!(errors.join("fam-old-1.json").exists() && moved.exists());

    let out = claw(&e).arg("prune").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("audit: deleted 2 row(s)"), "{text}");
    assert!(
        text.contains("removed fam-old-1.json + fam-old-1.reason.txt")
            || text.contains("removed fam-old-1.reason.txt + fam-old-1.json"),
        "{text}"
    );
    assert!(
        text.contains("older than retention.ipc_errors_days"),
        "{text}"
    );
    assert_eq!(audit_rows(&e), 2);
    let mut left: Vec<String> = std::fs::read_dir(&errors)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["fam-new-1.json", "fam-new-1.reason.txt"]);
    // Links were removed as links: nothing outside the tree was touched.
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "host file");
    assert!(e.outside.is_dir());
}

#[test]
fn ipc_errors_is_kept_under_its_size_oldest_first_and_zero_turns_rules_off() {
    let e = ipc::env();
    config(&e, "ipc_errors_mb = 64", "ipc_errors_mb = 1");
    let errors = e.home.ipc_errors();
    std::fs::create_dir_all(&errors).unwrap();
    for (i, hours) in [(1, 5), (2, 4), (3, 3), (4, 2), (5, 1)] {
        rejected(
            &errors,
            &format!("fam-r-{i}"),
            400 * 1024,
            Duration::from_secs(hours * 3600),
        );
    }
    let r = json(&e, &["prune", "--json"]);
    assert_eq!(r["ipc_errors"]["removed_entries"], 3, "{r}");
    let why: Vec<&str> = r["ipc_errors"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["why"].as_str().unwrap())
        .collect();
    assert_eq!(why, ["size", "size", "size"]);
    for i in 1..=3 {
        assert!(!errors.join(format!("fam-r-{i}.json")).exists());
        assert!(!errors.join(format!("fam-r-{i}.reason.txt")).exists());
    }
    for i in 4..=5 {
        assert!(errors.join(format!("fam-r-{i}.json")).exists());
    }
    assert!(r["ipc_errors"]["kept_bytes"].as_u64().unwrap() <= 1 << 20);

    // 0 days and 0 MiB: nothing is pruned, however old or big.
    config(&e, "ipc_errors_mb = 1", "ipc_errors_mb = 0");
    config(&e, "ipc_errors_days = 14", "ipc_errors_days = 0");
    config(&e, "audit_days = 90", "audit_days = 0");
    rejected(&errors, "fam-ancient-1", 10, 400 * DAY);
    let r = json(&e, &["prune", "--json"]);
    assert_eq!(r["ipc_errors"]["removed_entries"], 0, "{r}");
    assert!(r["audit"]["before"].is_null());
    assert!(errors.join("fam-ancient-1.json").exists());
}

#[test]
fn tick_runs_housekeeping_at_most_once_an_hour() {
    let e = ipc::env();
    let errors = e.home.ipc_errors();
    std::fs::create_dir_all(&errors).unwrap();
    rejected(&errors, "fam-old-1", 10, 30 * DAY);
    let tick = || -> serde_json::Value {
        // Other steps may report errors here (no runtime config needed for this test).
        let out = claw(&e).args(["tick", "--json"]).output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let first = tick();
    assert_eq!(
        first["housekeeping"]["ipc_errors"]["removed_entries"], 1,
        "{first}"
    );
    assert!(!errors.join("fam-old-1.json").exists());
    rejected(&errors, "fam-old-2", 10, 30 * DAY);
    let second = tick();
    assert!(second.get("housekeeping").is_none(), "{second}");
    assert!(
        errors.join("fam-old-2.json").exists(),
        "not again within the hour"
    );
    // The claim is a row in marks; moved back an hour, the next tick runs it again.
    e.store
        .conn
        .execute(
            "UPDATE marks SET at = at - 3600001 WHERE key = 'housekeeping'",
            [],
        )
        .unwrap();
    let third = tick();
    assert_eq!(
        third["housekeeping"]["ipc_errors"]["removed_entries"], 1,
        "{third}"
    );
}

#[test]
fn a_flood_of_rejected_files_is_pruned_by_ipc_apply_itself() {
    let mut e = ipc::env();
    config(&e, "ipc_errors_mb = 64", "ipc_errors_mb = 1");
    e.config = claw::infra::config::Config::load(&e.home.config()).unwrap();
    for i in 0..600 {
        e.put(
            "fam",
            "messages",
            &format!("bad-{i:04}.json"),
            &format!("{{not json {}", "y".repeat(4000)),
        );
    }
    let r = e.apply("fam");
    assert_eq!(r.rejected, 600);
    let used: u64 = std::fs::read_dir(e.home.ipc_errors())
        .unwrap()
        .map(|d| {
            use std::os::unix::fs::MetadataExt;
            d.unwrap().metadata().unwrap().blocks() * 512
        })
        .sum();
    assert!(used <= 1 << 20, "ipc/errors holds {used} bytes");
}

#[test]
fn big_rejected_files_are_not_kept_so_errors_cannot_launder_disk() {
    let mut e = ipc::env();
    config(&e, "ipc_errors_mb = 64", "ipc_errors_mb = 1");
    e.config = claw::infra::config::Config::load(&e.home.config()).unwrap();
    let dir = e.home.ipc_dir("fam").join("messages");
    std::fs::create_dir_all(&dir).unwrap();
    // Refused without being read (bad names), whatever their size.
    for i in 0..20 {
        std::fs::write(dir.join(format!("big {i}.json")), vec![b'x'; 3 << 20]).unwrap();
    }
    // A directory full of data in place of a request file is moved aside, then pruned at once.
    std::fs::create_dir_all(dir.join("d.json")).unwrap();
    for i in 0..4 {
        std::fs::write(dir.join("d.json").join(i.to_string()), vec![b'y'; 1 << 20]).unwrap();
    }
    let r = e.apply("fam");
    assert_eq!(r.rejected, 21);
    assert!(
        r.entries
            .iter()
            .filter(|x| x
                .moved_to
                .as_deref()
                .is_some_and(|m| m.starts_with("(deleted, 3145728 bytes")))
            .count()
            == 20
    );
    let used: u64 = std::fs::read_dir(e.home.ipc_errors())
        .unwrap()
        .map(|d| {
            use std::os::unix::fs::MetadataExt;
            d.unwrap().metadata().unwrap().blocks() * 512
        })
        .sum();
    assert!(used < 1 << 20, "ipc/errors holds {used} bytes");
    assert!(
        !e.home.ipc_errors().join("fam-d-1.json").exists(),
        "the 4 MiB directory was pruned"
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}
