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
/// Largest request body buffered for an LLM call (images in prompts make these a few MiB).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

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

/// Reads the request body announced by `head`, starting with `leftover` bytes already read.
/// Supports `Content-Length` and chunked bodies up to [`MAX_BODY`]; refuses both at once, the
/// classic request-smuggling ambiguity.
pub fn read_body(r: &mut impl Read, head: &Head, leftover: Vec<u8>) -> Result<Vec<u8>, Reject> {
    let chunked = head.headers.iter().any(|(n, v)| {
        n == "transfer-encoding"
            && String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let lengths: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_slice())
        .collect();
    if chunked && !lengths.is_empty() {
        return Err(Reject::new(
            400,
            "claw: request has both Content-Length and chunked Transfer-Encoding",
        ));
    }
    if chunked {
        return read_chunked(r, leftover);
    }
    let Some(first) = lengths.first() else {
        return Ok(Vec::new());
    };
    if lengths.iter().any(|l| l != first) {
        return Err(Reject::new(400, "claw: conflicting Content-Length headers"));
    }
    let len: usize = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Reject::new(400, "claw: Content-Length is not a number"))?;
    if len > MAX_BODY {
        return Err(too_large());
    }
    let mut body = leftover;
    body.truncate(len);
    let mut chunk = [0u8; 16 * 1024];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let n = read_some(r, &mut chunk[..want])?;
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

fn too_large() -> Reject {
    Reject::new(
        413,
        format!("claw: request body is larger than {MAX_BODY} bytes"),
    )
}

/// One read that turns EOF and timeouts into a rejection, since a body was promised.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, Reject> {
    loop {
        match r.read(buf) {
            Ok(0) => {
                return Err(Reject::new(
                    400,
                    "claw: connection closed inside the request body",
                ));
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => {
                return Err(Reject::new(408, "claw: request body not received in time"));
            }
            Err(_) => {
                return Err(Reject::new(
                    400,
                    "claw: connection failed inside the request body",
                ));
            }
        }
    }
}

fn read_chunked(r: &mut impl Read, leftover: Vec<u8>) -> Result<Vec<u8>, Reject> {
    let mut raw = leftover;
    let mut pos = 0;
    let mut body = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let bad = || Reject::new(400, "claw: malformed chunked request body");
    loop {
        // Size line.
        let (size, used) = loop {
            match httparse::parse_chunk_size(&raw[pos..]) {
                Ok(httparse::Status::Complete((used, size))) => break (size, used),
                Ok(httparse::Status::Partial) => {
                    if raw.len() - pos > 1024 {
                        return Err(bad());
                    }
                    let n = read_some(r, &mut chunk)?;
                    raw.extend_from_slice(&chunk[..n]);
                }
                Err(_) => return Err(bad()),
            }
        };
        pos += used;
        if size == 0 {
            // Trailers are skipped up to the blank line that ends the message.
            loop {
                if let Some(end) = find(&raw[pos..], b"\r\n") {
                    if end == 0 {
                        return Ok(body);
                    }
                    pos += end + 2;
                    continue;
                }
                if raw.len() - pos > MAX_HEAD {
                    return Err(bad());
                }
                let n = read_some(r, &mut chunk)?;
                raw.extend_from_slice(&chunk[..n]);
            }
        }
        let size = usize::try_from(size).map_err(|_| too_large())?;
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(too_large());
        }
        while raw.len() - pos < size + 2 {
            let n = read_some(r, &mut chunk)?;
            raw.extend_from_slice(&chunk[..n]);
        }
        body.extend_from_slice(&raw[pos..pos + size]);
        if &raw[pos + size..pos + size + 2] != b"\r\n" {
            return Err(bad());
        }
        pos += size + 2;
        // Keep the scratch buffer small on long bodies.
        raw.drain(..pos);
        pos = 0;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
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
        let body = read_body(&mut &b""[..], &h, rest).ok().unwrap();
        assert_eq!(body, b"abc");
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
    fn chunked_body_is_decoded_with_trailers() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 1\r\n\r\n";
        let (h, rest) = head_of(raw);
        let body = read_body(&mut &b""[..], &h, rest).ok().unwrap();
        assert_eq!(body, b"abcde");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let (h, rest) =
            head_of(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            read_body(&mut &b""[..], &h, rest).err().unwrap().status,
            400
        );
        let (h, rest) =
            head_of(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(
            read_body(&mut &b""[..], &h, rest).err().unwrap().status,
            400
        );
    }

    #[test]
    fn connection_listed_headers_are_hop_by_hop() {
        let (h, _) = head_of(b"GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret-Hop\r\n\r\n");
        assert!(h.is_hop_by_hop("x-secret-hop"));
        assert!(h.is_hop_by_hop("te"));
        assert!(!h.is_hop_by_hop("anthropic-version"));
    }
}
