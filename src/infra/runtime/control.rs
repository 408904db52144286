//! Acting on a container by name through the runtime's CLI, and the runtime's own wall clock.
//!
//! Used by run-group's container guard and by `claw watchdog`, which must each finish whatever the
//! runtime does: every call here waits a bounded time and then kills the runtime client, so a hung
//! `podman` can delay a cleanup but never hang it. Only argument vectors, never a shell string.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::RuntimeKind;

/// How long a `rm -f` may take before its client is killed (podman under load needs seconds).
pub const REMOVE_LIMIT: Duration = Duration::from_secs(30);

/// The runtime's own wall-clock limit for a container, so the container dies on time even if
/// run-group and its watchdog both die. `Err` names what the runtime cannot express (for the log).
pub fn wall_clock_args(kind: RuntimeKind, secs: u64) -> Result<Vec<String>, String> {
    match kind {
        // conmon enforces it (checked on podman 4.3): the container is killed and, with --rm,
        // removed even when the `podman run` client was SIGKILLed.
        RuntimeKind::Podman => Ok(vec!["--timeout".into(), secs.to_string()]),
        RuntimeKind::Docker => Err(format!(
            "no `--timeout {secs}`: docker has no wall-clock limit of its own; run-group and `claw watchdog` enforce it"
        )),
        RuntimeKind::AppleContainer => Err(format!(
            "no `--timeout {secs}`: Apple `container` has no wall-clock limit of its own; run-group and `claw watchdog` enforce it"
        )),
    }
}

/// Force-remove a container (stopping it if it runs). A container that does not exist counts as
/// removed. `Err` carries the runtime's complaint.
pub fn remove(kind: RuntimeKind, name: &str, limit: Duration) -> Result<(), String> {
    remove_with(kind.program(), kind, name, limit)
}

/// Arguments to remove a container at once, running or not. Not [`super::rm_args`]: podman's
/// `rm -f` first waits 10 s for an agent that ignores SIGTERM; `-t 0` kills it straight away
/// (docker's `rm -f` already sends SIGKILL).
pub fn kill_rm_args(kind: RuntimeKind, name: &str) -> Vec<String> {
    let mut a = super::rm_args(kind, name);
    if kind == RuntimeKind::Podman {
        a.splice(2..2, ["-t".to_string(), "0".to_string()]);
    }
    a
}

/// [`remove`] through a given program (tests pass a stub runtime).
pub fn remove_with(
    program: &str,
    kind: RuntimeKind,
    name: &str,
    limit: Duration,
) -> Result<(), String> {
    let args = kill_rm_args(kind, name);
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stderr = child.stderr.take().expect("piped");
    // Read at most 4 KiB of the complaint, then drain, so the client never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut head = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut head);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&head).into_owned()
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let complaint = reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(()),
        _ if gone_already(&complaint) => Ok(()),
        Some(s) => Err(format!(
            "`{program} {}` failed ({s}): {}",
            args.join(" "),
            complaint.trim()
        )),
        None => Err(format!(
            "`{program} {}` did not finish within {}s",
            args.join(" "),
            limit.as_secs()
        )),
    }
}

/// docker says "No such container", Apple `container` "not found"; podman's `rm -f` exits 0.
fn gone_already(complaint: &str) -> bool {
    let c = complaint.to_ascii_lowercase();
    c.contains("no such container") || c.contains("not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn stub(dir: &std::path::Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    #[test]
    fn kill_rm_args_per_runtime() {
        let j = |k| kill_rm_args(k, "claw-a-1").join(" ");
        assert_eq!(j(RuntimeKind::Podman), "rm -f -t 0 claw-a-1");
        assert_eq!(j(RuntimeKind::Docker), "rm -f claw-a-1");
        assert_eq!(j(RuntimeKind::AppleContainer), "delete --force claw-a-1");
    }

    #[test]
    fn wall_clock_is_podman_only() {
        assert_eq!(
            wall_clock_args(RuntimeKind::Podman, 90).unwrap(),
            vec!["--timeout", "90"]
        );
        assert!(wall_clock_args(RuntimeKind::Docker, 90).is_err());
        assert!(wall_clock_args(RuntimeKind::AppleContainer, 90).is_err());
    }

    #[test]
    fn remove_reports_success_missing_failure_and_hangs() {
        let t = tempfile::tempdir().unwrap();
        let d = RuntimeKind::Docker;
        let lim = Duration::from_secs(5);
        let ok = stub(t.path(), "ok", "exit 0");
        assert_eq!(remove_with(&ok, d, "claw-a-1", lim), Ok(()));
        let missing = stub(
            t.path(),
            "missing",
            "echo 'Error: No such container: claw-a-1' >&2; exit 1",
        );
        assert_eq!(remove_with(&missing, d, "claw-a-1", lim), Ok(()));
        let bad = stub(t.path(), "bad", "echo 'daemon down' >&2; exit 1");
        let e = remove_with(&bad, d, "claw-a-1", lim).unwrap_err();
        assert!(
            e.contains("daemon down") && e.contains("rm -f claw-a-1"),
            "{e}"
        );
        let hang = stub(t.path(), "hang", "exec sleep 30");
        let t0 = Instant::now();
        let e = remove_with(&hang, d, "claw-a-1", Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
