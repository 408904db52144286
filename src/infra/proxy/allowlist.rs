//! The egress allowlist: which `host:port` a group's container may reach through the proxy.
//!
//! Every egress decision is made here, by pure functions, so an auditor reads one file. Patterns:
//! `host` (ports 80 and 443), `host:port`, `*.example.com` (subdomains only, never the apex),
//! IP addresses literally (`10.0.0.5`, `[::1]:8080`). Matching is case-insensitive and ignores one
//! trailing dot. Anything that is not a plain host name or IP address (userinfo `a@b`, empty
//! labels, all-numeric names that resolvers would read as IPs) is never allowed.

use std::net::IpAddr;

/// A normalised destination host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(Host),
    /// `*.example.com` stored as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Pattern {
    host: HostPattern,
    /// `None` means the web defaults, 80 and 443.
    port: Option<u16>,
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address into host and port.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let parse_port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(parse_port(after.strip_prefix(':')?)?))),
        };
    }
    match s.matches(':').count() {
        0 => Some((s, None)),
        1 => {
            let (h, p) = s.split_once(':')?;
            Some((h, Some(parse_port(p)?)))
        }
        // More than one colon without brackets: only a bare IPv6 address makes sense.
        _ => s.parse::<IpAddr>().ok().map(|_| (s, None)),
    }
}

/// Normalises a host as written by a client or in a pattern; `None` if it is not a plain host
/// name or IP address.
pub fn normalize_host(raw: &str) -> Option<Host> {
    let lower = raw.trim().to_ascii_lowercase();
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    let unbracketed = h.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    if let Ok(ip) = unbracketed.unwrap_or(h).parse::<IpAddr>() {
        return Some(Host::Ip(ip));
    }
    if h.is_empty() || h.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = h.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if !labels.iter().all(label_ok) {
        return None;
    }
    // `2130706433` or `0177.0.0.1` are not names: resolvers read them as IPv4 in odd notations.
    if labels.last()?.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Host::Name(h.to_string()))
}

fn parse_pattern(p: &str) -> Result<Pattern, String> {
    let p = p.trim();
    let bad = || format!("egress pattern `{p}` is not `host`, `host:port`, `*.domain` or an IP");
    let (host, port) = split_host_port(p).ok_or_else(bad)?;
    let host = if let Some(domain) = host.strip_prefix("*.") {
        match normalize_host(domain) {
            Some(Host::Name(d)) => HostPattern::Subdomains(format!(".{d}")),
            _ => return Err(bad()),
        }
    } else {
        HostPattern::Exact(normalize_host(host).ok_or_else(bad)?)
    };
    Ok(Pattern { host, port })
}

/// Checks one pattern as the owner typed it, for `claw group set --egress` to refuse typos early.
pub fn validate_pattern(p: &str) -> Result<(), String> {
    parse_pattern(p).map(|_| ())
}

fn matches(p: &Pattern, host: &Host, port: u16) -> bool {
    let port_ok = match p.port {
        Some(want) => want == port,
        None => port == 80 || port == 443,
    };
    let host_ok = match (&p.host, host) {
        (HostPattern::Exact(want), got) => want == got,
        (HostPattern::Subdomains(suffix), Host::Name(name)) => {
            name.len() > suffix.len() && name.ends_with(suffix.as_str())
        }
        (HostPattern::Subdomains(_), Host::Ip(_)) => false,
    };
    port_ok && host_ok
}

/// Decides whether `host:port` may be reached: `Ok(pattern)` names the pattern that allowed it,
/// `Err(reason)` says why not. Invalid patterns in the list never match anything.
pub fn check(patterns: &[String], host: &str, port: u16) -> Result<String, String> {
    let Some(h) = normalize_host(host) else {
        return Err("not a plain host name or IP address".to_string());
    };
    for raw in patterns {
        if parse_pattern(raw).is_ok_and(|p| matches(&p, &h, port)) {
            return Ok(raw.trim().to_string());
        }
    }
    Err("not on the group's egress allowlist".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ps: &[&str]) -> Vec<String> {
        ps.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allowlist_table() {
        // (patterns, host, port, allowed)
        let cases: &[(&[&str], &str, u16, bool)] = &[
            (&[], "example.com", 443, false),
            (&["example.com"], "example.com", 443, true),
            (&["example.com"], "example.com", 80, true),
            (&["example.com"], "example.com", 22, false),
            (&["example.com:8443"], "example.com", 8443, true),
            (&["example.com:8443"], "example.com", 443, false),
            (&["example.com"], "EXAMPLE.com", 443, true),
            (&["EXAMPLE.COM"], "example.com", 443, true),
            (&["example.com"], "example.com.", 443, true),
            (&["example.com."], "example.com", 443, true),
            (&["example.com"], "example.com..", 443, false),
            (&["example.com"], "example.com.evil.org", 443, false),
            (&["example.com"], "evilexample.com", 443, false),
            (&["example.com"], "www.example.com", 443, false),
            (&["example.com"], "a@example.com", 443, false),
            (&["example.com"], "evil.org@example.com", 443, false),
            (&["example.com"], "example.com/x", 443, false),
            (&["example.com"], "", 443, false),
            (&["*.example.com"], "api.example.com", 443, true),
            (&["*.example.com"], "a.b.example.com", 443, true),
            (&["*.example.com"], "example.com", 443, false),
            (&["*.example.com"], "badexample.com", 443, false),
            (&["*.example.com"], "example.com.evil.org", 443, false),
            (&["*.example.com"], "API.Example.COM.", 443, true),
            (&["*.example.com:8080"], "x.example.com", 8080, true),
            (&["*.example.com:8080"], "x.example.com", 443, false),
            (&["*.example.com"], "127.0.0.1", 443, false),
            (&["*example.com"], "badexample.com", 443, false),
            (&["*"], "anything.org", 443, false),
            (&["127.0.0.1:9000"], "127.0.0.1", 9000, true),
            (&["127.0.0.1:9000"], "127.0.0.1", 9001, false),
            (&["127.0.0.1"], "127.0.0.2", 443, false),
            (&["127.0.0.1"], "2130706433", 443, false),
            (&["*.0.0.1"], "127.0.0.1", 443, false),
            (&["[::1]:8080"], "::1", 8080, true),
            (&["[::1]:8080"], "[::1]", 8080, true),
            (&["[::1]:8080"], "[::1", 8080, false),
            (&["::1"], "::1", 443, true),
            (&["[0:0:0:0:0:0:0:1]"], "::1", 80, true),
            (&["[::1]"], "::ffff:127.0.0.1", 80, false),
            (&["not a host", "ok.org"], "ok.org", 443, true),
            (&["a.org", "b.org:22"], "b.org", 22, true),
        ];
        for (patterns, host, port, want) in cases {
            let got = check(&list(patterns), host, *port).is_ok();
            assert_eq!(
                got, *want,
                "patterns {patterns:?} host {host:?} port {port}"
            );
        }
    }

    #[test]
    fn split_host_port_table() {
        assert_eq!(split_host_port("a.org:443"), Some(("a.org", Some(443))));
        assert_eq!(split_host_port("a.org"), Some(("a.org", None)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", Some(80))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("::1"), Some(("::1", None)));
        assert_eq!(split_host_port("a.org:0"), None);
        assert_eq!(split_host_port("a.org:99999"), None);
        assert_eq!(split_host_port("a.org:x"), None);
        assert_eq!(split_host_port("[::1]x"), None);
        assert_eq!(split_host_port("a:b:c"), None);
    }

    #[test]
    fn validate_pattern_names_the_typo() {
        assert!(validate_pattern("pypi.org").is_ok());
        assert!(validate_pattern("*.github.com").is_ok());
        let err = validate_pattern("https://pypi.org").unwrap_err();
        assert!(err.contains("https://pypi.org"), "{err}");
        assert!(validate_pattern("*.*.org").is_err());
    }
}
