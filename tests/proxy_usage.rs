//! Usage measured by the real proxy on a Unix socket, in front of a recording upstream on loopback
//! that answers in the providers' wire formats: streamed and plain, Anthropic and OpenAI, with
//! cache fields. Also: the reply still streams through unbuffered, a streamed OpenAI request
//! always asks for usage, and a spent budget refuses the next model request before it reaches
//! the upstream. The last test is a benchmark (`--ignored`): usage parsing's cost per reply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use claw::infra::proxy::{
    LlmPolicy, Meter, Provider, Proxy, ProxyConfig, ProxyEvent, Upstream, UsageFormat, UsageReader,
};
use claw::rules::cost::Usage;
use claw::rules::cost::budget::{Budget, Limit, Period};
use claw::rules::cost::pricing::Prices;

const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "sk-usage-TESTKEY";

/// A recording upstream: answers each request with the next scripted reply, written in pieces
/// (each piece flushed separately, after `gap`), and keeps every request body.
struct Recording {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

fn upstream(replies: Vec<(&'static str, Vec<String>)>, gap: Duration) -> Recording {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&bodies);
    let script = Arc::new(Mutex::new(replies.into_iter()));
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let (keep, script) = (Arc::clone(&keep), Arc::clone(&script));
            thread::spawn(move || {
                let body = read_request(&mut s);
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null));
                let Some((content_type, pieces)) = script.lock().unwrap().next() else {
                    return;
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
                );
                for p in pieces {
                    if s.write_all(p.as_bytes()).and_then(|_| s.flush()).is_err() {
                        return;
                    }
                    thread::sleep(gap);
                }
            });
        }
    });
    Recording { url, bodies }
}

fn read_request(s: &mut TcpStream) -> String {
    let mut r = BufReader::new(s);
    let mut len = 0;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return String::new();
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

struct Harness {
    proxy: Proxy,
    events: Receiver<ProxyEvent>,
    _dir: tempfile::TempDir,
}

fn start(url: &str, provider: Provider, meter: Meter) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream {
        base_url: url.to_string(),
        api_key: Some(KEY.into()),
    };
    let cfg = ProxyConfig {
        socket_path: dir.path().join("proxy.sock"),
        anthropic: up.clone(),
        openai: up,
        egress_allow: vec![],
        folder: Some("family".into()),
        llm: LlmPolicy {
            provider,
            model: "claude-sonnet-4-5".into(),
            allowed_models: vec![],
            max_tokens: 4096,
            concurrency: 4,
            requests_per_run: 500,
        },
        asker: None,
        searcher: None,
        mcp: vec![],
        credentials: None,
    };
    let (tx, rx) = mpsc::channel();
    Harness {
        proxy: Proxy::start_metered(cfg, tx, meter).unwrap(),
        events: rx,
        _dir: dir,
    }
}

impl Harness {
    /// Sends a model request and returns (status, body text, time to the first body byte).
    fn ask(&self, path: &str, body: &str) -> (u16, String, Duration) {
        let mut s = UnixStream::connect(self.proxy.socket_path()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let t = Instant::now();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nhost: claw\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let status: u16 = head[9..12].parse().unwrap();
        let mut out = Vec::new();
        let mut first = None;
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut data = vec![0; n + 2];
                r.read_exact(&mut data).unwrap();
                first.get_or_insert_with(|| t.elapsed());
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&data[..n]);
            }
        } else {
            r.read_to_end(&mut out).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        (status, text, first.unwrap_or_else(|| t.elapsed()))
    }

    /// The next event's (status, usage).
    fn usage(&self) -> (u16, Option<Usage>) {
        match self.events.recv_timeout(WAIT).expect("an event") {
            ProxyEvent::Llm { status, usage, .. } => (status, usage),
            other => panic!("expected an Llm event, got {other:?}"),
        }
    }
}

fn sse(events: &[serde_json::Value], named: bool) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            if named {
                format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())
            } else {
                format!("data: {e}\n\n")
            }
        })
        .collect()
}

fn anthropic_stream() -> Vec<String> {
    use serde_json::json;
    sse(
        &[
            json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
                "content": [], "model": "claude-sonnet-4-5", "usage": {"input_tokens": 21,
                "cache_creation_input_tokens": 1500, "cache_read_input_tokens": 8000, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}),
            json!({"type": "message_stop"}),
        ],
        true,
    )
}

const ASK: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const ASK_OPENAI: &str =
    r#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn anthropic_streamed_and_plain_replies_report_usage_with_cache_fields() {
    let plain = r#"{"id":"m","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":900,"output_tokens":3}}"#;
    let up = upstream(
        vec![
            ("text/event-stream", anthropic_stream()),
            (
                "application/json",
                vec![plain[..40].into(), plain[40..].into()],
            ),
        ],
        Duration::from_millis(5),
    );
    let h = start(&up.url, Provider::Anthropic, Meter::default());
    let (status, body, _) = h.ask("/llm/anthropic/v1/messages", ASK);
    assert_eq!(status, 200);
    assert_eq!(body, anthropic_stream().concat(), "relayed unchanged");
    assert_eq!(
        h.usage(),
        (
            200,
            Some(Usage {
                input: 21,
                output: 42,
                cache_read: 8000,
                cache_write: 1500
            })
        )
    );
    let (_, body, _) = h.ask("/llm/anthropic/v1/messages", ASK);
    assert_eq!(body, plain);
    assert_eq!(
        h.usage().1,
        Some(Usage {
            input: 7,
            output: 3,
            cache_read: 900,
            cache_write: 0
        })
    );
}

#[test]
fn openai_streams_always_ask_for_usage_and_cached_tokens_are_split_out() {
    use serde_json::json;
    let chunks = sse(
        &[
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": null}),
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null}),
            json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 5000,
                "completion_tokens": 77, "total_tokens": 5077, "prompt_tokens_details": {"cached_tokens": 4864}}}),
        ],
        false,
    );
    let mut chunks = chunks;
    chunks.push("data: [DONE]\n\n".into());
    let plain = r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"usage"}}],"usage":{"prompt_tokens":12,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    let up = upstream(
        vec![
            ("text/event-stream", chunks),
            ("application/json", vec![plain.into()]),
        ],
        Duration::from_millis(2),
    );
    let h = start(&up.url, Provider::OpenAi, Meter::default());
    // The agent did not ask for usage; the proxy asks for it anyway.
    let (status, _, _) = h.ask("/llm/openai/v1/chat/completions", ASK_OPENAI);
    assert_eq!(status, 200);
    assert_eq!(
        up.bodies.lock().unwrap()[0]["stream_options"],
        json!({"include_usage": true})
    );
    assert_eq!(
        h.usage().1,
        Some(Usage {
            input: 136,
            output: 77,
            cache_read: 4864,
            cache_write: 0
        })
    );
    h.ask(
        "/llm/openai/v1/chat/completions",
        r#"{"model":"x","messages":[]}"#,
    );
    assert_eq!(up.bodies.lock().unwrap()[1].get("stream_options"), None);
    assert_eq!(
        h.usage().1,
        Some(Usage {
            input: 12,
            output: 4,
            ..Usage::default()
        })
    );
}

#[test]
fn reading_usage_does_not_hold_the_stream_back() {
    // The upstream pauses 1.5 s after each event: the first must reach the agent long before
    // the reply ends.
    let up = upstream(
        vec![("text/event-stream", anthropic_stream())],
        Duration::from_millis(1500),
    );
    let h = start(&up.url, Provider::Anthropic, Meter::default());
    let t = Instant::now();
    let (_, _, first) = h.ask("/llm/anthropic/v1/messages", ASK);
    let total = t.elapsed();
    assert!(
        first < Duration::from_millis(1200) && total > Duration::from_secs(7),
        "first bytes after {first:?}, whole reply after {total:?}"
    );
    assert_eq!(h.usage().1.map(|u| u.output), Some(42));
}

#[test]
fn a_spent_budget_refuses_the_next_request_before_the_upstream() {
    let up = upstream(
        vec![
            ("text/event-stream", anthropic_stream()),
            ("text/event-stream", anthropic_stream()),
        ],
        Duration::from_millis(1),
    );
    let budget = Budget {
        folder: Some("family".into()),
        name: "Family".into(),
        period: Period::Day,
        limit: Limit::Tokens(5000),
    };
    let meter = Meter::new(vec![budget], Prices::default());
    let h = start(&up.url, Provider::Anthropic, meter.clone());
    // Under the cap when it starts: forwarded, and it completes although it overshoots.
    let (status, _, _) = h.ask("/llm/anthropic/v1/messages", ASK);
    assert_eq!(status, 200);
    assert_eq!(h.usage().1.map(|u| u.total()), Some(9563));
    let states = meter.states(claw::infra::time::now_ms());
    assert_eq!(states[0].1.tokens, 9563, "the proxy added its own usage");
    let (status, body, _) = h.ask("/llm/anthropic/v1/messages", ASK);
    assert_eq!(status, 402, "{body}");
    assert!(
        body.starts_with(
            "claw: group Family has used its 5,000 tokens for today; it resumes at 00:00"
        ) && body.contains("claw group set family --budget-daily-tokens"),
        "{body}"
    );
    assert_eq!(h.usage(), (402, None));
    assert_eq!(
        up.bodies.lock().unwrap().len(),
        1,
        "the refused request never left"
    );
}

/// Benchmark: usage parsing on a streamed reply, in memory and through the proxy (the same reply
/// relayed on the count-tokens route, which reads no usage, is the baseline). Prints figures.
#[test]
#[ignore = "benchmark: run bin/bench-usage"]
fn usage_parsing_overhead_figures() {
    use serde_json::json;
    // A long answer: 4,000 text deltas of ~60 bytes (~0.5 MB of SSE), usage at both ends.
    let mut events = vec![
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 2000, "cache_read_input_tokens": 30000, "output_tokens": 1}}}),
    ];
    for i in 0..4000 {
        events.push(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!("word {i} and some more text here")}}));
    }
    events.push(json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 4000}}));
    let pieces = sse(&events, true);
    let body: String = pieces.concat();
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        let mut r = UsageReader::new(UsageFormat::Anthropic, Some(b"text/event-stream"));
        for c in body.as_bytes().chunks(16 * 1024) {
            r.feed(c);
        }
        assert_eq!(r.finish().unwrap().output, 4000);
    }
    let per = t.elapsed() / n;
    println!(
        "bench usage: parse a {} KB streamed reply ({} events): {:.3} ms ({:.0} MB/s)",
        body.len() / 1000,
        events.len(),
        per.as_secs_f64() * 1000.0,
        body.len() as f64 / per.as_secs_f64() / 1e6
    );
    // Through the proxy: the upstream writes the reply in 64 KB pieces at once.
    let big: Vec<String> = body
        .as_bytes()
        .chunks(64 * 1024)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let rounds = 60;
    let script: Vec<(&'static str, Vec<String>)> = (0..2 * rounds)
        .map(|_| ("text/event-stream", big.clone()))
        .collect();
    let up = upstream(script, Duration::ZERO);
    let h = start(&up.url, Provider::Anthropic, Meter::default());
    let timed = |path: &str, ask: &str| {
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                let (_, got, _) = h.ask(path, ask);
                assert_eq!(got.len(), body.len());
                let _ = h.events.recv_timeout(WAIT);
                t.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    let with = timed("/llm/anthropic/v1/messages", ASK);
    let without = timed(
        "/llm/anthropic/v1/messages/count_tokens",
        r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#,
    );
    println!(
        "bench usage: relay {} KB through the proxy, median of {rounds}: reading usage {:.3} ms, \
         not reading it {:.3} ms, difference {:.3} ms",
        body.len() / 1000,
        with.as_secs_f64() * 1000.0,
        without.as_secs_f64() * 1000.0,
        (with.as_secs_f64() - without.as_secs_f64()) * 1000.0
    );
}
