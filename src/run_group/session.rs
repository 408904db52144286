//! The container session: start the container, speak the JSONL protocol, feed follow-up
//! messages, apply the group's IPC requests as they appear, and enforce the idle and wall-clock
//! limits. Results go to the outbox the moment they arrive, so a later crash cannot lose them.

use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::log::RunLog;
use super::{Work, hooks, sandbox};
use crate::config::Config;
use crate::paths::Home;
use crate::protocol::{AgentLine, HostLine, Start};
use crate::proxy::ProxyEvent;
use crate::secrets::Secrets;
use crate::store::{Store, audit, groups, messages, outbox, runs};

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
}

enum Event {
    Line(AgentLine),
    Junk(String),
    StdoutClosed,
    Stderr(String),
    Proxy(ProxyEvent),
}

/// How often the loop wakes to poll for new messages and IPC requests.
const TICK: Duration = Duration::from_millis(250);
const POLL: Duration = Duration::from_millis(1000);
/// How long a container gets to exit after `close` before it is stopped.
const CLOSE_GRACE: Duration = Duration::from_secs(20);

/// Run the container for `work` until it exits.
pub fn execute(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    store: &mut Store,
    work: &Work,
    log: &mut RunLog,
) -> Result<Ended> {
    let folder = &work.group.folder;
    hooks::write_snapshots(home, store, &work.group)?;
    let (tx, rx) = mpsc::channel::<Event>();
    let (ptx, prx) = mpsc::channel::<ProxyEvent>();
    let sb = sandbox::prepare(home, config, secrets, store, work, ptx, log)?;
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for e in prx {
                if tx.send(Event::Proxy(e)).is_err() {
                    break;
                }
            }
        });
    }
    log.line(format!("command: {}", sb.argv.join(" ")));
    let spawned = Instant::now();
    let mut child = Command::new(&sb.argv[0])
        .args(&sb.argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            crate::error::Coded::err(
                crate::error::Code::Runtime,
                format!(
                    "cannot start {}: {e}; is the container runtime installed? try `claw doctor`",
                    sb.argv[0]
                ),
            )
        })?;
    audit::record(
        &store.conn,
        Some(folder),
        Some(work.run.id),
        "container.start",
        serde_json::json!({"name": sb.name, "image": config.runtime.image, "network": "none", "mounts": sb.mount_summary, "pid": child.id()}),
    )?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    spawn_readers(stdout, stderr, tx.clone());
    drop(tx);

    let model = sandbox::model_settings(config, &work.group);
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
        ..Default::default()
    };
    let mut stdin = Some(stdin);
    let mut idle_since: Option<Instant> = None;
    let mut closing_since: Option<Instant> = None;
    let mut last_poll = Instant::now();
    let mut typing = Typing::new(config, secrets, &work.chat_id);
    typing.pulse();
    let mut timed_out = false;
    let mut stderr_tail: VecDeque<String> = VecDeque::new();
    let mut stdout_open = true;
    while stdout_open {
        match rx.recv_timeout(TICK) {
            Ok(Event::Line(line)) => {
                if let Some(o) = &work.observer {
                    let _ = o.send(line.clone());
                }
                if matches!(line, AgentLine::Progress { .. }) {
                    typing.pulse();
                }
                st.on_line(line, store, work, log)?;
                if st.turn_done {
                    st.turn_done = false;
                    idle_since = Some(Instant::now());
                }
            }
            Ok(Event::Junk(l)) => log.line(format!(
                "protocol error: agent printed a non-protocol line: {}",
                crate::output::clip(&l, 200)
            )),
            Ok(Event::StdoutClosed) => stdout_open = false,
            Ok(Event::Stderr(l)) => {
                log.line(format!("agent: {l}"));
                if stderr_tail.len() == 40 {
                    stderr_tail.pop_front();
                }
                stderr_tail.push_back(l);
            }
            Ok(Event::Proxy(e)) => record_proxy(store, work, e, log)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => stdout_open = false,
        }
        if !stdout_open {
            break;
        }
        if last_poll.elapsed() >= POLL {
            last_poll = Instant::now();
            let applied = hooks::apply_ipc(home, store, config, &work.group)?;
            if applied > 0 {
                log.line(format!("applied {applied} IPC request(s) from the agent"));
            }
            if closing_since.is_none()
                && work.task.is_none()
                && let Some(s) = stdin.as_mut()
                && feed_new_messages(store, config, work, &mut st.ended, s, log)?
            {
                idle_since = None;
            }
        }
        if !timed_out && spawned.elapsed() > timeout {
            timed_out = true;
            log.line(format!(
                "wall-clock timeout of {}s reached: stopping the container",
                timeout.as_secs()
            ));
            st.ended.error = Some(format!("timed out after {}s", timeout.as_secs()));
            stdin = None;
            sandbox::stop(&sb, log);
            let _ = child.kill();
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
        if closing_since.is_some_and(|t| t.elapsed() > CLOSE_GRACE) && !timed_out {
            log.line("agent did not exit after close: stopping the container");
            timed_out = true;
            st.ended
                .error
                .get_or_insert_with(|| "agent did not exit after close".into());
            sandbox::stop(&sb, log);
            let _ = child.kill();
        }
    }
    drop(stdin);
    let status = wait_with_timeout(&mut child, Duration::from_secs(15), &sb, log);
    let runtime_ms = spawned.elapsed().as_millis();
    // Drain what is left (late proxy events, final lines).
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Event::Line(line) => st.on_line(line, store, work, log)?,
            Event::Proxy(e) => record_proxy(store, work, e, log)?,
            Event::Stderr(l) => {
                log.line(format!("agent: {l}"));
                stderr_tail.push_back(l);
            }
            _ => {}
        }
    }
    let applied = hooks::apply_ipc(home, store, config, &work.group)?;
    if applied > 0 {
        log.line(format!("applied {applied} IPC request(s) after exit"));
    }
    st.ended.exit_code = status;
    log.line(format!(
        "container exited with {status:?}; runtime process ran {} ms",
        runtime_ms
    ));
    st.ended.clean = status == Some(0) && !timed_out && !st.fatal;
    if !st.ended.clean && st.ended.error.is_none() {
        let tail: Vec<&str> = stderr_tail
            .iter()
            .rev()
            .take(3)
            .map(String::as_str)
            .collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
        st.ended.error = Some(match status {
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
        });
    }
    sandbox::cleanup(sb, log);
    Ok(st.ended)
}

#[derive(Default)]
struct State {
    ended: Ended,
    fatal: bool,
    turn_done: bool,
}

impl State {
    fn on_line(
        &mut self,
        line: AgentLine,
        store: &mut Store,
        work: &Work,
        log: &mut RunLog,
    ) -> Result<()> {
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
                // Answered: these messages must never be handed again, even if the run fails later.
                if work.task.is_none()
                    && let Some(h) = self.ended.handed
                {
                    groups::advance_cursor(&tx, &work.group.folder, h)?;
                }
                tx.commit()?;
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
                    runs::add_usage(&store.conn, work.run.id, u.input_tokens, u.output_tokens)?;
                    log.line(format!(
                        "turn done: {} input / {} output tokens",
                        u.input_tokens, u.output_tokens
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
                    self.ended.error = Some(message);
                }
            }
        }
        Ok(())
    }
}

fn spawn_readers(
    stdout: std::process::ChildStdout,
    stderr: std::process::ChildStderr,
    tx: Sender<Event>,
) {
    let t1 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let ev = match serde_json::from_str::<AgentLine>(&line) {
                Ok(l) => Event::Line(l),
                Err(_) => Event::Junk(line),
            };
            if t1.send(ev).is_err() {
                return;
            }
        }
        let _ = t1.send(Event::StdoutClosed);
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(Event::Stderr(line)).is_err() {
                return;
            }
        }
    });
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
    send(
        stdin,
        &HostLine::Message {
            text: crate::prompt::messages(&new),
        },
        log,
    );
    runs::set_seq_range(&store.conn, work.run.id, new[0].seq, last)?;
    ended.handed = Some(last);
    log.line(format!("fed {} new message(s) up to seq {last}", new.len()));
    Ok(true)
}

fn record_proxy(store: &Store, work: &Work, e: ProxyEvent, log: &mut RunLog) -> Result<()> {
    let (kind, detail) = sandbox::proxy_audit(&e);
    log.line(format!("proxy: {kind} {detail}"));
    audit::record(
        &store.conn,
        Some(&work.group.folder),
        Some(work.run.id),
        kind,
        detail,
    )
}

fn wait_with_timeout(
    child: &mut Child,
    limit: Duration,
    sb: &sandbox::Sandbox,
    log: &mut RunLog,
) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.code(),
            Ok(None) if Instant::now() > deadline => {
                log.line("runtime client did not exit: killing it");
                sandbox::stop(sb, log);
                let _ = child.kill();
                return child.wait().ok().and_then(|s| s.code());
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
