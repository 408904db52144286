//! A fake HTTPS API on loopback with its own test CA (made with rcgen here), for the credential
//! tests: it records every request's method, path, headers and body, and answers 200 with a
//! small JSON body that never echoes a header.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// One request as the fake API saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The running fake API.
pub struct FakeHttps {
    pub port: u16,
    pub ip: IpAddr,
    /// The test CA that signed the server's certificate, as PEM.
    pub ca_pem: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeHttps {
    /// Starts on `ip` (e.g. 127.0.0.1) on a free port.
    pub fn start(ip: &str) -> FakeHttps {
        let ip: IpAddr = ip.parse().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fake API test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::IpAddress(ip)];
        let leaf = p.signed_by(&leaf_key, &issuer).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        let cfg = Arc::new(cfg);
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let (cfg, seen) = (Arc::clone(&cfg), Arc::clone(&seen2));
                std::thread::spawn(move || serve(s, cfg, &seen));
            }
        });
        FakeHttps {
            port,
            ip,
            ca_pem: ca_cert.pem(),
            seen,
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(s: std::net::TcpStream, cfg: Arc<rustls::ServerConfig>, seen: &Mutex<Vec<Seen>>) {
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(20)));
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Keep-alive: answer requests until the client closes.
    loop {
        let (req, used) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut hs);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    Seen {
                        method: r.method.unwrap_or("").into(),
                        path: r.path.unwrap_or("").into(),
                        headers,
                        body: vec![],
                    },
                    n,
                );
            }
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..used);
        let len: usize = req
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut req = req;
        req.body = buf.drain(..len).collect();
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = format!(
            r#"{{"ok":true,"method":"{}","path":"{}"}}"#,
            req.method,
            req.path.replace('"', "")
        );
        seen.lock().unwrap().push(req);
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if tls.write_all(reply.as_bytes()).is_err() || tls.flush().is_err() {
            return;
        }
        if close {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}
