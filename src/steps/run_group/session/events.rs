//! The running session as a small state machine: one handler per event (an agent line, other
//! output, a poll for messages and IPC requests) and one check per limit (disk, wall clock, idle,
//! close grace). Each handler changes only the session's state and the store.

use anyhow::Result;
use std::collections::VecDeque;
use std::process::ChildStdin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::launch::Launched;
use super::{Ended, on_output};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::protocol::{AgentLine, HostLine};
use crate::infra::secrets::Secrets;
use crate::infra::store::{Store, groups, messages, outbox, runs};
use crate::steps::run_group::agent_io::send;
use crate::steps::run_group::handoff::Handoff;
use crate::steps::run_group::log::RunLog;
use crate::steps::run_group::observer::Observer;
use crate::steps::run_group::{Work, disk, sandbox};

/// How often the loop polls for new messages and IPC requests when nothing wakes it.
const POLL: Duration = Duration::from_millis(1000);
/// How long a container gets to exit after `close` before it is stopped.
const CLOSE_GRACE: Duration = Duration::from_secs(20);

/// Everything the loop knows between events.
pub struct Session<'w> {
    work: &'w Work,
    pub ended: Ended,
    /// The agent reported a fatal error.
    pub fatal: bool,
    /// run-group stopped or killed the container (timeout, close grace, disk limit).
    pub intervened: bool,
    pub stderr_tail: VecDeque<String>,
    stdin: Option<ChildStdin>,
    idle_since: Option<Instant>,
    closing_since: Option<Instant>,
    last_poll: Instant,
    observer: Observer,
    handoff: Handoff,
    typing: Typing,
    timeout: Duration,
    configured_idle: Duration,
}

impl<'w> Session<'w> {
    /// The state right after the start line was sent.
    pub fn new(
        home: &Home,
        config: &Config,
        secrets: &Secrets,
        work: &'w Work,
        stdin: ChildStdin,
    ) -> Session<'w> {
        let mut typing = Typing::new(config, secrets, &work.chat_id);
        typing.pulse();
        Session {
            work,
            ended: Ended {
                handed: work.handed,
                ..Default::default()
            },
            fatal: false,
            intervened: false,
            stderr_tail: VecDeque::new(),
            stdin: Some(stdin),
            idle_since: None,
            closing_since: None,
            last_poll: Instant::now(),
            observer: Observer::new(work.observer.clone()),
            handoff: Handoff::new(home, config, secrets),
            typing,
            timeout: Duration::from_secs(
                work.group
                    .config
                    .timeout_secs
                    .unwrap_or(config.limits.timeout_secs),
            ),
            configured_idle: Duration::from_secs(config.limits.idle_secs),
        }
    }

    /// A protocol line from the agent.
    pub fn on_line(
        &mut self,
        line: AgentLine,
        store: &mut Store,
        run: &Launched,
        log: &mut RunLog,
    ) -> Result<()> {
        if matches!(line, AgentLine::Progress { .. }) {
            self.typing.pulse();
        }
        if self.record_line(line, store, log)? {
            self.idle_since = Some(Instant::now());
            // Messages that came during the turn are fed now, not at the next poll.
            run.woken.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// After every event: audit rows, then messages and IPC requests when woken or due.
    pub fn poll(
        &mut self,
        home: &Home,
        config: &Config,
        store: &mut Store,
        run: &Launched,
        log: &mut RunLog,
    ) -> Result<()> {
        let work = self.work;
        self.observer.retry();
        run.rows
            .write(&store.conn, &work.group.folder, work.run.id, log, false)?;
        if !run.woken.swap(false, Ordering::AcqRel) && self.last_poll.elapsed() < POLL {
            return Ok(());
        }
        self.last_poll = Instant::now();
        let applied = super::apply_ipc(home, store, config, &work.group.folder)?;
        if applied > 0 {
            log.line(format!("applied {applied} IPC request(s) from the agent"));
            self.handoff.outbox_changed(store)?;
        }
        // Only between turns: each line fed then starts exactly one turn, whose result answers
        // everything handed so far. Fed mid-turn, an agent may take a message into this turn or
        // the next; a result would then move the cursor past a message not yet answered, and a
        // run that died before the next result would lose it.
        if self.closing_since.is_none()
            && work.task.is_none()
            && self.idle_since.is_some()
            && let Some(s) = self.stdin.as_mut()
            && feed_new_messages(store, config, work, &mut self.ended, s, log)?
        {
            self.idle_since = None;
        }
        Ok(())
    }

    /// The group's folders passed the disk limit while it ran: stop it and tell the chat.
    pub fn check_disk(
        &mut self,
        store: &Store,
        run: &mut Launched,
        log: &mut RunLog,
    ) -> Result<()> {
        if self.intervened {
            return Ok(());
        }
        let Some(over) = run.disk_watch.passed() else {
            return Ok(());
        };
        self.intervened = true;
        log.line(format!(
            "disk limit: the group's folders {}: removing the container",
            over.describe()
        ));
        self.ended.error = Some(format!("stopped: the group's folders {}", over.describe()));
        self.stdin = None;
        run.guard.kill_now(log);
        tell_chat_stopped(store, self.work, &over, log)?;
        self.ended.notice_sent = true;
        Ok(())
    }

    /// The wall-clock limit: stop the container.
    pub fn check_timeout(&mut self, run: &mut Launched, log: &mut RunLog) {
        if self.intervened || run.spawned.elapsed() <= self.timeout {
            return;
        }
        self.intervened = true;
        log.line(format!(
            "wall-clock timeout of {}s reached: stopping the container",
            self.timeout.as_secs()
        ));
        self.ended.error = Some(format!("timed out after {}s", self.timeout.as_secs()));
        self.stdin = None;
        stop(run, log);
    }

    /// Idle long enough after a turn (or at once when asked to close when idle): send `close`.
    pub fn check_idle(&mut self, log: &mut RunLog) {
        let idle_limit = if self.work.close_when_idle.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            self.configured_idle
        };
        if self.closing_since.is_some() || self.idle_since.is_none_or(|t| t.elapsed() < idle_limit)
        {
            return;
        }
        log.line(format!("idle for {}s: closing", idle_limit.as_secs()));
        if let Some(mut s) = self.stdin.take() {
            send(&mut s, &HostLine::Close, log);
        }
        self.closing_since = Some(Instant::now());
    }

    /// An agent that does not exit after `close` is stopped.
    pub fn check_close_grace(&mut self, run: &mut Launched, log: &mut RunLog) {
        if self.intervened
            || self
                .closing_since
                .is_none_or(|t| t.elapsed() <= CLOSE_GRACE)
        {
            return;
        }
        log.line("agent did not exit after close: stopping the container");
        self.intervened = true;
        self.ended
            .error
            .get_or_insert_with(|| "agent did not exit after close".into());
        stop(run, log);
    }

    /// Lines left in the pipes once the container is gone.
    pub fn drain(&mut self, store: &mut Store, run: &Launched, log: &mut RunLog) -> Result<()> {
        while let Ok(ev) = run.rx.try_recv() {
            match ev {
                super::Output::Line(line) => {
                    self.record_line(line, store, log)?;
                }
                super::Output::StdoutClosed => {}
                other => on_output(other, &mut self.stderr_tail, log),
            }
        }
        Ok(())
    }

    /// Stop writing to the agent (its stdin closes).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Store what one agent line means; true when it ended a turn.
    fn record_line(
        &mut self,
        line: AgentLine,
        store: &mut Store,
        log: &mut RunLog,
    ) -> Result<bool> {
        let work = self.work;
        self.observer.see(&line);
        match line {
            AgentLine::Result { text } => {
                let clean = crate::rules::prompt::strip_internal(&text);
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
                crate::infra::output::clip(&detail, 200)
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
                return Ok(true);
            }
            AgentLine::Error { message, fatal } => {
                log.line(format!(
                    "agent error{}: {message}",
                    if fatal { " (fatal)" } else { "" }
                ));
                if fatal {
                    self.fatal = true;
                    self.ended.error = Some(crate::infra::output::clip(
                        &crate::steps::run_group::log::escape(&message),
                        1000,
                    ));
                }
            }
        }
        Ok(false)
    }
}

/// Stop the container through the runtime, and kill its client.
fn stop(run: &mut Launched, log: &mut RunLog) {
    sandbox::stop(&run.sb, log);
    if let Some(c) = run.guard.child() {
        let _ = c.kill();
    }
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
    if new.is_empty() || !crate::rules::pending::decide(&work.group, &new).runnable {
        return Ok(false);
    }
    let last = new.last().map(|m| m.seq).unwrap_or(after);
    let seqs: Vec<i64> = new.iter().map(|m| m.seq).collect();
    let media = crate::infra::store::attachments::for_messages(&store.conn, &seqs)?;
    send(
        stdin,
        &HostLine::Message {
            text: crate::rules::prompt::messages_with_media(&new, &media),
            images: crate::media::images_for_model(config, &work.group, &media),
        },
        log,
    );
    runs::set_seq_range(&store.conn, work.run.id, new[0].seq, last)?;
    ended.handed = Some(last);
    log.line(format!("fed {} new message(s) up to seq {last}", new.len()));
    Ok(true)
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
