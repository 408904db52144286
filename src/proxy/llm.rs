//! The LLM routes: `/llm/anthropic/<rest>` and `/llm/openai/<rest>` forwarded to the configured
//! upstream with the API key added here, on the host, and the response streamed straight back.
//!
//! Client-sent credentials are dropped so the agent can neither learn nor override the key.
//! Nothing here formats a header value or the key into a message, event or log.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use ureq::http::{HeaderName, HeaderValue, Method, Request};

use super::http::{self, Head, Reject};
use super::{ProxyEvent, Upstream};

/// Which upstream a route goes to; decides the auth header and the secret's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

impl Provider {
    /// Name used in routes and events.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
        }
    }

    /// The `secrets.env` variable that holds this provider's key.
    pub fn secret_name(self) -> &'static str {
        match self {
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::OpenAi => "OPENAI_API_KEY",
        }
    }
}

/// Headers the client may not send upstream: credentials (replaced by ours), and framing or
/// routing headers that ureq sets itself from the URL and body.
const DROPPED: &[&str] = &[
    "host",
    "content-length",
    "expect",
    "x-api-key",
    "authorization",
    "proxy-authorization",
];

/// Splits `<rest>?query` into the upstream path and query; refuses `.`/`..` segments (also
/// percent-encoded) so a route cannot climb out of a base URL's path prefix.
fn upstream_path(rest: &str) -> Result<(String, Option<&str>), Reject> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    for seg in path.split('/') {
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "."
            || decoded == ".."
            || seg.contains('\\')
            || seg.to_ascii_lowercase().contains("%2f")
        {
            return Err(Reject::new(
                400,
                "claw: LLM route paths may not contain `.`, `..` or encoded slashes",
            ));
        }
    }
    Ok((format!("/{}", path.trim_start_matches('/')), query))
}

/// Joins the configured base URL (which may carry a path prefix like `/api`) with the path.
fn join_url(base: &str, path: &str, query: Option<&str>) -> String {
    let mut url = format!("{}{}", base.trim_end_matches('/'), path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// What one LLM request amounted to, for its event.
#[derive(Default)]
struct Outcome {
    path: String,
    status: u16,
    bytes_up: u64,
    bytes_down: u64,
}

impl Outcome {
    /// Answers the client with the proxy's own message and records the status.
    fn reject(mut self, conn: &mut UnixStream, rej: Reject) -> Outcome {
        self.status = rej.status;
        let _ = http::write_simple(conn, rej.status, &rej.message);
        self
    }
}

/// Serves one LLM request; `rest` is the target after `/llm/<provider>` (starts with `/` or `?`).
pub fn forward(
    mut conn: UnixStream,
    head: &Head,
    leftover: Vec<u8>,
    rest: &str,
    provider: Provider,
    upstream: &Upstream,
    agent: &ureq::Agent,
) -> ProxyEvent {
    let o = serve(&mut conn, head, leftover, rest, provider, upstream, agent);
    ProxyEvent::Llm {
        provider: provider.name().to_string(),
        method: head.method.chars().take(16).collect(),
        path: o.path,
        status: o.status,
        bytes_up: o.bytes_up,
        bytes_down: o.bytes_down,
    }
}

fn serve(
    conn: &mut UnixStream,
    head: &Head,
    leftover: Vec<u8>,
    rest: &str,
    provider: Provider,
    upstream: &Upstream,
    agent: &ureq::Agent,
) -> Outcome {
    let mut o = Outcome::default();
    let (path, query) = match upstream_path(rest) {
        Ok(pq) => pq,
        Err(rej) => {
            o.path = rest
                .split('?')
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return o.reject(conn, rej);
        }
    };
    // The query string is left out of the event: some APIs put keys there.
    o.path = path.chars().take(200).collect();

    let Some(key) = upstream.api_key.as_deref().filter(|k| !k.is_empty()) else {
        let msg = format!(
            "claw: no API key for {}; the owner can set {} in secrets.env",
            provider.name(),
            provider.secret_name()
        );
        return o.reject(conn, Reject::new(401, msg));
    };

    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    {
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let body = match http::read_body(conn, head, leftover) {
        Ok(b) => b,
        Err(rej) => return o.reject(conn, rej),
    };
    o.bytes_up = body.len() as u64;

    let request = match build_request(head, body, &path, query, provider, upstream, key) {
        Ok(r) => r,
        Err(rej) => return o.reject(conn, rej),
    };
    let response = match agent.run(request) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!(
                "claw: could not reach the {} upstream ({e}); check its base URL in claw.toml and the host's network",
                provider.name()
            );
            return o.reject(conn, Reject::new(502, msg));
        }
    };
    o.status = response.status().as_u16();
    o.bytes_down = relay_response(conn, &head.method, response);
    o
}

/// Builds the upstream request: end-to-end client headers minus credentials, plus our key.
fn build_request(
    head: &Head,
    body: Vec<u8>,
    path: &str,
    query: Option<&str>,
    provider: Provider,
    upstream: &Upstream,
    key: &str,
) -> Result<Request<Vec<u8>>, Reject> {
    let method = Method::from_bytes(head.method.as_bytes())
        .map_err(|_| Reject::new(405, "claw: unsupported request method"))?;
    let mut builder =
        Request::builder()
            .method(method)
            .uri(join_url(&upstream.base_url, path, query));
    for (name, value) in &head.headers {
        if DROPPED.contains(&name.as_str()) || head.is_hop_by_hop(name) {
            continue;
        }
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
        .body(body)
        .map_err(|_| {
            Reject::new(
                400,
                "claw: could not build the upstream request from this one",
            )
        })
}

/// Writes the upstream status and end-to-end headers, then the body as chunks, each flushed as
/// soon as it is read. Returns the body bytes relayed. A missing final chunk tells the client the
/// upstream stream broke.
fn relay_response(
    conn: &mut UnixStream,
    method: &str,
    response: ureq::http::Response<ureq::Body>,
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
        return 0;
    }
    let mut reader = body.into_reader();
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => {
                let _ = http::write_last_chunk(conn);
                return total;
            }
            Ok(n) => {
                if http::write_chunk(conn, &buf[..n]).is_err() {
                    return total;
                }
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_the_base() {
        let (p, q) = upstream_path("/v1/messages?beta=true").ok().unwrap();
        assert_eq!(
            join_url("https://api.anthropic.com/", &p, q),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        let (p, q) = upstream_path("/v1/chat/completions").ok().unwrap();
        assert_eq!(
            join_url("https://openrouter.ai/api", &p, q),
            "https://openrouter.ai/api/v1/chat/completions"
        );
    }

    #[test]
    fn traversal_is_refused() {
        for bad in [
            "/../admin",
            "/v1/%2e%2E/x",
            "/v1/./x",
            "/a%2fb",
            "/a\\..\\b",
        ] {
            assert!(upstream_path(bad).is_err(), "{bad}");
        }
        assert!(upstream_path("/v1/models/gpt-4.1").is_ok());
    }
}
