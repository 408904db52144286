//! The one temporary claw home for tests that drive the real `claw` binary: builds `claw`
//! commands pointed at it, edits its config and secrets, and opens its real SQLite file for
//! checks. Container tests wrap it (`e2e.rs`), the in-process IPC tests keep their home in one
//! (`ipc.rs`). Included with `#[path = "support/home.rs"] mod home;` (or through those two) so it
//! does not depend on `support/mod.rs`.
#![allow(dead_code)]

use assert_cmd::Command;
use rusqlite::Connection;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh temporary directory whose `home/` subfolder is the claw home; the rest of the
/// directory is room for files that must sit outside the home.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    /// The claw home (`CLAW_HOME`).
    pub root: PathBuf,
    /// `CLAW_MOUNT_ALLOWLIST`, inside the temp dir: a developer's own allowlist is never read.
    pub allowlist: PathBuf,
    /// `CLAW_LOG` for [`TestHome::claw`]; `None` leaves claw at its default level (warn), so
    /// tests that compare stderr see only what claw always prints.
    pub log: Option<&'static str>,
    /// Let the steps chain (ingest → dispatch → run-group → deliver) as installed. Off by
    /// default (`CLAW_CHAIN=0`): most tests drive each step themselves.
    pub chain: bool,
    /// Fail a [`TestHome::claw`] command that runs longer than this (container tests set it, so a
    /// stuck runtime fails the test instead of hanging it).
    pub timeout: Option<Duration>,
}

impl TestHome {
    /// A home that does not exist yet (the temp dir does).
    pub fn new() -> TestHome {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("home");
        let allowlist = dir.path().join("mount-allowlist.json");
        TestHome {
            dir,
            root,
            allowlist,
            log: None,
            chain: false,
            timeout: None,
        }
    }

    /// A home after a successful `claw init` (main group on `cli:local`).
    pub fn init() -> TestHome {
        let h = TestHome::new();
        h.claw().arg("init").assert().success();
        h
    }

    /// The same home with `CLAW_LOG=level` for [`TestHome::claw`] (channel tests read info logs).
    pub fn with_log(mut self, level: &'static str) -> TestHome {
        self.log = Some(level);
        self
    }

    /// `claw` with this home's environment; see the fields for what each setting does.
    pub fn claw(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_claw"));
        c.env("CLAW_HOME", &self.root)
            .env("CLAW_MOUNT_ALLOWLIST", &self.allowlist)
            .env("CLAW_CHAIN", if self.chain { "1" } else { "0" });
        match self.log {
            Some(level) => c.env("CLAW_LOG", level),
            None => c.env_remove("CLAW_LOG"),
        };
        if let Some(t) = self.timeout {
            c.timeout(t);
        }
        c
    }

    /// A `std::process::Command` for the same binary, for processes a test spawns, kills or
    /// measures. These log at claw's default level (warn) whatever `log` says: their stderr is
    /// the terminal's, and a benchmark's figures should not include info logging.
    pub fn claw_std(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_claw"));
        c.env("CLAW_HOME", &self.root)
            .env("CLAW_MOUNT_ALLOWLIST", &self.allowlist)
            .env("CLAW_CHAIN", if self.chain { "1" } else { "0" })
            .env_remove("CLAW_LOG");
        c
    }

    /// A path inside the home.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A path inside the temp dir but outside the home.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `claw.db`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("claw.db")
    }

    /// Open the home's database directly (the same file claw uses).
    pub fn db(&self) -> Connection {
        let c = Connection::open(self.db_path()).expect("open claw.db");
        c.busy_timeout(Duration::from_secs(30)).unwrap();
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

    /// Append `name=value` to `secrets.env`, keeping it mode 0600 as claw requires.
    pub fn set_secret(&self, name: &str, value: &str) {
        let path = self.root.join("secrets.env");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!("{name}={value}\n"));
        std::fs::write(&path, text).expect("write secrets.env");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
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

    /// Texts in the outbox for a chat, oldest first.
    pub fn outbox(&self, chat: &str) -> Vec<String> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT text FROM outbox WHERE chat_id = ?1 ORDER BY id")
            .unwrap();
        st.query_map([chat], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Details of the audit rows of one kind, oldest first.
    pub fn audit(&self, kind: &str) -> Vec<serde_json::Value> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT detail FROM audit WHERE kind = ?1 ORDER BY id")
            .unwrap();
        st.query_map([kind], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
            .collect()
    }

    /// Status, error, retry time and attempt of the newest run of a group.
    pub fn last_run(&self, folder: &str) -> (String, Option<String>, Option<i64>, i64) {
        self.db()
            .query_row(
                "SELECT status, error, retry_at, attempt FROM runs WHERE folder = ?1 ORDER BY id DESC LIMIT 1",
                [folder],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    }

    /// The group's cursor (0 before its first run).
    pub fn cursor(&self, folder: &str) -> i64 {
        self.db()
            .query_row("SELECT seq FROM cursors WHERE folder = ?1", [folder], |r| {
                r.get(0)
            })
            .unwrap_or(0)
    }

    /// All text under the home's logs folder (for failure messages).
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        collect(&self.root.join("logs"), &mut out);
        out
    }
}

fn collect(dir: &Path, out: &mut String) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if let Ok(s) = std::fs::read_to_string(&p) {
                out.push_str(&s);
            }
        }
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
