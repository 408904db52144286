//! `claw watchdog`: the process that removes a run's container when run-group cannot.
//!
//! run-group starts it before the container, detached in its own session (a signal to run-group's
//! process group or terminal does not reach it), keeps the write end of a pipe to its stdin, and
//! writes `done` once it has seen the container gone. The watchdog holds no lock, no database and
//! no other descriptor of run-group's. When its stdin reaches end-of-file without `done` (run-group
//! died: the kernel closes the pipe even on SIGKILL) or its deadline passes (run-group hung), it
//! force-removes the container, and again a few seconds later in case the orphaned runtime client
//! was still creating it. On `done` it exits without calling the runtime.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::infra::runtime::RuntimeKind;

/// When the watchdog removes the container again after the first removal: a runtime client that
/// outlived run-group may still have been creating it (podman takes seconds under load).
pub const AGAIN_AFTER: [Duration; 2] = [Duration::from_secs(3), Duration::from_secs(10)];

/// What one watchdog guards.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The runtime's program (its kind's name; tests pass a stub).
    pub program: String,
    pub kind: RuntimeKind,
    /// The container, a valid `claw-FOLDER-ID` name.
    pub name: String,
    /// Unix time in milliseconds after which the container is removed whatever run-group says.
    pub deadline_ms: i64,
}

/// Why the watchdog stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// run-group wrote `done`: the container is gone; nothing to do.
    Done,
    /// The pipe closed without `done`: run-group died.
    Orphaned,
    /// The deadline passed with run-group still silent.
    Deadline,
}

/// Wait on `input` (the pipe from run-group) until `done`, end-of-file or the deadline.
pub fn wait(input: BorrowedFd<'_>, deadline_ms: i64) -> Verdict {
    let mut seen: Vec<u8> = Vec::new();
    loop {
        let left = deadline_ms - crate::infra::time::now_ms();
        if left <= 0 {
            return Verdict::Deadline;
        }
        let mut pfd = libc::pollfd {
            fd: input.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own, for the length given.
        let n = unsafe { libc::poll(&mut pfd, 1, left.min(60_000) as libc::c_int) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Verdict::Orphaned;
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 64];
        // SAFETY: reading into a stack buffer of the length given.
        let got = unsafe { libc::read(input.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Verdict::Orphaned;
        }
        if got == 0 {
            return Verdict::Orphaned;
        }
        seen.extend_from_slice(&buf[..got as usize]);
        if seen.windows(5).any(|w| w == b"done\n") {
            return Verdict::Done;
        }
        // Only `done` matters; keep the last bytes in case it arrives split.
        if seen.len() > 16 {
            seen.drain(..seen.len() - 8);
        }
    }
}

/// Wait, then act: remove the container unless run-group said `done`. Reports on `out`.
pub fn run(w: &Watch, input: BorrowedFd<'_>, out: &mut dyn Write) -> Verdict {
    run_with(w, input, out, &AGAIN_AFTER)
}

/// [`run`] with the delays of the repeated removals given.
pub fn run_with(
    w: &Watch,
    input: BorrowedFd<'_>,
    out: &mut dyn Write,
    again: &[Duration],
) -> Verdict {
    let verdict = wait(input, w.deadline_ms);
    if verdict == Verdict::Done {
        return verdict;
    }
    let why = match verdict {
        Verdict::Orphaned => "run-group is gone (its pipe closed without `done`)",
        _ => "the run's deadline passed",
    };
    let mut remove = |when: &str| {
        let r = crate::infra::runtime::remove_with(
            &w.program,
            w.kind,
            &w.name,
            crate::infra::runtime::REMOVE_LIMIT,
        );
        let _ = writeln!(
            out,
            "{} claw watchdog: {why}; removing container {}{when}: {}",
            crate::infra::time::rfc3339(crate::infra::time::now_ms()),
            w.name,
            match &r {
                Ok(()) => "done".to_string(),
                Err(e) => e.clone(),
            }
        );
    };
    remove("");
    for after in again {
        std::thread::sleep(*after);
        remove(" (again, in case its runtime client was still creating it)");
    }
    verdict
}

/// run-group's end of a watchdog: dropping it without [`Handle::done`] closes the pipe, which
/// makes the watchdog remove the container.
pub struct Handle {
    stdin: Option<ChildStdin>,
    child: Option<Child>,
}

impl Handle {
    /// Start `claw watchdog` for a container, in its own session, its report appended to `log`.
    pub fn spawn(
        kind: RuntimeKind,
        name: &str,
        deadline_ms: i64,
        log: Option<&Path>,
    ) -> io::Result<Handle> {
        let exe = crate::infra::exe::claw_exe()?;
        let stderr = log
            .and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            })
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null);
        let mut cmd = Command::new(exe);
        cmd.args([
            "watchdog",
            "--runtime",
            kind.program(),
            "--name",
            name,
            "--deadline-ms",
            &deadline_ms.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        Ok(Handle {
            stdin: child.stdin.take(),
            child: Some(child),
        })
    }

    /// The container is gone: tell the watchdog to exit without touching the runtime.
    pub fn done(mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"done\n");
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing the pipe is the message; reap the process off this thread so a long-lived
        // caller (`claw chat`) collects no zombies and never waits on a removal.
        self.stdin.take();
        if let Some(mut c) = self.child.take() {
            std::thread::spawn(move || {
                let _ = c.wait();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe fills two descriptors we then own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        unsafe {
            (
                OwnedFd::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        }
    }

    fn far() -> i64 {
        crate::infra::time::now_ms() + 60_000
    }

    #[test]
    fn done_eof_and_deadline() {
        let (r, mut w) = pipe();
        w.write_all(b"do").unwrap();
        w.write_all(b"ne\n").unwrap();
        assert_eq!(wait(r.as_fd(), far()), Verdict::Done);
        let (r, w) = pipe();
        drop(w);
        assert_eq!(wait(r.as_fd(), far()), Verdict::Orphaned);
        let (r, mut w) = pipe();
        w.write_all(b"garbage, not the word\n").unwrap();
        drop(w);
        assert_eq!(wait(r.as_fd(), far()), Verdict::Orphaned);
        let (r, _w) = pipe();
        let t = std::time::Instant::now();
        assert_eq!(
            wait(r.as_fd(), crate::infra::time::now_ms() + 200),
            Verdict::Deadline
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn done_never_calls_the_runtime_and_eof_removes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let calls = t.path().join("calls");
        let rt = t.path().join("rt");
        std::fs::write(
            &rt,
            format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display()),
        )
        .unwrap();
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = Watch {
            program: rt.display().to_string(),
            kind: RuntimeKind::Podman,
            name: "claw-g-1xab".into(),
            deadline_ms: far(),
        };
        let (r, mut wr) = pipe();
        wr.write_all(b"done\n").unwrap();
        let mut out = Vec::new();
        let quick = [Duration::from_millis(10); 2];
        assert_eq!(run_with(&w, r.as_fd(), &mut out, &quick), Verdict::Done);
        assert!(!calls.exists() && out.is_empty());
        let (r, wr) = pipe();
        drop(wr);
        assert_eq!(run_with(&w, r.as_fd(), &mut out, &quick), Verdict::Orphaned);
        let log = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            vec!["rm -f -t 0 claw-g-1xab"; 3]
        );
        assert!(String::from_utf8_lossy(&out).contains("run-group is gone"));
    }
}
