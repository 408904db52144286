//! Service credentials by substitution, host side: how a group binds a secret to hosts and a
//! header (`claw group set G --credential NAME=HOST[,HOST…]:HEADER[:SCHEME]`), and what one run
//! gets from those bindings: a placeholder per credential for the container's environment, and
//! for the proxy the real values, the per-install CA, and the roots it trusts upstream.
//!
//! The real value goes from the secrets file to the proxy only; the container sees
//! `NAME_TOKEN=claw-placeholder-NAME-<random per run>` and a trust bundle with the claw CA.
//! The substitution rules themselves are in `proxy::substitute`.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::proxy::substitute::Credential;
use crate::infra::secrets::Secrets;

/// Where the trust files are inside the container (the per-run folder is `/run/claw`).
pub const CONTAINER_CA: &str = "/run/claw/ca.pem";
/// The bundle (Mozilla roots plus the claw CA) inside the container.
pub const CONTAINER_BUNDLE: &str = "/run/claw/ca-bundle.pem";
/// The image's system trust store, replaced read-only by the bundle for runs with credentials.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One binding of a secret to hosts and a header, stored per group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The secret's name in the secrets file.
    pub name: String,
    /// Hosts (names or IP addresses) the value may be sent to, on any port egress allows.
    pub hosts: Vec<String>,
    /// The header it goes in, lowercase.
    pub header: String,
    /// `Bearer`, `token`, `Basic`, …: the header must be `SCHEME PLACEHOLDER`.
    #[serde(default)]
    pub scheme: Option<String>,
}

impl Binding {
    /// The spec as the owner writes it.
    pub fn spec(&self) -> String {
        let mut s = format!("{}={}:{}", self.name, self.hosts.join(","), self.header);
        if let Some(sc) = &self.scheme {
            s.push(':');
            s.push_str(sc);
        }
        s
    }
}

/// Checks a secret name: a letter, then letters, digits, `_` or `-`, at most 64 in all.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name `{name}` must start with a letter and hold only letters, digits, `_` or `-` (at most 64)"
        ))
    }
}

/// Headers a credential may not be bound to: they frame or route the request.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
];

/// Parses `NAME=HOST[,HOST…]:HEADER[:SCHEME]`; `NAME=` alone means "remove" (`Ok(Err(name))`).
pub fn parse_spec(spec: &str) -> Result<std::result::Result<Binding, String>, String> {
    let form = "use NAME=HOST[,HOST…]:HEADER[:SCHEME], e.g. github=api.github.com:Authorization:Bearer, or NAME= to remove";
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("credential `{spec}` has no `=`; {form}"))?;
    validate_name(name)?;
    if rest.is_empty() {
        return Ok(Err(name.to_string()));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (hosts, header, scheme) = match parts.as_slice() {
        [h, hd] => (*h, *hd, None),
        [h, hd, sc] => (*h, *hd, Some(*sc)),
        _ => return Err(format!("credential `{spec}`: {form}")),
    };
    let mut norm = Vec::new();
    for h in hosts.split(',') {
        match crate::infra::proxy::normalize_host(h) {
            Some(host) if !h.contains('*') => norm.push(host.to_string()),
            _ => {
                return Err(format!(
                    "credential `{name}`: `{h}` is not a host name or IP address (no ports or wildcards; IPv6 is not supported here)"
                ));
            }
        }
    }
    let header = header.trim().to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
    };
    if !token(&header) || FORBIDDEN_HEADERS.contains(&header.as_str()) {
        return Err(format!(
            "credential `{name}`: `{header}` cannot carry a credential; use a header such as Authorization or X-Api-Key"
        ));
    }
    let scheme = match scheme.map(str::trim) {
        None | Some("") => None,
        Some(s) if token(s) => Some(s.to_string()),
        Some(s) => {
            return Err(format!(
                "credential `{name}`: scheme `{s}` must be one word"
            ));
        }
    };
    Ok(Ok(Binding {
        name: name.to_string(),
        hosts: norm,
        header,
        scheme,
    }))
}

/// The environment variable that holds a credential's placeholder: the name in capitals with
/// `-` as `_`, ending in `_TOKEN` (`github` → `GITHUB_TOKEN`, `GH_TOKEN` → `GH_TOKEN`).
pub fn env_var(name: &str) -> String {
    let up: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if up.ends_with("_TOKEN") {
        up
    } else {
        format!("{up}_TOKEN")
    }
}

/// A fresh placeholder for one run: `claw-placeholder-NAME-<32 hex digits>`.
pub fn placeholder(name: &str) -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom for a credential placeholder")?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("claw-placeholder-{name}-{hex}"))
}

/// What one run needs for its bound credentials.
pub struct Prepared {
    /// Placeholder variables and trust-bundle variables for the container.
    pub env: Vec<(String, String)>,
    /// For the proxy.
    pub proxy: Arc<crate::infra::proxy::Credentials>,
    /// The CA certificate (PEM) for the container's trust files.
    pub ca_cert_pem: String,
    /// Bound credentials whose secret is not set (left out of this run).
    pub missing: Vec<String>,
}

/// Builds what a run with these bindings needs; `None` if there are none. Creates the CA on
/// first need. A binding whose secret is not set is skipped and named in `missing`.
pub fn prepare(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    bindings: &[Binding],
) -> Result<Option<Prepared>> {
    if bindings.is_empty() {
        return Ok(None);
    }
    let mut list = Vec::new();
    let mut env = Vec::new();
    let mut missing = Vec::new();
    for b in bindings {
        let Some(value) = secrets.get(&b.name) else {
            missing.push(b.name.clone());
            continue;
        };
        let ph = placeholder(&b.name)?;
        env.push((env_var(&b.name), ph.clone()));
        list.push(Credential {
            name: b.name.clone(),
            hosts: b.hosts.clone(),
            header: b.header.clone(),
            scheme: b.scheme.clone(),
            placeholder: ph,
            value: value.to_string(),
        });
    }
    let ca = crate::infra::ca::ensure(home).context("cannot load or create the claw CA")?;
    let ca_cert_pem = ca.cert_pem.clone();
    let extra = extra_roots(config)?;
    let proxy = crate::infra::proxy::Credentials::new(list, ca, &extra)
        .map_err(|e| anyhow::anyhow!("cannot set up TLS for bound credentials: {e}"))?;
    for (k, v) in [
        ("SSL_CERT_FILE", CONTAINER_BUNDLE),
        ("REQUESTS_CA_BUNDLE", CONTAINER_BUNDLE),
        ("CURL_CA_BUNDLE", CONTAINER_BUNDLE),
        ("GIT_SSL_CAINFO", CONTAINER_BUNDLE),
        ("NODE_EXTRA_CA_CERTS", CONTAINER_CA),
    ] {
        env.push((k.to_string(), v.to_string()));
    }
    Ok(Some(Prepared {
        env,
        proxy: Arc::new(proxy),
        ca_cert_pem,
        missing,
    }))
}

/// The certificates of `proxy.extra_ca_file` (DER), trusted upstream beside Mozilla's roots.
fn extra_roots(config: &Config) -> Result<Vec<Vec<u8>>> {
    let Some(path) = config
        .proxy
        .extra_ca_file
        .as_deref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(vec![]);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read proxy.extra_ca_file {path}"))?;
    let certs = crate::infra::ca::pem_blocks(&text);
    if certs.is_empty() {
        bail!("proxy.extra_ca_file {path} holds no PEM certificate");
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse() {
        let b = parse_spec("github=api.github.com,Uploads.GitHub.com:Authorization:Bearer")
            .unwrap()
            .unwrap();
        assert_eq!(b.hosts, ["api.github.com", "uploads.github.com"]);
        assert_eq!(b.header, "authorization");
        assert_eq!(b.scheme.as_deref(), Some("Bearer"));
        assert_eq!(
            b.spec(),
            "github=api.github.com,uploads.github.com:authorization:Bearer"
        );
        let k = parse_spec("weather=10.0.0.5:X-Api-Key").unwrap().unwrap();
        assert_eq!((k.header.as_str(), k.scheme), ("x-api-key", None));
        assert_eq!(parse_spec("github=").unwrap(), Err("github".to_string()));
        for bad in [
            "github",
            "=a.com:Authorization",
            "9x=a.com:Authorization",
            "gh=a.com",
            "gh=*.github.com:Authorization",
            "gh=a.com:443:Authorization:Bearer",
            "gh=a b.com:Authorization",
            "gh=a.com:Host",
            "gh=a.com:Content-Length",
            "gh=a.com:Authorization:Bearer x",
            "gh=a@b.com:Authorization",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn env_names_and_placeholders() {
        assert_eq!(env_var("github"), "GITHUB_TOKEN");
        assert_eq!(env_var("GH_TOKEN"), "GH_TOKEN");
        assert_eq!(env_var("my-api"), "MY_API_TOKEN");
        let a = placeholder("github").unwrap();
        assert!(a.starts_with("claw-placeholder-github-") && a.len() == 24 + 32);
        assert_ne!(a, placeholder("github").unwrap(), "random per call");
    }
}
