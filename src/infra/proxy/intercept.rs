//! TLS termination for CONNECT tunnels to hosts with a bound credential. The proxy answers the
//! tunnel itself with a leaf certificate for the host signed by the per-install CA (`crate::infra::ca`),
//! reads one HTTP request (bounded like every other request), lets `substitute` swap the
//! placeholder for the real value, and sends it upstream over a fresh TLS connection verified
//! against Mozilla's roots (plus `proxy.extra_ca_file`). One request per tunnel: the request goes
//! upstream with `Connection: close` and the reply comes back with it, so no reply framing is
//! parsed beyond its head and the connection thread never needs a helper.
//!
//! Hosts without a bound credential never reach this file: their tunnels stay opaque. The real
//! value exists only in the request written to the upstream TLS stream; it is never logged,
//! never put in an event and never sent back to the client.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::allowlist::{self, Host};
use super::ask::{Act, Decision};
use super::http::{self, HEAD_TIMEOUT, MAX_HEAD, MAX_HEADERS};
use super::substitute::{self, Credential};
use super::{ProxyEvent, Shared, body};

/// How long one read from the upstream, or one write to the client, may block.
const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// The credentials of one run and the TLS material to use them: built by run-group, read by
/// every connection thread.
pub struct Credentials {
    list: Vec<Credential>,
    ca: crate::infra::ca::Ca,
    client: Arc<ClientConfig>,
    /// Server configurations per host, each with a leaf made on first use.
    leaves: Mutex<HashMap<String, Arc<ServerConfig>>>,
    /// (credential, host) pairs the owner already approved in this run.
    approved: Mutex<HashSet<(String, String)>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("list", &self.list)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Credentials {
    /// The run's bound credentials, the CA that signs leaves for their hosts, and extra roots
    /// (DER) to trust upstream beside Mozilla's.
    pub fn new(
        list: Vec<Credential>,
        ca: crate::infra::ca::Ca,
        extra_roots: &[Vec<u8>],
    ) -> Result<Credentials, String> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        for der in extra_roots {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("an extra CA certificate is not usable: {e}"))?;
        }
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Credentials {
            list,
            ca,
            client: Arc::new(client),
            leaves: Mutex::new(HashMap::new()),
            approved: Mutex::new(HashSet::new()),
        })
    }

    /// The credentials, for the decisions in `substitute`.
    pub fn list(&self) -> &[Credential] {
        &self.list
    }

    /// Whether tunnels to `host` (as `Host` displays it) are terminated here.
    pub fn binds(&self, host: &str) -> bool {
        substitute::binds(&self.list, host)
    }

    fn server_config(&self, cert_name: &str) -> Result<Arc<ServerConfig>, String> {
        if let Some(c) = self
            .leaves
            .lock()
            .ok()
            .and_then(|m| m.get(cert_name).cloned())
        {
            return Ok(c);
        }
        let leaf = self
            .ca
            .issue(cert_name)
            .map_err(|e| format!("cannot make a certificate for {cert_name}: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(leaf.cert_der)], key)
            .map_err(|e| format!("cannot use the certificate for {cert_name}: {e}"))?;
        // HTTP/1.1 only: the request is read with the same parser as every other request.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if let Ok(mut m) = self.leaves.lock() {
            m.insert(cert_name.to_string(), Arc::clone(&cfg));
        }
        Ok(cfg)
    }

    /// Asks the owner (through run-group's asker) before the first use of `name` on `host` in
    /// this run; `None` means go ahead, else the refusal reason.
    fn approve(&self, shared: &Shared, name: &str, host: &str) -> Option<String> {
        let key = (name.to_string(), host.to_string());
        let Some(asker) = &shared.asker else {
            return None;
        };
        if self.approved.lock().is_ok_and(|a| a.contains(&key)) {
            return None;
        }
        match asker.ask(Act::Credential {
            name: name.to_string(),
            host: host.to_string(),
        }) {
            Decision::Approved => {
                if let Ok(mut a) = self.approved.lock() {
                    a.insert(key);
                }
                None
            }
            Decision::Denied(why) => Some(format!("use of credential `{name}` denied: {why}")),
            Decision::Expired => Some(format!(
                "use of credential `{name}` was not approved in time"
            )),
        }
    }
}

/// The client's stream with the bytes already read past the CONNECT head put back in front.
struct Prefixed {
    pre: Vec<u8>,
    pos: usize,
    inner: UnixStream,
}

impl Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.pre.len() {
            let n = buf.len().min(self.pre.len() - self.pos);
            buf[..n].copy_from_slice(&self.pre[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What one intercepted request came to, turned into its event at the end.
struct Outcome<'a> {
    host: &'a str,
    port: u16,
    method: String,
    used: Vec<String>,
    refused: Option<Option<String>>,
    reason: String,
    status: u16,
    up: u64,
    down: u64,
}

impl Outcome<'_> {
    fn event(self) -> ProxyEvent {
        ProxyEvent::Credential {
            host: self.host.chars().take(255).collect(),
            port: self.port,
            method: self.method,
            used: self.used,
            refused: self.refused.is_some(),
            credential: self.refused.flatten(),
            reason: self.reason,
            status: self.status,
            bytes_up: self.up,
            bytes_down: self.down,
        }
    }
}

type ClientTls = rustls::StreamOwned<ServerConnection, Prefixed>;

/// Serves one tunnel to a bound host: the connection to `upstream` is open and the destination
/// passed the egress checks; the client has not been answered yet.
#[allow(clippy::too_many_arguments)]
pub fn serve(
    mut conn: UnixStream,
    leftover: Vec<u8>,
    upstream: TcpStream,
    host: &Host,
    port: u16,
    why: &str,
    shared: &Shared,
    creds: &Credentials,
) -> ProxyEvent {
    let shown = host.to_string();
    let mut o = Outcome {
        host: &shown,
        port,
        method: "-".into(),
        used: vec![],
        refused: None,
        reason: why.to_string(),
        status: 0,
        up: 0,
        down: 0,
    };
    let (cert_name, server_name) = match host {
        Host::Ip(ip) => (ip.to_string(), ServerName::IpAddress((*ip).into())),
        Host::Name(n) => match ServerName::try_from(n.clone()) {
            Ok(s) => (n.clone(), s),
            Err(_) => {
                let _ = http::write_simple(&mut conn, 400, "claw: host is not a valid TLS name");
                o.status = 400;
                return o.event();
            }
        },
    };
    let server_cfg = match creds.server_config(&cert_name) {
        Ok(c) => c,
        Err(e) => {
            let _ = http::write_simple(&mut conn, 500, &format!("claw: {e}"));
            o.status = 500;
            o.reason = e;
            return o.event();
        }
    };
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        o.reason = format!("{why}; client went away");
        return o.event();
    }
    let _ = conn.set_read_timeout(Some(HEAD_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(sconn) = ServerConnection::new(server_cfg) else {
        return o.event();
    };
    let mut tls = rustls::StreamOwned::new(
        sconn,
        Prefixed {
            pre: leftover,
            pos: 0,
            inner: conn,
        },
    );
    let (head, rest) = match http::read_head(&mut tls) {
        Ok(Some(h)) => h,
        Ok(None) => {
            o.reason = format!(
                "{why}; TLS handshake or request not completed (a client that does not trust the claw CA stops here)"
            );
            return o.event();
        }
        Err(rej) => return answer(tls, o, rej.status, &rej.message),
    };
    o.method = head.method.chars().take(16).collect();
    if !head.target.starts_with('/') {
        return answer(tls, o, 400, "claw: expected an origin-form request target");
    }
    if let Some(h) = head.header("host") {
        let named = std::str::from_utf8(h)
            .ok()
            .and_then(allowlist::split_host_port)
            .and_then(|(h, _)| allowlist::normalize_host(h));
        if named.as_ref().map(ToString::to_string).as_deref() != Some(shown.as_str()) {
            return answer(
                tls,
                o,
                400,
                &format!("claw: the Host header does not name {shown}, where this tunnel goes"),
            );
        }
    }
    let mut headers = head.headers.clone();
    match substitute::apply(creds.list(), &shown, &head.target, &mut headers) {
        Ok(used) => o.used = used,
        Err(r) => {
            o.refused = Some(r.name);
            o.reason = r.reason.clone();
            return answer(tls, o, 403, &format!("claw: refused: {}", r.reason));
        }
    }
    for name in o.used.clone() {
        if let Some(reason) = creds.approve(shared, &name, &shown) {
            o.refused = Some(Some(name));
            o.reason = reason.clone();
            return answer(tls, o, 403, &format!("claw: {reason}"));
        }
    }
    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    {
        let _ = tls.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let body = match body::read_body(&mut tls, &head, rest, &shared.body_budget) {
        Ok(b) => b,
        Err(rej) => return answer(tls, o, rej.status, &rej.message),
    };
    if substitute::has_mark(&body.bytes) {
        let r = substitute::Refusal {
            name: creds
                .list()
                .iter()
                .find(|c| {
                    body.bytes
                        .windows(c.placeholder.len())
                        .any(|w| w == c.placeholder.as_bytes())
                })
                .map(|c| c.name.clone()),
            reason: format!("a credential placeholder was sent in a request body to {shown}"),
        };
        o.refused = Some(r.name);
        o.reason = r.reason.clone();
        return answer(tls, o, 403, &format!("claw: refused: {}", r.reason));
    }

    // The request as it goes upstream: origin form, the host we checked, the bound header with
    // the real value, the body re-framed by length, and `Connection: close`.
    let mut out = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\n",
        head.method,
        head.target,
        authority(&shown, port)
    )
    .into_bytes();
    let tokens = http::connection_tokens(&head.headers);
    for (name, value) in &headers {
        if matches!(name.as_str(), "host" | "content-length" | "expect")
            || http::is_hop_by_hop(name, &tokens)
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let framed =
        head.header("content-length").is_some() || head.header("transfer-encoding").is_some();
    if framed || !body.bytes.is_empty() {
        out.extend_from_slice(format!("content-length: {}\r\n", body.bytes.len()).as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    for (_, v) in headers.iter_mut() {
        v.fill(0);
    }
    let body_len = body.bytes.len() as u64;
    let Ok(cconn) = ClientConnection::new(Arc::clone(&creds.client), server_name) else {
        return answer(tls, o, 502, "claw: cannot start TLS upstream");
    };
    let _ = upstream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = upstream.set_write_timeout(Some(IO_TIMEOUT));
    let mut up = rustls::StreamOwned::new(cconn, upstream);
    let sent = up
        .write_all(&out)
        .and_then(|()| up.write_all(&body.bytes))
        .and_then(|()| up.flush());
    // The real value is in `out`: wipe it before anything else can fail and keep it around.
    out.fill(0);
    drop(body);
    if let Err(e) = sent {
        let msg = format!("claw: TLS to {shown} failed: {}", tls_error(&e));
        o.reason = format!("{why}; {}", tls_error(&e));
        return answer(tls, o, 502, &msg);
    }
    o.up = out.len() as u64 + body_len;
    let (resp_head, after, status) = match read_response_head(&mut up) {
        Ok(r) => r,
        Err(e) => {
            o.reason = format!("{why}; {e}");
            return answer(tls, o, 502, &format!("claw: {e}"));
        }
    };
    o.status = status;
    let mut down = 0u64;
    if tls.write_all(&resp_head).is_ok() && tls.write_all(&after).is_ok() {
        down = (resp_head.len() + after.len()) as u64;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match up.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tls.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    down += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Includes a server that closes without close_notify: the reply ends there.
                Err(_) => break,
            }
        }
    }
    o.down = down;
    close(tls);
    o.event()
}

/// `host` or `host:port` for the Host header sent upstream.
fn authority(host: &str, port: u16) -> String {
    if port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// Readable text for an upstream TLS failure (certificate problems name themselves).
fn tls_error(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => format!("upstream TLS: {t}"),
        None => format!("upstream: {e}"),
    }
}

/// Answers the client inside the tunnel and records the status.
fn answer(mut tls: ClientTls, mut o: Outcome<'_>, status: u16, message: &str) -> ProxyEvent {
    let _ = http::write_simple(&mut tls, status, message);
    close(tls);
    o.status = status;
    o.event()
}

fn close(mut tls: ClientTls) {
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.inner.shutdown(std::net::Shutdown::Both);
}

/// Reads the upstream's reply head (bounded by [`MAX_HEAD`]) and rewrites it to close the
/// connection after the body. Returns the head to send, bytes read past it, and the status.
fn read_response_head(r: &mut impl Read) -> Result<(Vec<u8>, Vec<u8>, u16), String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(tls_error(&e)),
        };
        if n == 0 {
            return Err("upstream closed before a complete reply head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(used)) => {
                let status = resp.code.unwrap_or(502);
                let mut out = format!(
                    "HTTP/1.1 {status} {}\r\n",
                    resp.reason.unwrap_or("").replace(['\r', '\n'], "")
                )
                .into_bytes();
                for h in resp.headers.iter() {
                    let lower = h.name.to_ascii_lowercase();
                    if matches!(
                        lower.as_str(),
                        "connection" | "keep-alive" | "proxy-connection"
                    ) {
                        continue;
                    }
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"connection: close\r\n\r\n");
                return Ok((out, buf[used..].to_vec(), status));
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(format!(
                    "upstream reply head is larger than {MAX_HEAD} bytes"
                ));
            }
            Err(e) => return Err(format!("malformed reply head from upstream ({e})")),
        }
    }
}
