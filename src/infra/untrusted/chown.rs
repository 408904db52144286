//! Handing an agent-writable tree to the container's user: the only chown the host does there.
//!
//! Running as root, the host creates `AGENTS.md`, snapshots and folders that the agent (uid 1000)
//! must be able to change. The tree may contain links the agent planted, and a container of the
//! same group may still be running and swapping names while we walk. So the walk descends only
//! through directories it opened itself with `O_NOFOLLOW` (a directory swapped for a symlink fails
//! to open and is skipped), and changes each entry through a descriptor for exactly the inode it
//! checked: never a path, never through a link, never a file with other hard links (it could be
//! a host file), never a FIFO or device (they are not opened at all). Depth and entry count are
//! capped, and the report says when a cap stopped the walk.

use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;

use super::walk::{MAX_DEPTH, open_sub};
use super::{Dir, Kind, Stat, check, cstr};

/// The owner to give a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    fn differs(self, st: &Stat) -> bool {
        st.uid != self.uid || st.gid != self.gid
    }
}

/// What a chown walk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChownReport {
    /// Entries whose owner was changed (directories, regular files and symlinks themselves).
    pub changed: u64,
    /// Entries looked at, the root included.
    pub visited: u64,
    /// Regular files left alone because they have more than one hard link.
    pub hard_linked: u64,
    /// FIFOs, devices and sockets left alone (never opened).
    pub special: u64,
    /// The entry or depth cap stopped the walk: entries past it keep their owner.
    pub truncated: bool,
}

impl ChownReport {
    /// Add another walk's figures to this one.
    pub fn add(&mut self, o: ChownReport) {
        self.changed += o.changed;
        self.visited += o.visited;
        self.hard_linked += o.hard_linked;
        self.special += o.special;
        self.truncated |= o.truncated;
    }
}

/// Give `parent/name` and everything under it to `owner`, looking at no more than `max_entries`
/// entries. Only entries whose owner differs are touched, so a second walk changes nothing. A
/// missing root is fine (nothing to do); a root that is not a real directory is an error and
/// is not followed.
pub fn chown_tree(
    parent: &Dir,
    name: &str,
    owner: Owner,
    max_entries: u64,
) -> io::Result<ChownReport> {
    let mut r = ChownReport::default();
    let root = match parent.sub(name) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(r),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{} is not a directory ({e}); not followed, ownership left as is",
                    parent.path.join(name).display()
                ),
            ));
        }
    };
    r.visited = 1;
    chown_dir(&root, owner, &mut r)?;
    walk(&root, owner, max_entries, 1, &mut r)?;
    Ok(r)
}

/// Change an open directory's owner through its descriptor.
fn chown_dir(dir: &Dir, owner: Owner, r: &mut ChownReport) -> io::Result<()> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills a struct we own from a descriptor we own.
    check(unsafe { libc::fstat(dir.fd.as_raw_fd(), &mut st) })?;
    if owner.differs(&Stat::of(&st)) {
        // SAFETY: plain syscall on our own descriptor.
        check(unsafe { libc::fchown(dir.fd.as_raw_fd(), owner.uid, owner.gid) })
            .map_err(|e| named(e, &dir.path))?;
        r.changed += 1;
    }
    Ok(())
}

fn walk(dir: &Dir, owner: Owner, max: u64, depth: usize, r: &mut ChownReport) -> io::Result<()> {
    let mut subdirs: Vec<OsString> = Vec::new();
    let mut failed = None;
    dir.each_entry(|name| {
        if r.visited >= max {
            r.truncated = true;
            return ControlFlow::Break(());
        }
        r.visited += 1;
        let step = match dir.stat(name) {
            // Gone between readdir and stat: the agent is busy; nothing to change.
            Ok(None) => Ok(()),
            Ok(Some(st)) => match st.kind {
                Kind::Dir => {
                    subdirs.push(name.to_os_string());
                    Ok(())
                }
                Kind::Fifo | Kind::Other => {
                    r.special += u64::from(owner.differs(&st));
                    Ok(())
                }
                Kind::File { .. } | Kind::Symlink if owner.differs(&st) => {
                    chown_entry(dir, name, owner, r)
                }
                Kind::File { .. } | Kind::Symlink => Ok(()),
            },
            Err(e) => Err(e),
        };
        match step {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    for name in subdirs {
        if r.truncated {
            break;
        }
        if depth >= MAX_DEPTH {
            r.truncated = true;
            break;
        }
        // A directory swapped for a link (or anything else) since the stat fails to open here
        // (ELOOP/ENOTDIR) and is skipped: we never leave the tree through it.
        let Some(sub) = open_sub(dir, &name)? else {
            continue;
        };
        chown_dir(&sub, owner, r)?;
        walk(&sub, owner, max, depth + 1, r)?;
    }
    Ok(())
}

/// Change one non-directory entry, checked and changed through one `O_PATH` descriptor so the
/// inode we change is the inode we checked, whatever the agent renames meanwhile. `O_PATH`
/// never opens the file for reading or writing: no FIFO blocks, no device driver is called.
#[cfg(target_os = "linux")]
fn chown_entry(dir: &Dir, name: &OsStr, owner: Owner, r: &mut ChownReport) -> io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let c = cstr(name)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat with a NUL-terminated name relative to our own directory descriptor.
    let fd = match check(unsafe { libc::openat(dir.fd.as_raw_fd(), c.as_ptr(), flags) }) {
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(named(e, &dir.path.join(name))),
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills a struct we own; O_PATH descriptors support fstat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    let st = Stat::of(&st);
    match st.kind {
        Kind::File { .. } if st.nlink > 1 => {
            r.hard_linked += 1;
            return Ok(());
        }
        Kind::File { .. } | Kind::Symlink => {}
        Kind::Fifo | Kind::Other => {
            r.special += 1;
            return Ok(());
        }
        // Swapped for a directory since the stat: the next walk will see it as one.
        Kind::Dir => return Ok(()),
    }
    if !owner.differs(&st) {
        return Ok(());
    }
    let empty = c"";
    // SAFETY: AT_EMPTY_PATH makes fchownat act on the descriptor's own inode (the symlink
    // itself for a link opened with O_PATH|O_NOFOLLOW), never on a name.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            empty.as_ptr(),
            owner.uid,
            owner.gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map_err(|e| named(e, &dir.path.join(name)))?;
    r.changed += 1;
    Ok(())
}

/// Without `O_PATH` (macOS): re-check just before and change by name without following. The
/// window between the check and the change is small, and a hard link to a host file cannot be
/// made from inside a container (links across mounts fail), so this stays inside the tree.
#[cfg(not(target_os = "linux"))]
fn chown_entry(dir: &Dir, name: &OsStr, owner: Owner, r: &mut ChownReport) -> io::Result<()> {
    let Some(st) = dir.stat(name)? else {
        return Ok(());
    };
    match st.kind {
        Kind::File { .. } if st.nlink > 1 => {
            r.hard_linked += 1;
            return Ok(());
        }
        Kind::File { .. } | Kind::Symlink => {}
        Kind::Fifo | Kind::Other => {
            r.special += 1;
            return Ok(());
        }
        Kind::Dir => return Ok(()),
    }
    let c = cstr(name)?;
    // SAFETY: fchownat on a name relative to our own directory descriptor, never following.
    check(unsafe {
        libc::fchownat(
            dir.fd.as_raw_fd(),
            c.as_ptr(),
            owner.uid,
            owner.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map_err(|e| named(e, &dir.path.join(name)))?;
    r.changed += 1;
    Ok(())
}

fn named(e: io::Error, path: &std::path::Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot change the owner of {}: {e}", path.display()),
    )
}
