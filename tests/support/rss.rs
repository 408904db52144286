//! Peak memory of a child process, measured by the kernel (`wait4`'s rusage), so a test can say
//! "stayed under N MB" about exactly one process even while other tests run in parallel.
#![allow(dead_code)]

use std::process::Command;

/// Run `cmd` to completion; returns its exit code (None if killed) and peak RSS in KiB.
#[allow(clippy::zombie_processes)] // wait4 in wait_measured reaps it
pub fn run_measured(cmd: &mut Command) -> (Option<i32>, u64) {
    let child = cmd.spawn().expect("spawn");
    wait_measured(child.id() as i32)
}

/// Wait for `pid` (a child of this process, not yet waited) and return its exit code and peak RSS
/// in KiB.
pub fn wait_measured(pid: i32) -> (Option<i32>, u64) {
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in; pid is our own unwaited child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    (code, ru.ru_maxrss as u64)
}
