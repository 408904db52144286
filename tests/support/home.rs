//! A temporary claw home for CLI tests: builds `claw` commands pointed at it and opens its real
//! SQLite file for checks. Included with `#[path = "support/home.rs"] mod home;` so it does not
//! depend on any shared `support/mod.rs`.
#![allow(dead_code)]

use assert_cmd::Command;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// A fresh temporary directory whose `home/` subfolder is the claw home.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl TestHome {
    /// A home that does not exist yet (the temp dir does).
    pub fn new() -> TestHome {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("home");
        TestHome { dir, root }
    }

    /// A home after a successful `claw init`.
    pub fn init() -> TestHome {
        let h = TestHome::new();
        h.claw().arg("init").assert().success();
        h
    }

    /// `claw` with `CLAW_HOME` set to this home and logging quiet. Steps are not chained
    /// (`CLAW_CHAIN=0`): these tests drive each step themselves.
    pub fn claw(&self) -> Command {
        let mut c = Command::cargo_bin("claw").expect("claw binary");
        c.env("CLAW_HOME", &self.root)
            .env("CLAW_CHAIN", "0")
            .env_remove("CLAW_LOG");
        c
    }

    /// A `std::process::Command` for the same binary (for tests that need to spawn and kill).
    pub fn claw_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("claw"));
        c.env("CLAW_HOME", &self.root)
            .env("CLAW_CHAIN", "0")
            .env_remove("CLAW_LOG");
        c
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("claw.db")
    }

    /// Open the home's database directly (the same file claw uses).
    pub fn db(&self) -> Connection {
        let c = Connection::open(self.db_path()).expect("open claw.db");
        c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
        c
    }

    /// One integer from a query on the database.
    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    /// Append TOML to `claw.toml` (sections must not already exist in the file).
    pub fn append_config(&self, toml: &str) {
        let path = self.root.join("claw.toml");
        let mut text = std::fs::read_to_string(&path).expect("read claw.toml");
        text.push('\n');
        text.push_str(toml);
        std::fs::write(path, text).expect("write claw.toml");
    }

    /// Set `limits.max_message_bytes` in `claw.toml`.
    pub fn set_max_message_bytes(&self, n: usize) {
        let path = self.root.join("claw.toml");
        let text = std::fs::read_to_string(&path).expect("read claw.toml");
        let new = text.replace(
            "max_message_bytes = 65536",
            &format!("max_message_bytes = {n}"),
        );
        assert_ne!(text, new, "claw.toml has no default max_message_bytes line");
        std::fs::write(path, new).expect("write claw.toml");
    }

    /// Register a chat as a group through the CLI; `extra` are more `group add` flags.
    pub fn add_group(&self, chat: &str, folder: &str, extra: &[&str]) {
        self.claw()
            .args(["group", "add", "--chat", chat, "--folder", folder])
            .args(extra)
            .assert()
            .success();
    }

    /// Pipe `input` to `claw ingest`.
    pub fn ingest(&self, input: &str) -> assert_cmd::assert::Assert {
        self.claw().arg("ingest").write_stdin(input).assert()
    }

    /// `claw status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self
            .claw()
            .args(["status", "--json"])
            .output()
            .expect("run status");
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// A path inside the temp dir but outside the home.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One inbound JSON line.
pub fn line(chat: &str, id: &str, sender: &str, text: &str) -> String {
    serde_json::json!({
        "chat": chat, "id": id, "sender": sender, "sender_name": "S", "text": text,
        "time": "2026-11-21T10:00:00Z", "is_group": true
    })
    .to_string()
}

/// Every file under `dir` with its bytes, modification time and mode (for "nothing changed"
/// checks). Folders are listed by path and mode only: SQLite's transient `-wal`/`-shm` files
/// touch the home folder's mtime on every open.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let e = e.unwrap();
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
                out.push((
                    p,
                    Vec::new(),
                    std::time::UNIX_EPOCH,
                    md.permissions().mode(),
                ));
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes, md.modified().unwrap(), md.permissions().mode()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
