//! The container session: start the container, speak the JSONL protocol, feed follow-up
//! messages, apply the group's IPC requests as they appear, and enforce the idle and wall-clock
//! limits. Results go to the outbox the moment they arrive, so a later crash cannot lose them.

use anyhow::Result;
use std::collections::VecDeque;
use std::io::Write;
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::time::{Duration, Instant};

use super::agent_io::{self, Output};
use super::container::{self, Guard};
use super::disk;
use super::handoff::Handoff;
use super::log::RunLog;
use super::observer::Observer;
use super::proxy_rows::Rows;
use super::{Work, hooks, sandbox};
use crate::config::Config;
use crate::paths::Home;
use crate::protocol::{AgentLine, HostLine, Start};
use crate::proxy::ProxyEvent;
use crate::secrets::Secrets;
use crate::store::{Store, audit, groups, marks, messages, outbox, runs};

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

/// How often the loop wakes to poll for new messages and IPC requests.
const TICK: Duration = Duration::from_millis(250);
const POLL: Duration = Duration::from_millis(1000);
/// How long a container gets to exit after `close` before it is stopped.
const CLOSE_GRACE: Duration = Duration::from_secs(20);
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
    wake: &mut Option<crate::wake::Wake>,
    log: &mut RunLog,
) -> Result<Ended> {
    let folder = &work.group.folder;
    container::remove_leftovers(store, folder, log)?;
    // No container of this group is alive now, so a half-written request has a dead writer.
    match crate::untrusted::clear_abandoned_requests(home, folder, 10_000) {
        Ok(0) => {}
        Ok(n) => log.line(format!(
            "removed {n} half-written IPC request file(s) a dead container left"
        )),
        Err(e) => log.line(format!("could not clear half-written IPC files: {e}")),
    }
    let limit = disk::Limit::for_group(config, &work.group);
    let dirs = disk::dirs(home, &work.group);
    let measured = disk::measure(&dirs, &limit);
    log.line(format!(
        "disk: {} KiB in {} files and folders (limit {} MiB, {} files); measured in {} ms",
        measured.usage.bytes >> 10,
        measured.usage.entries,
        limit.mb,
        limit.files,
        measured.took.as_millis()
    ));
    if let Some(over) = disk::over(&measured, &limit) {
        return refuse_over_disk(store, work, &over, log);
    }
    // Within the limit again: the next refusal is news to the chat.
    if marks::get(&store.conn, &refused_mark(folder))?.is_some() {
        marks::clear(&store.conn, &refused_mark(folder))?;
    }
    hooks::write_snapshots(home, store, &work.group)?;
    let rows = Rows::new();
    let (ptx, prx) = mpsc::channel::<ProxyEvent>();
    // Usage is written and budgets kept current as events pass, before they are aggregated.
    let (usage, prx) = super::usage::start(home, config, work, prx, log)?;
    let merged = rows.merge_from(prx);
    let sb = sandbox::prepare(home, config, secrets, store, work, ptx, usage.meter(), log)?;
    log.line(format!("command: {}", sb.argv.join(" ")));
    // From here every return removes the container: the guard is dropped before the sandbox.
    let mut guard = Guard::arm(
        home,
        store,
        sb.rt.kind,
        &sb.name,
        work,
        container::lifetime(config, &work.group),
        log,
    )?;
    let spawned = Instant::now();
    let (mut stdin, stdout, stderr) = guard.spawn(&sb.argv)?;
    audit::record(
        &store.conn,
        Some(folder),
        Some(work.run.id),
        "container.start",
        serde_json::json!({"name": sb.name, "image": config.runtime.image, "network": "none", "mounts": sb.mount_summary, "pid": guard.child().map(|c| c.id())}),
    )?;
    let (tx, rx) = mpsc::sync_channel::<Output>(agent_io::SLOTS);
    let woken = Arc::new(AtomicBool::new(false));
    if let Some(w) = wake.as_mut() {
        let (tx, woken) = (tx.clone(), woken.clone());
        w.listen(move || {
            woken.store(true, Ordering::Release);
            // Full: the loop is busy and sees the flag on its next turn.
            !matches!(
                tx.try_send(Output::Wake),
                Err(TrySendError::Disconnected(_))
            )
        });
    }
    agent_io::spawn_readers(stdout, stderr, tx);
    let disk_watch = disk::Watch::start(dirs, limit, disk::interval(measured.took));

    let model = sandbox::model_settings(config, &work.group);
    let vision = crate::media::supports_vision(&config.models, &model.model);
    let start = HostLine::Start(Box::new(Start {
        prompt: work.prompt.clone(),
        group_folder: folder.clone(),
        chat_id: work.chat_id.clone(),
        is_main: work.group.is_main,
        is_task: work.task.is_some(),
        task_id: work.task.as_ref().map(|t| t.id),
        session_id: work.session_id.clone(),
        assistant_name: config.assistant_name.clone(),
        channel: crate::channels::channel_name(crate::store::messages::channel_of(&work.chat_id))
            .to_string(),
        model,
        limits: crate::protocol::AgentLimits {
            max_steps: config.limits.max_steps,
            ..Default::default()
        },
        images: work.images.clone(),
        vision,
    }));
    send(&mut stdin, &start, log);
    log.line(format!(
        "sent start line ({} prompt bytes) after {:.0} ms",
        work.prompt.len(),
        spawned.elapsed().as_secs_f64() * 1000.0
    ));

    let timeout = Duration::from_secs(
        work.group
            .config
            .timeout_secs
            .unwrap_or(config.limits.timeout_secs),
    );
    let configured_idle = Duration::from_secs(config.limits.idle_secs);
    let mut st = State {
        ended: Ended {
            handed: work.handed,
            ..Default::default()
        },
        fatal: false,
        turn_done: false,
        observer: Observer::new(work.observer.clone()),
        handoff: Handoff::new(home, config, secrets),
    };
    let mut stdin = Some(stdin);
    let mut idle_since: Option<Instant> = None;
    let mut closing_since: Option<Instant> = None;
    let mut last_poll = Instant::now();
    let mut typing = Typing::new(config, secrets, &work.chat_id);
    typing.pulse();
    // run-group stopped or killed the container (timeout, close grace, disk limit).
    let mut intervened = false;
    let mut stderr_tail: VecDeque<String> = VecDeque::new();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Output::Line(line)) => {
                if matches!(line, AgentLine::Progress { .. }) {
                    typing.pulse();
                }
                st.on_line(line, store, work, log)?;
                if st.turn_done {
                    st.turn_done = false;
                    idle_since = Some(Instant::now());
                    // Messages that came during the turn are fed now, not at the next poll.
                    woken.store(true, Ordering::Release);
                }
            }
            Ok(Output::StdoutClosed) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(other) => on_output(other, &mut stderr_tail, log),
            Err(RecvTimeoutError::Timeout) => {}
        }
        st.observer.retry();
        rows.write(&store.conn, folder, work.run.id, log, false)?;
        if woken.swap(false, Ordering::AcqRel) || last_poll.elapsed() >= POLL {
            last_poll = Instant::now();
            let applied = hooks::apply_ipc(home, store, config, &work.group)?;
            if applied > 0 {
                log.line(format!("applied {applied} IPC request(s) from the agent"));
                st.handoff.outbox_changed(store)?;
            }
            // Only between turns: each line fed then starts exactly one turn, whose result
            // answers everything handed so far. Fed mid-turn, an agent may take a message into
            // this turn or the next; a result would then move the cursor past a message not yet
            // answered, and a run that died before the next result would lose it.
            if closing_since.is_none()
                && work.task.is_none()
                && idle_since.is_some()
                && let Some(s) = stdin.as_mut()
                && feed_new_messages(store, config, work, &mut st.ended, s, log)?
            {
                idle_since = None;
            }
        }
        if !intervened && let Some(over) = disk_watch.passed() {
            intervened = true;
            log.line(format!(
                "disk limit: the group's folders {}: removing the container",
                over.describe()
            ));
            st.ended.error = Some(format!("stopped: the group's folders {}", over.describe()));
            stdin = None;
            guard.kill_now(log);
            tell_chat_stopped(store, work, &over, log)?;
            st.ended.notice_sent = true;
        }
        if !intervened && spawned.elapsed() > timeout {
            intervened = true;
            log.line(format!(
                "wall-clock timeout of {}s reached: stopping the container",
                timeout.as_secs()
            ));
            st.ended.error = Some(format!("timed out after {}s", timeout.as_secs()));
            stdin = None;
            sandbox::stop(&sb, log);
            if let Some(c) = guard.child() {
                let _ = c.kill();
            }
        }
        let idle_limit = if work
            .close_when_idle
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Duration::ZERO
        } else {
            configured_idle
        };
        if closing_since.is_none() && idle_since.is_some_and(|t| t.elapsed() >= idle_limit) {
            log.line(format!("idle for {}s: closing", idle_limit.as_secs()));
            if let Some(mut s) = stdin.take() {
                send(&mut s, &HostLine::Close, log);
            }
            closing_since = Some(Instant::now());
        }
        if closing_since.is_some_and(|t| t.elapsed() > CLOSE_GRACE) && !intervened {
            log.line("agent did not exit after close: stopping the container");
            intervened = true;
            st.ended
                .error
                .get_or_insert_with(|| "agent did not exit after close".into());
            sandbox::stop(&sb, log);
            if let Some(c) = guard.child() {
                let _ = c.kill();
            }
        }
    }
    drop(stdin);
    let status = match guard.child() {
        Some(child) => wait_with_timeout(child, Duration::from_secs(15), &sb, log),
        None => None,
    };
    let runtime_ms = spawned.elapsed().as_millis();
    // Drain what is left (final lines); the readers end with the pipes.
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Output::Line(line) => st.on_line(line, store, work, log)?,
            Output::StdoutClosed => {}
            other => on_output(other, &mut stderr_tail, log),
        }
    }
    // The client exiting by itself means the container ended and `--rm` removed it.
    let gone = !intervened && status.is_some_and(|s| s.code().is_some());
    guard.release(store, gone, log);
    let applied = hooks::apply_ipc(home, store, config, &work.group)?;
    if applied > 0 {
        log.line(format!("applied {applied} IPC request(s) after exit"));
    }
    let status = status.and_then(|s| s.code());
    st.ended.exit_code = status;
    log.line(format!(
        "container exited with {status:?}; runtime process ran {} ms",
        runtime_ms
    ));
    st.ended.clean = status == Some(0) && !intervened && !st.fatal;
    if !st.ended.clean && st.ended.error.is_none() {
        st.ended.error = Some(exit_error(status, &stderr_tail));
    }
    sandbox::cleanup(sb, log);
    // The proxy is shut: merge its last events, then write the totals.
    let _ = merged.recv_timeout(Duration::from_secs(2));
    usage.finish();
    rows.write(&store.conn, folder, work.run.id, log, true)?;
    Ok(st.ended)
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
            stderr_tail.push_back(crate::output::clip(
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

fn refused_mark(folder: &str) -> String {
    format!("disk.refused:{folder}")
}

/// The group's folders are over the limit before the run: do not start; tell the chat once per
/// [`disk::NOTICE_WINDOW`].
fn refuse_over_disk(
    store: &mut Store,
    work: &Work,
    over: &disk::Over,
    log: &mut RunLog,
) -> Result<Ended> {
    let why = over.describe();
    log.line(format!(
        "not starting the container: the group's folders {why}"
    ));
    let tx = store.write()?;
    let window = disk::NOTICE_WINDOW.as_millis() as i64;
    if marks::claim(
        &tx,
        &refused_mark(&work.group.folder),
        crate::time::now_ms(),
        window,
    )? {
        outbox::enqueue(
            &tx,
            &work.chat_id,
            &disk::refused_notice(over, &work.group),
            &format!("run:{}:disk", work.run.id),
        )?;
        log.line("told the chat");
    } else {
        log.line("the chat was told recently; not again");
    }
    tx.commit()?;
    Ok(Ended {
        error: Some(format!("not started: the group's folders {why}")),
        handed: work.handed,
        notice_sent: true,
        ..Default::default()
    })
}

/// The running agent passed the disk limit and was stopped: tell the chat.
fn tell_chat_stopped(
    store: &Store,
    work: &Work,
    over: &disk::Over,
    log: &mut RunLog,
) -> Result<()> {
    outbox::enqueue(
        &store.conn,
        &work.chat_id,
        &disk::stopped_notice(over, &work.group),
        &format!("run:{}:disk", work.run.id),
    )?;
    log.line("told the chat the run was stopped");
    Ok(())
}

struct State {
    ended: Ended,
    fatal: bool,
    turn_done: bool,
    observer: Observer,
    handoff: Handoff,
}

impl State {
    fn on_line(
        &mut self,
        line: AgentLine,
        store: &mut Store,
        work: &Work,
        log: &mut RunLog,
    ) -> Result<()> {
        self.observer.see(&line);
        match line {
            AgentLine::Result { text } => {
                let clean = crate::prompt::strip_internal(&text);
                log.line(format!(
                    "result: {} bytes ({} after stripping internal spans)",
                    text.len(),
                    clean.len()
                ));
                let tx = store.write()?;
                if !clean.is_empty() {
                    outbox::enqueue(&tx, &work.chat_id, &clean, &format!("run:{}", work.run.id))?;
                    runs::mark_output_sent(&tx, work.run.id)?;
                }
                // Answered: these messages must never be handed again, even if the run fails
                // later. Messages are fed only between turns, so this turn read all of them.
                if work.task.is_none()
                    && let Some(h) = self.ended.handed
                {
                    groups::advance_cursor(&tx, &work.group.folder, h)?;
                }
                tx.commit()?;
                if !clean.is_empty() {
                    self.handoff.result(&work.chat_id);
                }
                self.ended.acked = self.ended.handed;
                self.ended.last_result = Some(clean);
            }
            AgentLine::Session { id } => {
                log.line(format!("session {id}"));
                if work.keep_session {
                    groups::set_session(&store.conn, &work.group.folder, &id)?;
                }
            }
            AgentLine::Progress { tool, detail } => log.line(format!(
                "tool {tool}: {}",
                crate::output::clip(&detail, 200)
            )),
            AgentLine::Idle { usage } => {
                if let Some(u) = usage {
                    // What the agent says it used, for the run's row and log; what is billed and
                    // budgeted is what the proxy read from the upstream (the `usage` table).
                    runs::add_usage(&store.conn, work.run.id, u.prompt_tokens(), u.output_tokens)?;
                    log.line(format!(
                        "turn done (agent's count): {} input ({} uncached, {} cache read, {} cache write) / {} output tokens",
                        u.prompt_tokens(),
                        u.input_tokens,
                        u.cache_read_tokens,
                        u.cache_write_tokens,
                        u.output_tokens
                    ));
                } else {
                    log.line("turn done");
                }
                self.ended.acked = self.ended.handed;
                self.turn_done = true;
            }
            AgentLine::Error { message, fatal } => {
                log.line(format!(
                    "agent error{}: {message}",
                    if fatal { " (fatal)" } else { "" }
                ));
                if fatal {
                    self.fatal = true;
                    self.ended.error =
                        Some(crate::output::clip(&super::log::escape(&message), 1000));
                }
            }
        }
        Ok(())
    }
}

fn send(stdin: &mut ChildStdin, line: &HostLine, log: &mut RunLog) {
    if let Err(e) = stdin
        .write_all(line.to_line().as_bytes())
        .and_then(|_| stdin.flush())
    {
        log.line(format!("could not write to the agent's stdin: {e}"));
    }
}

/// Hand messages that arrived since the last handed seq to the running agent, if they may run.
fn feed_new_messages(
    store: &mut Store,
    config: &Config,
    work: &Work,
    ended: &mut Ended,
    stdin: &mut ChildStdin,
    log: &mut RunLog,
) -> Result<bool> {
    let after = ended.handed.unwrap_or(0);
    let new = messages::since(
        &store.conn,
        &work.group.chat_id,
        after,
        config.limits.prompt_messages,
    )?;
    if new.is_empty() || !crate::pending::decide(&work.group, &new).runnable {
        return Ok(false);
    }
    let last = new.last().map(|m| m.seq).unwrap_or(after);
    let seqs: Vec<i64> = new.iter().map(|m| m.seq).collect();
    let media = crate::store::attachments::for_messages(&store.conn, &seqs)?;
    send(
        stdin,
        &HostLine::Message {
            text: crate::prompt::messages_with_media(&new, &media),
            images: crate::media::images_for_model(config, &work.group, &media),
        },
        log,
    );
    runs::set_seq_range(&store.conn, work.run.id, new[0].seq, last)?;
    ended.handed = Some(last);
    log.line(format!("fed {} new message(s) up to seq {last}", new.len()));
    Ok(true)
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

/// The chat's "typing…" indicator while the agent works: at most one request every 4 s (Telegram
/// shows it for 5 s), sent from a short-lived thread so a slow channel never delays the run.
struct Typing {
    config: Config,
    secrets: Secrets,
    chat: String,
    last: Option<Instant>,
}

impl Typing {
    fn new(config: &Config, secrets: &Secrets, chat: &str) -> Typing {
        Typing {
            config: config.clone(),
            secrets: secrets.clone(),
            chat: chat.to_string(),
            last: None,
        }
    }

    fn pulse(&mut self) {
        if !self.chat.starts_with("tg:")
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(4))
        {
            return;
        }
        self.last = Some(Instant::now());
        let (config, secrets, chat) =
            (self.config.clone(), self.secrets.clone(), self.chat.clone());
        std::thread::spawn(move || crate::channels::typing(&config, &secrets, &chat));
    }
}
