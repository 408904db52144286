//! Streaming files into and out of agent-writable trees (attachments in, `send_file` out).
//!
//! Same rules as the rest of this module: one component at a time relative to an open directory,
//! `O_NOFOLLOW`, `O_EXCL` on create, never opening a FIFO or device, and a byte cap on every copy,
//! so a file of any size costs a fixed buffer, never its size in memory.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{Dir, Kind, cstr, kind_of};

/// How a streamed copy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// Written in full: this many bytes, and the first bytes (up to the head size asked for).
    Done { bytes: u64, head: Vec<u8> },
    /// The source passed the cap; the partial file was removed.
    TooLarge { at_least: u64 },
}

const CHUNK: usize = 64 * 1024;

impl Dir {
    /// Create `name` (never through a link, never over an existing entry: `Ok(None)` if it
    /// exists) and copy `src` into it, at most `cap` bytes; past that the file is removed.
    /// Keeps the first `head` bytes for content sniffing. A read or write error removes the file.
    pub fn create_streamed(
        &self,
        name: &OsStr,
        src: &mut dyn Read,
        cap: u64,
        head: usize,
    ) -> io::Result<Option<Copied>> {
        let c = cstr(name)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, 0o644) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Ok(None);
            }
            return Err(e);
        }
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let result = copy_capped(src, &mut f, cap, head);
        match result {
            Ok(Copied::Done { bytes, head }) => Ok(Some(Copied::Done { bytes, head })),
            Ok(too) => {
                drop(f);
                let _ = self.unlink(name);
                Ok(Some(too))
            }
            Err(e) => {
                drop(f);
                let _ = self.unlink(name);
                Err(e)
            }
        }
    }

    /// Open a regular file for reading (a link, FIFO or device is refused without being opened
    /// for I/O), checked again on the descriptor; returns it with its size. Refuses files over
    /// `max` bytes and files with other hard links (one could be a host file linked in).
    pub fn open_regular(&self, name: &OsStr, max: u64) -> Result<(std::fs::File, u64), String> {
        match self.kind(name) {
            Ok(Some(Kind::File { .. })) => {}
            Ok(Some(k)) => return Err(format!("not a regular file but a {}", k.describe())),
            Ok(None) => return Err("no such file".into()),
            Err(e) => return Err(format!("cannot inspect file: {e}")),
        }
        let (fd, st) = self.open_nofollow(name)?;
        let size = match kind_of(&st) {
            Kind::File { size } => size,
            k => return Err(format!("not a regular file but a {}", k.describe())),
        };
        #[allow(clippy::unnecessary_cast)]
        if st.st_nlink as u64 != 1 {
            return Err("file has other hard links; copy it to a new file first".into());
        }
        if size > max {
            return Err(format!("file is {size} bytes; the limit is {max}"));
        }
        Ok((std::fs::File::from(fd), size))
    }
}

/// Copy at most `cap` bytes from `src` to `dst` with one fixed buffer; keeps the first `head` bytes.
pub fn copy_capped(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    cap: u64,
    head: usize,
) -> io::Result<Copied> {
    let mut buf = vec![0u8; CHUNK];
    let mut first = Vec::with_capacity(head.min(CHUNK));
    let mut total: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > cap {
            return Ok(Copied::TooLarge { at_least: total });
        }
        if first.len() < head {
            let take = (head - first.len()).min(n);
            first.extend_from_slice(&buf[..take]);
        }
        dst.write_all(&buf[..n])?;
    }
    dst.flush()?;
    Ok(Copied::Done {
        bytes: total,
        head: first,
    })
}
