//! Credential substitution: the decision, as pure functions. A container holds only placeholders
//! (`claw-placeholder-NAME-<random>`); on a request to a host a credential is bound to, the
//! placeholder in the bound header is swapped for the real value. A placeholder anywhere else (a
//! header it is not bound to, the URL, a body, a request to another host) refuses the request.
//!
//! Every credential decision is here so an auditor reads one file. Real values are held in
//! [`Credential`], whose `Debug` never shows them; nothing here formats a value into a message.

use base64::Engine;

/// What every placeholder starts with; finding it outside its bound place refuses the request.
pub const MARK: &[u8] = b"claw-placeholder-";

/// One bound credential as the proxy holds it for a run.
#[derive(Clone)]
pub struct Credential {
    /// The secret's name (audited; never its value).
    pub name: String,
    /// Normalised hosts (as `allowlist::Host` displays them) the credential may be sent to.
    pub hosts: Vec<String>,
    /// Lowercase header name it goes in.
    pub header: String,
    /// Authorization scheme (`Bearer`, `token`, `Basic`, …), if the header carries one.
    pub scheme: Option<String>,
    /// What the container holds instead of the value.
    pub placeholder: String,
    /// The real value, from the secrets file.
    pub value: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("header", &self.header)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// Whether `bytes` hold a placeholder (of this run or any other).
pub fn has_mark(bytes: &[u8]) -> bool {
    bytes.len() >= MARK.len() && bytes.windows(MARK.len()).any(|w| w == MARK)
}

/// Whether any credential is bound to `host`.
pub fn binds(creds: &[Credential], host: &str) -> bool {
    creds.iter().any(|c| c.hosts.iter().any(|h| h == host))
}

/// Why a request was refused; the text names credentials and places, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The credential whose placeholder was misplaced, if it is one of this run's.
    pub name: Option<String>,
    pub reason: String,
}

fn refusal(creds: &[Credential], bytes: &[u8], place: &str, host: &str) -> Refusal {
    let c = creds
        .iter()
        .find(|c| contains(bytes, c.placeholder.as_bytes()));
    let name = c.map(|c| c.name.clone());
    let reason = match c {
        Some(c) => format!(
            "the placeholder of credential `{}` was sent in {place} to {host}; it is only substituted in the `{}` header to {}",
            c.name,
            c.header,
            c.hosts.join(", ")
        ),
        None => format!(
            "a credential placeholder that is not bound for this group was sent in {place} to {host}"
        ),
    };
    Refusal { name, reason }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay.len() >= needle.len()
        && hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks a request head going to `host` and swaps bound placeholders in `headers` for real
/// values. Returns the names of the credentials used (once each), or why it must be refused.
/// `target` is the request target (path and query).
pub fn apply(
    creds: &[Credential],
    host: &str,
    target: &str,
    headers: &mut [(String, Vec<u8>)],
) -> Result<Vec<String>, Refusal> {
    if has_mark(target.as_bytes()) {
        return Err(refusal(creds, target.as_bytes(), "the URL", host));
    }
    let mut used: Vec<String> = Vec::new();
    for (name, value) in headers.iter_mut() {
        let basic = decode_basic(value);
        let visible = has_mark(value) || basic.as_deref().is_some_and(has_mark);
        if !visible {
            continue;
        }
        let place = format!("the `{name}` header");
        let mut seen: Vec<u8> = value.clone();
        if let Some(b) = &basic {
            seen.extend_from_slice(b);
        }
        let Some(c) = creds.iter().find(|c| {
            c.header == *name
                && c.hosts.iter().any(|h| h == host)
                && contains(&seen, c.placeholder.as_bytes())
        }) else {
            return Err(refusal(creds, &seen, &place, host));
        };
        let Some(real) = substitute(c, value, basic.as_deref()) else {
            let form = match c.scheme.as_deref() {
                Some(s) if s.eq_ignore_ascii_case("basic") => {
                    "`Basic base64(user:PLACEHOLDER)`".to_string()
                }
                Some(s) => format!("`{s} PLACEHOLDER`"),
                None => "the placeholder alone".to_string(),
            };
            return Err(Refusal {
                name: Some(c.name.clone()),
                reason: format!(
                    "the `{name}` header must be exactly {form} for credential `{}`",
                    c.name
                ),
            });
        };
        *value = real;
        if !used.contains(&c.name) {
            used.push(c.name.clone());
        }
    }
    Ok(used)
}

/// The decoded credentials of a `Basic` authorization value, if it is one.
fn decode_basic(value: &[u8]) -> Option<Vec<u8>> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
}

/// The header value with the real credential in place of the placeholder, if the value has the
/// bound form: exactly the placeholder (no scheme), `Scheme PLACEHOLDER`, or for `Basic` the
/// placeholder as the password (or user) inside the base64 pair, and no other placeholder.
fn substitute(c: &Credential, value: &[u8], basic: Option<&[u8]>) -> Option<Vec<u8>> {
    let ph = c.placeholder.as_bytes();
    let out = match c.scheme.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("basic") => {
            let pair = basic?;
            let (user, pass) = split_once(pair, b':')?;
            let (user, pass) = if pass == ph {
                (user.to_vec(), c.value.as_bytes().to_vec())
            } else if user == ph {
                (c.value.as_bytes().to_vec(), pass.to_vec())
            } else {
                return None;
            };
            let mut joined = user;
            joined.push(b':');
            joined.extend_from_slice(&pass);
            if has_mark(&joined) {
                return None;
            }
            let enc = base64::engine::general_purpose::STANDARD.encode(joined);
            format!("Basic {enc}").into_bytes()
        }
        Some(s) => {
            let v = std::str::from_utf8(value).ok()?.trim();
            let (scheme, rest) = v.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case(s) || rest.trim().as_bytes() != ph {
                return None;
            }
            format!("{scheme} {}", c.value).into_bytes()
        }
        None => {
            if value.trim_ascii() != ph {
                return None;
            }
            c.value.as_bytes().to_vec()
        }
    };
    Some(out)
}

fn split_once(b: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|x| *x == sep)?;
    Some((&b[..i], &b[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PH: &str = "claw-placeholder-github-0123456789abcdef";

    fn creds() -> Vec<Credential> {
        vec![
            Credential {
                name: "github".into(),
                hosts: vec!["api.github.com".into(), "uploads.github.com".into()],
                header: "authorization".into(),
                scheme: Some("Bearer".into()),
                placeholder: PH.into(),
                value: "ghp_REAL".into(),
            },
            Credential {
                name: "gitbasic".into(),
                hosts: vec!["github.com".into()],
                header: "authorization".into(),
                scheme: Some("Basic".into()),
                placeholder: "claw-placeholder-gitbasic-ffff".into(),
                value: "ghp_GIT".into(),
            },
            Credential {
                name: "weather".into(),
                hosts: vec!["10.1.2.3".into()],
                header: "x-api-key".into(),
                scheme: None,
                placeholder: "claw-placeholder-weather-aaaa".into(),
                value: "wk_REAL".into(),
            },
        ]
    }

    fn run(host: &str, target: &str, hs: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        let mut headers: Vec<(String, Vec<u8>)> = hs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        apply(&creds(), host, target, &mut headers).map_err(|r| r.reason)?;
        Ok(headers
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8(v).unwrap()))
            .collect())
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// (host, target, header, value, Ok(expected value) or Err(part of the reason)).
    type Case<'a> = (&'a str, &'a str, &'a str, String, Result<String, &'a str>);

    #[test]
    fn substitution_table() {
        let bearer = format!("Bearer {PH}");
        let in_url = format!("/?t={PH}");
        let basic_ok = format!(
            "Basic {}",
            b64("x-access-token:claw-placeholder-gitbasic-ffff")
        );
        let basic_real = format!("Basic {}", b64("x-access-token:ghp_GIT"));
        let cases: Vec<Case> = vec![
            (
                "api.github.com",
                "/user",
                "authorization",
                bearer.clone(),
                Ok("Bearer ghp_REAL".into()),
            ),
            (
                "api.github.com",
                "/user",
                "authorization",
                format!("bearer {PH}"),
                Ok("bearer ghp_REAL".into()),
            ),
            (
                "uploads.github.com",
                "/",
                "authorization",
                bearer.clone(),
                Ok("Bearer ghp_REAL".into()),
            ),
            (
                "github.com",
                "/o/r.git/info/refs",
                "authorization",
                basic_ok.clone(),
                Ok(basic_real),
            ),
            (
                "10.1.2.3",
                "/v1",
                "x-api-key",
                "claw-placeholder-weather-aaaa".into(),
                Ok("wk_REAL".into()),
            ),
            // No placeholder: passes untouched.
            (
                "api.github.com",
                "/",
                "authorization",
                "Bearer mine".into(),
                Ok("Bearer mine".into()),
            ),
            // Wrong host, wrong header, URL, wrong form, wrong credential's placeholder.
            (
                "evil.example",
                "/",
                "authorization",
                bearer.clone(),
                Err("credential `github` was sent in the `authorization` header to evil.example"),
            ),
            (
                "api.github.com",
                "/",
                "x-forward",
                bearer.clone(),
                Err("in the `x-forward` header"),
            ),
            (
                "api.github.com",
                &in_url,
                "accept",
                "x".into(),
                Err("in the URL"),
            ),
            (
                "api.github.com",
                "/",
                "authorization",
                format!("token {PH}"),
                Err("must be exactly `Bearer PLACEHOLDER`"),
            ),
            (
                "api.github.com",
                "/",
                "authorization",
                format!("Bearer {PH}{PH}"),
                Err("must be exactly"),
            ),
            (
                "api.github.com",
                "/",
                "authorization",
                "Bearer claw-placeholder-weather-aaaa".into(),
                Err("credential `weather`"),
            ),
            (
                "github.com",
                "/",
                "authorization",
                format!(
                    "Basic {}",
                    b64("u:claw-placeholder-github-0123456789abcdef")
                ),
                Err("credential `github`"),
            ),
            (
                "api.github.com",
                "/",
                "cookie",
                "a=claw-placeholder-old-run".into(),
                Err("not bound for this group"),
            ),
            (
                "10.1.2.3",
                "/",
                "x-api-key",
                "pre-claw-placeholder-weather-aaaa".into(),
                Err("must be exactly the placeholder alone"),
            ),
        ];
        for (host, target, header, value, want) in cases {
            let got = run(host, target, &[("accept", "*/*"), (header, &value)]);
            match (&got, &want) {
                (Ok(hs), Ok(v)) => assert_eq!(&hs[1].1, v, "{host} {header} {value}"),
                (Err(e), Err(s)) => assert!(e.contains(s), "{host} {header} {value}: {e}"),
                _ => panic!("{host} {target} {header} {value}: got {got:?}, want {want:?}"),
            }
            if let Err(e) = &got {
                assert!(
                    !e.contains("REAL") && !e.contains("GIT"),
                    "value leaked: {e}"
                );
            }
        }
    }

    #[test]
    fn used_names_are_reported_once_and_debug_hides_values() {
        let mut headers = vec![(
            "authorization".to_string(),
            format!("Bearer {PH}").into_bytes(),
        )];
        let used = apply(&creds(), "api.github.com", "/", &mut headers).unwrap();
        assert_eq!(used, ["github"]);
        assert!(!format!("{:?}", creds()).contains("REAL"));
        assert!(has_mark(b"xxclaw-placeholder-y"));
        assert!(!has_mark(b"claw-placeholder"));
        assert!(binds(&creds(), "10.1.2.3") && !binds(&creds(), "github.io"));
    }
}
