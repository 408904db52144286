//! The `bash` tool: one command in the group folder, with a timeout and the egress proxy set.
//!
//! The container is the sandbox; this only bounds time and output. It never passes model text to
//! anything but `bash -c` as one argument.

use super::{Ctx, Output, arg_str};
use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Run `input.command` and report output and exit status.
pub fn run(ctx: &Ctx, input: &Value) -> Output {
    let command = match arg_str(input, "command") {
        Ok(c) => c,
        Err(e) => return e,
    };
    let limit = ctx.start.limits.bash_timeout_secs.max(1);
    let secs = input["timeout_secs"]
        .as_u64()
        .map_or(limit, |t| t.clamp(1, limit));
    let group = ctx.paths.group();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&group)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(k, &ctx.proxy_url);
    }
    cmd.env("NO_PROXY", "").env("no_proxy", "");
    // Own process group, so a timeout can kill everything the command started.
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Output::err(format!("cannot start bash in {}: {e}", group.display())),
    };
    let cap = ctx.start.limits.tool_output_cap;
    let out = reader(child.stdout.take(), cap);
    let err = reader(child.stderr.take(), cap);
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let started = Instant::now();
    let status = match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(s) => s.ok(),
        Err(_) => {
            // SAFETY: kill(2) on our own child's process group; no memory is touched.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = waiter.join();
            None
        }
    };
    // Background children may hold the pipes open; kill the group so the readers finish.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let mut text = String::new();
    text.push_str(&stdout);
    if !stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&stderr);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    match status {
        Some(s) if s.success() => {
            text.push_str("[exit code 0]");
            Output::ok(text)
        }
        Some(s) => {
            let code = s
                .code()
                .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string());
            text.push_str(&format!("[exit code {code}]"));
            Output::err(text)
        }
        None => {
            text.push_str(&format!(
                "[timed out after {secs} s ({:.1} s elapsed); the command was killed]",
                started.elapsed().as_secs_f64()
            ));
            Output::err(text)
        }
    }
}

/// Drain a pipe on a thread, keeping at most twice the cap (the rest is counted, not stored).
fn reader(pipe: Option<impl Read + Send + 'static>, cap: usize) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let Some(mut p) = pipe else {
            return String::new();
        };
        let mut kept = Vec::new();
        let mut total = 0usize;
        let mut buf = [0u8; 8192];
        while let Ok(n) = p.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            let room = (cap * 2).saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        let mut s = String::from_utf8_lossy(&kept).into_owned();
        if total > kept.len() {
            s.push_str(&format!("\n[{} more bytes not kept]", total - kept.len()));
        }
        s
    })
}
