//! Reading a request body into memory, bounded three ways: one body is at most [`MAX_BODY`]
//! bytes, all bodies buffered at once by one proxy share a byte [`Gate`] (so parallel requests
//! cannot add up), and the whole body must arrive before a deadline.
//!
//! Chunked framing is decoded through a small scratch buffer: chunk data goes straight into the
//! body, and trailer lines are counted and dropped, never kept (at most [`MAX_HEAD`] of them).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::http::{Head, MAX_HEAD, Reject, is_timeout};
use super::limits::{Gate, Permit};

/// Largest request body buffered for an LLM call (images in prompts make these a few MiB).
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Total bytes of request bodies one proxy holds at once, across all its connections.
pub const BODY_BUDGET: u64 = 32 * 1024 * 1024;
/// How long a request waits for room in the body budget before it is answered 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(60);
/// Time a client gets to send a whole body, however it trickles.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest chunk-size line (with extensions) accepted.
const MAX_SIZE_LINE: usize = 1024;
/// Bytes read from the socket at a time.
const READ: usize = 16 * 1024;

/// A body in memory and the budget it holds; dropping the permit gives the bytes back.
pub struct Body {
    pub bytes: Vec<u8>,
    pub permit: Permit,
}

/// Reads the request body announced by `head`, starting with `leftover` bytes already read.
/// Supports `Content-Length` and chunked bodies; refuses both at once, the classic
/// request-smuggling ambiguity.
pub fn read_body(
    r: &mut impl Read,
    head: &Head,
    leftover: Vec<u8>,
    budget: &Gate,
) -> Result<Body, Reject> {
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
    let mut src = Source::new(r, leftover);
    if chunked {
        let permit = budget.acquire(0, BUDGET_WAIT).ok_or_else(busy)?;
        return read_chunked(&mut src, permit);
    }
    let Some(first) = lengths.first() else {
        let permit = budget.acquire(0, BUDGET_WAIT).ok_or_else(busy)?;
        return Ok(Body {
            bytes: Vec::new(),
            permit,
        });
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
    let permit = budget.acquire(len as u64, BUDGET_WAIT).ok_or_else(busy)?;
    let mut bytes = Vec::with_capacity(len);
    src.take(len, &mut bytes)?;
    Ok(Body { bytes, permit })
}

fn too_large() -> Reject {
    Reject::new(
        413,
        format!("claw: request body is larger than {MAX_BODY} bytes"),
    )
}

fn busy() -> Reject {
    Reject::new(
        503,
        format!(
            "claw: the proxy is already holding {} MiB of request bodies for this run and none \
             was freed in {} s; retry later with fewer or smaller parallel requests",
            BODY_BUDGET >> 20,
            BUDGET_WAIT.as_secs()
        ),
    )
}

fn malformed() -> Reject {
    Reject::new(400, "claw: malformed chunked request body")
}

/// The client socket behind a small scratch buffer that never holds more than one size line or
/// trailer line plus one read.
struct Source<'r, R: Read> {
    r: &'r mut R,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
}

impl<'r, R: Read> Source<'r, R> {
    fn new(r: &'r mut R, leftover: Vec<u8>) -> Self {
        Source {
            r,
            buf: leftover,
            pos: 0,
            deadline: Instant::now() + BODY_TIMEOUT,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads once from the socket into the scratch buffer, after dropping what was consumed.
    fn fill(&mut self) -> Result<(), Reject> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let mut chunk = [0u8; READ];
        let n = self.read_some(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One read that turns EOF, errors and the deadline into a rejection, since a body was
    /// promised.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Reject> {
        let late = || Reject::new(408, "claw: request body not received in time");
        loop {
            if Instant::now() > self.deadline {
                return Err(late());
            }
            match self.r.read(buf) {
                Ok(0) => {
                    return Err(Reject::new(
                        400,
                        "claw: connection closed inside the request body",
                    ));
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(late()),
                Err(_) => {
                    return Err(Reject::new(
                        400,
                        "claw: connection failed inside the request body",
                    ));
                }
            }
        }
    }

    /// Appends exactly `n` bytes to `out`: buffered ones first, then straight from the socket.
    fn take(&mut self, mut n: usize, out: &mut Vec<u8>) -> Result<(), Reject> {
        let have = self.buffered().len().min(n);
        out.extend_from_slice(&self.buf[self.pos..self.pos + have]);
        self.pos += have;
        n -= have;
        let mut chunk = [0u8; READ];
        while n > 0 {
            let want = n.min(READ);
            let got = self.read_some(&mut chunk[..want])?;
            out.extend_from_slice(&chunk[..got]);
            n -= got;
        }
        Ok(())
    }

    /// Consumes one line and returns its length without the CRLF; a line longer than `max` is
    /// refused with `too_long` before more of it is read.
    fn skip_line(&mut self, max: usize, too_long: fn() -> Reject) -> Result<usize, Reject> {
        loop {
            if let Some(i) = self.buffered().windows(2).position(|w| w == b"\r\n") {
                if i > max {
                    return Err(too_long());
                }
                self.pos += i + 2;
                return Ok(i);
            }
            if self.buffered().len() > max + 1 {
                return Err(too_long());
            }
            self.fill()?;
        }
    }

    /// Consumes a chunk-size line (extensions ignored) and returns the size.
    fn chunk_size(&mut self) -> Result<u64, Reject> {
        loop {
            match httparse::parse_chunk_size(self.buffered()) {
                Ok(httparse::Status::Complete((used, size))) => {
                    self.pos += used;
                    return Ok(size);
                }
                Ok(httparse::Status::Partial) if self.buffered().len() <= MAX_SIZE_LINE => {
                    self.fill()?
                }
                _ => return Err(malformed()),
            }
        }
    }

    fn expect_crlf(&mut self) -> Result<(), Reject> {
        while self.buffered().len() < 2 {
            self.fill()?;
        }
        if &self.buffered()[..2] != b"\r\n" {
            return Err(malformed());
        }
        self.pos += 2;
        Ok(())
    }
}

fn read_chunked<R: Read>(src: &mut Source<'_, R>, mut permit: Permit) -> Result<Body, Reject> {
    let mut body: Vec<u8> = Vec::new();
    loop {
        let size = src.chunk_size()?;
        if size == 0 {
            // Trailers carry nothing we forward: count them against MAX_HEAD and drop them.
            let mut trailers = 0usize;
            loop {
                let left = MAX_HEAD.saturating_sub(trailers);
                let n = src.skip_line(left, trailers_too_large)?;
                if n == 0 {
                    return Ok(Body {
                        bytes: body,
                        permit,
                    });
                }
                trailers += n + 2;
                if trailers > MAX_HEAD {
                    return Err(trailers_too_large());
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| too_large())?;
        let need = body.len().checked_add(size).ok_or_else(too_large)?;
        if need > MAX_BODY {
            return Err(too_large());
        }
        if need > body.capacity() {
            // Grow geometrically, but count the whole new capacity against the budget, since
            // that is what the allocator hands out.
            let cap = need.max(body.capacity().saturating_mul(2)).min(MAX_BODY);
            if !permit.grow((cap - body.capacity()) as u64, BUDGET_WAIT) {
                return Err(busy());
            }
            body.reserve_exact(cap - body.len());
        }
        src.take(size, &mut body)?;
        src.expect_crlf()?;
    }
}

fn trailers_too_large() -> Reject {
    Reject::new(
        431,
        format!("claw: request trailers are larger than {MAX_HEAD} bytes or malformed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::proxy::http::read_head;

    fn head_of(raw: &[u8]) -> (Head, Vec<u8>) {
        read_head(&mut &raw[..]).ok().flatten().expect("a head")
    }

    fn body_of(raw: &[u8], rest: &[u8], gate: &Gate) -> Result<Vec<u8>, u16> {
        let (h, leftover) = head_of(raw);
        read_body(&mut &rest[..], &h, leftover, gate)
            .map(|b| b.bytes)
            .map_err(|r| r.status)
    }

    #[test]
    fn content_length_body_and_leftover() {
        let g = Gate::new(BODY_BUDGET);
        let got = body_of(
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            b"cdeXYZ",
            &g,
        );
        assert_eq!(got, Ok(b"abcde".to_vec()));
        assert_eq!(g.in_use(), 0, "budget given back");
    }

    #[test]
    fn chunked_body_is_decoded_and_trailers_dropped() {
        let g = Gate::new(BODY_BUDGET);
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(body_of(raw, b"", &g), Ok(b"abcde".to_vec()));
        // The same body split across reads, data arriving after the head.
        let (h, _) = head_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        let rest = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let got = read_body(&mut &rest[..], &h, Vec::new(), &g).ok().unwrap();
        assert_eq!(got.bytes, b"abcde");
    }

    /// A reader that produces `n` bytes of trailer lines after a terminating chunk, then EOF.
    struct TrailerFlood {
        sent: usize,
        limit: usize,
    }

    impl Read for TrailerFlood {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let line = b"x-flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
            let mut n = 0;
            while n + line.len() <= buf.len() && self.sent < self.limit {
                buf[n..n + line.len()].copy_from_slice(line);
                n += line.len();
                self.sent += line.len();
            }
            Ok(n)
        }
    }

    #[test]
    fn trailer_flood_is_refused_after_max_head_without_reading_on() {
        let g = Gate::new(BODY_BUDGET);
        let (h, _) = head_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut flood = TrailerFlood {
            sent: 0,
            limit: 1 << 30,
        };
        let err = read_body(&mut flood, &h, b"0\r\n".to_vec(), &g)
            .err()
            .expect("refused");
        assert_eq!(err.status, 431);
        assert!(
            flood.sent < MAX_HEAD + 2 * READ,
            "read {} bytes of trailers",
            flood.sent
        );
    }

    #[test]
    fn oversized_and_ambiguous_bodies_are_refused() {
        let g = Gate::new(BODY_BUDGET);
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(body_of(big.as_bytes(), b"", &g), Err(413));
        let chunk = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY + 1
        );
        assert_eq!(body_of(chunk.as_bytes(), b"", &g), Err(413));
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(body_of(both, b"", &g), Err(400));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(body_of(two, b"", &g), Err(400));
        let long_size = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\n",
            "e".repeat(4000)
        );
        assert_eq!(body_of(long_size.as_bytes(), b"", &g), Err(400));
        assert_eq!(g.in_use(), 0);
    }

    #[test]
    fn bodies_wait_for_the_shared_budget() {
        let g = Gate::new(10);
        let held = g.acquire(8, BUDGET_WAIT).unwrap();
        assert!(g.acquire(3, Duration::from_millis(10)).is_none());
        drop(held);
        assert_eq!(
            body_of(
                b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
                b"",
                &g
            ),
            Ok(b"0123456789".to_vec())
        );
    }
}
