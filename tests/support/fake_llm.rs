//! A fake LLM server for tests: speaks the Anthropic Messages and OpenAI chat-completions wire
//! formats (streamed or not), plays a per-test script of replies, and records every request.
//!
//! It listens on loopback TCP and, optionally, on a Unix socket, so it can stand directly behind
//! claw-agent (as its proxy socket) or behind the real host proxy (as the upstream). Paths are
//! accepted with or without the `/llm/<provider>` prefix; the format follows the path
//! (`…/messages` → Anthropic, `…/chat/completions` → OpenAI).
//!
//! ```ignore
//! let llm = FakeLlm::start();
//! llm.push(Reply::tool("bash", json!({"command": "ls"})));
//! llm.push(Reply::text("done"));
//! // … run the agent …
//! assert!(llm.requests()[1].text().contains("tool_result"));
//! ```
//!
//! Anthropic requests with more than four `cache_control` markers, or one on an empty text
//! block, are refused with 400 as the real API does. [`FakeLlm::billing`] makes the server bill
//! input like the providers' prompt caches (see `fake_billing.rs`) instead of reporting the
//! scripted counts.
#![allow(dead_code)]

#[path = "fake_billing.rs"]
pub mod billing;
#[path = "fake_wire.rs"]
mod wire;

use billing::Bill;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One piece of a scripted reply.
#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    /// A tool call with well-formed arguments.
    Tool {
        name: String,
        input: Value,
    },
    /// A tool call whose arguments are sent verbatim (for malformed-JSON tests).
    RawTool {
        name: String,
        args: String,
    },
}

/// A scripted reply; build with [`Reply::text`], [`Reply::tool`], [`Reply::status`] and chain options.
#[derive(Debug, Clone)]
pub struct Reply {
    pub parts: Vec<Part>,
    /// HTTP status; anything but 200 sends an error body.
    pub status: u16,
    pub retry_after: Option<String>,
    /// Server-sent events (default) or one JSON body.
    pub stream: bool,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Only answer a request whose raw body contains this text.
    pub when: Option<String>,
    /// (input, output) tokens reported.
    pub usage: (u64, u64),
    /// (cache read, cache write) tokens reported beside them.
    pub cache: (u64, u64),
}

impl Reply {
    fn new(parts: Vec<Part>) -> Reply {
        Reply {
            parts,
            status: 200,
            retry_after: None,
            stream: true,
            delay: Duration::ZERO,
            when: None,
            usage: (10, 5),
            cache: (0, 0),
        }
    }
    /// A plain text answer.
    pub fn text(t: &str) -> Reply {
        Reply::new(vec![Part::Text(t.into())])
    }
    /// One tool call.
    pub fn tool(name: &str, input: Value) -> Reply {
        Reply::new(vec![Part::Tool {
            name: name.into(),
            input,
        }])
    }
    /// One tool call whose argument text is sent as given (may be invalid JSON).
    pub fn raw_tool(name: &str, args: &str) -> Reply {
        Reply::new(vec![Part::RawTool {
            name: name.into(),
            args: args.into(),
        }])
    }
    /// An HTTP error status with an error body.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            ..Reply::new(vec![])
        }
    }
    /// Add another part (text or tool call) after the existing ones.
    pub fn and(mut self, part: Part) -> Reply {
        self.parts.push(part);
        self
    }
    /// Send a `retry-after` header.
    pub fn retry_after(mut self, secs: &str) -> Reply {
        self.retry_after = Some(secs.into());
        self
    }
    /// Stream (default) or send one JSON body.
    pub fn streaming(mut self, on: bool) -> Reply {
        self.stream = on;
        self
    }
    /// Wait before answering.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
    /// Only answer requests whose body contains `needle` (matching replies are tried first).
    pub fn when(mut self, needle: &str) -> Reply {
        self.when = Some(needle.into());
        self
    }
    /// Report these token counts.
    pub fn usage(mut self, input: u64, output: u64) -> Reply {
        self.usage = (input, output);
        self
    }
    /// Report these cache counts beside the input and output (ignored while billing is on).
    pub fn cache(mut self, read: u64, write: u64) -> Reply {
        self.cache = (read, write);
        self
    }
    /// What the reply reports for input when the server does not bill.
    fn scripted_bill(&self) -> Bill {
        Bill {
            input: self.usage.0,
            cache_read: self.cache.0,
            cache_write: self.cache.1,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub raw: String,
    pub arrived: Instant,
    pub finished: Instant,
    /// The status the server answered with.
    pub status: u16,
    /// What the server billed for the input, while billing is on and the reply was a 200.
    pub bill: Option<Bill>,
}

impl Recorded {
    /// A header's value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The Anthropic system prompt's text, whether sent as a string or as text blocks.
    pub fn system(&self) -> String {
        match &self.body["system"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
            _ => String::new(),
        }
    }
    /// The raw body text, for `contains` checks.
    pub fn text(&self) -> &str {
        &self.raw
    }
    /// True when the two requests were being served at the same time.
    pub fn overlaps(&self, other: &Recorded) -> bool {
        self.arrived < other.finished && other.arrived < self.finished
    }
}

struct Inner {
    script: Mutex<Vec<Reply>>,
    log: Mutex<Vec<Recorded>>,
    done: Condvar,
    ids: AtomicU64,
    /// The prompt cache, while billing is on.
    cache: Mutex<Option<billing::Cache>>,
}

/// The running server; its threads live until the test process ends.
pub struct FakeLlm {
    inner: Arc<Inner>,
    addr: SocketAddr,
    socket: Option<PathBuf>,
}

impl FakeLlm {
    /// Listen on 127.0.0.1 only.
    pub fn start() -> FakeLlm {
        FakeLlm::listen(None)
    }
    /// Listen on 127.0.0.1 and on a Unix socket at `path` (use it as CLAW_PROXY_SOCKET).
    pub fn start_with_socket(path: &Path) -> FakeLlm {
        FakeLlm::listen(Some(path))
    }

    fn listen(path: Option<&Path>) -> FakeLlm {
        let inner = Arc::new(Inner {
            script: Mutex::default(),
            log: Mutex::default(),
            done: Condvar::new(),
            ids: AtomicU64::new(1),
            cache: Mutex::default(),
        });
        let tcp = TcpListener::bind("127.0.0.1:0").expect("fake llm: bind loopback");
        let addr = tcp.local_addr().unwrap();
        let i = inner.clone();
        std::thread::spawn(move || {
            for s in tcp.incoming().flatten() {
                let i = i.clone();
                std::thread::spawn(move || serve(s, &i));
            }
        });
        if let Some(p) = path {
            let _ = std::fs::remove_file(p);
            let unix = UnixListener::bind(p)
                .unwrap_or_else(|e| panic!("fake llm: bind {}: {e}", p.display()));
            let i = inner.clone();
            std::thread::spawn(move || {
                for s in unix.incoming().flatten() {
                    let i = i.clone();
                    std::thread::spawn(move || serve(s, &i));
                }
            });
        }
        FakeLlm {
            inner,
            addr,
            socket: path.map(Path::to_path_buf),
        }
    }

    /// `http://127.0.0.1:PORT`, a base URL for an upstream setting.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The Unix socket path, when started with one.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_deref()
    }
    /// Bill input like the providers' prompt caches from now on (an empty cache; prefixes under
    /// `min_cacheable_tokens` are never cached). Replies then report the billed input counts.
    pub fn billing(&self, min_cacheable_tokens: u64) {
        *self.inner.cache.lock().unwrap() = Some(billing::Cache::new(min_cacheable_tokens));
    }
    /// Append a reply to the script.
    pub fn push(&self, r: Reply) {
        self.inner.script.lock().unwrap().push(r);
    }
    /// Replies not used yet.
    pub fn remaining(&self) -> usize {
        self.inner.script.lock().unwrap().len()
    }
    /// Every request answered so far, in the order they arrived (for a client that waits for each
    /// reply, the order it sent them, however the server's threads were scheduled).
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.log.lock().unwrap().clone()
    }
    /// Wait until at least `n` requests were answered (panics after `timeout`).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let until = Instant::now() + timeout;
        let mut log = self.inner.log.lock().unwrap();
        while log.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "fake llm: expected {n} requests, saw {}",
                log.len()
            );
            log = self.inner.done.wait_timeout(log, left).unwrap().0;
        }
        log.clone()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Pick the reply: the first whose `when` matches, else the first without a condition.
fn take_reply(inner: &Inner, raw: &str) -> Option<Reply> {
    let mut script = inner.script.lock().unwrap();
    let pos = script
        .iter()
        .position(|r| r.when.as_deref().is_some_and(|w| raw.contains(w)))
        .or_else(|| script.iter().position(|r| r.when.is_none()))?;
    Some(script.remove(pos))
}

fn serve<S: Read + Write>(stream: S, inner: &Inner) {
    let mut r = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let arrived = Instant::now();
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hdrs);
    if req.parse(&head).is_err() {
        return;
    }
    let path = req.path.unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let raw = String::from_utf8_lossy(&body).into_owned();
    let json: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let route = path
        .trim_start_matches("/llm/anthropic")
        .trim_start_matches("/llm/openai");
    let openai = route.ends_with("/chat/completions");
    let anthropic = route.ends_with("/messages");
    let mut out = r.into_inner();
    let mut bill = None;
    let refused = if anthropic {
        billing::check_breakpoints(&json).err()
    } else {
        None
    };
    let status = if !openai && !anthropic {
        wire::respond(&mut out, 404, &[], "{\"error\":\"fake llm: unknown path\"}");
        404
    } else if let Some(why) = refused {
        let msg =
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": why}});
        wire::respond(&mut out, 400, &[], &msg.to_string());
        400
    } else {
        match take_reply(inner, &raw) {
            None => {
                let msg = json!({"type": "error", "error": {"type": "invalid_request_error",
                    "message": "fake llm: no scripted reply left for this request"}});
                wire::respond(&mut out, 400, &[], &msg.to_string());
                400
            }
            Some(reply) => {
                std::thread::sleep(reply.delay);
                if reply.status == 200 {
                    bill = inner.cache.lock().unwrap().as_mut().map(|c| {
                        if openai {
                            c.openai(&raw)
                        } else {
                            c.anthropic(&json)
                        }
                    });
                }
                let input = bill.unwrap_or_else(|| reply.scripted_bill());
                wire::answer(&mut out, &inner.ids, &reply, input, openai);
                reply.status
            }
        }
    };
    let rec = Recorded {
        path,
        headers,
        body: json,
        raw,
        arrived,
        finished: Instant::now(),
        status,
        bill,
    };
    let mut log = inner.log.lock().unwrap();
    let at = log.partition_point(|r| r.arrived <= rec.arrived);
    log.insert(at, rec);
    drop(log);
    inner.done.notify_all();
}
