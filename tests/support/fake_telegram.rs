//! A fake Telegram Bot API on 127.0.0.1 for tests and the benchmark: std threads and httparse.
//!
//! getUpdates serves scripted updates at or above `offset`, at most `limit` at a time; sendMessage and sendChatAction are recorded; sendMessage can be
//! told to answer 429 with a retry_after; getUpdates can be told to stall (never answer) or to
//! serve already-confirmed updates again. Like the real API it serves only the update types a
//! getUpdates call lists in `allowed_updates` (when it lists any); answerCallbackQuery is recorded.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "123456:TEST-token-do-not-log";
pub const BOT_USERNAME: &str = "claw_test_bot";

#[derive(Default)]
struct State {
    updates: Vec<Value>,
    next_update_id: i64,
    /// Offsets asked for by getUpdates, in order.
    offsets: Vec<i64>,
    get_updates_calls: usize,
    /// getUpdates calls with this index or later never answer.
    stall_from: Option<usize>,
    /// The next getUpdates serves from this update id whatever offset it was given.
    serve_again_from: Option<i64>,
    sent: Vec<Value>,
    actions: Vec<Value>,
    /// Recorded answerCallbackQuery bodies.
    callback_answers: Vec<Value>,
    /// `allowed_updates` of the last getUpdates call that gave one.
    allowed_updates: Option<Vec<String>>,
    /// Answers for the next sendMessage calls: Some(secs) = 429 with retry_after.
    send_script: VecDeque<Option<u64>>,
    /// The next this many sendMessage calls answer 500.
    fail_sends: usize,
    next_msg_id: i64,
    /// Files served by getFile and /file/bot<token>/<path>: file_id → (file_path, bytes).
    files: std::collections::HashMap<String, (String, Vec<u8>)>,
    /// getFile answers without a file_size for these ids (a lying or silent server).
    hide_size: std::collections::HashSet<String>,
    /// Uploads (sendPhoto, sendDocument, sendVoice, …): method and the raw multipart request.
    uploads: Vec<Upload>,
    file_downloads: usize,
}

/// One multipart upload as the fake received it.
#[derive(Debug, Clone)]
pub struct Upload {
    pub method: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Upload {
    /// The value of a text field of the form.
    pub fn field(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let key = format!("name=\"{name}\"\r\n\r\n");
        let at = text.find(&key)? + key.len();
        let end = text[at..].find("\r\n--")?;
        Some(text[at..at + end].to_string())
    }

    /// The bytes of the file part named `name`, with its file name.
    pub fn file(&self, name: &str) -> Option<(String, Vec<u8>)> {
        let key = format!("name=\"{name}\"; filename=\"");
        let pos = find(&self.body, key.as_bytes())? + key.len();
        let fname_end = pos + find(&self.body[pos..], b"\"")?;
        let fname = String::from_utf8_lossy(&self.body[pos..fname_end]).to_string();
        let data_start = fname_end + find(&self.body[fname_end..], b"\r\n\r\n")? + 4;
        let boundary = self.content_type.split("boundary=").nth(1)?.to_string();
        let end_key = format!("\r\n--{boundary}");
        let data_end = data_start + find(&self.body[data_start..], end_key.as_bytes())?;
        Some((fname, self.body[data_start..data_end].to_vec()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A running fake server; it stops accepting when dropped.
pub struct FakeTelegram {
    pub base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeTelegram {
    /// Start on a free loopback port.
    pub fn start() -> FakeTelegram {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            next_update_id: 1,
            next_msg_id: 1000,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, sp) = (st.clone(), sp.clone());
                std::thread::spawn(move || serve(conn, st, sp));
            }
        });
        FakeTelegram { base, state, stop }
    }

    /// Queue a text message update; returns its update id.
    pub fn push_message(&self, chat: Value, from: Value, text: &str) -> i64 {
        self.push(|id| {
            json!({"update_id": id, "message": {"message_id": id, "date": 1_795_255_200 + id,
                   "chat": chat, "from": from, "text": text}})
        })
    }

    /// Queue a button press (`callback_query`) on message `message_id` of `chat`; returns its id.
    pub fn push_callback(&self, chat: Value, from: Value, message_id: i64, data: &str) -> i64 {
        self.push(|id| {
            json!({"update_id": id, "callback_query": {"id": format!("cbq-{id}"), "from": from,
                   "chat_instance": "ci", "data": data,
                   "message": {"message_id": message_id, "date": 1_795_255_200, "chat": chat,
                               "text": "card"}}})
        })
    }

    /// Recorded answerCallbackQuery bodies.
    pub fn callback_answers(&self) -> Vec<Value> {
        self.state.lock().unwrap().callback_answers.clone()
    }

    /// Queue an arbitrary update built from its id; returns the id.
    pub fn push(&self, build: impl FnOnce(i64) -> Value) -> i64 {
        let mut s = self.state.lock().unwrap();
        let id = s.next_update_id;
        s.next_update_id += 1;
        let u = build(id);
        s.updates.push(u);
        id
    }

    /// Offsets getUpdates was called with.
    pub fn offsets(&self) -> Vec<i64> {
        self.state.lock().unwrap().offsets.clone()
    }

    /// Recorded sendMessage bodies.
    pub fn sent(&self) -> Vec<Value> {
        self.state.lock().unwrap().sent.clone()
    }

    /// Recorded sendChatAction bodies.
    pub fn actions(&self) -> Vec<Value> {
        self.state.lock().unwrap().actions.clone()
    }

    /// The next sendMessage calls answer per the script (`Some(secs)` = 429), then normally.
    pub fn script_sends(&self, script: &[Option<u64>]) {
        self.state
            .lock()
            .unwrap()
            .send_script
            .extend(script.iter().copied());
    }

    /// The next `n` sendMessage calls fail with 500 Internal Server Error.
    pub fn fail_sends(&self, n: usize) {
        self.state.lock().unwrap().fail_sends = n;
    }

    /// getUpdates call number `n` (0-based, counted from the start) and later never answer.
    pub fn stall_get_updates_from(&self, n: usize) {
        self.state.lock().unwrap().stall_from = Some(n);
    }

    /// Stop stalling.
    pub fn unstall(&self) {
        self.state.lock().unwrap().stall_from = None;
    }

    /// The next getUpdates serves from `id` again, as if the confirmation had been lost.
    pub fn serve_again_from(&self, id: i64) {
        self.state.lock().unwrap().serve_again_from = Some(id);
    }

    /// Serve `bytes` as file `file_id` (getFile, then the download).
    pub fn add_file(&self, file_id: &str, bytes: Vec<u8>) {
        let path = format!("files/{file_id}.bin");
        self.state
            .lock()
            .unwrap()
            .files
            .insert(file_id.to_string(), (path, bytes));
    }

    /// getFile for `file_id` leaves out file_size, so only the copy's cap can stop an oversize file.
    pub fn hide_size(&self, file_id: &str) {
        self.state
            .lock()
            .unwrap()
            .hide_size
            .insert(file_id.to_string());
    }

    /// Multipart uploads received.
    pub fn uploads(&self) -> Vec<Upload> {
        self.state.lock().unwrap().uploads.clone()
    }

    /// File downloads served.
    pub fn file_downloads(&self) -> usize {
        self.state.lock().unwrap().file_downloads
    }

    /// Number of getUpdates calls so far.
    pub fn get_updates_calls(&self) -> usize {
        self.state.lock().unwrap().get_updates_calls
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Read until a full request (headers + Content-Length body) is buffered.
        let (path, body, used, raw, ctype) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .unwrap_or(0);
                if buf.len() >= head + len {
                    let path = req.path.unwrap_or("/").to_string();
                    let raw = buf[head..head + len].to_vec();
                    let ctype = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                        .map(|h| String::from_utf8_lossy(h.value).to_string())
                        .unwrap_or_default();
                    let body: Value = serde_json::from_slice(&raw).unwrap_or(json!({}));
                    break (path, body, head + len, raw, ctype);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..used);
        if let Some(file) = path.strip_prefix(&format!("/file/bot{TOKEN}/")) {
            let bytes = {
                let mut s = state.lock().unwrap();
                s.file_downloads += 1;
                s.files
                    .values()
                    .find(|(p, _)| p == file)
                    .map(|(_, b)| b.clone())
            };
            let (status, bytes) = match bytes {
                Some(b) => (200, b),
                None => (404, b"not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                bytes.len()
            );
            if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&bytes).is_err() {
                return;
            }
            continue;
        }
        if ctype.starts_with("multipart/form-data") {
            let method = path.rsplit('/').next().unwrap_or("").to_string();
            let mut s = state.lock().unwrap();
            s.uploads.push(Upload {
                method,
                content_type: ctype,
                body: raw,
            });
            s.next_msg_id += 1;
            let text = json!({"ok": true, "result": {"message_id": s.next_msg_id, "date": 0,
                              "chat": {"id": 0, "type": "private"}}})
            .to_string();
            drop(s);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{text}",
                text.len()
            );
            if conn.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let (status, answer) = handle(&path, &body, &state, &stop);
        let Some(answer) = answer else { return };
        let text = answer.to_string();
        let reason = if status == 200 { "OK" } else { "Error" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{text}",
            text.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Status and body for one call; `None` body means hang up without answering.
fn handle(
    path: &str,
    body: &Value,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> (u16, Option<Value>) {
    let Some(rest) = path.strip_prefix(&format!("/bot{TOKEN}/")) else {
        return (
            401,
            Some(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        );
    };
    match rest {
        "getMe" => (
            200,
            Some(
                json!({"ok": true, "result": {"id": 42, "is_bot": true, "first_name": "Claw", "username": BOT_USERNAME}}),
            ),
        ),
        "getUpdates" => {
            let offset = body.get("offset").and_then(Value::as_i64).unwrap_or(0);
            let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(100) as usize;
            let wait = body.get("timeout").and_then(Value::as_u64).unwrap_or(0);
            let allowed: Option<Vec<String>> = body
                .get("allowed_updates")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                });
            let call = {
                let mut s = state.lock().unwrap();
                if allowed.is_some() {
                    s.allowed_updates = allowed;
                }
                s.offsets.push(offset);
                s.get_updates_calls += 1;
                s.get_updates_calls - 1
            };
            let deadline = Instant::now() + Duration::from_secs(wait);
            loop {
                {
                    let mut s = state.lock().unwrap();
                    if s.stall_from.is_some_and(|n| call >= n) {
                        drop(s);
                        // Hold the connection open without answering until stopped.
                        while !stop.load(Ordering::Relaxed)
                            && Instant::now() < deadline + Duration::from_secs(60)
                        {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        return (200, None);
                    }
                    let from = s.serve_again_from.take().unwrap_or(offset);
                    let batch: Vec<Value> = s
                        .updates
                        .iter()
                        .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= from)
                        // Telegram drops the update types a bot did not ask for.
                        .filter(|u| {
                            s.allowed_updates
                                .as_ref()
                                .is_none_or(|a| a.iter().any(|t| u.get(t.as_str()).is_some()))
                        })
                        .take(limit)
                        .cloned()
                        .collect();
                    if !batch.is_empty() || Instant::now() >= deadline {
                        return (200, Some(json!({"ok": true, "result": batch})));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        "sendMessage" => {
            let mut s = state.lock().unwrap();
            if s.fail_sends > 0 {
                s.fail_sends -= 1;
                return (
                    500,
                    Some(
                        json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
                    ),
                );
            }
            if let Some(Some(secs)) = s.send_script.pop_front() {
                return (
                    429,
                    Some(json!({"ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {secs}"),
                    "parameters": {"retry_after": secs}})),
                );
            }
            s.sent.push(body.clone());
            s.next_msg_id += 1;
            let id = s.next_msg_id;
            (
                200,
                Some(
                    json!({"ok": true, "result": {"message_id": id, "date": 0, "chat": {"id": 0, "type": "private"}}}),
                ),
            )
        }
        "answerCallbackQuery" => {
            state.lock().unwrap().callback_answers.push(body.clone());
            (200, Some(json!({"ok": true, "result": true})))
        }
        "getFile" => {
            let id = body.get("file_id").and_then(Value::as_str).unwrap_or("");
            let s = state.lock().unwrap();
            match s.files.get(id) {
                Some((path, bytes)) => {
                    let mut r = json!({"file_id": id, "file_unique_id": id, "file_path": path});
                    if !s.hide_size.contains(id) {
                        r["file_size"] = json!(bytes.len());
                    }
                    (200, Some(json!({"ok": true, "result": r})))
                }
                None => (
                    400,
                    Some(
                        json!({"ok": false, "error_code": 400, "description": "Bad Request: invalid file_id"}),
                    ),
                ),
            }
        }
        "sendChatAction" => {
            state.lock().unwrap().actions.push(body.clone());
            (200, Some(json!({"ok": true, "result": true})))
        }
        other => (
            404,
            Some(
                json!({"ok": false, "error_code": 404, "description": format!("no method {other}")}),
            ),
        ),
    }
}
