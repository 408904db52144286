//! Waking a group's live run when new messages arrive, so a follow-up is fed to the container at
//! once instead of at the run's next poll.
//!
//! Each running run-group holds a FIFO open at `wake/FOLDER` in the home (host-only: never
//! mounted, never written by an agent). `claw ingest` opens it write-only and non-blocking: the open fails when no
//! run-group holds it (ENXIO), which is exactly "no live run to wake, dispatch instead". A wake is
//! one byte; a full pipe means a wake is already pending, which is just as good.
//!
//! The order that makes this safe (see `crate::steps::chain`): run-group takes the wake before it reads
//! its prompt and lets it go before it releases the group lock and looks for work left; ingest
//! commits before it pokes. So every message is read by the run that accepted the poke, or by
//! the dispatch that the poke's failure or the run's own exit starts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::infra::paths::Home;

fn path(home: &Home, folder: &str) -> PathBuf {
    home.root.join("wake").join(folder)
}

/// Wake the live run of `folder`, if there is one. True means a run-group holds the wake and
/// will look for new messages; false means there is no live run (or no wake to use).
pub fn poke(home: &Home, folder: &str) -> bool {
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path(home, folder));
    match opened {
        Ok(mut f) => {
            // Only a FIFO has a reader to wake; anything else there is not ours to write to.
            if !f.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
                return false;
            }
            // WouldBlock: the pipe is full of wakes already.
            match f.write_all(b"w") {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        }
        Err(_) => false,
    }
}

/// A run-group's end of its group's wake: held open while the run may still read messages.
pub struct Wake {
    file: File,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl Wake {
    /// Take the wake of `folder` (create the FIFO if needed). Call with the group lock held.
    /// None if it cannot be made: the run then only polls, as before chaining.
    pub fn open(home: &Home, folder: &str) -> Option<Wake> {
        let p = path(home, folder);
        let is_fifo = std::fs::symlink_metadata(&p).map(|m| m.file_type().is_fifo());
        match is_fifo {
            Ok(true) => {}
            Ok(false) => {
                std::fs::remove_file(&p).ok()?;
                mkfifo(&p)?;
            }
            Err(_) => mkfifo(&p)?,
        }
        // Read-write: the FIFO then never reports end-of-file while we hold it, and opening
        // does not wait for a writer.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .ok()?;
        Some(Wake {
            file,
            stop: Arc::new(AtomicBool::new(false)),
            listener: None,
        })
    }

    /// Call `on_wake` (from a thread) each time the wake is poked, until this is dropped.
    /// `on_wake` returning false stops listening.
    pub fn listen(&mut self, mut on_wake: impl FnMut() -> bool + Send + 'static) {
        let Ok(mut reader) = self.file.try_clone() else {
            return;
        };
        let stop = self.stop.clone();
        self.listener = Some(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
                if stop.load(Ordering::Acquire) || !on_wake() {
                    return;
                }
            }
        }));
    }
}

impl Drop for Wake {
    /// Stop the listener (a byte of our own unblocks its read) and wait until it has closed its
    /// copy of the FIFO: once this returns, a poke fails and ingest dispatches instead.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.listener.take() {
            let _ = (&self.file).write(b"x");
            let _ = t.join();
        }
    }
}

fn mkfifo(p: &std::path::Path) -> Option<()> {
    std::fs::create_dir_all(p.parent()?).ok()?;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: c is a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    (r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn poke_reaches_a_listener_and_fails_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        assert!(!poke(&home, "g"), "no wake yet");
        let mut w = Wake::open(&home, "g").expect("wake");
        let (tx, rx) = mpsc::channel();
        w.listen(move || tx.send(()).is_ok());
        assert!(poke(&home, "g"));
        rx.recv_timeout(Duration::from_secs(5)).expect("woken");
        drop(w);
        assert!(!poke(&home, "g"), "a dropped wake has no reader");
        // A second run takes the same FIFO again.
        let _w2 = Wake::open(&home, "g").expect("wake again");
        assert!(poke(&home, "g"));
    }

    #[test]
    fn a_non_fifo_in_its_place_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        std::fs::create_dir_all(home.root.join("wake")).unwrap();
        std::fs::write(path(&home, "g"), "planted").unwrap();
        assert!(!poke(&home, "g"));
        let _w = Wake::open(&home, "g").expect("wake");
        assert!(poke(&home, "g"));
    }
}
