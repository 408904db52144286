//! HTTP/1.1 plumbing for the proxy: bounded, time-limited reading of request heads and bodies
//! (parsed with httparse) and writers for the proxy's own answers and for chunked relaying.
//!
//! Header values may carry credentials, so nothing here formats, logs or derives `Debug` for them.
//! Limits exist because the client is the sandboxed agent, which we do not trust: it must not be
//! able to park a thread forever or make the host buffer without bound.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Largest request head accepted; anything bigger is answered 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 128;
/// Total time a client gets to send a complete head (and each body read) before it is cut off.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy `proxy-connection`; never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A parsed request head. Names are lowercased; values are raw bytes and must never be logged.
pub struct Head {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// First value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether header `name` should be dropped when forwarding: hop-by-hop by definition or
    /// listed in this message's `Connection` header.
    pub fn is_hop_by_hop(&self, name: &str) -> bool {
        is_hop_by_hop(name, &connection_tokens(&self.headers))
    }
}

/// Tokens named in all `Connection` headers of a message, lowercased.
pub fn connection_tokens(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether `name` (lowercase) is hop-by-hop given the message's `Connection` tokens.
pub fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection_tokens.iter().any(|t| t == name)
}

/// Why a request could not be served, as the status and readable text sent back to the client.
/// The text never holds a header value, so it may be shown anywhere.
#[derive(Debug)]
pub struct Reject {
    pub status: u16,
    pub message: String,
}

impl Reject {
    /// A rejection with `status` and a message for the agent.
    pub fn new(status: u16, message: impl Into<String>) -> Reject {
        Reject {
            status,
            message: message.into(),
        }
    }
}

/// Reads one request head. `Ok(None)` means the client closed before sending anything.
/// Returns the head and any bytes read past it (the start of the body or tunnel data).
/// The caller sets the socket's read timeout; this also enforces [`HEAD_TIMEOUT`] in total so a
/// client trickling bytes cannot stretch it.
pub fn read_head(r: &mut impl Read) -> Result<Option<(Head, Vec<u8>)>, Reject> {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => {
                return Err(Reject::new(408, "claw: request head not received in time"));
            }
            Err(_) => return Ok(None),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(Reject::new(
                400,
                "claw: connection closed inside the request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(parsed) = parse_head(&buf)? {
            return Ok(Some(parsed));
        }
        if buf.len() > MAX_HEAD {
            return Err(Reject::new(
                431,
                format!("claw: request head is larger than {MAX_HEAD} bytes"),
            ));
        }
        if started.elapsed() > HEAD_TIMEOUT {
            return Err(Reject::new(408, "claw: request head not received in time"));
        }
    }
}

fn parse_head(buf: &[u8]) -> Result<Option<(Head, Vec<u8>)>, Reject> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(
                431,
                format!("claw: more than {MAX_HEADERS} request headers"),
            ));
        }
        Err(e) => {
            return Err(Reject::new(
                400,
                format!("claw: malformed request head ({e})"),
            ));
        }
    };
    let head = Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
    };
    Ok(Some((head, buf[used..].to_vec())))
}

/// Whether an I/O error is a read timeout (platforms differ in which kind they report).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Standard reason phrase for the statuses the proxy produces itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Writes a complete plain-text answer from the proxy itself and asks the client to close.
pub fn write_simple(w: &mut impl Write, status: u16, message: &str) -> io::Result<()> {
    let body = if message.ends_with('\n') {
        message.to_string()
    } else {
        format!("{message}\n")
    };
    let out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    w.write_all(out.as_bytes())?;
    w.flush()
}

/// Writes one chunk of a chunked body in a single write, so each upstream read reaches the client
/// as soon as it arrives (SSE events must not wait for a buffer to fill).
pub fn write_chunk(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    w.write_all(&out)?;
    w.flush()
}

/// Writes the terminating zero-length chunk; its absence tells the client the stream was cut.
pub fn write_last_chunk(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &[u8]) -> (Head, Vec<u8>) {
        read_head(&mut &raw[..]).ok().flatten().expect("a head")
    }

    #[test]
    fn head_parses_and_keeps_leftover() {
        let (h, rest) = head_of(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcdef");
        assert_eq!(h.method, "POST");
        assert_eq!(h.target, "/x");
        assert_eq!(h.header("host"), Some(&b"a"[..]));
        assert_eq!(rest, b"abcdef");
    }

    #[test]
    fn oversized_head_is_refused() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        while raw.len() <= MAX_HEAD + 10 {
            raw.extend_from_slice(b"x-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let err = read_head(&mut &raw[..]).err().expect("refused");
        assert!(err.status == 431, "status {}", err.status);
    }

    #[test]
    fn connection_listed_headers_are_hop_by_hop() {
        let (h, _) = head_of(b"GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret-Hop\r\n\r\n");
        assert!(h.is_hop_by_hop("x-secret-hop"));
        assert!(h.is_hop_by_hop("te"));
        assert!(!h.is_hop_by_hop("anthropic-version"));
    }
}
