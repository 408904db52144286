//! The `/mcp/NAME` route: Streamable HTTP from claw-agent's MCP client to a remote MCP server
//! the owner configured for this group (`claw mcp add G NAME --url URL`).
//!
//! The container never learns the URL; it asks for a name, and only names configured for its
//! group exist. What passes is narrow: the methods Streamable HTTP uses (POST, GET, DELETE), the
//! headers it needs (an allowlist; never the client's `Authorization` or cookies), no redirects,
//! and the egress rule for names: a host *name* must resolve only to public addresses that are
//! not this host's (`addr.rs`, applied in the resolver so the address checked is the address
//! dialled). An IP literal in the URL is taken as the owner wrote it, like a listed IP in the
//! egress allowlist. Configuring the URL is the owner's allowance for this route only; it does
//! not open CONNECT to that host. Bounds: the request body as for model calls (`body.rs`), one
//! tunnel slot per open request (a server's event stream can stay open), and at most
//! [`MAX_DOWN`] bytes relayed per response.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ureq::http::{HeaderName, HeaderValue, Method, Request, Uri};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::egress::{MAX_TUNNELS, TunnelSlot};
use super::http::{self, Head};
use super::{ProxyEvent, Shared, addr, body};

/// One remote MCP server of the group: its route name and where it really is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRoute {
    pub name: String,
    pub url: String,
}

/// Request headers passed to the server; everything else the container sends is dropped.
const PASS_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];
/// Bytes relayed from one response before it is cut (a server's event stream included).
pub const MAX_DOWN: u64 = 64 * 1024 * 1024;

/// The client for remote MCP servers: statuses pass through, no redirects (a server cannot
/// send the proxy elsewhere), and names resolved through [`CheckedResolver`].
pub fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("claw-proxy")
        .accept("")
        .proxy(None)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(600)))
        // An event stream may be quiet for long; a dead server must still end.
        .timeout_per_read(Some(Duration::from_secs(600)))
        .build();
    ureq::Agent::with_parts(config, DefaultConnector::default(), CheckedResolver)
}

/// Resolves as usual, then keeps a host name only if every address is public and not this
/// host's (the egress rule). Lives in the resolver so there is no second lookup to rebind.
/// ureq marks its resolver API unversioned; Cargo.lock pins the version this was written for.
#[derive(Debug)]
struct CheckedResolver;

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let found = DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or("");
        if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            return Ok(found);
        }
        let list: Vec<SocketAddr> = found.iter().copied().collect();
        let ok = addr::check_resolved(host, list, &addr::local_addresses())
            .map_err(|why| ureq::Error::Other(format!("egress refused: {why}").into()))?;
        let mut out = self.empty();
        for a in ok.into_iter().take(16) {
            out.push(a);
        }
        Ok(out)
    }
}

/// Serves `/mcp/<rest>`; `rest` is the name, optionally with a query (dropped).
pub fn forward(
    mut conn: UnixStream,
    head: &Head,
    leftover: Vec<u8>,
    rest: &str,
    shared: &Shared,
) -> ProxyEvent {
    let name = rest.split(['?', '#']).next().unwrap_or("");
    let Some(route) = shared.mcp.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = shared.mcp.iter().map(|r| r.name.as_str()).collect();
        let folder = shared.folder.as_deref().unwrap_or("FOLDER");
        let msg = format!(
            "claw: no remote MCP server `{}` for this group (configured: {}); the owner adds one with: claw mcp add {folder} NAME --url URL",
            super::json::clip(name, 40),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
        let _ = http::write_simple(&mut conn, 404, &msg);
        return event(name, "-", 0, false, "no such MCP server", 0, 0);
    };
    let uri: Uri = match route.url.parse() {
        Ok(u) => u,
        Err(_) => {
            let _ = http::write_simple(&mut conn, 500, "claw: the configured MCP URL is not a URL");
            return event(name, "-", 0, false, "bad configured URL", 0, 0);
        }
    };
    let host = uri.host().unwrap_or("-").to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let method = match head.method.as_str() {
        "POST" => Method::POST,
        "GET" => Method::GET,
        "DELETE" => Method::DELETE,
        _ => {
            let _ = http::write_simple(
                &mut conn,
                405,
                "claw: MCP routes take POST, GET or DELETE (Streamable HTTP)",
            );
            return event(name, &host, port, false, "method not allowed", 0, 0);
        }
    };
    let Some(_slot) = TunnelSlot::take(shared) else {
        let msg = format!(
            "claw: {MAX_TUNNELS} tunnels or MCP streams are already open in this run; close one and retry"
        );
        let _ = http::write_simple(&mut conn, 503, &msg);
        return event(name, &host, port, true, "too many open streams", 0, 0);
    };
    let body = match body::read_body(&mut conn, head, leftover, &shared.body_budget) {
        Ok(b) => b,
        Err(rej) => {
            let _ = http::write_simple(&mut conn, rej.status, &rej.message);
            return event(name, &host, port, true, "request body refused", 0, 0);
        }
    };
    let up = body.bytes.len() as u64;
    let mut builder = Request::builder().method(method).uri(uri);
    for (n, v) in &head.headers {
        if PASS_HEADERS.contains(&n.as_str())
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_bytes(v),
            )
        {
            builder = builder.header(n, v);
        }
    }
    let sent = if head.method == "POST" {
        builder
            .header("content-length", up)
            .body(body.bytes)
            .map(|r| shared.mcp_agent.run(r))
    } else {
        builder.body(()).map(|r| shared.mcp_agent.run(r))
    };
    drop(body.permit);
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let refused = e.to_string().contains("egress refused");
            let msg = format!("claw: could not reach MCP server `{name}` ({e})");
            let _ = http::write_simple(&mut conn, if refused { 403 } else { 502 }, &msg);
            let why = format!(
                "{}: {e}",
                if refused {
                    "refused"
                } else {
                    "upstream failed"
                }
            );
            return event(name, &host, port, !refused, &why, up, 0);
        }
        Err(_) => {
            let _ = http::write_simple(&mut conn, 400, "claw: could not build the MCP request");
            return event(name, &host, port, true, "bad request", up, 0);
        }
    };
    let status = response.status().as_u16();
    let (down, cut) = relay(&mut conn, &head.method, response);
    let why = if cut {
        format!("status {status}; cut at {MAX_DOWN} bytes")
    } else {
        format!("status {status}")
    };
    event(name, &host, port, true, &why, up, down)
}

fn event(
    name: &str,
    host: &str,
    port: u16,
    allowed: bool,
    what: &str,
    up: u64,
    down: u64,
) -> ProxyEvent {
    ProxyEvent::Egress {
        host: host.chars().take(255).collect(),
        port,
        allowed,
        reason: format!("mcp `{}`: {what}", super::json::clip(name, 40)),
        bytes_up: up,
        bytes_down: down,
    }
}

/// Writes the server's status and end-to-end headers, then its body as flushed chunks (an
/// event stream reaches the agent event by event). Returns bytes relayed and whether the body
/// was cut at [`MAX_DOWN`]; a cut or broken body ends without the final chunk, so the client
/// sees the stream broke.
fn relay(
    conn: &mut UnixStream,
    method: &str,
    response: ureq::http::Response<ureq::Body>,
) -> (u64, bool) {
    let (parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let has_body =
        !(method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304);
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
        // No cookies back either: a session lives in `mcp-session-id`.
        if http::is_hop_by_hop(name, &tokens)
            || name == "set-cookie"
            || (has_body && name == "content-length")
        {
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
        return (0, false);
    }
    let mut reader = body.into_reader();
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let room = (MAX_DOWN - total).min(buf.len() as u64) as usize;
        if room == 0 {
            return (total, true);
        }
        match reader.read(&mut buf[..room]) {
            Ok(0) => {
                let _ = http::write_last_chunk(conn);
                return (total, false);
            }
            Ok(n) => {
                if http::write_chunk(conn, &buf[..n]).is_err() {
                    return (total, false);
                }
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (total, false),
        }
    }
}
