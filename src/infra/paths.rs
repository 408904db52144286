//! Where everything lives inside a claw home. One struct so no module builds paths by hand.

use std::path::{Path, PathBuf};

/// The runtime home (`CLAW_HOME`) and every path derived from it.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// Wrap a home directory without touching the disk.
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The default home: `$XDG_DATA_HOME/claw`, `~/.local/share/claw`, or on macOS
    /// `~/Library/Application Support/claw`.
    pub fn default_root() -> PathBuf {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        if cfg!(target_os = "macos") {
            return home.join("Library/Application Support/claw");
        }
        match std::env::var_os("XDG_DATA_HOME") {
            Some(x) if !x.is_empty() => PathBuf::from(x).join("claw"),
            _ => home.join(".local/share/claw"),
        }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("claw.toml")
    }
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets.env")
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("claw.db")
    }
    pub fn global_lock(&self) -> PathBuf {
        self.root.join("claw.lock")
    }
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
    /// Lockfile held by the one run-group of a group.
    pub fn group_lock(&self, folder: &str) -> PathBuf {
        self.locks().join(format!("group-{folder}.lock"))
    }
    /// Lockfile for concurrency slot `n` (0-based).
    pub fn slot_lock(&self, n: usize) -> PathBuf {
        self.locks().join(format!("slot-{n}.lock"))
    }
    /// Lockfile serialising IPC application for one group (timer and run-group may overlap).
    pub fn ipc_lock(&self, folder: &str) -> PathBuf {
        self.locks().join(format!("ipc-{folder}.lock"))
    }
    /// Lockfile for delivering one channel's outbox.
    pub fn channel_lock(&self, channel: &str) -> PathBuf {
        self.locks().join(format!("deliver-{channel}.lock"))
    }
    pub fn groups(&self) -> PathBuf {
        self.root.join("groups")
    }
    pub fn group_dir(&self, folder: &str) -> PathBuf {
        self.groups().join(folder)
    }
    pub fn global_dir(&self) -> PathBuf {
        self.groups().join("global")
    }
    pub fn sessions(&self) -> PathBuf {
        self.root.join("sessions")
    }
    pub fn session_dir(&self, folder: &str) -> PathBuf {
        self.sessions().join(folder)
    }
    pub fn ipc(&self) -> PathBuf {
        self.root.join("ipc")
    }
    pub fn ipc_dir(&self, folder: &str) -> PathBuf {
        self.ipc().join(folder)
    }
    pub fn ipc_errors(&self) -> PathBuf {
        self.ipc().join("errors")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Per-run folders holding the proxy socket (`run/<run id>/proxy.sock`).
    pub fn run_dirs(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn skills(&self) -> PathBuf {
        self.root.join("skills")
    }

    /// Eight hex digits identifying this home (FNV-1a of its canonical path). Container names
    /// carry it so two homes on one machine never touch each other's containers.
    pub fn tag(&self) -> String {
        let path = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut h: u32 = 0x811c_9dc5;
        for b in path.as_os_str().as_encoded_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{h:08x}")
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}
