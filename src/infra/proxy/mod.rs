//! The host-side proxy `claw run-group` serves to one container on a Unix socket (mounted at
//! `/run/claw/proxy.sock`): LLM routes that add the API key, allowlisted egress, a health probe.
//!
//! This is the only code that sees API keys. It never logs a header, and never puts a header
//! value or a key into an answer, an event or an error. It does not touch SQLite: each request
//! yields exactly one [`ProxyEvent`] on a channel and run-group writes the audit rows.
//!
//! Shape: a fixed pool of [`POOL_SIZE`] threads each accepts and serves one request per
//! connection, then closes (`Connection: close`), which keeps the state machine trivial and costs
//! little on a Unix socket. Connections beyond the pool wait in the kernel's accept backlog; no
//! thread is ever spawned per connection except one helper per open tunnel (at most
//! [`MAX_TUNNELS`]), so one proxy never runs more than `1 + POOL_SIZE + MAX_TUNNELS` threads of
//! its own. Memory is bounded the same way: a head is at most `MAX_HEAD` per connection, and
//! request bodies share one byte budget ([`BODY_BUDGET`]) across all connections.
//!
//! Usage is measured here, where the container cannot lie: each reply's token counts are read as
//! it streams back (`usage.rs`, bounded, never buffering the reply), reported in the request's
//! event and added to the run's [`Meter`], which refuses model requests once a budget is spent.

mod addr;
mod allowlist;
pub mod ask;
mod body;
mod content;
mod egress;
mod http;
mod intercept;
mod json;
mod limits;
mod llm;
mod mcp;
mod meter;
mod policy;
pub mod search;
pub mod substitute;
mod usage;

pub use addr::is_global_unicast;
pub use allowlist::normalize_host;
pub use allowlist::validate_pattern;
pub use body::{BODY_BUDGET, MAX_BODY};
pub use egress::MAX_TUNNELS;
pub use http::MAX_HEAD;
pub use intercept::Credentials;
pub use mcp::McpRoute;
pub use meter::Meter;
pub use policy::{ANTHROPIC_BETAS, LlmPolicy, Provider};
pub use usage::{Format as UsageFormat, UsageReader};

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use limits::{Gate, Pace};

/// Connection threads per proxy: requests beyond this many at once wait to be accepted.
pub const POOL_SIZE: usize = 16;
/// Requests per second one proxy serves on average (with a burst of twice that): each yields an
/// event that run-group writes to the log and the audit table, and a client sending faster
/// would otherwise queue events in memory faster than they are written (a flood of `/health`
/// reached 17,000 a second). Faster clients are slowed down, not refused.
pub const REQUESTS_PER_SEC: u32 = 200;

/// One LLM upstream: where requests go and the key added on the way out.
#[derive(Clone)]
pub struct Upstream {
    /// Base URL, e.g. `https://api.anthropic.com` or `https://openrouter.ai/api`.
    pub base_url: String,
    /// The key from `secrets.env`; `None` makes the route answer 401 naming the secret.
    pub api_key: Option<String>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Everything one proxy instance needs; built by run-group from config and secrets.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to create the socket (a per-run directory); an existing socket there is replaced.
    pub socket_path: PathBuf,
    pub anthropic: Upstream,
    pub openai: Upstream,
    /// The group's egress patterns (see [`validate_pattern`]); empty means no egress.
    pub egress_allow: Vec<String>,
    /// The group folder, only to make refusal messages name the exact command to run.
    pub folder: Option<String>,
    /// What model requests may ask for (provider, model, token and request limits).
    pub llm: LlmPolicy,
    /// Asks the owner about acts the group's approval policy marks `ask`; `None` means no act is
    /// ever asked about (what is not allowed is refused).
    pub asker: Option<ask::Asker>,
    /// Answers the agent's `search_history` over `/search`, for this run's group only; `None`
    /// makes the route answer 404.
    pub searcher: Option<search::Searcher>,
    /// The group's remote MCP servers, served at `/mcp/NAME` (see `mcp.rs`).
    pub mcp: Vec<McpRoute>,
    /// The group's bound credentials and the CA to terminate TLS for their hosts; `None` when
    /// the group has none (every tunnel stays opaque).
    pub credentials: Option<Arc<Credentials>>,
}

/// What happened to one request, for the audit table. Never contains a header value or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A request on an LLM route. `path` is the route path without the query string;
    /// `status` is the upstream's, or the proxy's own when it answered (403/404/405 route
    /// refused, 400 body refused, 401 no key, 402 budget spent, 429 request cap, 502 down,
    /// 503 busy).
    Llm {
        provider: String,
        method: String,
        path: String,
        status: u16,
        /// Bytes of the (rewritten) body sent upstream.
        bytes_up: u64,
        bytes_down: u64,
        /// The model sent upstream; empty if the request was refused before its body was read.
        model: String,
        /// What the request asked for when the proxy replaced the model (clipped to 100
        /// characters; `(none)` when it named none).
        model_from: Option<String>,
        /// Whether the proxy lowered or inserted the output token limit.
        max_tokens_clamped: bool,
        /// What the upstream reported using, read from its reply on the host: `None` when the
        /// request never reached the upstream; zeros when the reply carried no usage.
        usage: Option<crate::rules::cost::Usage>,
    },
    /// A CONNECT tunnel or plain-HTTP proxy request.
    Egress {
        host: String,
        port: u16,
        allowed: bool,
        reason: String,
        bytes_up: u64,
        bytes_down: u64,
    },
    /// A request inside a tunnel the proxy terminated because a credential is bound to its host,
    /// or a request refused because it carried a placeholder where none belongs.
    Credential {
        host: String,
        port: u16,
        method: String,
        /// Names of the credentials substituted into the request (never values).
        used: Vec<String>,
        /// Refused because of a placeholder, or because the owner did not approve its use.
        refused: bool,
        /// The credential a refusal is about, when known.
        credential: Option<String>,
        reason: String,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
    },
    /// A request the proxy answered itself: `/health`, unknown routes, malformed requests.
    Local {
        method: String,
        path: String,
        status: u16,
    },
}

/// State shared by all connection threads of one proxy.
struct Shared {
    anthropic: Upstream,
    openai: Upstream,
    egress_allow: Vec<String>,
    folder: Option<String>,
    llm: LlmPolicy,
    searcher: Option<search::Searcher>,
    credentials: Option<Arc<Credentials>>,
    /// Budgets and their spend: a spent budget refuses model requests.
    meter: Meter,
    agent: ureq::Agent,
    /// Remote MCP servers and the client that reaches them (names checked as egress is).
    mcp: Vec<McpRoute>,
    mcp_agent: ureq::Agent,
    /// Bytes of request bodies buffered at once, across connections.
    body_budget: Gate,
    /// Model requests in flight (`llm.concurrency` units).
    llm_slots: Gate,
    /// Model requests sent upstream so far in this run.
    llm_sent: AtomicU32,
    /// Open tunnels (CONNECT or plain-HTTP relays), each holding a helper thread.
    tunnels: AtomicUsize,
    /// Paces accepted connections to [`REQUESTS_PER_SEC`].
    pace: Pace,
    events: Mutex<Sender<ProxyEvent>>,
    /// Live client connections, so shutdown can cut them rather than wait for them.
    conns: Mutex<HashMap<u64, UnixStream>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Asks the owner about acts the group's approval policy marks `ask` (see `ask.rs`).
    asker: Option<ask::Asker>,
    /// Connections waiting for an owner's answer right now (at most [`MAX_ASKING`]).
    asking: AtomicUsize,
}

/// Connections that may wait for the owner's answer at once: each holds a pool thread, and the
/// rest of the pool must stay free for model requests.
pub const MAX_ASKING: usize = POOL_SIZE / 4;

impl Shared {
    fn emit(&self, event: ProxyEvent) {
        if let Ok(tx) = self.events.lock() {
            // A dropped receiver means run-group is gone; there is nobody left to tell.
            let _ = tx.send(event);
        }
    }
}

/// A running proxy. Dropping it shuts it down.
pub struct Proxy {
    socket_path: PathBuf,
    shared: Arc<Shared>,
    running: bool,
}

/// The HTTP client for upstream calls: statuses pass through, redirects are the client's
/// business, and long non-streamed completions are allowed time to arrive.
fn upstream_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("")
        .accept("")
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(600)))
        .timeout_per_read(Some(Duration::from_secs(600)))
        .build()
        .into()
}

impl Proxy {
    /// Binds the socket (mode 0666 so the container's user can connect; the per-run directory
    /// guards it), starts the connection pool, and reports one event per request on `events`.
    /// No budget applies (see [`Proxy::start_metered`]).
    pub fn start(cfg: ProxyConfig, events: Sender<ProxyEvent>) -> io::Result<Proxy> {
        Proxy::start_metered(cfg, events, Meter::default())
    }

    /// [`Proxy::start`], refusing model requests while `meter` says a budget is spent and adding
    /// the usage each reply reports to it.
    pub fn start_metered(
        cfg: ProxyConfig,
        events: Sender<ProxyEvent>,
        meter: Meter,
    ) -> io::Result<Proxy> {
        return_large_frees_to_the_os();
        remove_stale_socket(&cfg.socket_path)?;
        let listener = UnixListener::bind(&cfg.socket_path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "could not create proxy socket {}: {e}",
                    cfg.socket_path.display()
                ),
            )
        })?;
        std::fs::set_permissions(&cfg.socket_path, std::fs::Permissions::from_mode(0o666))?;
        let concurrency = cfg.llm.concurrency.max(1);
        let shared = Arc::new(Shared {
            anthropic: cfg.anthropic,
            openai: cfg.openai,
            egress_allow: cfg.egress_allow,
            folder: cfg.folder,
            llm: cfg.llm,
            searcher: cfg.searcher,
            credentials: cfg.credentials,
            meter,
            agent: upstream_agent(),
            mcp: cfg.mcp,
            mcp_agent: mcp::agent(),
            body_budget: Gate::new(BODY_BUDGET),
            llm_slots: Gate::new(concurrency as u64),
            llm_sent: AtomicU32::new(0),
            tunnels: AtomicUsize::new(0),
            pace: Pace::new(f64::from(REQUESTS_PER_SEC), f64::from(2 * REQUESTS_PER_SEC)),
            events: Mutex::new(events),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            asker: cfg.asker,
            asking: AtomicUsize::new(0),
        });
        let listener = Arc::new(listener);
        for _ in 0..POOL_SIZE {
            let (l, sh) = (Arc::clone(&listener), Arc::clone(&shared));
            let spawned = thread::Builder::new()
                .name("claw-proxy".into())
                .spawn(move || worker(&l, &sh));
            if let Err(e) = spawned {
                // Workers already started exit once they see `stopping` and are woken.
                shared.stopping.store(true, Ordering::SeqCst);
                for _ in 0..POOL_SIZE {
                    let _ = UnixStream::connect(&cfg.socket_path);
                }
                let _ = std::fs::remove_file(&cfg.socket_path);
                return Err(io::Error::new(
                    e.kind(),
                    format!("could not start the proxy's connection threads: {e}"),
                ));
            }
        }
        Ok(Proxy {
            socket_path: cfg.socket_path,
            shared,
            running: true,
        })
    }

    /// Path of the socket this proxy listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Stops accepting, cuts live connections and removes the socket file. Idempotent. Threads
    /// still waiting on an upstream finish on their own; none accepts again.
    pub fn shutdown(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Ok(conns) = self.shared.conns.lock() {
            for c in conns.values() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        // accept() has no portable cancellation; one connection of our own wakes each idle
        // worker, which then sees `stopping` and exits.
        for _ in 0..POOL_SIZE {
            if UnixStream::connect(&self.socket_path).is_err() {
                break;
            }
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes glibc hand every allocation of 256 KiB or more straight to the kernel and back.
///
/// Request bodies are allocated and freed on whichever pool thread served them. glibc's default
/// raises its mmap threshold to the largest block freed so far (up to 32 MiB), after which such
/// blocks come from per-thread arenas that keep freed memory: 16 threads each holding one
/// freed body pushed run-group past 120 MiB although the body budget was 32 MiB. A fixed
/// threshold keeps resident memory at what is live. Process-wide, set once; elsewhere a no-op.
fn return_large_frees_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator tuning; it is called before any body exists.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        });
    }
}

/// Removes a leftover socket from a crashed run; refuses to delete anything that is not one.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it or choose another run directory",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// One pool thread: accept, serve, repeat, until the proxy stops.
fn worker(listener: &UnixListener, shared: &Shared) {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(_) => {
                // Transient (e.g. out of file descriptors): back off rather than spin.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        shared.pace.wait();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let (Ok(clone), Ok(mut conns)) = (conn.try_clone(), shared.conns.lock()) {
            conns.insert(id, clone);
        }
        // A bug that panics on one request must not shrink the pool for the rest of the run.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(conn, shared)));
        if let Ok(mut conns) = shared.conns.lock() {
            conns.remove(&id);
        }
    }
}

/// Reads one request head, routes it, and emits exactly one event for it.
fn serve(mut conn: UnixStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(http::HEAD_TIMEOUT));
    let (head, leftover) = match http::read_head(&mut conn) {
        Ok(Some(h)) => h,
        // Closed without a request (probes, the shutdown wake-up): nothing to record.
        Ok(None) => return,
        Err(rej) => {
            let _ = http::write_simple(&mut conn, rej.status, &rej.message);
            shared.emit(ProxyEvent::Local {
                method: "-".into(),
                path: "-".into(),
                status: rej.status,
            });
            return;
        }
    };
    let event = route(conn, &head, leftover, shared);
    shared.emit(event);
}

fn route(
    mut conn: UnixStream,
    head: &http::Head,
    leftover: Vec<u8>,
    shared: &Shared,
) -> ProxyEvent {
    if head.method == "CONNECT" {
        return egress::connect(conn, head, leftover, shared);
    }
    let target = head.target.as_str();
    // `http://claw/...` is the proxy itself (what a tool behind the in-container relay sends);
    // any other absolute URL is plain-HTTP egress.
    let path = match strip_self_origin(target) {
        Some(p) => p,
        None if target.starts_with('/') => target,
        None => return egress::forward_plain(conn, head, leftover, shared),
    };
    if let Some(rest) = path.strip_prefix("/mcp/") {
        return mcp::forward(conn, head, leftover, rest, shared);
    }
    for provider in [Provider::Anthropic, Provider::OpenAi] {
        let prefix = format!("/llm/{}", provider.name());
        if let Some(rest) = path.strip_prefix(prefix.as_str())
            && (rest.starts_with('/') || rest.starts_with('?') || rest.is_empty())
        {
            return llm::forward(conn, head, leftover, rest, provider, shared);
        }
    }
    let local = |status: u16| ProxyEvent::Local {
        method: head.method.chars().take(16).collect(),
        path: path
            .split('?')
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
        status,
    };
    if path.split('?').next() == Some(crate::infra::protocol::SEARCH_PATH) {
        return search::serve(conn, head, leftover, shared);
    }
    if path == "/health" && (head.method == "GET" || head.method == "HEAD") {
        let _ = http::write_simple(&mut conn, 200, "ok");
        return local(200);
    }
    let _ = http::write_simple(
        &mut conn,
        404,
        "claw: no such route on the proxy; use /llm/anthropic/..., /llm/openai/..., /mcp/NAME, \
         /search, /health, or CONNECT host:port for allowlisted egress",
    );
    local(404)
}

/// If `target` is an absolute URL naming the proxy itself (`http://claw[:80]/...`), its path.
fn strip_self_origin(target: &str) -> Option<&str> {
    let rest = target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])?;
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = rest[..cut].to_ascii_lowercase();
    if authority == "claw" || authority == "claw:80" {
        let path = &rest[cut..];
        return Some(if path.is_empty() { "/" } else { path });
    }
    None
}
