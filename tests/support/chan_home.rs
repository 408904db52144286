//! A fresh claw home for channel tests, driven through the real binary.
#![allow(dead_code)]

use assert_cmd::Command;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    /// `claw init` in a temporary directory.
    pub fn init() -> TestHome {
        let dir = tempfile::tempdir().unwrap();
        let h = TestHome { dir };
        h.claw(&["init"]).assert().success();
        h
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A `claw` command with this home and info logs on stderr; steps not chained.
    pub fn claw(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_claw"));
        c.env("CLAW_HOME", self.root())
            .env("CLAW_CHAIN", "0")
            .env("CLAW_LOG", "info")
            .args(args);
        c
    }

    /// A std command for spawning (to kill it or run several at once).
    pub fn claw_std(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_claw"));
        c.env("CLAW_HOME", self.root())
            .env("CLAW_CHAIN", "0")
            .env("CLAW_LOG", "warn")
            .args(args);
        c
    }

    /// Append TOML to claw.toml.
    pub fn config(&self, toml: &str) {
        let p = self.root().join("claw.toml");
        let mut s = std::fs::read_to_string(&p).unwrap();
        s.push('\n');
        s.push_str(toml);
        std::fs::write(p, s).unwrap();
    }

    /// Append a line to secrets.env (mode stays 600).
    pub fn secret(&self, line: &str) {
        let p = self.root().join("secrets.env");
        let mut s = std::fs::read_to_string(&p).unwrap();
        s.push_str(line);
        s.push('\n');
        std::fs::write(&p, s).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub fn add_group(&self, chat: &str, folder: &str) {
        self.claw(&["group", "add", "--chat", chat, "--folder", folder])
            .assert()
            .success();
    }

    /// A read connection to the database.
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.root().join("claw.db")).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
        c
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }
}
