//! The proxy's `/mcp/NAME` route against a real server on loopback: only configured names exist,
//! only the Streamable HTTP methods and headers pass (never the container's Authorization or
//! cookies, nor the server's Set-Cookie), a host *name* resolving to this host is refused by the
//! egress rule, and every request is one audited event.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use claw::infra::proxy::{LlmPolicy, McpRoute, Provider, Proxy, ProxyConfig, ProxyEvent, Upstream};

fn proxy(routes: Vec<McpRoute>) -> (Proxy, mpsc::Receiver<ProxyEvent>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream {
        base_url: "http://127.0.0.1:9".into(),
        api_key: None,
    };
    let cfg = ProxyConfig {
        socket_path: dir.path().join("proxy.sock"),
        anthropic: up.clone(),
        openai: up,
        egress_allow: vec![],
        folder: Some("family".into()),
        llm: LlmPolicy {
            provider: Provider::Anthropic,
            model: "m".into(),
            allowed_models: vec![],
            max_tokens: 1000,
            concurrency: 2,
            requests_per_run: 10,
        },
        asker: None,
        credentials: None,
        mcp: routes,
        searcher: None,
    };
    let (tx, rx) = mpsc::channel();
    (Proxy::start(cfg, tx).unwrap(), rx, dir)
}

/// One request over the socket; returns the whole raw response.
fn send(p: &Proxy, raw: &str) -> String {
    let mut s = UnixStream::connect(p.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A server that answers one request with an MCP-style reply and hands back the head it saw.
fn server() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            head.push_str(&String::from_utf8_lossy(&body));
            let _ = tx.send(head);
            let reply = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
            let mut c = c;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: sess-42\r\nset-cookie: track=1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (port, rx)
}

#[test]
fn configured_route_passes_only_what_streamable_http_needs() {
    let (port, seen) = server();
    let (p, events, _dir) = proxy(vec![McpRoute {
        name: "srv".into(),
        url: format!("http://127.0.0.1:{port}/mcp"),
    }]);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let resp = send(
        &p,
        &format!(
            "POST /mcp/srv HTTP/1.1\r\nhost: claw\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-session-id: sess-42\r\nauthorization: Bearer stolen-token\r\ncookie: a=b\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let head = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("post /mcp http/1.1"), "{head}");
    assert!(lower.contains("mcp-session-id: sess-42"), "{head}");
    assert!(lower.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
    assert!(
        !lower.contains("authorization") && !lower.contains("cookie"),
        "{head}"
    );
    assert!(head.ends_with(body), "{head}");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("mcp-session-id: sess-42"), "{resp}");
    assert!(!resp.to_ascii_lowercase().contains("set-cookie"), "{resp}");
    assert!(resp.contains(r#""tools":[]"#), "{resp}");
    match events.recv_timeout(Duration::from_secs(10)).unwrap() {
        ProxyEvent::Egress {
            host,
            port: p2,
            allowed,
            reason,
            bytes_up,
            ..
        } => {
            assert_eq!((host.as_str(), p2, allowed), ("127.0.0.1", port, true));
            assert!(reason.contains("mcp `srv`"), "{reason}");
            assert_eq!(bytes_up, body.len() as u64);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_names_other_methods_and_inward_names_are_refused() {
    let (port, _seen) = server();
    let (p, events, _dir) = proxy(vec![McpRoute {
        name: "inward".into(),
        // A name, not a literal: it resolves to this host, which the egress rule refuses.
        url: format!("http://localhost:{port}/mcp"),
    }]);
    let r = send(&p, "POST /mcp/other HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 404") && r.contains("claw mcp add family NAME --url URL"),
        "{r}"
    );
    let r = send(&p, "PUT /mcp/inward HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let r = send(
        &p,
        "POST /mcp/inward HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
    );
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("egress refused"),
        "{r}"
    );
    let evs: Vec<ProxyEvent> = (0..3)
        .map(|_| events.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    for e in &evs {
        match e {
            ProxyEvent::Egress {
                allowed, reason, ..
            } => {
                assert!(!allowed, "{e:?}");
                assert!(reason.starts_with("mcp `"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
