//! HTTP to the model, through the loopback relay to the host's proxy socket.
//!
//! It owns request sending and the classification of failures (retry, fatal, failed). It never
//! adds credentials: the host's proxy does that on the way out.

use std::io::Read;
use std::time::Duration;

/// Why a model call did not produce a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Overloaded or rate-limited: try again after the given wait (if the server named one).
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Authentication or permission refused: the run cannot succeed.
    Fatal(String),
    /// Anything else (bad request, broken stream, unreachable proxy).
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Retry { message, .. }
            | CallError::Fatal(message)
            | CallError::Failed(message) => f.write_str(message),
        }
    }
}

/// A connection to the LLM routes of the proxy.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

/// A successful response whose body has not been read yet.
pub struct Reply {
    /// True when the body is `text/event-stream`.
    pub streaming: bool,
    /// The body.
    pub body: Box<dyn Read + Send>,
}

impl Http {
    /// Talk to `base` (e.g. `http://127.0.0.1:PORT`), never through an environment proxy.
    pub fn new(base: &str) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(10)))
            // A streamed reply may pause while the model thinks; a dead upstream must still end.
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .build();
        Http {
            agent: config.new_agent(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// POST `body` as JSON to `path` (e.g. `/llm/anthropic/v1/messages`) and classify the status.
    ///
    /// The body is serialised compactly, in its own field order, so the same request is always
    /// the same bytes (a provider's prefix cache depends on it) and no indentation is sent
    /// (ureq's `send_json` pretty-prints, which grows a long transcript by a third).
    pub fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &impl serde::Serialize,
    ) -> Result<Reply, CallError> {
        let url = format!("{}{}", self.base, path);
        let bytes = serde_json::to_vec(body)
            .map_err(|e| CallError::Failed(format!("cannot encode the request for {path}: {e}")))?;
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send(&bytes[..]).map_err(|e| {
            CallError::Failed(format!(
                "cannot reach the model through the proxy at {url}: {e}"
            ))
        })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after").and_then(|v| v.trim().parse::<f64>().ok());
        let streaming = header("content-type").is_some_and(|c| c.contains("text/event-stream"));
        if (200..300).contains(&status) {
            return Ok(Reply {
                streaming,
                body: Box::new(resp.into_body().into_reader()),
            });
        }
        let mut text = String::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(4096)
            .read_to_string(&mut text);
        let message = format!(
            "model upstream answered {status} for {path}: {}",
            text.trim()
        );
        Err(classify(status, message, retry_after))
    }
}

impl Http {
    /// POST `body` as JSON to one of the proxy's own routes (not a model route) and return the
    /// status and at most `max` bytes of the answer; an `Err` is for the model to read.
    pub fn post_local(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        max: u64,
    ) -> Result<(u16, String), String> {
        let url = format!("{}{}", self.base, path);
        let bytes =
            serde_json::to_vec(body).map_err(|e| format!("cannot encode the request: {e}"))?;
        let resp = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(&bytes[..])
            .map_err(|e| format!("cannot reach the host through the proxy at {url}: {e}"))?;
        let status = resp.status().as_u16();
        let mut text = String::new();
        resp.into_body()
            .into_reader()
            .take(max)
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the host's answer failed: {e}"))?;
        Ok((status, text))
    }
}

/// Decide what an HTTP status means for the run.
pub fn classify(status: u16, message: String, retry_after_secs: Option<f64>) -> CallError {
    let after = retry_after_secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(120.0)));
    match status {
        401 | 403 => CallError::Fatal(format!(
            "{message} (check the API key in the host's secrets.env)"
        )),
        408 | 409 | 429 | 500 | 502 | 503 | 504 | 529 => CallError::Retry { message, after },
        _ => CallError::Failed(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_retry_fatal_or_failed() {
        assert!(matches!(
            classify(401, "x".into(), None),
            CallError::Fatal(_)
        ));
        assert!(matches!(
            classify(403, "x".into(), None),
            CallError::Fatal(_)
        ));
        assert_eq!(
            classify(429, "x".into(), Some(2.0)),
            CallError::Retry {
                message: "x".into(),
                after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(
            classify(529, "x".into(), None),
            CallError::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(400, "x".into(), None),
            CallError::Failed(_)
        ));
    }
}
