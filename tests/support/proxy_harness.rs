//! A real proxy on a temp Unix socket, with fake upstreams and echo servers on 127.0.0.1 (the LLM
//! APIs are the only thing doubled), for `tests/proxy*.rs`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use claw::infra::proxy::{LlmPolicy, Provider, Proxy, ProxyConfig, ProxyEvent, Upstream};

pub const ANT_KEY: &str = "sk-ant-TESTKEY-9f3a7c";
pub const OAI_KEY: &str = "sk-oai-TESTKEY-41b2e8";
pub const WAIT: Duration = Duration::from_secs(30);
/// The group's model in every harness.
pub const MODEL: &str = "group-model";

/// What a harness differs in.
pub struct Setup {
    pub upstream: String,
    pub keys: bool,
    pub allow: Vec<String>,
    pub provider: Provider,
    pub concurrency: usize,
    pub requests_per_run: u32,
}

impl Setup {
    /// An Anthropic group with keys, no egress, generous limits, upstream `url`.
    pub fn new(url: &str) -> Setup {
        Setup {
            upstream: url.to_string(),
            keys: true,
            allow: vec![],
            provider: Provider::Anthropic,
            concurrency: 4,
            requests_per_run: 500,
        }
    }

    pub fn start(self) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let key = |k: &str| self.keys.then(|| k.to_string());
        let cfg = ProxyConfig {
            socket_path: dir.path().join("proxy.sock"),
            anthropic: Upstream {
                base_url: self.upstream.clone(),
                api_key: key(ANT_KEY),
            },
            openai: Upstream {
                base_url: format!("{}/openai-prefix/", self.upstream),
                api_key: key(OAI_KEY),
            },
            egress_allow: self.allow,
            folder: Some("family".into()),
            llm: LlmPolicy {
                provider: self.provider,
                model: MODEL.into(),
                allowed_models: vec!["also-allowed".into()],
                max_tokens: 4096,
                concurrency: self.concurrency,
                requests_per_run: self.requests_per_run,
            },
            asker: None,
            searcher: None,
            mcp: vec![],
            credentials: None,
        };
        let (tx, rx) = mpsc::channel();
        let proxy = Proxy::start(cfg, tx).unwrap();
        Harness {
            proxy,
            events: rx,
            _dir: dir,
        }
    }
}

pub struct Harness {
    pub proxy: Proxy,
    pub events: Receiver<ProxyEvent>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// An Anthropic group on upstream `url`, with keys (or not) and egress patterns.
    pub fn start(url: &str, keys: bool, allow: &[String]) -> Harness {
        Setup {
            keys,
            allow: allow.to_vec(),
            ..Setup::new(url)
        }
        .start()
    }

    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.proxy.socket_path()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// The next event, checked never to carry either key.
    pub fn event(&self) -> ProxyEvent {
        let ev = self
            .events
            .recv_timeout(WAIT)
            .expect("an event for the request");
        let shown = format!("{ev:?}");
        assert!(!shown.contains("TESTKEY"), "key leaked: {shown}");
        ev
    }

    pub fn no_more_events(&self) {
        assert!(
            self.events
                .recv_timeout(Duration::from_millis(200))
                .is_err()
        );
    }
}

/// Reads a response head from the client side: (status, lowercased head text).
pub fn read_response_head(r: &mut impl BufRead) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "connection closed inside the response head: {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase())
}

/// Reads one chunk of a chunked body; `None` at the terminating chunk.
pub fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let size = usize::from_str_radix(size.trim(), 16).expect("chunk size line");
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data).unwrap();
    assert_eq!(&data[size..], b"\r\n");
    data.truncate(size);
    (size > 0).then_some(data)
}

/// Sends `request` and reads the whole response: (status, head, body).
pub fn exchange(h: &Harness, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = h.connect();
    s.write_all(request).unwrap();
    read_response(s)
}

/// Reads a whole response from `s`: (status, head, body).
pub fn read_response(s: UnixStream) -> (u16, String, Vec<u8>) {
    let mut r = BufReader::new(s);
    let (status, head) = read_response_head(&mut r);
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        while let Some(c) = read_chunk(&mut r) {
            body.extend_from_slice(&c);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (status, head, body)
}

/// A POST of `body` as JSON to `path` on the proxy.
pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: claw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A fake upstream that serves one request: sends the raw request (head and body) it received
/// to the returned channel, then writes `response`.
pub fn fake_upstream(response: &'static [u8]) -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let req = read_request(&mut s);
        tx.send(req).unwrap();
        s.write_all(response).unwrap();
    });
    (url, rx)
}

/// A fake upstream that serves any number of requests, each on its own thread, answering a
/// small JSON body; every request it received is kept, in arrival order.
pub struct Recorder {
    pub url: String,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&seen);
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let keep = Arc::clone(&keep);
                thread::spawn(move || {
                    loop {
                        let req = read_request(&mut s);
                        if req.is_empty() {
                            return;
                        }
                        keep.lock().unwrap().push(req);
                        let body = b"{\"ok\":true}";
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Recorder { url, seen }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// The JSON body of request `i`.
    pub fn body(&self, i: usize) -> serde_json::Value {
        let r = &self.requests()[i];
        let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
        serde_json::from_str(body).unwrap_or_else(|e| panic!("upstream got non-JSON ({e}): {r}"))
    }
}

/// Reads one HTTP request with a Content-Length body from a TCP stream, as text; empty if the
/// peer closed first.
pub fn read_request(s: &mut TcpStream) -> String {
    let mut r = BufReader::new(s);
    let mut text = String::new();
    let mut len = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return String::new();
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        text.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    text.push_str(&String::from_utf8(body).unwrap());
    text
}

/// An echo server that serves every connection until the client half-closes.
pub fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = [0; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}
