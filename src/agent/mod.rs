//! claw-agent: the tool-using loop that runs inside a group's container.
//!
//! It owns the container side of the protocol (stdin/stdout JSON lines), the model providers
//! (reached only through the host's proxy socket via a loopback relay), the tools, the system
//! prompt, the transcript and its compaction, and the `delegate` swarm. It must never hold or ask
//! for an API key, never write anything but protocol lines to stdout, and never reach the network
//! except through the proxy socket.

pub mod ctx;
pub mod delegate;
pub mod image;
pub mod mcp;
pub mod memory;
pub mod prompt;
pub mod providers;
pub mod relay;
pub mod run;
pub mod session;
pub mod sse;
pub mod tools;
pub mod transcript;
pub mod transport;
pub mod turn;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Where the agent finds its world; container paths by default, overridable for tests.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The proxy's Unix socket (LLM routes and egress).
    pub proxy_socket: PathBuf,
    /// `/workspace`: holds `group`, `global`, `ipc`, `skills`.
    pub workspace: PathBuf,
    /// `/home/agent/.claw`: private state (transcripts).
    pub state_dir: PathBuf,
}

impl Paths {
    /// Read `CLAW_PROXY_SOCKET`, `CLAW_WORKSPACE` and `CLAW_STATE_DIR`, defaulting to container paths.
    pub fn from_env() -> Paths {
        let get = |k: &str, d: &str| PathBuf::from(std::env::var_os(k).unwrap_or_else(|| d.into()));
        Paths {
            proxy_socket: get("CLAW_PROXY_SOCKET", crate::infra::protocol::PROXY_SOCKET),
            workspace: get("CLAW_WORKSPACE", "/workspace"),
            state_dir: get("CLAW_STATE_DIR", "/home/agent/.claw"),
        }
    }
    /// The group's own folder, the agent's working directory.
    pub fn group(&self) -> PathBuf {
        self.workspace.join("group")
    }
    /// Memory shared by every group (read-only for non-main).
    pub fn global(&self) -> PathBuf {
        self.workspace.join("global")
    }
    /// The IPC folder the host reads requests from.
    pub fn ipc(&self) -> PathBuf {
        self.workspace.join("ipc")
    }
    /// Skills mounted read-only from the host.
    pub fn skills(&self) -> PathBuf {
        self.workspace.join("skills")
    }
}

/// Log one line to stderr; stdout is reserved for protocol lines.
pub fn log(msg: &str) {
    eprintln!("claw-agent: {msg}");
}

/// Write one protocol line to stdout, whole, from any thread.
pub fn emit(line: &crate::infra::protocol::AgentLine) {
    static OUT: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = OUT
        .get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.to_line().as_bytes());
    let _ = out.flush();
}
