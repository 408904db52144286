//! Benchmark, not a test: `bin/bench-proxy` runs it with `--ignored --nocapture` and it prints
//! the proxy's overhead per model request (median and p99): the same request sent straight to a
//! fake upstream on loopback, then through the proxy's Unix socket. It never fails on timing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use claw::infra::proxy::{LlmPolicy, Provider, Proxy, ProxyConfig, ProxyEvent, Upstream};

const MODEL: &str = "claude-bench";

/// The proxy as run-group configures it, with the fake upstream and a key.
fn config(socket_path: std::path::PathBuf, url: &str) -> ProxyConfig {
    let up = Upstream {
        base_url: url.to_string(),
        api_key: Some("sk-bench".into()),
    };
    ProxyConfig {
        socket_path,
        anthropic: up.clone(),
        openai: up,
        egress_allow: vec![],
        folder: Some("bench".into()),
        llm: LlmPolicy {
            provider: Provider::Anthropic,
            model: MODEL.into(),
            allowed_models: vec![],
            max_tokens: 4096,
            concurrency: 4,
            requests_per_run: u32::MAX,
        },
        asker: None,
        searcher: None,
        mcp: vec![],
        credentials: None,
    }
}

/// A keep-alive fake upstream: answers every request with a small JSON body.
fn fake_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            thread::spawn(move || serve_upstream(s));
        }
    });
    url
}

fn serve_upstream(s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let reply = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"ok"}]}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(reply);
        if w.write_all(&out).is_err() || close {
            return;
        }
    }
}

/// A request body shaped like claw-agent's: a system prompt, a transcript, tools.
fn body(transcript_bytes: usize) -> String {
    let turn = "x".repeat(1000);
    let turns = transcript_bytes / 1100 + 1;
    let messages: Vec<serde_json::Value> = (0..turns)
        .map(|i| {
            serde_json::json!({"role": if i % 2 == 0 {"user"} else {"assistant"},
                "content": [{"type": "text", "text": turn}]})
        })
        .collect();
    serde_json::json!({
        "model": MODEL, "max_tokens": 4096, "stream": true,
        "system": "You are Andy.", "messages": messages,
        "tools": [{"name": "bash", "description": "run", "input_schema": {"type": "object"}}],
    })
    .to_string()
}

/// Sends one request on `s` and reads the whole response (chunked or sized).
fn roundtrip(s: &mut (impl Read + Write), head: &str, body: &str) {
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body.as_bytes());
    s.write_all(&out).unwrap();
    let mut r = BufReader::new(s);
    let mut len = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "closed inside the response head");
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = Some(v.trim().parse::<usize>().unwrap());
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut data = vec![0; n + 2];
            r.read_exact(&mut data).unwrap();
            if n == 0 {
                break;
            }
        }
    } else {
        let mut data = vec![0; len.unwrap_or(0)];
        r.read_exact(&mut data).unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Times `n` requests after a warm-up, spaced like an agent's (and below the proxy's pace of
/// `REQUESTS_PER_SEC`, which would otherwise be what is measured).
fn measure(n: usize, mut one: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..20 {
        one();
    }
    let gap = Duration::from_millis(6);
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            thread::sleep(gap);
            let t = Instant::now();
            one();
            t.elapsed()
        })
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
#[ignore = "benchmark: run bin/bench-proxy"]
fn proxy_overhead_figures() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let url = fake_upstream();
    let addr = url.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel::<ProxyEvent>();
    // Drain events as run-group would, so the channel never grows.
    thread::spawn(move || for _ in rx {});
    let proxy = Proxy::start(config(dir.path().join("proxy.sock"), &url), tx).unwrap();
    for size in [2_000usize, 200_000] {
        let b = body(size);
        let direct_head = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             anthropic-version: 2023-06-01\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            b.len()
        );
        let proxy_head = format!(
            "POST /llm/anthropic/v1/messages HTTP/1.1\r\nhost: claw\r\ncontent-type: application/json\r\n\
             anthropic-version: 2023-06-01\r\ncontent-length: {}\r\n\r\n",
            b.len()
        );
        let (d50, d99) = measure(n, || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_nodelay(true).unwrap();
            roundtrip(&mut s, &direct_head, &b);
        });
        let (p50, p99) = measure(n, || {
            let mut s = UnixStream::connect(proxy.socket_path()).unwrap();
            roundtrip(&mut s, &proxy_head, &b);
        });
        println!(
            "bench proxy: body {:>4} KB, {n} requests | direct median {:.3} ms p99 {:.3} ms | \
             via proxy median {:.3} ms p99 {:.3} ms | overhead median {:.3} ms p99 {:.3} ms",
            b.len() / 1000,
            ms(d50),
            ms(d99),
            ms(p50),
            ms(p99),
            ms(p50.saturating_sub(d50)),
            ms(p99.saturating_sub(d99)),
        );
    }
}
