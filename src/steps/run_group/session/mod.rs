//! The container session: start the container (`launch`), speak the JSONL protocol, feed
//! follow-up messages, apply the group's IPC requests as they appear, and enforce the disk, idle
//! and wall-clock limits (`events`, one handler per event), then wind down. Results go to the
//! outbox the moment they arrive, so a later crash cannot lose them.

use anyhow::Result;
use std::collections::VecDeque;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::agent_io::{self, Output};
use super::log::RunLog;
use super::{Work, sandbox};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::Store;

mod events;
mod launch;

use events::Session;

/// What the session observed, for the cursor and retry rules.
#[derive(Debug, Default)]
pub struct Ended {
    /// Exit 0, no fatal agent error, no timeout.
    pub clean: bool,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub handed: Option<i64>,
    pub acked: Option<i64>,
    pub last_result: Option<String>,
    /// The chat was already told why the run failed (the disk limit): no generic notice.
    pub notice_sent: bool,
}

/// How often the loop wakes to check its limits when the agent is quiet.
const TICK: Duration = Duration::from_millis(250);
/// Stderr lines kept for the run's error message, and how much of each.
const STDERR_TAIL: usize = 40;
const STDERR_TAIL_CHARS: usize = 300;

/// Run the container for `work` until it exits.
pub fn execute(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    store: &mut Store,
    work: &Work,
    wake: &mut Option<crate::steps::wake::Wake>,
    log: &mut RunLog,
) -> Result<Ended> {
    let pre = match launch::preflight(home, config, store, work, log)? {
        Ok(pre) => pre,
        Err(refused) => return Ok(refused),
    };
    // From here every return removes the container: the guard is dropped before the sandbox.
    let (mut run, stdin) = launch::launch(home, config, secrets, store, work, wake, pre, log)?;
    let mut s = Session::new(home, config, secrets, work, stdin);
    loop {
        match run.rx.recv_timeout(TICK) {
            Ok(Output::Line(line)) => s.on_line(line, store, &run, log)?,
            Ok(Output::StdoutClosed) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(other) => on_output(other, &mut s.stderr_tail, log),
            Err(RecvTimeoutError::Timeout) => {}
        }
        s.poll(home, config, store, &run, log)?;
        s.check_disk(store, &mut run, log)?;
        s.check_timeout(&mut run, log);
        s.check_idle(log);
        s.check_close_grace(&mut run, log);
    }
    s.close_stdin();
    wind_down(home, config, store, work, run, s, log)
}

/// The container's end: wait for the client, read what is left, release the guard, apply the
/// last IPC requests, and write the proxy's totals.
fn wind_down(
    home: &Home,
    config: &Config,
    store: &mut Store,
    work: &Work,
    mut run: launch::Launched,
    mut s: Session,
    log: &mut RunLog,
) -> Result<Ended> {
    let status = match run.guard.child() {
        Some(child) => wait_with_timeout(child, Duration::from_secs(15), &run.sb, log),
        None => None,
    };
    let runtime_ms = run.spawned.elapsed().as_millis();
    // Drain what is left (final lines); the readers end with the pipes.
    s.drain(store, &run, log)?;
    // The client exiting by itself means the container ended and `--rm` removed it.
    let gone = !s.intervened && status.is_some_and(|s| s.code().is_some());
    run.guard.release(store, gone, log);
    let applied = apply_ipc(home, store, config, &work.group.folder)?;
    if applied > 0 {
        log.line(format!("applied {applied} IPC request(s) after exit"));
    }
    let indexed =
        crate::steps::run_group::searcher::index_after_run(home, store, &work.group.folder);
    if !indexed.is_empty() {
        log.line(indexed);
    }
    let status = status.and_then(|s| s.code());
    let mut ended = std::mem::take(&mut s.ended);
    ended.exit_code = status;
    log.line(format!(
        "container exited with {status:?}; runtime process ran {} ms",
        runtime_ms
    ));
    ended.clean = status == Some(0) && !s.intervened && !s.fatal;
    if !ended.clean && ended.error.is_none() {
        ended.error = Some(exit_error(status, &s.stderr_tail));
    }
    sandbox::cleanup(run.sb, log);
    // The proxy is shut: merge its last events, then write the totals.
    let _ = run.merged.recv_timeout(Duration::from_secs(2));
    run.usage.finish();
    run.rows
        .write(&store.conn, &work.group.folder, work.run.id, log, true)?;
    Ok(ended)
}

/// Apply the group's pending IPC requests; returns how many files were handled (or asked about:
/// a new approval card is outbox work too).
fn apply_ipc(home: &Home, store: &mut Store, config: &Config, folder: &str) -> Result<usize> {
    let r = crate::steps::ipc::apply_group(home, store, config, folder)?;
    Ok(r.applied + r.rejected + r.asked)
}

/// Log what the agent printed besides protocol lines.
fn on_output(o: Output, stderr_tail: &mut VecDeque<String>, log: &mut RunLog) {
    match o {
        Output::Junk { head, len } => log.line(format!(
            "protocol error: agent printed a non-protocol line ({len} bytes): {head}"
        )),
        Output::Oversized { len } => log.line(format!(
            "protocol error: agent printed a line of {len} bytes, over the {} MiB limit; it was dropped unread",
            agent_io::MAX_PROTOCOL_LINE >> 20
        )),
        Output::Stderr { text, dropped } => {
            if dropped > 0 {
                log.line(format!(
                    "agent: {text} … ({dropped} more bytes of this line dropped)"
                ));
            } else {
                log.line(format!("agent: {text}"));
            }
            if stderr_tail.len() == STDERR_TAIL {
                stderr_tail.pop_front();
            }
            // The run's error quotes these, and it is printed and stored: escaped, like the log.
            stderr_tail.push_back(crate::infra::output::clip(
                &super::log::escape(&text),
                STDERR_TAIL_CHARS,
            ));
        }
        Output::Line(_) | Output::StdoutClosed | Output::Wake => {}
    }
}

/// The run's error when the container failed without saying why.
fn exit_error(status: Option<i32>, stderr_tail: &VecDeque<String>) -> String {
    let tail: Vec<&str> = stderr_tail
        .iter()
        .rev()
        .take(3)
        .map(String::as_str)
        .collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
    match status {
        // docker and podman exit 125 when they could not start the container at all.
        Some(125) => format!(
            "the container runtime could not start the container ({tail}); check the image with `claw image build` and the runtime with `claw doctor`"
        ),
        Some(c) if tail.is_empty() => format!("container exited with code {c}"),
        Some(c) => format!("container exited with code {c}: {tail}"),
        None => format!(
            "container was killed by a signal{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ),
    }
}

fn wait_with_timeout(
    child: &mut Child,
    limit: Duration,
    sb: &sandbox::Sandbox,
    log: &mut RunLog,
) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() > deadline => {
                log.line("runtime client did not exit: killing it");
                sandbox::stop(sb, log);
                let _ = child.kill();
                return child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return None,
        }
    }
}
