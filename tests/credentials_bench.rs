//! Benchmark, not a test: `bin/bench-credentials` runs it with `--ignored --nocapture`. It prints
//! the cost of credential substitution: one HTTPS request per connection to a fake API on
//! loopback, through the proxy's Unix socket, (a) as a plain CONNECT tunnel (the client does TLS
//! with the API itself) and (b) to a host with a bound credential (the proxy terminates TLS with
//! a leaf from the claw CA, swaps the placeholder, and opens its own verified TLS upstream).
//! Medians and p99; never fails on timing.

#[path = "support/fake_https.rs"]
mod fake_https;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use claw::infra::proxy::substitute::Credential;
use claw::infra::proxy::{Credentials, LlmPolicy, Provider, Proxy, ProxyConfig, Upstream};
use fake_https::FakeHttps;

const PH: &str = "claw-placeholder-bench-00112233445566778899aabbccddeeff";

fn client_config(pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in claw::infra::ca::pem_blocks(pem) {
        roots.add(der.into()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// One request on a fresh tunnel; returns its wall time.
fn once(sock: &std::path::Path, api: &FakeHttps, cfg: &Arc<rustls::ClientConfig>) -> Duration {
    let t = Instant::now();
    let mut s = UnixStream::connect(sock).unwrap();
    write!(s, "CONNECT {}:{} HTTP/1.1\r\n\r\n", api.ip, api.port).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let name = rustls::pki_types::ServerName::IpAddress(api.ip.into());
    let conn = rustls::ClientConnection::new(Arc::clone(cfg), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let req = format!(
        "GET /bench HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {PH}\r\nConnection: close\r\n\r\n",
        api.ip, api.port
    );
    tls.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    t.elapsed()
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 99 / 100).min(v.len() - 1)]),
    )
}

#[test]
#[ignore]
fn bench_substituted_https_vs_plain_tunnel() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let bound = FakeHttps::start("127.0.0.1");
    let plain = FakeHttps::start("127.0.0.2");
    let dir = tempfile::tempdir().unwrap();
    let home = claw::infra::paths::Home::new(dir.path().join("home"));
    std::fs::create_dir_all(home.path()).unwrap();
    let t = Instant::now();
    let ca = claw::infra::ca::ensure(&home).unwrap();
    let ca_ms = t.elapsed().as_secs_f64() * 1000.0;
    let claw_ca = ca.cert_pem.clone();
    let t = Instant::now();
    let creds = Credentials::new(
        vec![Credential {
            name: "bench".into(),
            hosts: vec!["127.0.0.1".into()],
            header: "authorization".into(),
            scheme: Some("Bearer".into()),
            placeholder: PH.into(),
            value: "real".into(),
        }],
        ca,
        &claw::infra::ca::pem_blocks(&bound.ca_pem),
    )
    .unwrap();
    let setup_ms = t.elapsed().as_secs_f64() * 1000.0;
    let up = Upstream {
        base_url: "http://127.0.0.1:9".into(),
        api_key: None,
    };
    let (tx, rx) = mpsc::channel();
    // Drain events as run-group would.
    std::thread::spawn(move || for _ in rx {});
    let proxy = Proxy::start(
        ProxyConfig {
            socket_path: dir.path().join("proxy.sock"),
            anthropic: up.clone(),
            openai: up,
            egress_allow: vec![
                format!("127.0.0.1:{}", bound.port),
                format!("127.0.0.2:{}", plain.port),
            ],
            folder: Some("bench".into()),
            llm: LlmPolicy {
                provider: Provider::Anthropic,
                model: "m".into(),
                allowed_models: vec![],
                max_tokens: 100,
                concurrency: 2,
                requests_per_run: 10,
            },
            asker: None,
            mcp: vec![],
            searcher: None,
            credentials: Some(Arc::new(creds)),
        },
        tx,
    )
    .unwrap();
    let sock = proxy.socket_path().to_path_buf();
    let plain_cfg = client_config(&plain.ca_pem);
    let bound_cfg = client_config(&claw_ca);
    // Warm up (the first bound request also makes the host's leaf).
    let t = Instant::now();
    once(&sock, &bound, &bound_cfg);
    let first_ms = t.elapsed().as_secs_f64() * 1000.0;
    for _ in 0..10 {
        once(&sock, &plain, &plain_cfg);
        once(&sock, &bound, &bound_cfg);
    }
    // Interleaved so both see the same machine load; the proxy paces at 200 requests/s, so
    // every sample is taken after a short pause that keeps it under the pace.
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(6));
        a.push(once(&sock, &plain, &plain_cfg));
        std::thread::sleep(Duration::from_millis(6));
        b.push(once(&sock, &bound, &bound_cfg));
    }
    let (pm, p99) = stats(a);
    let (sm, s99) = stats(b);
    println!("bench credentials: {n} HTTPS requests each, one per connection, loopback API");
    println!("bench credentials: plain CONNECT tunnel     median {pm:.2} ms  p99 {p99:.2} ms");
    println!("bench credentials: substituted (TLS ended)  median {sm:.2} ms  p99 {s99:.2} ms");
    println!(
        "bench credentials: overhead of substitution median {:+.2} ms  p99 {:+.2} ms",
        sm - pm,
        s99 - p99
    );
    println!(
        "bench credentials: one-off costs: CA creation {ca_ms:.1} ms, TLS setup (roots) {setup_ms:.1} ms, first request with leaf issuance {first_ms:.1} ms"
    );
}
