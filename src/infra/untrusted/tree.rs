//! The layout of a group's agent-writable trees, and the host's only ways to create them, seed
//! their memory file and hand them to the container's user.
//!
//! The parents `groups/`, `sessions/` and `ipc/` belong to the host: no container sees them, only
//! their children (`groups/F`, `sessions/F`, `ipc/F`, and `groups/global` for main). Every child is
//! opened relative to its parent with `O_NOFOLLOW`, every file is created with `O_EXCL`, and a
//! memory file that exists in any form (even a symlink to a host path) is left alone: the host
//! never writes through a name an agent could have planted.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::chown::{ChownReport, Owner, chown_tree};
use super::{Dir, Kind, check, ensure_subdir};
use crate::infra::paths::Home;
use crate::infra::protocol::{IPC_MESSAGES_DIR, IPC_REPLIES_DIR, IPC_TASKS_DIR};

/// A group's memory file, seeded by the host, then the agent's.
pub const MEMORY_FILE: &str = "AGENTS.md";
/// `groups/global`: memory shared with every group (writable by main only).
const GLOBAL: &str = "global";
/// `ipc/errors`: rejected requests; host-owned, never mounted.
const ERRORS: &str = "errors";

/// The host-owned folders holding every group's trees, opened once.
#[derive(Debug)]
pub struct Parents {
    /// `groups/`
    pub groups: Dir,
    /// `sessions/`
    pub sessions: Dir,
    /// `ipc/`
    pub ipc: Dir,
    /// `ipc/errors/`
    pub errors: Dir,
}

impl Parents {
    /// Open `groups/`, `sessions/`, `ipc/` and `ipc/errors/` under the home, creating any that is
    /// missing (the home itself must exist).
    pub fn open(home: &Home) -> io::Result<Parents> {
        Self::create(home).map(|(p, _)| p)
    }

    /// Like [`Parents::open`], also returning the folders it had to create (for `claw init`).
    pub fn create(home: &Home) -> io::Result<(Parents, Vec<PathBuf>)> {
        let root = open_trusted(&home.root)?;
        let mut created = Vec::new();
        let groups = trusted_subdir(&root, "groups", &mut created)?;
        let sessions = trusted_subdir(&root, "sessions", &mut created)?;
        let ipc = trusted_subdir(&root, "ipc", &mut created)?;
        let errors = trusted_subdir(&ipc, ERRORS, &mut created)?;
        let p = Parents {
            groups,
            sessions,
            ipc,
            errors,
        };
        Ok((p, created))
    }
}

/// What creating a group's folders did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The memory file did not exist in any form and was created with the given text.
    pub memory_created: bool,
    /// Where the memory file is (for messages).
    pub memory: PathBuf,
    /// Things found where a folder belongs, each moved aside or removed, never followed.
    pub displaced: Vec<String>,
}

/// Create `groups/F`, `sessions/F`, `ipc/F` and `ipc/F/{messages,tasks,replies}`, and
/// `groups/F/AGENTS.md` with `memory` if no entry of that name exists. Idempotent.
///
/// Something other than a directory where a folder belongs is displaced: at a root (only the
/// host or the owner can put it there) it is renamed aside to `.F.displaced-<ms>` so nothing
/// of the owner's is lost; inside `ipc/F` (the agent's own tree) a link, file or FIFO is removed.
/// Links are never followed and FIFOs never opened.
pub fn create_group(home: &Home, folder: &str, memory: &str) -> io::Result<Prepared> {
    plain_name(folder)?;
    let p = Parents::open(home)?;
    let mut out = Prepared::default();
    let group = ensure_root(&p.groups, folder, &mut out)?;
    ensure_root(&p.sessions, folder, &mut out)?;
    let ipc = ensure_root(&p.ipc, folder, &mut out)?;
    for sub in [IPC_MESSAGES_DIR, IPC_TASKS_DIR, IPC_REPLIES_DIR] {
        if let (_, Some(k)) = ensure_subdir(&ipc, sub, None)? {
            out.displaced.push(format!(
                "ipc/{folder}/{sub} was a {}; removed (not followed) and made a folder",
                k.describe()
            ));
        }
    }
    out.memory_created = group.create_new(OsStr::new(MEMORY_FILE), memory.as_bytes())?;
    out.memory = group.path.join(MEMORY_FILE);
    Ok(out)
}

/// Remove the half-written request files (names starting with `.`) an agent left in
/// `ipc/F/messages` and `ipc/F/tasks`. Only for when no container of the group can be alive (the
/// caller holds the group's lock and has removed leftovers): such a file's writer is dead, so it
/// can never become a request. Whatever it is (file, link, FIFO, folder) it is removed, not
/// followed; at most `max` names are looked at per folder. Returns how many were removed.
pub fn clear_abandoned_requests(home: &Home, folder: &str, max: usize) -> io::Result<usize> {
    plain_name(folder)?;
    let p = Parents::open(home)?;
    let Ok(ipc) = p.ipc.sub(folder) else {
        return Ok(0);
    };
    let mut removed = 0;
    for sub in [IPC_MESSAGES_DIR, IPC_TASKS_DIR] {
        let Ok(d) = ipc.sub(sub) else { continue };
        let mut dot = Vec::new();
        let mut seen = 0;
        d.each_entry(|n| {
            seen += 1;
            if n.as_bytes().starts_with(b".") {
                dot.push(n.to_os_string());
            }
            if seen >= max {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })?;
        for n in dot {
            super::remove_tree(&d, &n)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Create `groups/global` and its `AGENTS.md` with `memory` if no entry of that name exists.
pub fn create_global(home: &Home, memory: &str) -> io::Result<Prepared> {
    let p = Parents::open(home)?;
    let mut out = Prepared::default();
    let global = ensure_root(&p.groups, GLOBAL, &mut out)?;
    out.memory_created = global.create_new(OsStr::new(MEMORY_FILE), memory.as_bytes())?;
    out.memory = global.path.join(MEMORY_FILE);
    Ok(out)
}

/// Hand a group's trees (`groups/F`, `sessions/F`, `ipc/F`, and `groups/global` for main) to the
/// container's user, looking at no more than `max_entries` entries in each.
pub fn chown_group(
    home: &Home,
    folder: &str,
    is_main: bool,
    owner: Owner,
    max_entries: u64,
) -> io::Result<ChownReport> {
    plain_name(folder)?;
    let p = Parents::open(home)?;
    let mut r = ChownReport::default();
    r.add(chown_tree(&p.groups, folder, owner, max_entries)?);
    r.add(chown_tree(&p.sessions, folder, owner, max_entries)?);
    r.add(chown_tree(&p.ipc, folder, owner, max_entries)?);
    if is_main {
        r.add(chown_tree(&p.groups, GLOBAL, owner, max_entries)?);
    }
    Ok(r)
}

/// One path component: opening `a/b` relative to a directory would follow `a`.
fn plain_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a single folder name"),
        ));
    }
    Ok(())
}

/// `parent/name` as a real directory; anything else there is renamed aside, not followed.
fn ensure_root(parent: &Dir, name: &str, out: &mut Prepared) -> io::Result<Dir> {
    let aside = format!(".{name}.displaced-{}", crate::infra::time::now_ms());
    let (dir, displaced) = ensure_subdir(parent, name, Some((parent, OsStr::new(&aside))))?;
    if let Some(k) = displaced {
        out.displaced.push(format!(
            "{} was a {}; moved aside to {} (not followed) and made a folder",
            parent.path.join(name).display(),
            k.describe(),
            parent.path.join(&aside).display()
        ));
    }
    Ok(dir)
}

/// Open a host-owned directory by path, following links: the owner may have put the home or one
/// of its top folders on another disk through a symlink, and no agent can reach these names.
fn open_trusted(path: &Path) -> io::Result<Dir> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: open with a NUL-terminated path; the descriptor is owned right away.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags) })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    Ok(Dir {
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
        path: path.to_path_buf(),
    })
}

/// A host-owned subfolder (`groups`, `sessions`, `ipc`, `ipc/errors`), created when missing.
fn trusted_subdir(parent: &Dir, name: &str, created: &mut Vec<PathBuf>) -> io::Result<Dir> {
    let path = parent.path.join(name);
    match parent.kind(OsStr::new(name))? {
        None => {
            parent.mkdir(name)?;
            created.push(path.clone());
        }
        Some(Kind::Dir) | Some(Kind::Symlink) => {}
        Some(k) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is a {}, not a folder; move it away so claw can create its folder there",
                    path.display(),
                    k.describe()
                ),
            ));
        }
    }
    open_trusted(&path)
}
