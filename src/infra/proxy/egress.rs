//! Egress from the container: HTTP `CONNECT` tunnels and absolute-form plain-HTTP requests, both
//! only to destinations the group's allowlist names (see `allowlist.rs` for the decision itself)
//! and, for host names, only to public addresses (see `addr.rs`).
//!
//! A tunnel holds its connection thread plus one helper thread for the other direction; at most
//! [`MAX_TUNNELS`] are open at once so model requests always find a free connection thread.
//! Refusals tell the agent what the owner could do about it; they never echo request headers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::addr;
use super::allowlist::{self, Host};
use super::ask::{self, Act, Decision};
use super::http::{self, Head};
use super::substitute;
use super::{POOL_SIZE, ProxyEvent, Shared};

/// CONNECT tunnels open at once per proxy: each holds two threads for as long as it lives, and
/// half the connection pool stays free for model requests.
pub const MAX_TUNNELS: usize = POOL_SIZE / 2;

/// How long to wait for a TCP connection to an allowed destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A tunnel with no traffic either way for this long is closed, so a dead peer cannot pin a
/// thread for the rest of the run.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Outcome of a destination check, carried into the event.
struct Dest {
    host: Host,
    port: u16,
}

fn egress_event(
    host: &str,
    port: u16,
    allowed: bool,
    reason: &str,
    up: u64,
    down: u64,
) -> ProxyEvent {
    ProxyEvent::Egress {
        host: host.chars().take(255).collect(),
        port,
        allowed,
        reason: reason.to_string(),
        bytes_up: up,
        bytes_down: down,
    }
}

/// Refuses with 403 and the command the owner would run to allow it.
fn refuse(
    conn: &mut UnixStream,
    shared: &Shared,
    host: &str,
    port: u16,
    reason: &str,
) -> ProxyEvent {
    let folder = shared.folder.as_deref().unwrap_or("FOLDER");
    let shown = match port {
        80 | 443 => host.to_string(),
        _ => format!("{host}:{port}"),
    };
    let msg = format!(
        "claw: egress to {host}:{port} is not allowed for this group ({reason}); \
         the owner can allow it with: claw group set {folder} --egress {shown}"
    );
    let _ = http::write_simple(conn, 403, &msg);
    egress_event(host, port, false, reason, 0, 0)
}

/// Refuses a request that carries a credential placeholder where no substitution happens.
fn placeholder_refused(
    conn: &mut UnixStream,
    head: &Head,
    place: &str,
    host: &str,
    port: u16,
) -> ProxyEvent {
    let reason = format!(
        "a credential placeholder was sent in {place} to {host}; placeholders are only substituted in their bound header on HTTPS requests to their bound hosts"
    );
    let _ = http::write_simple(conn, 403, &format!("claw: refused: {reason}"));
    ProxyEvent::Credential {
        host: host.chars().take(255).collect(),
        port,
        method: head.method.chars().take(16).collect(),
        used: vec![],
        refused: true,
        credential: None,
        reason,
        status: 403,
        bytes_up: 0,
        bytes_down: 0,
    }
}

/// Applies the allowlist, and for a host not on it the group's approval policy (the asker);
/// on refusal answers the client and returns the event.
fn decide(
    conn: &mut UnixStream,
    shared: &Shared,
    raw_host: &str,
    port: u16,
    head: &Head,
) -> Result<(Dest, String), Box<ProxyEvent>> {
    let Some(host) = allowlist::normalize_host(raw_host) else {
        let _ = http::write_simple(
            conn,
            400,
            "claw: egress target is not a plain host name or IP address",
        );
        return Err(Box::new(egress_event(
            raw_host,
            port,
            false,
            "invalid host",
            0,
            0,
        )));
    };
    let shown = host.to_string();
    match allowlist::check(&shared.egress_allow, &shown, port) {
        Ok(pattern) => Ok((Dest { host, port }, format!("allowed by `{pattern}`"))),
        Err(reason) => match &shared.asker {
            None => Err(Box::new(refuse(conn, shared, &shown, port, &reason))),
            Some(asker) => {
                let stated = head.header(ask::REASON_HEADER).and_then(ask::clean_reason);
                let Some(_waiting) = AskSlot::take(shared) else {
                    let msg = format!(
                        "claw: {} acts are already waiting for the owner's answer in this run; retry later",
                        super::MAX_ASKING
                    );
                    let _ = http::write_simple(conn, 503, &msg);
                    return Err(Box::new(egress_event(
                        &shown,
                        port,
                        false,
                        &format!("{reason}; too many acts waiting for approval"),
                        0,
                        0,
                    )));
                };
                let act = Act::Egress {
                    host: shown.clone(),
                    port,
                };
                match asker.ask_with_reason(act, stated) {
                    Decision::Approved => Ok((
                        Dest { host, port },
                        format!("{reason}; approved by the owner"),
                    )),
                    Decision::Denied(why) => Err(Box::new(refuse(
                        conn,
                        shared,
                        &shown,
                        port,
                        &format!("{reason}; {why}"),
                    ))),
                    Decision::Expired => Err(Box::new(refuse(
                        conn,
                        shared,
                        &shown,
                        port,
                        &format!("{reason}; the owner did not answer in time"),
                    ))),
                }
            }
        },
    }
}

/// One of the [`super::MAX_ASKING`] places for a connection waiting on the owner.
struct AskSlot<'a>(&'a Shared);

impl<'a> AskSlot<'a> {
    fn take(shared: &'a Shared) -> Option<AskSlot<'a>> {
        shared
            .asking
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < super::MAX_ASKING).then_some(n + 1)
            })
            .ok()
            .map(|_| AskSlot(shared))
    }
}

impl Drop for AskSlot<'_> {
    fn drop(&mut self) {
        self.0.asking.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolves (once) and connects to the addresses that were checked. A host *name* must lead only
/// to public addresses that are not this host's (see `addr.rs`); a literal IP got here because
/// the owner listed it or approved it on a card that showed it.
fn dial(dest: &Dest) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = match &dest.host {
        // Listed, or approved on a card that showed this very address (and warned when it is
        // not a public one): either way the owner's explicit choice.
        Host::Ip(ip) => vec![SocketAddr::new(*ip, dest.port)],
        Host::Name(name) => {
            let found = addr::system_resolve(name, dest.port)
                .map_err(|e| DialError::Failed(format!("could not resolve {name}: {e}")))?;
            addr::check_resolved(name, found, &addr::local_addresses())
                .map_err(DialError::Inward)?
        }
    };
    let mut last = String::from("no addresses");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("could not connect to {addr}: {e}"),
        }
    }
    Err(DialError::Failed(last))
}

/// Why a connection to an allowed destination was not made.
enum DialError {
    /// Policy: a name resolved to an address that is not public, or is this host's.
    Inward(String),
    /// Network: resolution or connection failed.
    Failed(String),
}

/// Answers a dial failure: inward resolution is a refusal (403), anything else a 502.
fn dial_failed(
    conn: &mut UnixStream,
    shared: &Shared,
    host: &str,
    port: u16,
    why: &str,
    e: DialError,
) -> ProxyEvent {
    match e {
        DialError::Inward(reason) => refuse(conn, shared, host, port, &reason),
        DialError::Failed(e) => {
            let _ = http::write_simple(conn, 502, &format!("claw: {e}"));
            egress_event(host, port, true, &format!("{why}; {e}"), 0, 0)
        }
    }
}

/// Handles `CONNECT host:port`: checks, connects, answers 200 and pipes bytes both ways.
pub fn connect(
    mut conn: UnixStream,
    head: &Head,
    leftover: Vec<u8>,
    shared: &Shared,
) -> ProxyEvent {
    let Some((raw_host, Some(port))) = allowlist::split_host_port(&head.target) else {
        let _ = http::write_simple(
            &mut conn,
            400,
            "claw: CONNECT needs a target of the form host:port",
        );
        return egress_event(&head.target, 0, false, "malformed CONNECT target", 0, 0);
    };
    if substitute::has_mark(head.target.as_bytes()) {
        return placeholder_refused(&mut conn, head, "the CONNECT target", raw_host, port);
    }
    let (dest, why) = match decide(&mut conn, shared, raw_host, port, head) {
        Ok(d) => d,
        Err(ev) => return *ev,
    };
    let shown = dest.host.to_string();
    let Some(_tunnel) = TunnelSlot::take(shared) else {
        let msg = format!(
            "claw: {MAX_TUNNELS} tunnels are already open in this run; close one and retry"
        );
        let _ = http::write_simple(&mut conn, 503, &msg);
        return egress_event(
            &shown,
            port,
            true,
            &format!("{why}; too many tunnels"),
            0,
            0,
        );
    };
    let upstream = match dial(&dest) {
        Ok(s) => s,
        Err(e) => return dial_failed(&mut conn, shared, &shown, port, &why, e),
    };
    // A credential is bound to this host: terminate TLS here so it can be substituted.
    if let Some(creds) = shared.credentials.as_deref().filter(|c| c.binds(&shown)) {
        return super::intercept::serve(
            conn, leftover, upstream, &dest.host, port, &why, shared, creds,
        );
    }
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return egress_event(
            &shown,
            port,
            true,
            &format!("{why}; client went away"),
            0,
            0,
        );
    }
    let (up, down) = pipe(conn, upstream, &leftover);
    egress_event(&shown, port, true, &why, up, down)
}

/// Handles `GET http://host/path HTTP/1.1` style requests (plain HTTP through a proxy): checks
/// the destination, rewrites the head to origin form with `Connection: close`, then relays.
pub fn forward_plain(
    mut conn: UnixStream,
    head: &Head,
    leftover: Vec<u8>,
    shared: &Shared,
) -> ProxyEvent {
    let Some((authority, path)) = split_absolute(&head.target) else {
        let _ = http::write_simple(
            &mut conn,
            400,
            "claw: only http:// URLs can be proxied directly; use CONNECT for https",
        );
        return egress_event("-", 0, false, "unsupported absolute URL", 0, 0);
    };
    if authority.contains('@') {
        let _ = http::write_simple(&mut conn, 400, "claw: URLs with user info are not proxied");
        return egress_event(authority, 0, false, "userinfo in URL", 0, 0);
    }
    let Some((raw_host, port)) = allowlist::split_host_port(authority) else {
        let _ = http::write_simple(&mut conn, 400, "claw: malformed host in URL");
        return egress_event(authority, 0, false, "malformed host", 0, 0);
    };
    let port = port.unwrap_or(80);
    // Plain HTTP is never substituted: a placeholder in its URL or headers is refused (the body
    // is relayed as it streams, unread).
    if substitute::has_mark(head.target.as_bytes()) {
        return placeholder_refused(&mut conn, head, "the URL", raw_host, port);
    }
    if let Some((name, _)) = head.headers.iter().find(|(_, v)| substitute::has_mark(v)) {
        let place = format!("the `{name}` header of a plain-HTTP request");
        return placeholder_refused(&mut conn, head, &place, raw_host, port);
    }
    let (dest, why) = match decide(&mut conn, shared, raw_host, port, head) {
        Ok(d) => d,
        Err(ev) => return *ev,
    };
    let shown = dest.host.to_string();
    // Relayed like a tunnel (two threads), so it takes a tunnel slot too.
    let Some(_tunnel) = TunnelSlot::take(shared) else {
        let msg = format!(
            "claw: {MAX_TUNNELS} tunnels are already open in this run; close one and retry"
        );
        let _ = http::write_simple(&mut conn, 503, &msg);
        return egress_event(
            &shown,
            port,
            true,
            &format!("{why}; too many tunnels"),
            0,
            0,
        );
    };
    let mut upstream = match dial(&dest) {
        Ok(s) => s,
        Err(e) => return dial_failed(&mut conn, shared, &shown, port, &why, e),
    };
    // Host comes from the URL we checked, never from the client's header, so the two cannot
    // disagree about where the request goes.
    let mut out = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\n",
        head.method, path, authority
    )
    .into_bytes();
    for (name, value) in &head.headers {
        // The stated reason is for the owner, not for the destination.
        if name == "host" || name == ask::REASON_HEADER || head.is_hop_by_hop(name) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(te) = head.header("transfer-encoding") {
        // The body is relayed as sent, so its framing header must travel with it.
        out.extend_from_slice(b"transfer-encoding: ");
        out.extend_from_slice(te);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    let head_len = out.len() as u64;
    if upstream.write_all(&out).is_err() {
        let _ = http::write_simple(&mut conn, 502, "claw: upstream closed the connection");
        return egress_event(&shown, port, true, &format!("{why}; upstream closed"), 0, 0);
    }
    let (up, down) = pipe(conn, upstream, &leftover);
    egress_event(&shown, port, true, &why, up + head_len, down)
}

/// Splits `http://authority/path?q` into authority and origin-form path.
fn split_absolute(target: &str) -> Option<(&str, String)> {
    let scheme_end = target.find("://")?;
    if !target[..scheme_end].eq_ignore_ascii_case("http") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() {
        return None;
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Some((authority, path))
}

/// Copies bytes both ways until both directions end; returns (client→upstream, upstream→client)
/// byte counts. When one side finishes sending, the other side's write half is shut so the peer
/// sees EOF (half-close), which line protocols and TLS expect. An error or [`IDLE_TIMEOUT`] with no
/// traffic in either direction tears down both sides.
fn pipe(client: UnixStream, upstream: TcpStream, initial_up: &[u8]) -> (u64, u64) {
    let _ = client.set_read_timeout(Some(IDLE_POLL));
    let _ = upstream.set_read_timeout(Some(IDLE_POLL));
    let (Ok(client_r), Ok(upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return (0, 0);
    };
    let activity = Activity::new();
    let up_activity = activity.clone();
    let initial = initial_up.to_vec();
    // Bounded: only a connection thread holding a tunnel slot gets here, and it joins this one.
    let up = thread::Builder::new()
        .name("claw-proxy-pipe".into())
        .spawn(move || {
            let (mut from, mut to) = (client_r, upstream_w);
            let (n, clean) = match to.write_all(&initial) {
                Ok(()) => {
                    let (n, clean) = copy(&mut from, &mut to, &up_activity);
                    (n + initial.len() as u64, clean)
                }
                Err(_) => (0, false),
            };
            if clean {
                let _ = to.shutdown(Shutdown::Write);
            } else {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            }
            n
        });
    let Ok(up) = up else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return (0, 0);
    };
    let (mut from, mut to) = (upstream, client);
    let (down, clean) = copy(&mut from, &mut to, &activity);
    if clean {
        let _ = to.shutdown(Shutdown::Write);
    } else {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
    (up.join().unwrap_or(0), down)
}

/// One of the [`MAX_TUNNELS`] tunnel slots, given back on drop.
pub(super) struct TunnelSlot<'a>(&'a Shared);

impl<'a> TunnelSlot<'a> {
    /// A free slot, or `None` when [`MAX_TUNNELS`] are open.
    pub(super) fn take(shared: &'a Shared) -> Option<TunnelSlot<'a>> {
        shared
            .tunnels
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_TUNNELS).then_some(n + 1)
            })
            .ok()
            .map(|_| TunnelSlot(shared))
    }
}

impl Drop for TunnelSlot<'_> {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often a blocked tunnel read wakes to check whether the whole tunnel has gone idle.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Time of the last byte moved in either direction, shared by both halves of a tunnel, so a long
/// download with a silent client is not mistaken for an idle tunnel.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Copies until EOF (clean) or error or whole-tunnel idleness (not clean), writing each read
/// through at once. Returns the bytes copied and whether the source ended cleanly.
fn copy(from: &mut impl Read, to: &mut impl Write, activity: &Activity) -> (u64, bool) {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return (total, false);
                }
                total += n as u64;
                activity.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if http::is_timeout(&e) && activity.idle_for() < IDLE_TIMEOUT => continue,
            Err(_) => return (total, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_absolute;

    #[test]
    fn absolute_urls_split() {
        let ok = |a: &'static str, p: &str| Some((a, p.to_string()));
        assert_eq!(split_absolute("http://a.org/x?y"), ok("a.org", "/x?y"));
        assert_eq!(split_absolute("HTTP://a.org:8080"), ok("a.org:8080", "/"));
        assert_eq!(split_absolute("http://a.org?q"), ok("a.org", "/?q"));
        assert_eq!(split_absolute("https://a.org/"), None);
        assert_eq!(split_absolute("http:///x"), None);
    }
}
