//! Credential substitution through a real proxy on a Unix socket, in front of a fake HTTPS API
//! on loopback with its own test CA: the API receives the real value only on its bound host and
//! header; a misplaced placeholder never reaches anyone; a client that does not trust the claw CA
//! gets nowhere; unbound hosts keep opaque tunnels. (The same in real containers with curl,
//! Python and Node: `credentials_e2e.rs`.)

#[path = "support/fake_https.rs"]
mod fake_https;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use claw::infra::proxy::ask::{Act, Asker, Decision};
use claw::infra::proxy::substitute::Credential;
use claw::infra::proxy::{
    Credentials, LlmPolicy, Provider, Proxy, ProxyConfig, ProxyEvent, Upstream,
};
use fake_https::FakeHttps;

const PH: &str = "claw-placeholder-fake-00112233445566778899aabbccddeeff";
const REAL: &str = "real-token-Z9";

struct World {
    _dir: tempfile::TempDir,
    proxy: Proxy,
    events: mpsc::Receiver<ProxyEvent>,
    claw_ca: String,
}

/// A proxy whose group allows egress to both fakes and binds credential `fake` to `bound`.
fn world(bound: &FakeHttps, other: &FakeHttps) -> World {
    world_asking(bound, other, None)
}

/// [`world`] with an approvals asker.
fn world_asking(bound: &FakeHttps, other: &FakeHttps, asker: Option<Asker>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let home = claw::infra::paths::Home::new(dir.path().join("home"));
    std::fs::create_dir_all(home.path()).unwrap();
    let ca = claw::infra::ca::ensure(&home).unwrap();
    let claw_ca = ca.cert_pem.clone();
    let extra = claw::infra::ca::pem_blocks(&bound.ca_pem);
    let creds = Credentials::new(
        vec![Credential {
            name: "fake".into(),
            hosts: vec![bound.ip.to_string()],
            header: "authorization".into(),
            scheme: Some("Bearer".into()),
            placeholder: PH.into(),
            value: REAL.into(),
        }],
        ca,
        &extra,
    )
    .unwrap();
    let up = Upstream {
        base_url: "http://127.0.0.1:9".into(),
        api_key: None,
    };
    let (tx, rx) = mpsc::channel();
    let proxy = Proxy::start(
        ProxyConfig {
            socket_path: dir.path().join("proxy.sock"),
            anthropic: up.clone(),
            openai: up,
            egress_allow: vec![
                format!("{}:{}", bound.ip, bound.port),
                format!("{}:{}", other.ip, other.port),
            ],
            folder: Some("alpha".into()),
            llm: LlmPolicy {
                provider: Provider::Anthropic,
                model: "m".into(),
                allowed_models: vec![],
                max_tokens: 100,
                concurrency: 2,
                requests_per_run: 10,
            },
            asker,
            mcp: vec![],
            searcher: None,
            credentials: Some(Arc::new(creds)),
        },
        tx,
    )
    .unwrap();
    World {
        _dir: dir,
        proxy,
        events: rx,
        claw_ca,
    }
}

impl World {
    fn event(&self) -> ProxyEvent {
        self.events.recv_timeout(Duration::from_secs(20)).unwrap()
    }
}

/// CONNECT through the proxy, TLS with `roots` (PEM texts) trusted, one request; returns the
/// whole reply, or the error that stopped it.
fn https(
    w: &World,
    api: &FakeHttps,
    roots: &[&str],
    request: &str,
    body: &[u8],
) -> Result<String, String> {
    let mut s = UnixStream::connect(w.proxy.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "CONNECT {}:{} HTTP/1.1\r\n\r\n", api.ip, api.port).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head);
    }
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for der in claw::infra::ca::pem_blocks(pem) {
            store.add(der.into()).unwrap();
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(api.ip.into());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut req = request.replace('\n', "\r\n").into_bytes();
    req.extend_from_slice(body);
    tls.write_all(&req).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if !out.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn the_bound_host_receives_the_real_value_and_nothing_else_does() {
    let api = FakeHttps::start("127.0.0.1");
    let other = FakeHttps::start("127.0.0.2");
    let w = world(&api, &other);
    let host = format!("{}:{}", api.ip, api.port);

    // 1. The bound header on the bound host: the API gets the real value, the client a reply.
    let reply = https(
        &w,
        &api,
        &[&w.claw_ca],
        &format!(
            "POST /repos/x/issues HTTP/1.1\nHost: {host}\nAuthorization: Bearer {PH}\nContent-Length: 11\n\n"
        ),
        b"{\"a\":\"b c\"}",
    )
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("connection: close"), "{reply}");
    assert!(
        reply.ends_with(r#"{"ok":true,"method":"POST","path":"/repos/x/issues"}"#),
        "{reply}"
    );
    let seen = api.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer real-token-Z9")
    );
    assert_eq!(seen[0].body, b"{\"a\":\"b c\"}");
    assert!(!reply.contains(REAL));
    match w.event() {
        ProxyEvent::Credential {
            used,
            refused,
            status,
            ..
        } => {
            assert_eq!(
                (used, refused, status),
                (vec!["fake".to_string()], false, 200)
            );
        }
        e => panic!("{e:?}"),
    }

    // 2. Misplaced: another header, the URL, the body. Each refused inside the tunnel; the API
    //    sees nothing more.
    for (req, body) in [
        (
            format!("GET / HTTP/1.1\nHost: {host}\nX-Token: {PH}\n\n"),
            &b""[..],
        ),
        (format!("GET /?t={PH} HTTP/1.1\nHost: {host}\n\n"), &b""[..]),
        (
            format!(
                "PUT / HTTP/1.1\nHost: {host}\nContent-Length: {}\n\n",
                PH.len()
            ),
            PH.as_bytes(),
        ),
        (
            format!("GET / HTTP/1.1\nHost: {host}\nAuthorization: token {PH}\n\n"),
            &b""[..],
        ),
    ] {
        let r = https(&w, &api, &[&w.claw_ca], &req, body).unwrap();
        assert!(r.starts_with("HTTP/1.1 403"), "{req}: {r}");
        assert!(!r.contains(REAL), "{r}");
        match w.event() {
            ProxyEvent::Credential {
                refused: true,
                status: 403,
                ..
            } => {}
            e => panic!("{req}: {e:?}"),
        }
    }
    assert_eq!(api.requests().len(), 1, "refused requests must not arrive");

    // 3. Plain HTTP carrying the placeholder to an allowed host: refused before any connection.
    let mut s = UnixStream::connect(w.proxy.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET http://{}:{}/x HTTP/1.1\r\nAuthorization: Bearer {PH}\r\n\r\n",
        other.ip, other.port
    )
    .unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(matches!(
        w.event(),
        ProxyEvent::Credential { refused: true, .. }
    ));

    // 4. A host without a binding: the tunnel is opaque, so the client sees the API's own
    //    certificate (trusting only the API's CA works) and the placeholder arrives unchanged.
    let r = https(
        &w,
        &other,
        &[&other.ca_pem],
        &format!(
            "GET /plain HTTP/1.1\nHost: {}:{}\nAuthorization: Bearer {PH}\nConnection: close\n\n",
            other.ip, other.port
        ),
        b"",
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        other.requests()[0].header("authorization"),
        Some(format!("Bearer {PH}").as_str()),
        "an unbound host gets the placeholder, never a value"
    );
    assert!(matches!(
        w.event(),
        ProxyEvent::Egress { allowed: true, .. }
    ));

    // 5. A client that does not trust the claw CA (Mozilla roots, or the API's own CA as if
    //    pinned) fails the handshake: nothing is sent.
    let mozilla = claw::infra::ca::bundle("");
    for roots in [&mozilla, &api.ca_pem] {
        let e = https(
            &w,
            &api,
            &[roots.as_str()],
            &format!("GET / HTTP/1.1\nHost: {host}\nAuthorization: Bearer {PH}\n\n"),
            b"",
        )
        .unwrap_err();
        assert!(e.contains("certificate") || e.contains("issuer"), "{e}");
        match w.event() {
            ProxyEvent::Credential {
                used,
                status: 0,
                reason,
                ..
            } => {
                assert!(
                    used.is_empty() && reason.contains("does not trust"),
                    "{reason}"
                )
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(api.requests().len(), 1);
}

#[test]
fn an_upstream_with_an_untrusted_certificate_is_refused() {
    let api = FakeHttps::start("127.0.0.1");
    let impostor = FakeHttps::start("127.0.0.1");
    // Trust `api`'s CA upstream, but bind the credential to the host where `impostor` listens:
    // the proxy must refuse to send the value to a server it cannot verify.
    let w = world(&impostor_with_ca_of(&impostor, &api), &api);
    let r = https(
        &w,
        &impostor,
        &[&w.claw_ca],
        &format!("GET / HTTP/1.1\nAuthorization: Bearer {PH}\n\n"),
        b"",
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(
        r.contains("UnknownIssuer") || r.contains("certificate"),
        "{r}"
    );
    assert!(impostor.requests().is_empty());
}

/// `f` with `ca`'s test CA in place of its own (what the proxy is told to trust).
fn impostor_with_ca_of(f: &FakeHttps, ca: &FakeHttps) -> FakeHttps {
    FakeHttps {
        port: f.port,
        ip: f.ip,
        ca_pem: ca.ca_pem.clone(),
        seen: Arc::clone(&f.seen),
    }
}

#[test]
fn the_first_use_in_a_run_is_asked_about_and_a_denial_sends_nothing() {
    let api = FakeHttps::start("127.0.0.1");
    let other = FakeHttps::start("127.0.0.2");
    let host = format!("{}:{}", api.ip, api.port);
    let req = format!("GET /x HTTP/1.1\nHost: {host}\nAuthorization: Bearer {PH}\n\n");
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));

    // Approved: asked once for the credential on this host, then not again in the run.
    let log = Arc::clone(&asked);
    let yes = Asker(Arc::new(move |act: Act, _reason: Option<String>| {
        log.lock().unwrap().push(act);
        Decision::Approved
    }));
    let w = world_asking(&api, &other, Some(yes));
    for _ in 0..2 {
        let r = https(&w, &api, &[&w.claw_ca], &req, b"").unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        w.event();
    }
    assert_eq!(
        *asked.lock().unwrap(),
        vec![Act::Credential {
            name: "fake".into(),
            host: api.ip.to_string()
        }]
    );
    assert_eq!(api.requests().len(), 2);
    drop(w);

    // Denied or expired: 403 with the reason, audited as a refusal, nothing reaches the API.
    for decision in [
        Decision::Denied("the owner said no".into()),
        Decision::Expired,
    ] {
        let d = decision.clone();
        let no = Asker(Arc::new(move |_, _| d.clone()));
        let w = world_asking(&api, &other, Some(no));
        let r = https(&w, &api, &[&w.claw_ca], &req, b"").unwrap();
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
        match w.event() {
            ProxyEvent::Credential {
                refused: true,
                credential,
                reason,
                ..
            } => {
                assert_eq!(credential.as_deref(), Some("fake"));
                assert!(
                    reason.contains("denied") || reason.contains("not approved"),
                    "{reason}"
                );
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(
        api.requests().len(),
        2,
        "a refused use must not reach the API"
    );
}
