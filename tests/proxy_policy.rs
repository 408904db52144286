//! The model policy as the upstream sees it: a real proxy on a Unix socket in front of a fake
//! upstream on loopback that records every request it receives. What the policy rewrites must
//! arrive rewritten; what it refuses must never arrive at all.

#[path = "support/proxy_harness.rs"]
mod harness;

use harness::*;
use serde_json::json;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use claw::infra::proxy::{Provider, ProxyEvent};

/// The Llm event's (status, model, model_from, max_tokens_clamped).
fn llm_event(h: &Harness) -> (u16, String, Option<String>, bool) {
    match h.event() {
        ProxyEvent::Llm {
            status,
            model,
            model_from,
            max_tokens_clamped,
            ..
        } => (status, model, model_from, max_tokens_clamped),
        other => panic!("expected an Llm event, got {other:?}"),
    }
}

#[test]
fn the_model_is_forced_and_max_tokens_clamped_at_the_upstream() {
    let up = Recorder::start();
    let h = Setup::new(&up.url).start();
    let greedy = json!({"model": "claude-opus-4", "max_tokens": 64000, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, _, _) = exchange(&h, &post("/llm/anthropic/v1/messages", &greedy.to_string()));
    assert_eq!(status, 200);
    let sent = up.body(0);
    assert_eq!(sent["model"], MODEL);
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["messages"], greedy["messages"]);
    assert_eq!(
        llm_event(&h),
        (200, MODEL.into(), Some("claude-opus-4".into()), true)
    );

    // A model the owner allowed passes; a missing max_tokens is inserted.
    let ok = json!({"model": "also-allowed", "messages": []});
    exchange(&h, &post("/llm/anthropic/v1/messages", &ok.to_string()));
    let sent = up.body(1);
    assert_eq!(
        (sent["model"].as_str(), sent["max_tokens"].as_u64()),
        (Some("also-allowed"), Some(4096))
    );
    assert_eq!(llm_event(&h), (200, "also-allowed".into(), None, true));

    // count_tokens: model forced, no max_tokens added (its API refuses one).
    exchange(
        &h,
        &post(
            "/llm/anthropic/v1/messages/count_tokens",
            r#"{"model":"x","messages":[]}"#,
        ),
    );
    assert_eq!(up.body(2), json!({"model": MODEL, "messages": []}));
    assert!(up.requests()[2].starts_with("POST /v1/messages/count_tokens "));
    llm_event(&h);
}

#[test]
fn an_openai_group_gets_its_model_and_a_completion_limit() {
    let up = Recorder::start();
    let h = Setup {
        provider: Provider::OpenAi,
        ..Setup::new(&up.url)
    }
    .start();
    let req = json!({"model": "gpt-5", "messages": [], "stream": true,
        "stream_options": {"include_usage": true}});
    let (status, _, _) = exchange(
        &h,
        &post("/llm/openai/v1/chat/completions", &req.to_string()),
    );
    assert_eq!(status, 200);
    let sent = up.body(0);
    assert_eq!(sent["model"], MODEL);
    assert_eq!(sent["max_completion_tokens"], 4096);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        llm_event(&h),
        (200, MODEL.into(), Some("gpt-5".into()), true)
    );
}

#[test]
fn refused_routes_providers_and_bodies_never_reach_the_upstream() {
    let up = Recorder::start();
    let h = Setup::new(&up.url).start();
    let msg = |extra: serde_json::Value| {
        let mut b = json!({"model": MODEL, "max_tokens": 10, "messages": []});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let m = "/llm/anthropic/v1/messages";
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GET /llm/anthropic/v1/files HTTP/1.1\r\n\r\n".to_vec(), 404, "only POST /llm/anthropic/v1/messages"),
        (b"DELETE /llm/anthropic/v1/files/file_1 HTTP/1.1\r\n\r\n".to_vec(), 404, "not a model route"),
        (post("/llm/anthropic/v1/messages/batches", &msg(json!({}))), 404, "not a model route"),
        (b"GET /llm/anthropic/v1/models HTTP/1.1\r\n\r\n".to_vec(), 404, "not a model route"),
        (post("/llm/anthropic/v1/messages?beta=true", &msg(json!({}))), 404, "without a query"),
        (b"GET /llm/anthropic/v1/messages HTTP/1.1\r\n\r\n".to_vec(), 405, "GET is not allowed"),
        (post("/llm/openai/v1/chat/completions", &msg(json!({}))), 403, "provider is anthropic"),
        (post(m, &msg(json!({"mcp_servers": [{"type": "url", "url": "https://evil.example/mcp", "name": "x"}]}))), 400, "`mcp_servers`"),
        (post(m, &msg(json!({"container": "c_1"}))), 400, "`container`"),
        (post(m, &msg(json!({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}))), 400, "tool type"),
        (post(m, &msg(json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://evil.example/?leak"}}]}]}))), 400, "fetch a URL"),
        (post(m, "[]"), 400, "one JSON object"),
        (post(m, "not json"), 400, "one JSON object"),
        (
            format!("POST {m} HTTP/1.1\r\nanthropic-beta: mcp-client-2025-04-04\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes(),
            400,
            "anthropic-beta `mcp-client-2025-04-04`",
        ),
    ];
    for (req, want, needle) in &cases {
        let (status, _, body) = exchange(&h, req);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, *want, "{}: {text}", String::from_utf8_lossy(req));
        assert!(
            text.contains(needle),
            "{}: {text}",
            String::from_utf8_lossy(req)
        );
        assert!(matches!(h.event(), ProxyEvent::Llm { status, .. } if status == *want));
    }
    assert!(
        up.requests().is_empty(),
        "refused requests reached the upstream: {:?}",
        up.requests()
    );
    h.no_more_events();
}

#[test]
fn duplicate_keys_cannot_smuggle_a_second_model() {
    let up = Recorder::start();
    let h = Setup::new(&up.url).start();
    for body in [
        r#"{"model":"group-model","max_tokens":10,"model":"claude-opus-4","messages":[]}"#,
        r#"{"model":"group-model","m\u006fdel":"claude-opus-4","messages":[]}"#,
        r#"{"max_tokens":10,"messages":[],"max_tokens":64000}"#,
        r#"{"messages":[],"tools":[{"type":"custom","name":"b","type":"web_search_20250305"}]}"#,
    ] {
        let (status, _, text) = exchange(&h, &post("/llm/anthropic/v1/messages", body));
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains("duplicate key"), "{body}: {text}");
        h.event();
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[test]
fn the_run_gets_a_fixed_number_of_model_requests() {
    let up = Recorder::start();
    let h = Setup {
        requests_per_run: 2,
        ..Setup::new(&up.url)
    }
    .start();
    let body = r#"{"messages":[]}"#;
    for want in [200, 200, 429, 429] {
        let (status, _, text) = exchange(&h, &post("/llm/anthropic/v1/messages", body));
        assert_eq!(status, want, "{}", String::from_utf8_lossy(&text));
        if want == 429 {
            assert!(String::from_utf8_lossy(&text).contains("limits.llm_requests_per_run"));
        }
        h.event();
    }
    assert_eq!(up.requests().len(), 2);
}

/// An upstream that holds each request for a while and records the most it held at once.
fn slow_upstream(hold: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let peak = Arc::clone(&most);
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let (now, most) = (Arc::clone(&now), Arc::clone(&most));
            thread::spawn(move || {
                while !read_request(&mut s).is_empty() {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    thread::sleep(hold);
                    now.fetch_sub(1, Ordering::SeqCst);
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, peak)
}

#[test]
fn model_requests_beyond_the_concurrency_limit_wait_their_turn() {
    let (url, most) = slow_upstream(Duration::from_millis(300));
    let h = Setup {
        concurrency: 2,
        ..Setup::new(&url)
    }
    .start();
    let (tx, rx) = mpsc::channel();
    for _ in 0..6 {
        let mut s = h.connect();
        let tx = tx.clone();
        thread::spawn(move || {
            s.write_all(&post("/llm/anthropic/v1/messages", r#"{"messages":[]}"#))
                .unwrap();
            tx.send(read_response(s).0).unwrap();
        });
    }
    let statuses: Vec<u16> = (0..6).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(statuses, [200; 6]);
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "upstream saw more than 2 at once"
    );
}
