//! `claw chat`: the terminal channel. Each line typed is ingested for the group's chat and run at
//! once in this process (no timer needed); the agent's tool use and replies are reported as they
//! happen. Replies are read from the outbox, so `send_message` requests show up too, and rows of
//! `cli:` chats are marked sent once printed (no other channel delivers them).

use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::infra::config::Config;
use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::protocol::AgentLine;
use crate::infra::secrets::Secrets;
use crate::infra::store::groups::Group;
use crate::infra::store::{Store, groups};

/// What the terminal shows while an exchange runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The agent is using a tool.
    Tool { tool: String, detail: String },
    /// A message for the chat.
    Reply(String),
    /// The agent reported a problem.
    Problem(String),
}

/// Refuse to start without the model key, before any container starts, naming the exact line to
/// add and the file to add it to (the proxy would otherwise answer every request with 401).
fn require_key(home: &Home, config: &Config, secrets: &Secrets, group: &Group) -> Result<()> {
    let provider = group
        .config
        .provider
        .as_deref()
        .unwrap_or(&config.model.provider);
    let (key_env, example) = match provider {
        "openai" => (&config.providers.openai.key_env, "sk-…"),
        _ => (&config.providers.anthropic.key_env, "sk-ant-…"),
    };
    if secrets.get(key_env).is_some_and(|k| !k.trim().is_empty()) {
        return Ok(());
    }
    Err(Coded::err(
        Code::NotInitialised,
        format!(
            "no API key for {provider}: add the line `{key_env}={example}` to {} (keep it mode 600), \
             then run `claw chat` again{}",
            home.secrets().display(),
            if provider == "openai" {
                " (a local OpenAI-compatible server that needs no key still needs a placeholder value)"
            } else {
                ""
            }
        ),
    ))
}

/// A conversation with one group from the terminal.
pub struct Chat {
    home: Home,
    config: Config,
    secrets: Secrets,
    pub group: Group,
    run: Option<JoinHandle<Result<crate::steps::run_group::Outcome>>>,
    lines: Option<Receiver<AgentLine>>,
    /// Set: close the container as soon as the agent is idle (one-shot mode, or leaving).
    close: Arc<AtomicBool>,
}

impl Chat {
    /// Open a chat with a group (main when `folder` is None).
    pub fn open(
        home: &Home,
        config: Config,
        secrets: Secrets,
        folder: Option<&str>,
        one_shot: bool,
    ) -> Result<Chat> {
        let store = Store::open(home)?;
        let group = match folder {
            Some(f) => groups::get(&store.conn, f)?.ok_or_else(|| {
                Coded::err(
                    Code::Usage,
                    format!("no group `{f}`; see `claw group list`"),
                )
            })?,
            None => groups::main(&store.conn)?.ok_or_else(|| {
                Coded::err(
                    Code::NotInitialised,
                    "there is no main group: run `claw init`",
                )
            })?,
        };
        require_key(home, &config, &secrets, &group)?;
        Ok(Chat {
            home: home.clone(),
            config,
            secrets,
            group,
            run: None,
            lines: None,
            close: Arc::new(AtomicBool::new(one_shot)),
        })
    }

    /// Send one line and report events until the agent has answered it.
    pub fn exchange(&mut self, text: &str, ui: &mut dyn FnMut(Event)) -> Result<()> {
        let mut store = Store::open(&self.home)?;
        let before: i64 = store.conn.query_row(
            "SELECT coalesce(max(id), 0) FROM outbox WHERE chat_id = ?1",
            [&self.group.chat_id],
            |r| r.get(0),
        )?;
        let s = crate::steps::ingest::one_shot(
            &mut store,
            &self.group.chat_id,
            text,
            None,
            self.config.limits.max_message_bytes,
        )?;
        if let Some(r) = s.errors.first() {
            return Err(Coded::err(Code::Rejected, r.reason.clone()));
        }
        if s.answers > 0 {
            // `yes 42` answered an approval: the agent never sees it; show the acknowledgement.
            self.print_new(&store, before, ui)?;
            return Ok(());
        }
        let own_run = self.ensure_run()?;
        let deadline = Instant::now() + Duration::from_secs(self.config.limits.timeout_secs + 30);
        let mut printed = before;
        loop {
            let mut turn_over = false;
            if let Some(rx) = &self.lines {
                match rx.recv_timeout(Duration::from_millis(150)) {
                    Ok(AgentLine::Progress { tool, detail }) => ui(Event::Tool { tool, detail }),
                    Ok(AgentLine::Idle { .. }) => turn_over = true,
                    Ok(AgentLine::Error { message, .. }) => ui(Event::Problem(message)),
                    Ok(_) => {}
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        turn_over = true;
                        self.lines = None;
                    }
                }
            } else {
                std::thread::sleep(Duration::from_millis(150));
            }
            printed = self.print_new(&store, printed, ui)?;
            if self.run.as_ref().is_some_and(|h| h.is_finished()) {
                let h = self.run.take().expect("checked");
                self.lines = None;
                match h.join() {
                    Ok(Ok(o)) if o.status == "failed" => {
                        ui(Event::Problem(format!("the run failed: {}", o.detail)))
                    }
                    Ok(Err(e)) => ui(Event::Problem(format!("{e:#}"))),
                    _ => {}
                }
                turn_over = true;
            }
            // A run started elsewhere (a timer) answers through the outbox only.
            if !own_run && printed > before {
                turn_over = true;
            }
            if turn_over {
                self.print_new(&store, printed, ui)?;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Coded::err(
                    Code::Failure,
                    "no answer before the run's timeout; see `claw logs`",
                ));
            }
        }
    }

    /// Start a run-group in this process unless one is already serving the group.
    fn ensure_run(&mut self) -> Result<bool> {
        if self.run.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(true);
        }
        if crate::infra::lock::is_held(&self.home.group_lock(&self.group.folder))? {
            // Someone else's run will pick the message up (it watches the database).
            return Ok(false);
        }
        // Bounded: run-group drops progress lines while this view lags (see `Options::observer`).
        let (tx, rx) = mpsc::sync_channel(256);
        let (home, config, secrets, folder) = (
            self.home.clone(),
            self.config.clone(),
            self.secrets.clone(),
            self.group.folder.clone(),
        );
        let opts = crate::steps::run_group::Options {
            observer: Some(tx),
            close_when_idle: self.close.clone(),
            ..Default::default()
        };
        self.run = Some(std::thread::spawn(move || {
            crate::steps::run_group::run_group(&home, &config, &secrets, &folder, &opts)
        }));
        self.lines = Some(rx);
        Ok(true)
    }

    /// Report outbox rows for this chat newer than `after`; returns the newest id seen.
    fn print_new(&self, store: &Store, after: i64, ui: &mut dyn FnMut(Event)) -> Result<i64> {
        let mut stmt = store.conn.prepare_cached(
            "SELECT o.id, o.text, f.path FROM outbox o LEFT JOIN outbox_files f ON f.outbox_id = o.id
             WHERE o.chat_id = ?1 AND o.id > ?2 ORDER BY o.id",
        )?;
        let rows: Vec<(i64, String, Option<String>)> = stmt
            .query_map(rusqlite::params![self.group.chat_id, after], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut last = after;
        for (id, text, file) in rows {
            // A file the agent sent (`send_file`) is shown as the host copy's path.
            let text = match file {
                Some(path) if text.is_empty() => format!("[file: {path}]"),
                Some(path) => format!("[file: {path}] {text}"),
                None => text,
            };
            ui(Event::Reply(text));
            if self.group.chat_id.starts_with("cli:") {
                crate::infra::store::outbox::mark_shown(
                    &store.conn,
                    id,
                    crate::infra::time::now_ms(),
                )?;
            }
            last = id;
        }
        Ok(last)
    }

    /// End the conversation: let the container close and wait for the run to finish.
    pub fn finish(mut self) {
        self.close.store(true, Ordering::Relaxed);
        if let Some(h) = self.run.take() {
            let _ = h.join();
        }
    }
}
