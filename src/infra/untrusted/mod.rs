//! The one module that touches agent-writable trees (`groups/F`, `sessions/F`, `ipc/F`, and
//! `groups/global` for main): everything the host does there goes through a [`Dir`].
//!
//! An agent may have replaced any name under those folders with a symlink, a FIFO, a device or a
//! hard link, and may swap it again between two system calls. So every step opens one component
//! relative to an already-open directory with `O_NOFOLLOW` (`openat`, `fstatat`, `renameat`,
//! `unlinkat`, `fchownat(AT_SYMLINK_NOFOLLOW)`), creates with `O_EXCL`, never opens anything that
//! is not a directory or a regular file (a FIFO is never opened, so it cannot block), checks on the
//! open descriptor before reading, and bounds every read and every walk. Nothing else in the host
//! may call `std::fs` on those trees; `tests/untrusted_boundary.rs` greps the crate for it.

mod chown;
mod stream;
mod tree;
mod walk;

pub use chown::{ChownReport, Owner, chown_tree};
pub use stream::{Copied, copy_capped};
pub use tree::{
    MEMORY_FILE, Parents, Prepared, chown_group, clear_abandoned_requests, create_global,
    create_group,
};
pub use walk::{MAX_DEPTH, Usage, remove_tree, usage};

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a directory entry is, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File {
        size: u64,
    },
    Dir,
    Symlink,
    Fifo,
    /// Device, socket or anything else.
    Other,
}

impl Kind {
    /// A word for reasons and audit rows.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File { .. } => "regular file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Fifo => "FIFO",
            Kind::Other => "device or socket",
        }
    }
}

/// What the host needs to know about an entry, read without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    /// Bytes of disk actually used (`st_blocks` × 512), so sparse files count what they cost.
    pub disk_bytes: u64,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl Stat {
    // The stat field types differ by platform (nlink is u32 on some), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &libc::stat) -> Stat {
        Stat {
            kind: kind_of(st),
            disk_bytes: (st.st_blocks as u64).saturating_mul(512),
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink as u64,
            mtime: st.st_mtime,
        }
    }
}

/// An open directory; all operations are relative to it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// For messages only; never used to open anything.
    pub path: PathBuf,
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn kind_of(st: &libc::stat) -> Kind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File {
            size: st.st_size as u64,
        },
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        _ => Kind::Other,
    }
}

impl Dir {
    /// Open a directory by path; fails (ELOOP/ENOTDIR) if the last component is a symlink.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str())?;
        let fd = check(unsafe { libc::open(c.as_ptr(), DIR_FLAGS) })?;
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// Open a subdirectory without following a symlink.
    pub fn sub(&self, name: &str) -> io::Result<Dir> {
        let c = cstr(OsStr::new(name))?;
        let fd = check(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), DIR_FLAGS) })?;
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: self.path.join(name),
        })
    }

    /// Open a subdirectory given as any name (not only UTF-8) without following a symlink.
    pub fn sub_os(&self, name: &OsStr) -> io::Result<Dir> {
        let c = cstr(name)?;
        let fd = check(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), DIR_FLAGS) })?;
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: self.path.join(name),
        })
    }

    /// Names in the directory (without `.` and `..`), sorted bytewise; at most `max` of them
    /// (an agent can create millions of names), the second value saying whether some were left.
    pub fn entries(&self, max: usize) -> io::Result<(Vec<OsString>, bool)> {
        let mut names = Vec::new();
        let mut more = false;
        self.each_entry(|name| {
            if names.len() >= max {
                more = true;
                return std::ops::ControlFlow::Break(());
            }
            names.push(name.to_os_string());
            std::ops::ControlFlow::Continue(())
        })?;
        names.sort();
        Ok((names, more))
    }

    /// Calls `f` with each name in the directory (without `.` and `..`) in the order the file
    /// system gives them, until `f` breaks; nothing is collected, so a huge directory costs no memory.
    pub fn each_entry(
        &self,
        mut f: impl FnMut(&OsStr) -> std::ops::ControlFlow<()>,
    ) -> io::Result<()> {
        let dup = check(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            unsafe { libc::close(dup) };
            return Err(e);
        }
        // The dup shares the offset with our fd; start from the beginning every time.
        unsafe { libc::rewinddir(dirp) };
        loop {
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                break;
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let b = name.to_bytes();
            if b != b"." && b != b".." && f(OsStr::from_bytes(b)).is_break() {
                break;
            }
        }
        unsafe { libc::closedir(dirp) };
        Ok(())
    }

    /// Full metadata of `name`, without following it. `None` if it does not exist.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let c = cstr(name)?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(Stat::of(&st)))
    }

    /// What `name` is, without following it. `None` if it does not exist.
    pub fn kind(&self, name: &OsStr) -> io::Result<Option<Kind>> {
        Ok(self.stat(name)?.map(|s| s.kind))
    }

    /// Open `name` for reading without following a link or blocking on a FIFO, and stat the
    /// descriptor: callers re-check its type there, since the name may have been swapped.
    fn open_nofollow(&self, name: &OsStr) -> Result<(OwnedFd, libc::stat), String> {
        let c = cstr(name).map_err(|e| e.to_string())?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) };
        if fd < 0 {
            return Err(format!("cannot open file: {}", io::Error::last_os_error()));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
            return Err(format!("cannot stat file: {}", io::Error::last_os_error()));
        }
        Ok((fd, st))
    }

    /// Read a regular file of at most `max` bytes. Anything else is refused without being read
    /// (a FIFO or device is never even opened), and the reason says what it was.
    pub fn read_regular(&self, name: &OsStr, max: u64) -> Result<Vec<u8>, String> {
        match self.kind(name) {
            Ok(Some(Kind::File { size })) if size > max => {
                return Err(format!("file is {size} bytes; the limit is {max}"));
            }
            Ok(Some(Kind::File { .. })) => {}
            Ok(Some(k)) => return Err(format!("not a regular file but a {}", k.describe())),
            Ok(None) => return Err("file vanished before it could be read".into()),
            Err(e) => return Err(format!("cannot inspect file: {e}")),
        }
        // Re-check on the descriptor: the name may have been swapped since the fstatat.
        let (fd, st) = self.open_nofollow(name)?;
        match kind_of(&st) {
            Kind::File { size } if size > max => {
                return Err(format!("file is {size} bytes; the limit is {max}"));
            }
            Kind::File { .. } => {}
            k => return Err(format!("not a regular file but a {}", k.describe())),
        }
        // Sized from fstat so a small file costs one read plus the one that sees EOF.
        let expected = match kind_of(&st) {
            Kind::File { size } => size as usize,
            _ => 0,
        };
        let mut buf = Vec::with_capacity(expected + 1);
        let mut f = std::fs::File::from(fd).take(max + 1);
        loop {
            if buf.len() == buf.capacity() {
                buf.reserve(4096);
            }
            let spare = buf.capacity() - buf.len();
            let start = buf.len();
            buf.resize(start + spare, 0);
            match f.read(&mut buf[start..]) {
                Ok(0) => {
                    buf.truncate(start);
                    break;
                }
                Ok(n) => buf.truncate(start + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
                Err(e) => return Err(format!("cannot read file: {e}")),
            }
        }
        if buf.len() as u64 > max {
            return Err(format!("file grew past the limit of {max} bytes"));
        }
        Ok(buf)
    }

    /// Move an entry (file, link or directory, never followed) into another directory.
    pub fn rename_to(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        let a = cstr(name)?;
        let b = cstr(to_name)?;
        check(unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                a.as_ptr(),
                to.fd.as_raw_fd(),
                b.as_ptr(),
            )
        })?;
        Ok(())
    }

    /// Remove a non-directory entry (a symlink is removed, not its target).
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) })?;
        Ok(())
    }

    /// Remove an empty subdirectory.
    pub fn rmdir(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })?;
        Ok(())
    }

    /// Create a subdirectory (mode 0755 before umask); an existing one is fine.
    pub fn mkdir(&self, name: &str) -> io::Result<()> {
        let c = cstr(OsStr::new(name))?;
        let rc = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o755) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Create `name` only if it does not exist (never through a link); false if it exists.
    pub fn create_new(&self, name: &OsStr, bytes: &[u8]) -> io::Result<bool> {
        let c = cstr(name)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, 0o644) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Ok(false);
            }
            return Err(e);
        }
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        f.write_all(bytes)?;
        Ok(true)
    }

    /// Replace `name` atomically: write a fresh temp file, then rename it over `name`. Whatever
    /// was at `name` (even a symlink to a host file) is replaced, never written through.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!(
            ".claw-tmp-{}-{}-{name}",
            std::process::id(),
            crate::infra::time::now_ms()
        );
        // A leftover from a killed writer with the same name is ours to replace.
        let _ = self.unlink(OsStr::new(&tmp));
        if !self.create_new(OsStr::new(&tmp), bytes)? {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if let Err(e) = self.rename_to(OsStr::new(&tmp), self, OsStr::new(name)) {
            let _ = self.unlink(OsStr::new(&tmp));
            return Err(e);
        }
        Ok(())
    }
}

impl Dir {
    /// Overwrite a regular, singly-linked file in place (truncate, write). Anything else (a link,
    /// FIFO, device, or a file with other hard links) is refused without being written.
    pub fn overwrite_regular(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        // Looked at first so a FIFO or device is not even opened (O_NONBLOCK covers a swap).
        if !matches!(self.kind(name)?, Some(Kind::File { .. })) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let c = cstr(name)?;
        let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let fd = check(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        if !matches!(kind_of(&st), Kind::File { .. }) || st.st_nlink != 1 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let f = std::fs::File::from(fd);
        f.set_len(0)?;
        (&f).write_all(bytes)?;
        Ok(())
    }
}

/// Open `parent/name` as a real directory, creating it if missing. If an agent put a symlink or
/// a file there, it is moved into `quarantine` (when given) or removed, and a real directory made.
/// Returns the directory and, when something was displaced, what it was.
pub fn ensure_subdir(
    parent: &Dir,
    name: &str,
    quarantine: Option<(&Dir, &OsStr)>,
) -> io::Result<(Dir, Option<Kind>)> {
    let displaced = match parent.kind(OsStr::new(name))? {
        Some(Kind::Dir) => None,
        None => {
            parent.mkdir(name)?;
            None
        }
        Some(k) => {
            match quarantine {
                Some((q, qname)) => parent.rename_to(OsStr::new(name), q, qname)?,
                None => parent.unlink(OsStr::new(name))?,
            }
            parent.mkdir(name)?;
            Some(k)
        }
    };
    Ok((parent.sub(name)?, displaced))
}

#[cfg(test)]
mod tests;
