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
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Append a reply to the script.
    pub fn push(&self, r: Reply) {
        self.inner.script.lock().unwrap().push(r);
    }
    /// Replies not used yet.
    pub fn remaining(&self) -> usize {
        self.inner.script.lock().unwrap().len()
    }
    /// Every request answered so far, in the order they finished.
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
    let status = if !openai && !anthropic {
        respond(&mut out, 404, &[], "{\"error\":\"fake llm: unknown path\"}");
        404
    } else {
        match take_reply(inner, &raw) {
            None => {
                let msg = json!({"type": "error", "error": {"type": "invalid_request_error",
                    "message": "fake llm: no scripted reply left for this request"}});
                respond(&mut out, 400, &[], &msg.to_string());
                400
            }
            Some(reply) => {
                std::thread::sleep(reply.delay);
                answer(&mut out, inner, &reply, openai);
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
    };
    inner.log.lock().unwrap().push(rec);
    inner.done.notify_all();
}

fn respond(out: &mut impl Write, status: u16, extra: &[(&str, String)], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body.as_bytes());
    let _ = out.flush();
}

fn answer(out: &mut impl Write, inner: &Inner, reply: &Reply, openai: bool) {
    if reply.status != 200 {
        let kind = match reply.status {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            529 | 503 => "overloaded_error",
            _ => "api_error",
        };
        let extra: Vec<(&str, String)> = reply
            .retry_after
            .iter()
            .map(|v| ("retry-after", v.clone()))
            .collect();
        let body = json!({"type": "error", "error": {"type": kind, "message": format!("fake llm status {}", reply.status)}});
        respond(out, reply.status, &extra, &body.to_string());
        return;
    }
    let id = |p: &str| format!("{p}_{}", inner.ids.fetch_add(1, Ordering::Relaxed));
    let prefix = if openai { "call" } else { "toolu" };
    let parts: Vec<(Part, String)> = reply
        .parts
        .iter()
        .map(|p| (p.clone(), id(prefix)))
        .collect();
    if openai {
        openai_answer(out, reply, &parts)
    } else {
        anthropic_answer(out, reply, &parts, &id("msg"))
    }
}

fn args_text(p: &Part) -> String {
    match p {
        Part::Tool { input, .. } => input.to_string(),
        Part::RawTool { args, .. } => args.clone(),
        Part::Text(_) => String::new(),
    }
}

/// Split text in a few pieces on char boundaries, to exercise delta assembly.
fn pieces(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len().div_ceil(3).max(1);
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

fn stream_head(out: &mut impl Write) {
    let _ = out.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    );
}

fn anthropic_answer(out: &mut impl Write, reply: &Reply, parts: &[(Part, String)], msg_id: &str) {
    let has_tool = parts.iter().any(|(p, _)| !matches!(p, Part::Text(_)));
    let stop = if has_tool { "tool_use" } else { "end_turn" };
    let (input, output) = reply.usage;
    if !reply.stream {
        let content: Vec<Value> = parts
            .iter()
            .map(|(p, id)| match p {
                Part::Text(t) => json!({"type": "text", "text": t}),
                Part::Tool { name, input } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": input})
                }
                Part::RawTool { name, args } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": args})
                }
            })
            .collect();
        let body = json!({"id": msg_id, "type": "message", "role": "assistant", "model": "fake",
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output}});
        respond(out, 200, &[], &body.to_string());
        return;
    }
    stream_head(out);
    let mut ev = |name: &str, data: Value| {
        let _ = write!(out, "event: {name}\ndata: {data}\n\n");
        let _ = out.flush();
    };
    ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": msg_id, "type": "message", "role": "assistant",
            "content": [], "model": "fake", "stop_reason": null,
            "usage": {"input_tokens": input, "output_tokens": 1}}}),
    );
    ev("ping", json!({"type": "ping"}));
    for (i, (p, id)) in parts.iter().enumerate() {
        match p {
            Part::Text(t) => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                );
                for piece in pieces(t) {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                            "delta": {"type": "text_delta", "text": piece}}),
                    );
                }
            }
            Part::Tool { name, .. } | Part::RawTool { name, .. } => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                );
                for piece in pieces(&args_text(p)) {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    );
                }
            }
        }
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        );
    }
    ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": output}}),
    );
    ev("message_stop", json!({"type": "message_stop"}));
}

fn openai_answer(out: &mut impl Write, reply: &Reply, parts: &[(Part, String)]) {
    let has_tool = parts.iter().any(|(p, _)| !matches!(p, Part::Text(_)));
    let finish = if has_tool { "tool_calls" } else { "stop" };
    let (input, output) = reply.usage;
    let usage = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
    let text: String = parts
        .iter()
        .filter_map(|(p, _)| {
            if let Part::Text(t) = p {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    let calls: Vec<(&String, &str, String)> = parts
        .iter()
        .filter_map(|(p, id)| match p {
            Part::Tool { name, .. } | Part::RawTool { name, .. } => {
                Some((id, name.as_str(), args_text(p)))
            }
            Part::Text(_) => None,
        })
        .collect();
    if !reply.stream {
        let content = if text.is_empty() {
            Value::Null
        } else {
            json!(text)
        };
        let mut message = json!({"role": "assistant", "content": content});
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
        }
        let body = json!({"id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage});
        respond(out, 200, &[], &body.to_string());
        return;
    }
    stream_head(out);
    let mut chunk = |delta: Value, finish: Value, usage: Option<&Value>| {
        let mut c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(u) = usage {
            c["choices"] = json!([]);
            c["usage"] = u.clone();
        }
        let _ = write!(out, "data: {c}\n\n");
        let _ = out.flush();
    };
    chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        None,
    );
    if !text.is_empty() {
        for piece in pieces(&text) {
            chunk(json!({"content": piece}), Value::Null, None);
        }
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        let first = json!({"tool_calls": [{"index": i, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""}}]});
        chunk(first, Value::Null, None);
        for piece in pieces(args) {
            chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
                None,
            );
        }
    }
    chunk(json!({}), json!(finish), None);
    chunk(json!({}), Value::Null, Some(&usage));
    let _ = out.write_all(b"data: [DONE]\n\n");
    let _ = out.flush();
}
