//! `web_fetch`: GET a URL through the egress proxy (the host's allowlist decides).
//!
//! It never connects anywhere but the loopback relay.

use super::{Ctx, Output, arg_str};
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

/// Largest trust bundle read from `SSL_CERT_FILE` (Mozilla's roots are about 250 KiB).
const MAX_BUNDLE: u64 = 4 * 1024 * 1024;

/// Mozilla's roots, or when the host set `SSL_CERT_FILE` (a run with bound credentials, whose
/// bundle adds claw's CA so the proxy can substitute them) the certificates in that file.
fn tls_config() -> ureq::tls::TlsConfig {
    let roots = std::env::var_os("SSL_CERT_FILE")
        .and_then(|p| std::fs::File::open(p).ok())
        .and_then(|f| {
            let mut pem = Vec::new();
            f.take(MAX_BUNDLE).read_to_end(&mut pem).ok()?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            (!certs.is_empty()).then(|| ureq::tls::RootCerts::new_with_certs(&certs))
        })
        .unwrap_or(ureq::tls::RootCerts::WebPki);
    ureq::tls::TlsConfig::builder().root_certs(roots).build()
}

/// Fetch `input.url` and return status and (roughly de-tagged) text.
pub fn fetch(ctx: &Ctx, input: &Value) -> Output {
    let url = match arg_str(input, "url") {
        Ok(u) => u,
        Err(e) => return e,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Output::err(format!(
            "web_fetch needs an http:// or https:// URL, got {url}"
        ));
    }
    // A stated reason travels as a header on the request head (the CONNECT for https), added
    // by a relay of this call's own; the proxy shows it to the owner if the host needs approval.
    let tagged = match input.get("reason").and_then(Value::as_str) {
        Some(r) if !r.trim().is_empty() => {
            match crate::agent::relay::Tagged::start(&ctx.paths.proxy_socket, r) {
                Ok(t) => Some(t),
                Err(e) => return Output::err(format!("cannot open a relay for the reason: {e}")),
            }
        }
        _ => None,
    };
    let proxy_url = match &tagged {
        Some(t) => format!("http://127.0.0.1:{}", t.port),
        None => ctx.proxy_url.clone(),
    };
    let proxy = match ureq::Proxy::new(&proxy_url) {
        Ok(p) => p,
        Err(e) => return Output::err(format!("egress proxy {proxy_url} is unusable: {e}")),
    };

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls_config())
        .proxy(Some(proxy))
        .http_status_as_error(false)
        // Long enough for the owner to answer an approval card (the host's default wait is 10
        // minutes) on top of a minute for the fetch itself.
        .timeout_global(Some(Duration::from_secs(FETCH_WAIT_SECS)))
        .build()
        .into();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(e) => {
            // ureq drops the body of a refused CONNECT; ask the proxy again for its words.
            if let Some(why) = explain_refusal(&proxy_url, url) {
                return Output::err(format!("fetching {url} was refused: {why}"));
            }
            return Output::err(format!(
                "fetching {url} failed: {e}. If the proxy refused it (403), the host is not on this group's egress allowlist or the owner denied it; ask the owner to allow it."
            ));
        }
    };
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut bytes = Vec::new();
    let cap = ctx.start.limits.tool_output_cap as u64 * 4;
    if let Err(e) = resp
        .into_body()
        .into_reader()
        .take(cap)
        .read_to_end(&mut bytes)
    {
        return Output::err(format!("reading {url} failed: {e}"));
    }
    let raw = String::from_utf8_lossy(&bytes);
    let text = if ctype.contains("html") {
        strip_html(&raw)
    } else {
        raw.into_owned()
    };
    let out = format!("HTTP {status} {ctype}\n\n{text}");
    if (200..400).contains(&status) {
        Output::ok(out)
    } else {
        Output::err(out)
    }
}

/// Seconds one fetch may take in all, including a wait for the owner's approval.
const FETCH_WAIT_SECS: u64 = 15 * 60;

/// The proxy's refusal text for `url`'s host, from a second `CONNECT` sent by hand. The proxy
/// remembers what it decided about an act for the rest of the run (and an expiry for a minute),
/// so this asks nobody and reaches no destination: a refusal is answered again at once.
fn explain_refusal(proxy_url: &str, url: &str) -> Option<String> {
    use std::io::Write;
    let uri: ureq::http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let relay = proxy_url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(relay).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    let _ = s.take(8 * 1024).read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 4") && !head.starts_with("HTTP/1.1 5") {
        return None;
    }
    // Only the proxy's own words (they start `claw:`); anything else is not an explanation.
    let body = body.trim();
    body.starts_with("claw:").then(|| body.to_string())
}

/// Drop tags, scripts and styles and squeeze blank lines; good enough for reading.
fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() / 2);
    let lower = s.to_ascii_lowercase();
    let mut i = 0;
    while i < s.len() {
        if lower[i..].starts_with("<script") || lower[i..].starts_with("<style") {
            let close = if lower[i..].starts_with("<script") {
                "</script>"
            } else {
                "</style>"
            };
            i = lower[i..]
                .find(close)
                .map_or(s.len(), |j| i + j + close.len());
        } else if s.as_bytes()[i] == b'<' {
            i = s[i..].find('>').map_or(s.len(), |j| i + j + 1);
            out.push(' ');
        } else {
            let next = s[i..].find('<').map_or(s.len(), |j| i + j);
            out.push_str(&s[i..next]);
            i = next;
        }
    }
    let mut squeezed = String::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        squeezed.push_str(line);
        squeezed.push('\n');
    }
    squeezed
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_is_reduced_to_text() {
        let t = super::strip_html(
            "<html><style>x{}</style><p>Hello &amp;</p>\n\n<script>var a;</script><b>world</b></html>",
        );
        assert_eq!(t, "Hello &\nworld\n");
    }
}
