//! Bounded walks over an agent-writable tree: measuring it and removing parts of it.
//!
//! A walk descends only through directories it opened itself with `O_NOFOLLOW`, so a symlink or
//! a directory swapped for one mid-walk is never followed out of the tree. Depth and entry counts
//! are capped: an agent can build a tree deep or wide enough to exhaust descriptors or time, and
//! the caller learns that the cap was hit instead of getting a number the agent could shrink.

use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::ControlFlow;

use super::{Dir, Kind};

/// Deepest directory nesting a walk follows; deeper trees count as over every limit.
pub const MAX_DEPTH: usize = 64;

/// What a tree costs on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Disk bytes actually used (blocks, so sparse files count what they cost).
    pub bytes: u64,
    /// Entries of any kind, directories included.
    pub entries: u64,
    /// The walk stopped early (entry cap or depth cap reached): the tree is at least this big.
    pub truncated: bool,
}

/// Measure everything under `dir` (not `dir` itself), visiting at most `max_entries` entries.
pub fn usage(dir: &Dir, max_entries: u64) -> io::Result<Usage> {
    let mut u = Usage::default();
    measure(dir, max_entries, 0, &mut u)?;
    Ok(u)
}

fn measure(dir: &Dir, max: u64, depth: usize, u: &mut Usage) -> io::Result<()> {
    let mut subdirs: Vec<OsString> = Vec::new();
    let mut failed = None;
    dir.each_entry(|name| {
        if u.entries >= max {
            u.truncated = true;
            return ControlFlow::Break(());
        }
        u.entries += 1;
        match dir.stat(name) {
            Ok(Some(st)) => {
                u.bytes = u.bytes.saturating_add(st.disk_bytes);
                if st.kind == Kind::Dir {
                    subdirs.push(name.to_os_string());
                }
            }
            // Gone between readdir and stat: the agent is busy; it simply does not count.
            Ok(None) => {}
            Err(e) => {
                failed = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    for name in subdirs {
        if u.truncated {
            break;
        }
        if depth + 1 >= MAX_DEPTH {
            u.truncated = true;
            break;
        }
        // A directory swapped for a link since the stat fails here (ELOOP/ENOTDIR) and is skipped.
        let Some(sub) = open_sub(dir, &name)? else {
            continue;
        };
        measure(&sub, max, depth + 1, u)?;
    }
    Ok(())
}

/// Open a subdirectory by an arbitrary name; `None` if it is gone or no longer a directory.
pub(super) fn open_sub(dir: &Dir, name: &OsStr) -> io::Result<Option<Dir>> {
    match dir.sub_os(name) {
        Ok(d) => Ok(Some(d)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Remove `name` from `parent` whatever it is: a file, link, FIFO or device is unlinked (never
/// followed), a directory is emptied through descriptors and removed. Gone already is fine.
pub fn remove_tree(parent: &Dir, name: &OsStr) -> io::Result<()> {
    remove_at(parent, name, 0)
}

fn remove_at(parent: &Dir, name: &OsStr, depth: usize) -> io::Result<()> {
    match parent.kind(name)? {
        None => return Ok(()),
        Some(Kind::Dir) => {}
        Some(_) => return ignore_gone(parent.unlink(name)),
    }
    if depth >= MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested deeper than {MAX_DEPTH} levels; remove it by hand",
            parent.path.join(name).display()
        )));
    }
    let Some(dir) = open_sub(parent, name)? else {
        // Swapped for something else since we looked: remove that instead.
        return remove_at(parent, name, depth);
    };
    // Remove in rounds of bounded size so a directory of millions of names costs little memory.
    loop {
        let (names, more) = dir.entries(4096)?;
        for n in &names {
            remove_at(&dir, n, depth + 1)?;
        }
        if !more {
            break;
        }
    }
    ignore_gone(parent.rmdir(name))
}

fn ignore_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn usage_counts_blocks_and_never_follows_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 1 << 20]).unwrap();
        std::fs::create_dir(t.path().join("a")).unwrap();
        std::fs::write(t.path().join("a/f"), vec![1u8; 100_000]).unwrap();
        symlink(outside.path(), t.path().join("link")).unwrap();
        let f = std::fs::File::create(t.path().join("sparse")).unwrap();
        f.set_len(1 << 40).unwrap();
        let d = Dir::open(t.path()).unwrap();
        let u = usage(&d, 1000).unwrap();
        assert!(!u.truncated);
        assert_eq!(u.entries, 4);
        assert!(u.bytes >= 100_000 && u.bytes < 1 << 20, "{u:?}");
    }

    #[test]
    fn usage_reports_caps_instead_of_a_smaller_number() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::write(t.path().join(i.to_string()), b"x").unwrap();
        }
        let d = Dir::open(t.path()).unwrap();
        assert!(usage(&d, 10).unwrap().truncated);
        let mut deep = t.path().join("deep");
        for _ in 0..MAX_DEPTH + 2 {
            std::fs::create_dir(&deep).unwrap();
            deep = deep.join("d");
        }
        assert!(usage(&d, 100_000).unwrap().truncated);
    }

    #[test]
    fn remove_tree_removes_links_not_targets() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"k").unwrap();
        let victim = t.path().join("v");
        std::fs::create_dir_all(victim.join("x/y")).unwrap();
        std::fs::write(victim.join("x/y/f"), b"f").unwrap();
        symlink(outside.path(), victim.join("x/out")).unwrap();
        symlink(outside.path().join("keep"), victim.join("k")).unwrap();
        let d = Dir::open(t.path()).unwrap();
        remove_tree(&d, OsStr::new("v")).unwrap();
        assert!(!victim.exists());
        assert!(outside.path().join("keep").exists());
        remove_tree(&d, OsStr::new("v")).unwrap();
    }
}
