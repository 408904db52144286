//! The Telegram Bot API over HTTP: getUpdates, getMe, sendMessage, sendChatAction,
//! answerCallbackQuery.
//!
//! Owns the bot token once it is loaded. It must never log the token or let it reach an error
//! message: request URLs contain it, so every transport error is scrubbed before it leaves here.

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The public Bot API; `[channels.telegram] api_base` overrides it (tests, self-hosted servers).
pub const DEFAULT_BASE: &str = "https://api.telegram.org";

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 429: wait this many seconds before the next call.
    RetryAfter(u64),
    /// Telegram answered with an error (bad chat, blocked by user, bad markup, …).
    Rejected { code: u16, description: String },
    /// The request did not complete (network, timeout, unreadable answer).
    Transport(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::RetryAfter(s) => write!(f, "Telegram rate limit: retry after {s}s"),
            ApiError::Rejected { code, description } => {
                write!(f, "Telegram refused the call ({code}): {description}")
            }
            ApiError::Transport(e) => write!(f, "cannot reach the Telegram Bot API: {e}"),
        }
    }
}

/// A Bot API client for one bot.
pub struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Params>,
}

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    retry_after: Option<u64>,
}

impl Api {
    /// A client for `base` (no trailing `/bot…`). `long_poll` bounds how long a getUpdates may wait.
    pub fn new(base: &str, token: &str, long_poll: Duration) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A long poll waits `long_poll` server-side; leave room for the answer to arrive.
            .timeout_global(Some(long_poll + Duration::from_secs(15)))
            .build()
            .into();
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent,
        }
    }

    /// Call one method with a JSON body and return its `result`.
    pub fn call(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        let scrub = |e: String| ApiError::Transport(e.replace(&self.token, "<token>"));
        let mut resp = self
            .agent
            .post(&url)
            .send_json(body)
            .map_err(|e| scrub(e.to_string()))?;
        let status = resp.status().as_u16();
        let env: Envelope = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_json()
            .map_err(|e| {
                scrub(format!(
                    "{method} answered {status} with unreadable JSON: {e}"
                ))
            })?;
        if env.ok {
            return Ok(env.result);
        }
        let code = env.error_code.unwrap_or(status);
        if code == 429 {
            let secs = env.parameters.and_then(|p| p.retry_after).unwrap_or(5);
            return Err(ApiError::RetryAfter(secs));
        }
        Err(ApiError::Rejected {
            code,
            description: env
                .description
                .unwrap_or_else(|| "no description".into())
                .replace(&self.token, "<token>"),
        })
    }

    /// Updates after `offset`, waiting up to `timeout_secs` for the first one.
    pub fn get_updates(
        &self,
        offset: i64,
        timeout_secs: u64,
        limit: u32,
    ) -> Result<Vec<Value>, ApiError> {
        let r = self.call(
            "getUpdates",
            &json!({"offset": offset, "timeout": timeout_secs, "limit": limit,
                    "allowed_updates": ["message", "channel_post", "callback_query"]}),
        )?;
        match r {
            Value::Array(v) => Ok(v),
            other => Err(ApiError::Transport(format!(
                "getUpdates returned {} instead of a list",
                kind(&other)
            ))),
        }
    }

    /// The bot's username (without `@`).
    pub fn username(&self) -> Result<String, ApiError> {
        let me = self.call("getMe", &json!({}))?;
        me.get("username")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::Transport("getMe answered without a username".into()))
    }

    /// Send one message (HTML parse mode when `html`); returns Telegram's message id.
    pub fn send_message(&self, chat: &str, text: &str, html: bool) -> Result<i64, ApiError> {
        self.send_message_with(chat, text, html, None)
    }

    /// Acknowledge a button press; `text` shows briefly to the one who pressed it.
    pub fn answer_callback_query(&self, query_id: &str, text: &str) -> Result<(), ApiError> {
        let text: String = text.chars().take(200).collect();
        self.call(
            "answerCallbackQuery",
            &json!({"callback_query_id": query_id, "text": text}),
        )
        .map(|_| ())
    }

    /// [`Api::send_message`] with an optional `reply_markup` (inline buttons).
    pub fn send_message_with(
        &self,
        chat: &str,
        text: &str,
        html: bool,
        reply_markup: Option<Value>,
    ) -> Result<i64, ApiError> {
        let mut body =
            json!({"chat_id": chat, "text": text, "link_preview_options": {"is_disabled": true}});
        if html {
            body["parse_mode"] = json!("HTML");
        }
        if let Some(m) = reply_markup {
            body["reply_markup"] = m;
        }
        let r = self.call("sendMessage", &body)?;
        Ok(r.get("message_id").and_then(Value::as_i64).unwrap_or(0))
    }

    /// Show "typing…" in a chat for about five seconds.
    pub fn send_chat_action(&self, chat: &str, action: &str) -> Result<(), ApiError> {
        self.call(
            "sendChatAction",
            &json!({"chat_id": chat, "action": action}),
        )
        .map(|_| ())
    }
}

impl Api {
    /// Resolve a file id with getFile and open its download as a stream. A file Telegram says
    /// is over `cap` is refused before downloading; the caller still caps the copy.
    pub fn open_file(
        &self,
        file_id: &str,
        cap: u64,
    ) -> Result<Box<dyn std::io::Read>, crate::media::fetch::Fail> {
        use crate::media::fetch::Fail;
        let f = self
            .call("getFile", &json!({"file_id": file_id}))
            .map_err(|e| Fail::Failed(format!("getFile failed: {e}")))?;
        if let Some(size) = f.get("file_size").and_then(Value::as_u64)
            && size > cap
        {
            return Err(Fail::TooLarge(format!(
                "the file is {}, over the {} limit",
                crate::media::human_size(size),
                crate::media::human_size(cap)
            )));
        }
        let Some(path) = f.get("file_path").and_then(Value::as_str) else {
            return Err(Fail::Failed(
                "getFile gave no file_path (Telegram serves bots files up to 20 MB)".into(),
            ));
        };
        let url = format!("{}/file/bot{}/{}", self.base, self.token, path);
        let scrub = |e: String| e.replace(&self.token, "<token>");
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| Fail::Failed(scrub(format!("download failed: {e}"))))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Fail::Failed(format!("download answered HTTP {status}")));
        }
        Ok(Box::new(
            resp.into_body()
                .into_with_config()
                .limit(cap.saturating_add(1))
                .reader(),
        ))
    }

    /// Upload a file with `method` (sendPhoto, sendDocument, sendVoice, …) as multipart, the file
    /// in `field`; returns Telegram's message id.
    pub fn send_file(
        &self,
        method: &str,
        field: &str,
        chat: &str,
        caption: &str,
        file: &crate::media::outfile::OutFile,
    ) -> Result<i64, ApiError> {
        let f = std::fs::File::open(&file.path).map_err(|e| {
            ApiError::Transport(format!("cannot open {}: {e}", file.path.display()))
        })?;
        let mut fields = vec![("chat_id", chat)];
        // Captions are at most 1024 characters; a longer one is cut rather than refused.
        let cut: String = caption.chars().take(1024).collect();
        if !cut.is_empty() {
            fields.push(("caption", cut.as_str()));
        }
        let body = crate::media::multipart::build(
            &fields,
            field,
            &file.name,
            &file.mime,
            Box::new(f),
            file.size,
        );
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        let scrub = |e: String| ApiError::Transport(e.replace(&self.token, "<token>"));
        let mut reader = body.reader;
        let mut resp = self
            .agent
            .post(&url)
            .header("content-type", &body.content_type)
            .header("content-length", body.length.to_string())
            .send(ureq::SendBody::from_reader(&mut reader))
            .map_err(|e| scrub(e.to_string()))?;
        let status = resp.status().as_u16();
        let env: Envelope = resp
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_json()
            .map_err(|e| {
                scrub(format!(
                    "{method} answered {status} with unreadable JSON: {e}"
                ))
            })?;
        if env.ok {
            return Ok(env
                .result
                .get("message_id")
                .and_then(Value::as_i64)
                .unwrap_or(0));
        }
        let code = env.error_code.unwrap_or(status);
        if code == 429 {
            return Err(ApiError::RetryAfter(
                env.parameters.and_then(|p| p.retry_after).unwrap_or(5),
            ));
        }
        Err(ApiError::Rejected {
            code,
            description: env
                .description
                .unwrap_or_else(|| "no description".into())
                .replace(&self.token, "<token>"),
        })
    }
}

/// Opens Telegram attachments (file ids) for `crate::media::save`.
pub struct TelegramSource<'a>(pub &'a Api);

impl crate::media::fetch::Source for TelegramSource<'_> {
    fn open(
        &self,
        a: &crate::media::AttachmentIn,
        cap: u64,
    ) -> Result<Box<dyn std::io::Read>, crate::media::fetch::Fail> {
        match a.channel_ref.as_deref() {
            Some(id) => self.0.open_file(id, cap),
            None => Err(crate::media::fetch::Fail::Failed(
                "no Telegram file id".into(),
            )),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
