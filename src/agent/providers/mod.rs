//! Model providers: one request/reply exchange with Anthropic Messages or an OpenAI-compatible
//! chat-completions endpoint, with retries on overload.
//!
//! It owns wire-format conversion and retry policy; it never runs tools or touches the transcript file.

pub mod anthropic;
pub mod cache;
pub mod openai;

use super::transcript::{Block, Message};
use super::transport::{CallError, Http};
use crate::infra::protocol::{ModelSettings, Usage};
use serde_json::Value;
use std::time::Duration;

/// A tool as offered to the model.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the input object.
    pub schema: Value,
}

/// Everything one model call needs.
pub struct Request<'a> {
    pub settings: &'a ModelSettings,
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
    /// Ask the provider to cache the prefix (Anthropic breakpoints, see `cache.rs`). Off for
    /// one-off requests whose prefix is never sent again, where a cache write only costs more.
    pub cache: bool,
}

/// What the model answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// Text and tool-use blocks, in order.
    pub content: Vec<Block>,
    pub usage: Usage,
    /// Tool-use ids whose arguments were not valid JSON, with the parse error and the raw text.
    pub bad_args: Vec<(String, String)>,
}

/// How many attempts a call gets before an overload becomes a failure.
const MAX_ATTEMPTS: u32 = 6;

/// Read a non-streamed reply body (at most 64 MiB) as JSON.
pub fn read_json(body: Box<dyn std::io::Read + Send>) -> Result<Value, CallError> {
    use std::io::Read;
    let mut text = String::new();
    body.take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| CallError::Failed(format!("reading the model's reply failed: {e}")))?;
    serde_json::from_str(&text).map_err(|e| {
        let head: String = text.chars().take(300).collect();
        CallError::Failed(format!("the model's reply is not JSON ({e}): {head}"))
    })
}

/// Call the configured provider, retrying overloads and rate limits with backoff.
pub fn complete(http: &Http, req: &Request) -> Result<Reply, CallError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match req.settings.provider.as_str() {
            "anthropic" => anthropic::call(http, req),
            "openai" => openai::call(http, req),
            other => {
                return Err(CallError::Fatal(format!(
                    "unknown model provider `{other}`: set provider to `anthropic` or `openai` in claw.toml"
                )));
            }
        };
        match result {
            Err(CallError::Retry { message, after }) if attempt < MAX_ATTEMPTS => {
                let wait = after.unwrap_or_else(|| backoff(attempt));
                super::log(&format!(
                    "{message}; retrying in {:.1}s (attempt {attempt} of {MAX_ATTEMPTS})",
                    wait.as_secs_f64()
                ));
                std::thread::sleep(wait);
            }
            Err(CallError::Retry { message, .. }) => {
                return Err(CallError::Failed(format!(
                    "{message}; gave up after {MAX_ATTEMPTS} attempts"
                )));
            }
            other => return other,
        }
    }
}

/// Exponential backoff from 1 s, capped at 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((1000u64 << attempt.saturating_sub(1).min(5)).min(30_000))
}

/// Parse accumulated tool-call arguments; on failure record the error and use an empty object.
fn parse_args(id: &str, raw: &str, bad: &mut Vec<(String, String)>) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => {
            bad.push((
                id.to_string(),
                format!("arguments must be a JSON object, got: {other}"),
            ));
            Value::Object(Default::default())
        }
        Err(e) => {
            let shown: String = raw.chars().take(500).collect();
            bad.push((
                id.to_string(),
                format!("arguments are not valid JSON ({e}): {shown}"),
            ));
            Value::Object(Default::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }

    #[test]
    fn bad_arguments_are_recorded_not_fatal() {
        let mut bad = vec![];
        assert_eq!(
            parse_args("a", "{\"x\":1}", &mut bad),
            serde_json::json!({"x":1})
        );
        assert_eq!(parse_args("b", "{\"x\":", &mut bad), serde_json::json!({}));
        assert_eq!(parse_args("c", "[1]", &mut bad), serde_json::json!({}));
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].0, "b");
    }
}
