//! The LLM routes: `/llm/anthropic/<rest>` and `/llm/openai/<rest>`, checked against the model
//! policy (`policy.rs`), forwarded to the configured upstream with the API key added here, on the
//! host, and the response streamed straight back.
//!
//! Order of checks, cheapest first, so a refused request costs no body buffering: route and
//! provider, key, request cap, budgets (`meter.rs`), headers, a slot among
//! `limits.llm_concurrency`, room in the body budget, then the body itself. On the way back the
//! reply's usage is read as it is relayed (`usage.rs`) and added to the run's meter. Nothing here formats a header value or the key into a message,
//! event or log.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ureq::SendBody;
use ureq::http::{HeaderName, HeaderValue, Method, Request};

use super::body;
use super::http::{self, Head, Reject};
use super::json::{self, Spliced};
use super::policy::{self, Provider, Route};
use super::usage::{Format, UsageReader};
use super::{ProxyEvent, Shared};
use crate::rules::cost::Usage;

/// How long a model request waits for one of the run's `limits.llm_concurrency` slots: as long
/// as an upstream answer may take, so waiting behaves like a slow upstream.
const LLM_WAIT: Duration = Duration::from_secs(600);

/// Joins the configured base URL (which may carry a path prefix like `/api`) with the path.
fn join_url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// What one LLM request amounted to, for its event.
#[derive(Default)]
struct Outcome {
    status: u16,
    bytes_up: u64,
    bytes_down: u64,
    model: String,
    model_from: Option<String>,
    clamped: bool,
    usage: Option<Usage>,
}

impl Outcome {
    /// Answers the client with the proxy's own message and records the status.
    fn reject(mut self, conn: &mut UnixStream, rej: Reject) -> Outcome {
        self.status = rej.status;
        let _ = http::write_simple(conn, rej.status, &rej.message);
        self
    }
}

/// Serves one LLM request; `rest` is the target after `/llm/<provider>`.
pub fn forward(
    mut conn: UnixStream,
    head: &Head,
    leftover: Vec<u8>,
    rest: &str,
    requested: Provider,
    shared: &Shared,
) -> ProxyEvent {
    let o = serve(&mut conn, head, leftover, rest, requested, shared);
    ProxyEvent::Llm {
        provider: requested.name().to_string(),
        method: json::clip(&head.method, 16),
        // The query string is left out of the event: some APIs put keys there.
        path: json::clip(rest.split('?').next().unwrap_or(""), 200),
        status: o.status,
        bytes_up: o.bytes_up,
        bytes_down: o.bytes_down,
        model: o.model,
        model_from: o.model_from,
        max_tokens_clamped: o.clamped,
        usage: o.usage,
    }
}

fn serve(
    conn: &mut UnixStream,
    head: &Head,
    leftover: Vec<u8>,
    rest: &str,
    requested: Provider,
    shared: &Shared,
) -> Outcome {
    let o = Outcome::default();
    let p = &shared.llm;
    let route = match policy::route(p.provider, requested, &head.method, rest) {
        Ok(r) => r,
        Err(rej) => return o.reject(conn, rej),
    };
    let upstream = match p.provider {
        Provider::Anthropic => &shared.anthropic,
        Provider::OpenAi => &shared.openai,
    };
    let Some(key) = upstream.api_key.as_deref().filter(|k| !k.is_empty()) else {
        let msg = format!(
            "claw: no API key for {}; the owner can set {} in secrets.env",
            p.provider.name(),
            p.provider.secret_name()
        );
        return o.reject(conn, Reject::new(401, msg));
    };
    if shared.llm_sent.load(Ordering::SeqCst) >= p.requests_per_run {
        return o.reject(conn, over_cap(p.requests_per_run));
    }
    // 402: claw-agent treats it as a failed call (not an overload to retry) and ends the run.
    if let Some(msg) = shared.meter.refusal(crate::infra::time::now_ms()) {
        return o.reject(conn, Reject::new(402, msg));
    }
    let headers = match policy::upstream_headers(p.provider, head) {
        Ok(h) => h,
        Err(rej) => return o.reject(conn, rej),
    };
    let Some(_slot) = shared.llm_slots.acquire(1, LLM_WAIT) else {
        let msg = format!(
            "claw: {} model requests of this run are already in flight (limits.llm_concurrency) \
             and none finished in {} s; retry later",
            p.concurrency,
            LLM_WAIT.as_secs()
        );
        return o.reject(conn, Reject::new(503, msg));
    };
    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    {
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let body = match body::read_body(conn, head, leftover, &shared.body_budget) {
        Ok(b) => b,
        Err(rej) => return o.reject(conn, rej),
    };
    let rewrite = match policy::rewrite_body(route, p, &body.bytes) {
        Ok(r) => r,
        Err(rej) => return o.reject(conn, rej),
    };
    let mut o = Outcome {
        model: json::clip(&rewrite.model, 100),
        model_from: rewrite.model_from.clone(),
        clamped: rewrite.clamped,
        ..o
    };
    // Counted only when it really goes upstream, atomically, so parallel requests cannot pass
    // the cap together.
    let counted = shared
        .llm_sent
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < p.requests_per_run).then_some(n + 1)
        });
    if counted.is_err() {
        return o.reject(conn, over_cap(p.requests_per_run));
    }
    let len = json::spliced_len(&rewrite.parts);
    o.bytes_up = len as u64;
    let reader = Spliced::new(body.bytes, rewrite.parts, body.permit);
    let url = join_url(&upstream.base_url, route.path());
    let request = match build_request(&url, &headers, reader, len, p.provider, key) {
        Ok(r) => r,
        Err(rej) => return o.reject(conn, rej),
    };
    let response = match shared.agent.run(request) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!(
                "claw: could not reach the {} upstream ({e}); check its base URL in claw.toml and the host's network",
                p.provider.name()
            );
            return o.reject(conn, Reject::new(502, msg));
        }
    };
    o.status = response.status().as_u16();
    let format = match route {
        Route::Messages => Some(Format::Anthropic),
        Route::ChatCompletions => Some(Format::OpenAi),
        // Counting tokens generates nothing and is not billed.
        Route::CountTokens => None,
    };
    let mut usage = None;
    o.bytes_down = relay_response(conn, &head.method, response, format, |reported| {
        if format.is_some() {
            let u = reported.unwrap_or_default();
            shared
                .meter
                .add(&rewrite.model, &u, crate::infra::time::now_ms());
            usage = Some(u);
        }
    });
    o.usage = usage;
    o
}

fn over_cap(cap: u32) -> Reject {
    Reject::new(
        429,
        format!(
            "claw: this run has made its {cap} model requests (limits.llm_requests_per_run); \
             finish the task or stop: no more model requests are forwarded in this run"
        ),
    )
}

/// Builds the upstream request: the allowlisted client headers, our content type and length,
/// and our key.
fn build_request(
    url: &str,
    headers: &[(&'static str, Vec<u8>)],
    body: Spliced,
    len: usize,
    provider: Provider,
    key: &str,
) -> Result<Request<SendBody<'static>>, Reject> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        // Explicit, so ureq sends a sized body rather than chunking a reader.
        .header("content-length", len);
    for (name, value) in headers {
        // httparse already validated these; anything http refuses is skipped, not echoed.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            builder = builder.header(n, v);
        }
    }
    let bad_key = || {
        Reject::new(
            500,
            format!(
                "claw: {} in secrets.env contains characters not allowed in an HTTP header",
                provider.secret_name()
            ),
        )
    };
    let (auth_name, auth_value) = match provider {
        Provider::Anthropic => ("x-api-key", HeaderValue::from_str(key)),
        Provider::OpenAi => (
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")),
        ),
    };
    let mut auth_value = auth_value.map_err(|_| bad_key())?;
    auth_value.set_sensitive(true);
    builder
        .header(auth_name, auth_value)
        .body(SendBody::from_owned_reader(body))
        .map_err(|_| {
            Reject::new(
                500,
                "claw: could not build the upstream request; check the provider's base URL in claw.toml",
            )
        })
}

/// Writes the upstream status and end-to-end headers, then the body as chunks, each flushed as
/// soon as it is read, and read by a usage reader for `format` after it was sent. `settle` gets
/// the usage the reply reported once the upstream's body ended, before the client sees the end,
/// so the agent's next request is judged with this one counted. Returns the body bytes relayed.
/// A missing final chunk tells the client the upstream stream broke.
fn relay_response(
    conn: &mut UnixStream,
    method: &str,
    response: ureq::http::Response<ureq::Body>,
    format: Option<Format>,
    settle: impl FnOnce(Option<Usage>),
) -> u64 {
    let (parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let has_body = !(method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304);
    let owned: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let tokens = http::connection_tokens(&owned);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status,
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &owned {
        if http::is_hop_by_hop(name, &tokens) || (has_body && name == "content-length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if has_body {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    if conn.write_all(&out).is_err() || !has_body {
        settle(None);
        return 0;
    }
    let content_type = owned
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.as_slice());
    let mut usage = format.map(|f| UsageReader::new(f, content_type));
    let mut reader = body.into_reader();
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    let ended = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                // Relayed first, so reading usage never delays the agent.
                let sent = http::write_chunk(conn, &buf[..n]);
                if let Some(u) = usage.as_mut() {
                    u.feed(&buf[..n]);
                }
                if sent.is_err() {
                    // The agent is gone; what the upstream reported so far still counts.
                    break false;
                }
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    settle(usage.and_then(UsageReader::finish));
    if ended {
        let _ = http::write_last_chunk(conn);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::proxy::policy::Route;

    #[test]
    fn paths_join_under_the_base() {
        assert_eq!(
            join_url("https://api.anthropic.com/", Route::Messages.path()),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            join_url("https://openrouter.ai/api", Route::ChatCompletions.path()),
            "https://openrouter.ai/api/v1/chat/completions"
        );
    }
}
