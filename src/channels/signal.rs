//! The Signal channel through `signal-cli`: `signal-cli -o json receive` output mapped to
//! inbound messages, and `signal-cli send` for delivery.
//!
//! Owns the reading of signal-cli's JSON envelopes and the argv of its two calls. Text only ever
//! travels as one argv element (`--message=TEXT`), never through a shell or as a bare argument
//! signal-cli could mistake for an option.

use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Mapped, Outcome, Sender};
use crate::infra::config::Config;
use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::Store;
use crate::steps::ingest::{self, Inbound, Summary};

/// Longest quoted text kept with a reply.
const QUOTE_CHARS: usize = 500;

/// Signal settings from `[channels.signal]` (and `SIGNAL_ACCOUNT` in secrets.env).
pub struct Settings {
    /// The signal-cli program (a name on PATH or a path).
    pub cli: PathBuf,
    /// The registered account number, e.g. `+4915112345678`.
    pub account: String,
    /// How long `receive` waits for messages.
    pub receive_secs: u64,
    /// Where signal-cli keeps received attachments (each file named by its id).
    pub attachments_dir: PathBuf,
}

impl Settings {
    /// Read the settings; the error says which key to set.
    pub fn load(config: &Config, secrets: &Secrets) -> Result<Settings> {
        let ch = config.channels.get("signal");
        let extra = |k: &str| ch.and_then(|c| c.extra.get(k));
        let account = extra("account")
            .and_then(|v| v.as_str())
            .or_else(|| secrets.get("SIGNAL_ACCOUNT"))
            .ok_or_else(|| {
                Coded::err(
                    Code::NotInitialised,
                    "no Signal account: set `account = \"+<number>\"` under [channels.signal] in claw.toml (docs/channels/signal.md)",
                )
            })?;
        Ok(Settings {
            cli: PathBuf::from(
                extra("cli")
                    .and_then(|v| v.as_str())
                    .unwrap_or("signal-cli"),
            ),
            account: account.to_string(),
            receive_secs: extra("receive_timeout_secs")
                .and_then(|v| v.as_integer())
                .map(|n| n.clamp(0, 300) as u64)
                .unwrap_or(5),
            attachments_dir: extra("attachments_dir")
                .and_then(|v| v.as_str())
                .map(PathBuf::from)
                .unwrap_or_else(default_attachments_dir),
        })
    }
}

/// Map one line of `signal-cli -o json receive` output.
pub fn map_line(line: &str, account: &str) -> Mapped {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Mapped::Skip(format!("unreadable signal-cli line: {e}")),
    };
    let Some(env) = v.get("envelope") else {
        return Mapped::Skip("line has no envelope".into());
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let source = s(env, "sourceNumber")
        .or_else(|| s(env, "source"))
        .or_else(|| s(env, "sourceUuid"));
    let ts = env.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
    // A message typed on the owner's phone arrives as a sync of what it sent.
    let (data, from_me) = match (
        env.get("dataMessage"),
        env.get("syncMessage").and_then(|m| m.get("sentMessage")),
    ) {
        (Some(d), _) => (d, false),
        (None, Some(sent)) => (sent, true),
        _ => {
            let kind = [
                "receiptMessage",
                "typingMessage",
                "callMessage",
                "storyMessage",
                "syncMessage",
            ]
            .into_iter()
            .find(|k| env.get(*k).is_some())
            .unwrap_or("unknown");
            return Mapped::Skip(format!("envelope at {ts} is a {kind}, not a message"));
        }
    };
    let group = data
        .get("groupInfo")
        .and_then(|g| s(g, "groupId").map(|id| (id, s(g, "groupName"))));
    let sender = if from_me {
        account.to_string()
    } else {
        match &source {
            Some(src) => src.clone(),
            None => return Mapped::Skip(format!("message at {ts} has no sender")),
        }
    };
    let chat = match &group {
        Some((id, _)) => format!("sig:{id}"),
        None if from_me => match s(data, "destinationNumber")
            .or_else(|| s(data, "destination"))
            .or_else(|| s(data, "destinationUuid"))
        {
            Some(d) => format!("sig:{d}"),
            None => return Mapped::Skip(format!("sent message at {ts} has no destination")),
        },
        None => format!("sig:{sender}"),
    };
    let text = s(data, "message")
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            // Attachment captions, when signal-cli reports them.
            data.get("attachments")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find_map(|x| s(x, "caption")))
                .filter(|t| !t.trim().is_empty())
        });
    let attachments = attachments_of(data);
    let text = match text {
        Some(t) => t,
        None if !attachments.is_empty() => String::new(),
        None => {
            return Mapped::Skip(format!(
                "message at {ts} in {chat} has no text or attachment (sticker or reaction only); skipped"
            ));
        }
    };
    let ts = data.get("timestamp").and_then(Value::as_i64).unwrap_or(ts);
    let quote = data.get("quote");
    let sender_name = if from_me {
        None
    } else {
        s(env, "sourceName").filter(|n| !n.is_empty())
    };
    Mapped::Message(Box::new(Inbound {
        id: format!("{ts}-{sender}"),
        sender: format!("sig:{sender}"),
        sender_name,
        text,
        time: Some(crate::infra::time::rfc3339(ts)),
        from_me,
        is_bot: false,
        chat_name: group.as_ref().and_then(|(_, n)| n.clone()).or_else(|| {
            (!from_me && group.is_none())
                .then(|| s(env, "sourceName"))
                .flatten()
        }),
        is_group: Some(group.is_some()),
        reply_to: quote.and_then(|q| {
            let id = q.get("id").and_then(Value::as_i64)?;
            let author = s(q, "authorNumber")
                .or_else(|| s(q, "author"))
                .or_else(|| s(q, "authorUuid"))?;
            Some(format!("{id}-{author}"))
        }),
        reply_to_sender: quote.and_then(|q| {
            s(q, "authorNumber")
                .or_else(|| s(q, "author"))
                .or_else(|| s(q, "authorUuid"))
                .map(|a| format!("sig:{a}"))
        }),
        reply_to_text: quote
            .and_then(|q| s(q, "text"))
            .map(|t| t.chars().take(QUOTE_CHARS).collect()),
        chat,
        attachments,
    }))
}

/// signal-cli's attachment list: each file sits in its attachment folder under its `id`; the
/// id is the channel's handle (checked again when the file is opened), the rest are hints.
fn attachments_of(data: &Value) -> Vec<crate::media::AttachmentIn> {
    use crate::media::{AttachmentIn, Kind};
    let Some(list) = data.get("attachments").and_then(Value::as_array) else {
        return vec![];
    };
    list.iter()
        .take(crate::steps::ingest::MAX_ATTACHMENTS)
        .filter_map(|x| {
            let id = x.get("id").and_then(Value::as_str)?.to_string();
            let ct = x.get("contentType").and_then(Value::as_str).unwrap_or("");
            let is_voice = x.get("voiceNote").and_then(Value::as_bool).unwrap_or(false);
            let kind = match ct.split('/').next().unwrap_or("") {
                "image" => Kind::Photo,
                "audio" if is_voice => Kind::Voice,
                "audio" => Kind::Audio,
                "video" => Kind::Video,
                _ => Kind::Document,
            };
            Some(AttachmentIn {
                kind: Some(kind),
                name: x
                    .get("filename")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                caption: x.get("caption").and_then(Value::as_str).map(str::to_string),
                size: x.get("size").and_then(Value::as_u64),
                width: x.get("width").and_then(Value::as_u64).map(|n| n as u32),
                height: x.get("height").and_then(Value::as_u64).map(|n| n as u32),
                channel_ref: Some(id),
                ..Default::default()
            })
        })
        .collect()
}

/// signal-cli's default attachment folder (`$XDG_DATA_HOME/signal-cli/attachments`).
fn default_attachments_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"))
        .join("signal-cli/attachments")
}

/// Opens attachments from signal-cli's folder by id: one plain name, never followed through a
/// link, regular files only (`crate::infra::untrusted::Dir`, since that folder is another program's).
pub struct SignalSource {
    dir: PathBuf,
}

impl SignalSource {
    /// A source reading `dir`.
    pub fn new(dir: PathBuf) -> SignalSource {
        SignalSource { dir }
    }
}

impl crate::media::fetch::Source for SignalSource {
    fn open(
        &self,
        a: &crate::media::AttachmentIn,
        cap: u64,
    ) -> Result<Box<dyn std::io::Read>, crate::media::fetch::Fail> {
        use crate::media::fetch::Fail;
        let Some(id) = a.channel_ref.as_deref() else {
            return Err(Fail::Failed("no signal-cli attachment id".into()));
        };
        if id.is_empty() || id.contains('/') || id.starts_with('.') || id.len() > 255 {
            return Err(Fail::Failed(format!(
                "attachment id {id:?} is not a plain file name"
            )));
        }
        let dir = crate::infra::untrusted::Dir::open(&self.dir).map_err(|e| {
            Fail::Failed(format!(
                "cannot open signal-cli's attachment folder {}: {e} (set attachments_dir under [channels.signal])",
                self.dir.display()
            ))
        })?;
        match dir.open_regular(std::ffi::OsStr::new(id), cap) {
            Ok((f, _)) => Ok(Box::new(f)),
            Err(why) if why.contains("the limit is") => Err(Fail::TooLarge(why)),
            Err(why) => Err(Fail::Failed(format!("attachment {id}: {why}"))),
        }
    }
}

/// What one receive did.
#[derive(Debug, Default, serde::Serialize)]
pub struct PollReport {
    pub lines: u64,
    pub skipped: u64,
    pub notices: usize,
    #[serde(flatten)]
    pub summary: Summary,
}

/// Run `signal-cli receive` once and store what it printed.
pub fn poll(
    home: &Home,
    store: &mut Store,
    config: &Config,
    secrets: &Secrets,
) -> Result<PollReport> {
    let settings = Settings::load(config, secrets)?;
    let Some(_lock) = crate::infra::lock::try_acquire(&home.locks().join("poll-signal.lock"))?
    else {
        return Err(Coded::err(
            Code::Busy,
            "another `claw ingest --from signal` is receiving; try again when it finishes",
        ));
    };
    let out = duct::cmd(
        &settings.cli,
        [
            "-a".to_string(),
            settings.account.clone(),
            "-o".into(),
            "json".into(),
            "receive".into(),
            "--timeout".into(),
            settings.receive_secs.to_string(),
        ],
    )
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()
    .with_context(|| {
        format!(
            "cannot run {}: install signal-cli or set `cli` under [channels.signal]",
            settings.cli.display()
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Whatever signal-cli printed before failing was already taken from the server: store it.
    let source = SignalSource::new(settings.attachments_dir.clone());
    let transcriber =
        crate::media::transcribe::Transcriber::from_config(&config.media.transcription, secrets);
    let ctx = crate::media::save::Ctx::new(
        &store.conn,
        home,
        &config.media,
        &source,
        transcriber.as_ref(),
    )?;
    let report = store_lines(
        store,
        &stdout,
        &settings.account,
        config.limits.max_message_bytes,
        Some(&ctx),
    )?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(anyhow::anyhow!(
            "signal-cli receive exited with {} after {} line(s): {}",
            out.status,
            report.lines,
            err.trim()
        ));
    }
    Ok(report)
}

/// Map and store signal-cli output lines in one transaction, then send unknown-chat notices.
pub fn store_lines(
    store: &mut Store,
    output: &str,
    account: &str,
    max_bytes: usize,
    media: Option<&crate::media::save::Ctx>,
) -> Result<PollReport> {
    let mut report = PollReport::default();
    let mut items: Vec<(Inbound, i64)> = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        report.lines += 1;
        match map_line(line, account) {
            Mapped::Message(m) => match ingest::validate(&m, max_bytes) {
                Ok(at) => items.push((*m, at)),
                Err(why) => {
                    tracing::warn!(%why, "signal message rejected");
                    report.summary.rejected += 1;
                }
            },
            Mapped::Skip(why) => {
                tracing::info!(%why, "signal envelope skipped");
                report.skipped += 1;
            }
        }
    }
    // Signal names a group only on some messages; let every message of the batch carry it, since
    // the chat row is refreshed from the batch's latest message.
    let group_names: HashMap<String, String> = items
        .iter()
        .filter_map(|(m, _)| Some((m.chat.clone(), m.chat_name.clone()?)))
        .collect();
    for (m, _) in &mut items {
        if m.chat_name.is_none() {
            m.chat_name = group_names.get(&m.chat).cloned();
        }
    }
    if let Some(ctx) = media {
        crate::media::save::prepare(ctx, &store.conn, &mut items);
    }
    ingest::store_batch(store, &items, &mut report.summary, |_| Ok(()))?;
    report.notices = report.summary.notices;
    Ok(report)
}

/// Sends with `signal-cli send`.
pub struct SignalSender {
    settings: Settings,
}

impl SignalSender {
    /// A sender from the loaded settings.
    pub fn new(settings: Settings) -> SignalSender {
        SignalSender { settings }
    }
}

/// The argv after the program for sending `text` to a `sig:` chat.
pub fn send_args(account: &str, chat_id: &str, text: &str) -> Option<Vec<String>> {
    let target = chat_id.strip_prefix("sig:")?;
    let mut args = vec![
        "-a".to_string(),
        account.to_string(),
        "-o".into(),
        "json".into(),
        "send".into(),
    ];
    args.push(format!("--message={text}"));
    // Numbers start with `+`; anything else of ours is a base64 group id or a UUID.
    if target.starts_with('+') || is_uuid(target) {
        args.push(target.to_string());
    } else {
        args.push(format!("--group-id={target}"));
    }
    Some(args)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl Sender for SignalSender {
    fn send(&mut self, _outbox_id: i64, chat_id: &str, text: &str) -> Outcome {
        let Some(args) = send_args(&self.settings.account, chat_id, text) else {
            return Outcome::Failed {
                error: format!("{chat_id} is not a Signal chat id"),
                retry_after_ms: None,
            };
        };
        self.run_send(&args)
    }

    fn send_file(
        &mut self,
        _outbox_id: i64,
        chat_id: &str,
        caption: &str,
        file: &crate::media::outfile::OutFile,
    ) -> Outcome {
        let Some(mut args) = send_args(&self.settings.account, chat_id, caption) else {
            return Outcome::Failed {
                error: format!("{chat_id} is not a Signal chat id"),
                retry_after_ms: None,
            };
        };
        // One element, `=` form: the host copy's path can never be read as an option.
        let at = args.len() - 1;
        args.insert(at, format!("--attachment={}", file.path.display()));
        self.run_send(&args)
    }
}

impl SignalSender {
    /// Run `signal-cli … send` with `args` (bounded to 120 s) and read the sent timestamp.
    fn run_send(&self, args: &[String]) -> Outcome {
        let handle = match duct::cmd(&self.settings.cli, args)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .start()
        {
            Ok(h) => h,
            Err(e) => {
                return Outcome::Failed {
                    error: format!("cannot run {}: {e}", self.settings.cli.display()),
                    retry_after_ms: None,
                };
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let out = loop {
            match handle.try_wait() {
                Ok(Some(out)) => break out.clone(),
                Ok(None) if std::time::Instant::now() > deadline => {
                    let _ = handle.kill();
                    return Outcome::Failed {
                        error: "signal-cli send took over 120s and was killed".into(),
                        retry_after_ms: None,
                    };
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    return Outcome::Failed {
                        error: format!("signal-cli send failed: {e}"),
                        retry_after_ms: None,
                    };
                }
            }
        };
        if !out.status.success() {
            return Outcome::Failed {
                error: format!(
                    "signal-cli send exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                retry_after_ms: None,
            };
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let id = stdout.lines().find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("timestamp").and_then(Value::as_i64))
                .map(|t| t.to_string())
                .or_else(|| l.trim().parse::<i64>().ok().map(|t| t.to_string()))
        });
        Outcome::Sent(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_argv_keeps_text_in_one_element() {
        let a = send_args("+1", "sig:+49123", "-rf / && echo").unwrap();
        assert_eq!(
            a,
            [
                "-a",
                "+1",
                "-o",
                "json",
                "send",
                "--message=-rf / && echo",
                "+49123"
            ]
        );
        let g = send_args("+1", "sig:AbC+/def=", "hi").unwrap();
        assert_eq!(g.last().unwrap(), "--group-id=AbC+/def=");
        assert!(send_args("+1", "tg:5", "hi").is_none());
    }
}
