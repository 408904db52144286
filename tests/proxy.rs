//! The host proxy over real sockets: a temp Unix socket for the client side and fake upstreams
//! and echo servers on 127.0.0.1 (the LLM APIs are the only thing doubled). The model policy's
//! effect at the upstream is in `proxy_policy.rs`; resource bounds in `proxy_bounds.rs`.

#[path = "support/proxy_harness.rs"]
mod harness;

use harness::*;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;

use claw::infra::proxy::{Provider, ProxyEvent};

#[test]
fn anthropic_key_is_added_and_client_credentials_are_replaced() {
    let (url, seen) =
        fake_upstream(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}");
    let h = Harness::start(&url, true, &[]);
    let body = format!(r#"{{"model":"{MODEL}","max_tokens":10,"messages":[]}}"#);
    let req = format!(
        "POST /llm/anthropic/v1/messages HTTP/1.1\r\nHost: claw\r\n\
         x-api-key: agent-guess\r\nAuthorization: Bearer agent-guess\r\n\
         anthropic-version: 2023-06-01\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, head, got) = exchange(&h, req.as_bytes());
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(got, b"{\"ok\":true}");

    let up = seen.recv_timeout(WAIT).unwrap();
    let lower = up.to_ascii_lowercase();
    assert!(up.starts_with("POST /v1/messages HTTP/1.1\r\n"), "{up}");
    assert_eq!(lower.matches("x-api-key:").count(), 1, "{up}");
    assert!(up.contains(&format!("x-api-key: {ANT_KEY}\r\n")), "{up}");
    assert!(
        !up.contains("agent-guess"),
        "client credential forwarded: {up}"
    );
    assert!(!lower.contains("authorization:"), "{up}");
    assert!(lower.contains("anthropic-version: 2023-06-01"), "{up}");
    assert!(
        !lower.contains("x-hop"),
        "connection-listed header forwarded: {up}"
    );
    let sent = &up[up.find("\r\n\r\n").unwrap() + 4..];
    let sent: serde_json::Value = serde_json::from_str(sent).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"model": MODEL, "max_tokens": 10, "messages": []})
    );

    match h.event() {
        ProxyEvent::Llm {
            provider,
            method,
            path,
            status,
            bytes_up,
            bytes_down,
            model,
            model_from,
            max_tokens_clamped,
            usage,
        } => {
            assert_eq!(
                (provider.as_str(), method.as_str(), path.as_str()),
                ("anthropic", "POST", "/v1/messages")
            );
            // The reply went upstream but reported no usage.
            assert_eq!(usage, Some(claw::rules::cost::Usage::default()));
            assert_eq!(status, 200);
            assert_eq!(bytes_up, body.len() as u64);
            assert_eq!(bytes_down, 11);
            assert_eq!(
                (model.as_str(), model_from, max_tokens_clamped),
                (MODEL, None, false)
            );
        }
        other => panic!("expected an Llm event, got {other:?}"),
    }
    h.no_more_events();
}

#[test]
fn openai_gets_a_bearer_key_under_the_base_path() {
    let (url, seen) = fake_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
    let h = Setup {
        provider: Provider::OpenAi,
        ..Setup::new(&url)
    }
    .start();
    let body = r#"{"model":"group-model","messages":[]}"#;
    let req = format!(
        "POST /llm/openai/v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer mine\r\n\
         OpenAI-Organization: org-other\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, _) = exchange(&h, req.as_bytes());
    assert_eq!(status, 200);
    let up = seen.recv_timeout(WAIT).unwrap();
    assert!(
        up.starts_with("POST /openai-prefix/v1/chat/completions HTTP/1.1\r\n"),
        "{up}"
    );
    assert!(
        up.contains(&format!("authorization: Bearer {OAI_KEY}\r\n")),
        "{up}"
    );
    assert!(!up.contains("mine") && !up.contains("org-other"), "{up}");
    assert!(matches!(h.event(), ProxyEvent::Llm { status: 200, .. }));
}

#[test]
fn streaming_reaches_the_client_before_the_upstream_finishes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let upstream = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        read_request(&mut s);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap();
        let part1 = b"event: a\ndata: part1\n\n";
        s.write_all(format!("{:x}\r\n", part1.len()).as_bytes())
            .unwrap();
        s.write_all(part1).unwrap();
        s.write_all(b"\r\n").unwrap();
        s.flush().unwrap();
        // Part 2 only after the test has seen part 1 through the proxy: a buffering proxy
        // deadlocks here and the client read times out.
        go_rx.recv_timeout(WAIT).expect("test read part 1");
        let part2 = b"event: b\ndata: part2\n\n";
        s.write_all(format!("{:x}\r\n", part2.len()).as_bytes())
            .unwrap();
        s.write_all(part2).unwrap();
        s.write_all(b"\r\n0\r\n\r\n").unwrap();
    });
    let h = Harness::start(&url, true, &[]);
    let mut s = h.connect();
    s.write_all(b"POST /llm/anthropic/v1/messages HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}")
        .unwrap();
    let mut r = BufReader::new(s);
    let (status, head) = read_response_head(&mut r);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let mut first = Vec::new();
    while !first.ends_with(b"part1\n\n") {
        first.extend(read_chunk(&mut r).expect("part 1 before the end"));
    }
    assert_eq!(first, b"event: a\ndata: part1\n\n");
    go_tx.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(c) = read_chunk(&mut r) {
        rest.extend(c);
    }
    assert_eq!(rest, b"event: b\ndata: part2\n\n");
    upstream.join().unwrap();
    assert!(matches!(
        h.event(),
        ProxyEvent::Llm {
            status: 200,
            bytes_down: 44,
            ..
        }
    ));
}

#[test]
fn upstream_errors_pass_through_with_their_bodies() {
    for (resp, want) in [
        (
            &b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: 20\r\n\r\n{\"error\":\"overload\"}"[..],
            429u16,
        ),
        (&b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom"[..], 500),
    ] {
        let (url, _seen) = fake_upstream(resp);
        let h = Harness::start(&url, true, &[]);
        let (status, head, body) = exchange(
            &h,
            b"POST /llm/anthropic/v1/messages HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
        );
        assert_eq!(status, want);
        let tail = &resp[resp.len() - body.len()..];
        assert_eq!(body, tail);
        if want == 429 {
            assert!(head.contains("retry-after: 3"), "{head}");
        }
        assert!(matches!(h.event(), ProxyEvent::Llm { status, .. } if status == want));
    }
}

#[test]
fn missing_key_names_the_secret_and_unreachable_upstream_is_502() {
    let h = Setup {
        keys: false,
        provider: Provider::OpenAi,
        ..Setup::new("http://127.0.0.1:9")
    }
    .start();
    let (status, _, body) = exchange(
        &h,
        b"POST /llm/openai/v1/chat/completions HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
    );
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("OPENAI_API_KEY in secrets.env"));
    assert!(matches!(h.event(), ProxyEvent::Llm { status: 401, .. }));

    // A port that was just free: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start(&format!("http://{dead}"), true, &[]);
    let (status, _, body) = exchange(
        &h,
        b"POST /llm/anthropic/v1/messages HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
    );
    assert_eq!(status, 502);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("could not reach the anthropic upstream"),
        "{text}"
    );
    assert!(!text.contains(ANT_KEY));
    assert!(matches!(h.event(), ProxyEvent::Llm { status: 502, .. }));
}

#[test]
fn connect_to_a_listed_host_tunnels_bytes_both_ways() {
    let port = echo_server();
    let h = Harness::start("http://127.0.0.1:9", true, &[format!("127.0.0.1:{port}")]);
    let mut s = h.connect();
    s.write_all(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut reply = [0; 39];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.1 200 Connection established\r\n\r\n");
    for msg in [&b"hello through the tunnel"[..], b"second round"] {
        s.write_all(msg).unwrap();
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut tail = Vec::new();
    s.read_to_end(&mut tail).unwrap();
    assert!(tail.is_empty());
    assert_eq!(
        h.event(),
        ProxyEvent::Egress {
            host: "127.0.0.1".into(),
            port,
            allowed: true,
            reason: format!("allowed by `127.0.0.1:{port}`"),
            bytes_up: 36,
            bytes_down: 36,
        }
    );
}

#[test]
fn connect_to_an_unlisted_host_is_refused_and_reported() {
    let port = echo_server();
    let h = Harness::start("http://127.0.0.1:9", true, &["example.org".into()]);
    let (status, _, body) = exchange(
        &h,
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 403);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!("egress to 127.0.0.1:{port} is not allowed")),
        "{text}"
    );
    assert!(
        text.contains(&format!("claw group set family --egress 127.0.0.1:{port}")),
        "{text}"
    );
    match h.event() {
        ProxyEvent::Egress {
            host,
            port: p,
            allowed,
            bytes_up,
            ..
        } => {
            assert_eq!(
                (host.as_str(), p, allowed, bytes_up),
                ("127.0.0.1", port, false, 0)
            );
        }
        other => panic!("expected an Egress event, got {other:?}"),
    }
}

#[test]
fn an_allowed_name_that_resolves_to_loopback_is_refused() {
    let port = echo_server();
    let h = Harness::start("http://127.0.0.1:9", true, &[format!("localhost:{port}")]);
    let (status, _, body) = exchange(
        &h,
        format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("localhost resolves to 127.0.0.1, which is not a public internet address")
            || text.contains("localhost resolves to ::1"),
        "{text}"
    );
    assert!(matches!(
        h.event(),
        ProxyEvent::Egress { allowed: false, .. }
    ));
}

#[test]
fn plain_http_egress_goes_to_the_checked_host_only() {
    let (url, seen) =
        fake_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
    let authority = url.trim_start_matches("http://").to_string();
    let h = Harness::start("http://127.0.0.1:9", true, std::slice::from_ref(&authority));
    let req = format!(
        "GET http://{authority}/file.txt?x=1 HTTP/1.1\r\nHost: internal.example\r\nProxy-Authorization: Basic abc\r\n\r\n"
    );
    let (status, _, body) = exchange(&h, req.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(body, b"hello");
    let up = seen.recv_timeout(WAIT).unwrap();
    assert!(up.starts_with("GET /file.txt?x=1 HTTP/1.1\r\n"), "{up}");
    assert!(up.contains(&format!("host: {authority}\r\n")), "{up}");
    assert!(
        !up.contains("internal.example") && !up.contains("Basic abc"),
        "{up}"
    );
    assert!(matches!(
        h.event(),
        ProxyEvent::Egress { allowed: true, .. }
    ));

    let (status, _, _) = exchange(&h, b"GET http://example.net/ HTTP/1.1\r\n\r\n");
    assert_eq!(status, 403);
    assert!(matches!(
        h.event(),
        ProxyEvent::Egress {
            allowed: false,
            port: 80,
            ..
        }
    ));
}

#[test]
fn health_unknown_routes_and_garbage_each_get_one_event() {
    let h = Harness::start("http://127.0.0.1:9", true, &[]);
    let (status, _, body) = exchange(&h, b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(
        h.event(),
        ProxyEvent::Local {
            method: "GET".into(),
            path: "/health".into(),
            status: 200
        }
    );

    let (status, _, _) = exchange(&h, b"GET http://claw/health HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    h.event();

    let (status, _, body) = exchange(&h, b"POST /llm/gemini/v1 HTTP/1.1\r\n\r\n");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("/llm/anthropic/"));
    assert!(matches!(h.event(), ProxyEvent::Local { status: 404, .. }));

    let (status, _, _) = exchange(&h, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, 400);
    assert!(matches!(h.event(), ProxyEvent::Local { status: 400, .. }));
    h.no_more_events();
}

#[test]
fn socket_is_world_connectable_and_removed_on_shutdown() {
    let mut h = Harness::start("http://127.0.0.1:9", true, &[]);
    let path = h.proxy.socket_path().to_path_buf();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    h.proxy.shutdown();
    assert!(!path.exists());
    assert!(UnixStream::connect(&path).is_err());
}
