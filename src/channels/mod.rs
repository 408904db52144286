//! Channels: how outbox rows leave. A channel is chosen by the chat id's prefix (`tg:`, `wa:`,
//! `sig:`, `cli:`, or any prefix configured with a send command).
//!
//! `Sender` is a trait because there are several real implementations (command, telegram, signal).

pub mod chat;
pub mod command;
pub mod signal;
pub mod telegram;
pub mod whatsapp;

use crate::infra::config::Config;
use crate::infra::secrets::Secrets;

/// The result of trying to send one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted by the channel, with its message id if it gave one.
    Sent(Option<String>),
    /// Not sent; retry later (after `retry_after_ms` if the channel said so).
    Failed {
        error: String,
        retry_after_ms: Option<i64>,
    },
}

/// What a channel's pure mapping made of one inbound event.
#[derive(Debug)]
pub enum Mapped {
    Message(Box<crate::steps::ingest::Inbound>),
    /// Nothing to store; the reason is for the log.
    Skip(String),
}

/// Something that can send text to a chat of one channel.
pub trait Sender {
    /// Send one message. Must not panic; every failure is an `Outcome::Failed`.
    fn send(&mut self, outbox_id: i64, chat_id: &str, text: &str) -> Outcome;

    /// Send a file (copied out by ipc-apply) with an optional caption. Channels without
    /// uploads say so; the row then fails with that reason instead of vanishing.
    fn send_file(
        &mut self,
        _outbox_id: i64,
        chat_id: &str,
        _caption: &str,
        file: &crate::media::outfile::OutFile,
    ) -> Outcome {
        Outcome::Failed {
            error: format!(
                "the channel of {chat_id} cannot send files yet; {} stays at {}",
                file.name,
                file.path.display()
            ),
            retry_after_ms: None,
        }
    }

    /// Send an approval card: `approval` is its id and nonce, for channels with buttons
    /// (Telegram); others send the text, which says how to answer by typing.
    fn send_card(
        &mut self,
        outbox_id: i64,
        chat_id: &str,
        text: &str,
        approval: (i64, &str),
    ) -> Outcome {
        let _ = approval;
        self.send(outbox_id, chat_id, text)
    }
}

/// Why a channel cannot be delivered by `claw deliver`.
pub fn sender_for(
    prefix: &str,
    config: &Config,
    home: &std::path::Path,
    secrets: &Secrets,
) -> Result<Box<dyn Sender>, String> {
    let name = crate::infra::store::messages::channel_name(prefix);
    if let Some(argv) = config
        .send_command(name)
        .or_else(|| config.send_command(prefix))
    {
        return Ok(Box::new(command::CommandSender::new(
            argv.to_vec(),
            home.to_path_buf(),
        )));
    }
    match name {
        "telegram" => {
            return telegram::Settings::load(config, secrets)
                .map(|s| Box::new(telegram::TelegramSender::new(&s)) as Box<dyn Sender>)
                .map_err(|e| e.to_string());
        }
        "signal" => {
            return signal::Settings::load(config, secrets)
                .map(|s| Box::new(signal::SignalSender::new(s)) as Box<dyn Sender>)
                .map_err(|e| e.to_string());
        }
        _ => {}
    }
    Err(match name {
        "whatsapp" => "WhatsApp rows are sent by `claw whatsapp run` (or a bridge using `claw outbox claim`), not by deliver".to_string(),
        "cli" => "terminal chats are printed by `claw chat`, not delivered".to_string(),
        _ => format!(
            "channel `{name}` has no sender: set `send_command` under [channels.{name}] in claw.toml, or run its bridge"
        ),
    })
}

/// The built-in channels `claw ingest --from` can poll.
pub const POLLABLE: [&str; 2] = ["telegram", "signal"];

/// What one poll of a built-in channel did.
pub struct Polled {
    pub summary: crate::steps::ingest::Summary,
    /// One human line: the channel's counts and the batch summary.
    pub line: String,
    /// The channel's whole report, for `--json`.
    pub report: serde_json::Value,
}

/// Poll the built-in channel `name` once (one of [`POLLABLE`]); telegram waits up to `wait`
/// seconds for the first update.
pub fn poll(
    home: &crate::infra::paths::Home,
    store: &mut crate::infra::store::Store,
    config: &Config,
    secrets: &Secrets,
    name: &str,
    wait: Option<u64>,
) -> anyhow::Result<Polled> {
    match name {
        "telegram" => {
            let r = telegram::poll(home, store, config, secrets, wait)?;
            Ok(Polled {
                line: format!(
                    "telegram: {} update(s), {}, skipped {}, notices {}, offset {}",
                    r.updates,
                    r.summary.line(),
                    r.skipped,
                    r.notices,
                    r.offset
                ),
                report: serde_json::to_value(&r)?,
                summary: r.summary,
            })
        }
        "signal" => {
            let r = signal::poll(home, store, config, secrets)?;
            Ok(Polled {
                line: format!(
                    "signal: {} line(s), {}, skipped {}, notices {}",
                    r.lines,
                    r.summary.line(),
                    r.skipped,
                    r.notices
                ),
                report: serde_json::to_value(&r)?,
                summary: r.summary,
            })
        }
        other => Err(crate::infra::error::Coded::err(
            crate::infra::error::Code::Usage,
            format!(
                "`{other}` cannot be polled: use one of {}",
                POLLABLE.join(", ")
            ),
        )),
    }
}

/// Show a typing indicator in a chat while a run is active. Best effort: channels without one
/// (or any failure) do nothing. Call it again every few seconds; Telegram's lasts about five.
pub fn typing(config: &Config, secrets: &Secrets, chat_id: &str) {
    if chat_id.starts_with("tg:") {
        telegram::typing(config, secrets, chat_id);
    }
}
