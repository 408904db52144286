//! The Telegram channel: long-poll ingest with the update offset stored beside the messages, and
//! delivery through sendMessage.
//!
//! The offset lives in `channel_state(channel='telegram', key='offset')` and moves only in the
//! same transaction that stores the messages it covers: a crash after fetching but before that
//! commit makes the next poll fetch the same updates again, and `(chat, msg_id)` uniqueness keeps
//! the re-fetch from doubling anything. Never holds a transaction across a network call.

pub mod api;
pub mod buttons;
pub mod format;
pub mod map;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;
use std::time::Duration;

use super::{Outcome, Sender};
use crate::infra::config::Config;
use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::Store;
use crate::steps::ingest::{self, Inbound, Summary};
use api::{Api, ApiError};

/// Default long-poll wait, in seconds.
pub const DEFAULT_POLL_SECS: u64 = 25;
/// Updates asked for per getUpdates call (Telegram's maximum).
const BATCH: u32 = 100;
/// A 429 in the middle of a split message is waited out in place if it is at most this long, so
/// the pieces already sent are not sent twice by a retry of the whole row.
const INLINE_WAIT_MAX_SECS: u64 = 30;

/// Telegram settings from `[channels.telegram]` and `secrets.env`.
pub struct Settings {
    pub api_base: String,
    pub token: String,
    pub poll_secs: u64,
    pub bot_username: Option<String>,
}

impl Settings {
    /// Read the settings; the error says which key to set.
    pub fn load(config: &Config, secrets: &Secrets) -> Result<Settings> {
        let ch = config.channels.get("telegram");
        let extra = |k: &str| ch.and_then(|c| c.extra.get(k));
        let token_env = extra("token_env")
            .and_then(|v| v.as_str())
            .unwrap_or("TELEGRAM_BOT_TOKEN");
        let token = secrets.get(token_env).ok_or_else(|| {
            Coded::err(
                Code::NotInitialised,
                format!("{token_env} is not set in secrets.env: add the token @BotFather gave you (docs/channels/telegram.md)"),
            )
        })?;
        Ok(Settings {
            api_base: extra("api_base")
                .and_then(|v| v.as_str())
                .unwrap_or(api::DEFAULT_BASE)
                .to_string(),
            token: token.to_string(),
            poll_secs: extra("poll_timeout_secs")
                .and_then(|v| v.as_integer())
                .map(|n| n.clamp(0, 50) as u64)
                .unwrap_or(DEFAULT_POLL_SECS),
            bot_username: extra("bot_username")
                .and_then(|v| v.as_str())
                .map(|s| s.trim_start_matches('@').to_string()),
        })
    }
}

/// What one poll did.
#[derive(Debug, Default, serde::Serialize)]
pub struct PollReport {
    pub updates: u64,
    pub skipped: u64,
    pub offset: i64,
    pub notices: usize,
    #[serde(flatten)]
    pub summary: Summary,
}

fn state(store: &Store, key: &str) -> Result<Option<String>> {
    Ok(store
        .conn
        .query_row(
            "SELECT value FROM channel_state WHERE channel = 'telegram' AND key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

fn set_state(conn: &rusqlite::Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO channel_state (channel, key, value) VALUES ('telegram', ?1, ?2)
         ON CONFLICT(channel, key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Long-poll once (waiting up to `wait_secs`, default from config), then drain the backlog
/// without waiting, storing each batch with its offset in one transaction. Unknown chats get
/// their notice to main afterwards.
pub fn poll(
    home: &Home,
    store: &mut Store,
    config: &Config,
    secrets: &Secrets,
    wait_secs: Option<u64>,
) -> Result<PollReport> {
    let settings = Settings::load(config, secrets)?;
    let wait = wait_secs.unwrap_or(settings.poll_secs);
    // Two pollers would each make Telegram answer 409; one at a time.
    let Some(_lock) = crate::infra::lock::try_acquire(&home.locks().join("poll-telegram.lock"))?
    else {
        return Err(Coded::err(
            Code::Busy,
            "another `claw ingest --from telegram` is polling; try again when it finishes",
        ));
    };
    let api = Api::new(
        &settings.api_base,
        &settings.token,
        Duration::from_secs(wait),
    );
    let bot = match settings.bot_username.clone() {
        Some(b) => Some(b),
        None => match state(store, "bot_username")? {
            Some(b) => Some(b),
            None => match api.username() {
                Ok(b) => {
                    set_state(&store.conn, "bot_username", &b)?;
                    Some(b)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot learn the bot's username; @mentions will not be rewritten");
                    None
                }
            },
        },
    };
    let groups = crate::infra::store::groups::list(&store.conn)?;
    let by_chat: HashMap<String, String> = groups
        .iter()
        .map(|g| (g.chat_id.clone(), g.trigger.clone()))
        .collect();
    let default_trigger = config.default_trigger();
    let triggers = map::Triggers {
        bot_username: bot.as_deref(),
        by_chat: &by_chat,
        default: &default_trigger,
    };
    let max_bytes = config.limits.max_message_bytes;
    let mut report = PollReport {
        offset: state(store, "offset")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        ..Default::default()
    };
    let mut timeout = wait;
    // Downloads use their own client: the long-poll one waits up to a poll's length only.
    let media_api = Api::new(
        &settings.api_base,
        &settings.token,
        Duration::from_secs(config.media.download_timeout_secs),
    );
    let transcriber =
        crate::media::transcribe::Transcriber::from_config(&config.media.transcription, secrets);
    loop {
        let updates = api
            .get_updates(report.offset, timeout, BATCH)
            .map_err(|e| anyhow::anyhow!("getUpdates failed: {e}"))?;
        if updates.is_empty() {
            break;
        }
        let mut next = report.offset;
        let mut items: Vec<(Inbound, i64)> = Vec::with_capacity(updates.len());
        // Button presses are decided in the transaction that stores the batch, after any files
        // were downloaded (no network I/O inside a write transaction).
        let mut press_updates = Vec::new();
        for raw in &updates {
            let id = raw.get("update_id").and_then(|v| v.as_i64()).unwrap_or(-1);
            next = next.max(id + 1);
            report.updates += 1;
            if raw.get("callback_query").is_some() {
                press_updates.push(raw);
                continue;
            }
            match map::map_update(raw, &triggers) {
                super::Mapped::Message(m) => match ingest::validate(&m, max_bytes) {
                    Ok(at) => items.push((*m, at)),
                    Err(why) => {
                        tracing::warn!(update = id, %why, "telegram message rejected");
                        report.summary.rejected += 1;
                    }
                },
                super::Mapped::Skip(why) => {
                    tracing::info!(update = id, %why, "telegram update skipped");
                    report.skipped += 1;
                }
            }
        }
        // Files are downloaded before the transaction; a crash before the commit re-fetches the
        // updates, and their files are saved again under a fresh numbered name.
        if items.iter().any(|(m, _)| !m.attachments.is_empty()) {
            let source = api::TelegramSource(&media_api);
            let ctx = crate::media::save::Ctx::new(
                &store.conn,
                home,
                &config.media,
                &source,
                transcriber.as_ref(),
            )?;
            crate::media::save::prepare(&ctx, &store.conn, &mut items);
        }
        let presses = ingest::store_batch(store, &items, &mut report.summary, |tx| {
            let mut presses = Vec::new();
            for raw in press_updates {
                if let Some(p) = buttons::take_press(tx, raw, crate::infra::time::now_ms())? {
                    presses.push(p);
                }
            }
            set_state(tx, "offset", &next.to_string())?;
            Ok(presses)
        })?;
        report.summary.answers += presses.len() as u64;
        for p in presses {
            if let Err(e) = api.answer_callback_query(&p.query_id, &p.text) {
                tracing::info!(error = %e, "button press not acknowledged");
            }
        }
        report.offset = next;
        if updates.len() < BATCH as usize {
            break;
        }
        // The backlog is being drained: do not wait for more.
        timeout = 0;
    }
    report.notices = report.summary.notices;
    Ok(report)
}

/// Sends outbox rows with sendMessage, Markdown converted to HTML and split to fit.
pub struct TelegramSender {
    api: Api,
    /// Uploads get a longer timeout than text.
    files: Api,
}

impl TelegramSender {
    /// A sender from the loaded settings.
    pub fn new(settings: &Settings) -> TelegramSender {
        TelegramSender {
            api: Api::new(&settings.api_base, &settings.token, Duration::ZERO),
            files: Api::new(
                &settings.api_base,
                &settings.token,
                Duration::from_secs(120),
            ),
        }
    }

    fn send_piece(&self, chat: &str, markdown: &str) -> Result<i64, ApiError> {
        match self
            .api
            .send_message(chat, &format::to_html(markdown), true)
        {
            // Markup Telegram will not parse still gets through, as plain text.
            Err(ApiError::Rejected {
                code: 400,
                description,
            }) if description.contains("parse") => {
                tracing::info!(%description, "HTML refused; sending as plain text");
                self.api.send_message(chat, markdown, false)
            }
            other => other,
        }
    }
}

impl Sender for TelegramSender {
    fn send_card(
        &mut self,
        outbox_id: i64,
        chat_id: &str,
        text: &str,
        approval: (i64, &str),
    ) -> Outcome {
        let Some(chat) = chat_id.strip_prefix("tg:") else {
            return failed(format!("{chat_id} is not a Telegram chat id"), None);
        };
        if text.chars().count() > format::MAX_CHARS {
            return self.send(outbox_id, chat_id, text);
        }
        // Plain text: the card quotes agent-written text, which must not become markup.
        let markup = buttons::keyboard(approval.0, approval.1);
        match self.api.send_message_with(chat, text, false, Some(markup)) {
            Ok(id) => Outcome::Sent(Some(id.to_string())),
            Err(ApiError::RetryAfter(secs)) => failed(
                format!("Telegram rate limit: retry after {secs}s"),
                Some(secs as i64 * 1000),
            ),
            Err(e) => failed(e.to_string(), None),
        }
    }

    fn send(&mut self, _outbox_id: i64, chat_id: &str, text: &str) -> Outcome {
        let Some(chat) = chat_id.strip_prefix("tg:") else {
            return failed(format!("{chat_id} is not a Telegram chat id"), None);
        };
        let mut ids = Vec::new();
        for (i, piece) in format::split(text, format::MAX_CHARS).iter().enumerate() {
            let mut result = self.send_piece(chat, piece);
            if let Err(ApiError::RetryAfter(secs)) = result
                && i > 0
                && secs <= INLINE_WAIT_MAX_SECS
            {
                std::thread::sleep(Duration::from_secs(secs));
                result = self.send_piece(chat, piece);
            }
            match result {
                Ok(id) => ids.push(id.to_string()),
                Err(ApiError::RetryAfter(secs)) => {
                    return failed(
                        format!("Telegram rate limit after {i} piece(s): retry after {secs}s"),
                        Some(secs as i64 * 1000),
                    );
                }
                Err(e) => return failed(format!("{e} (after {i} piece(s))"), None),
            }
        }
        Outcome::Sent(Some(ids.join(",")))
    }

    fn send_file(
        &mut self,
        _outbox_id: i64,
        chat_id: &str,
        caption: &str,
        file: &crate::media::outfile::OutFile,
    ) -> Outcome {
        let Some(chat) = chat_id.strip_prefix("tg:") else {
            return failed(format!("{chat_id} is not a Telegram chat id"), None);
        };
        let (method, field) = upload_method(file);
        match self.files.send_file(method, field, chat, caption, file) {
            Ok(id) => Outcome::Sent(Some(id.to_string())),
            Err(ApiError::RetryAfter(secs)) => failed(
                format!("Telegram rate limit: retry after {secs}s"),
                Some(secs as i64 * 1000),
            ),
            Err(e) => failed(e.to_string(), None),
        }
    }
}

/// The Bot API method and file field for a file: photos (JPEG, PNG, WebP) as sendPhoto, OGG
/// voice notes as sendVoice, other audio as sendAudio, MP4 as sendVideo, the rest as documents.
pub fn upload_method(file: &crate::media::outfile::OutFile) -> (&'static str, &'static str) {
    use crate::media::Kind;
    match (file.kind, file.mime.as_str()) {
        (Kind::Photo, "image/jpeg" | "image/png" | "image/webp") => ("sendPhoto", "photo"),
        (Kind::Voice | Kind::Audio, "audio/ogg" | "audio/opus") => ("sendVoice", "voice"),
        (Kind::Voice | Kind::Audio, _) => ("sendAudio", "audio"),
        (Kind::Video, "video/mp4") => ("sendVideo", "video"),
        _ => ("sendDocument", "document"),
    }
}

fn failed(error: String, retry_after_ms: Option<i64>) -> Outcome {
    Outcome::Failed {
        error,
        retry_after_ms,
    }
}

/// Show "typing…" in a Telegram chat; errors are only logged.
pub fn typing(config: &Config, secrets: &Secrets, chat_id: &str) {
    let Some(chat) = chat_id.strip_prefix("tg:") else {
        return;
    };
    match Settings::load(config, secrets) {
        Ok(s) => {
            if let Err(e) = TelegramSender::new(&s).api.send_chat_action(chat, "typing") {
                tracing::debug!(error = %e, "typing indicator not shown");
            }
        }
        Err(e) => tracing::debug!(error = %e, "typing indicator not shown"),
    }
}
