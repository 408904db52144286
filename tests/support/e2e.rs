//! Shared set-up for end-to-end tests: a temporary claw home wired to a real container runtime
//! and the agent image built by `bin/test` (tag in CLAW_TEST_IMAGE, default `claw-agent:test`).
//! Probe tests replace the agent with a script in the group folder (via `--entrypoint`), so the
//! real run-group, proxy, mounts and hardening are exercised by code that tries to break out.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image under test.
pub fn image() -> String {
    std::env::var("CLAW_TEST_IMAGE").unwrap_or_else(|_| "claw-agent:test".into())
}

/// The runtime under test (podman unless CLAW_TEST_RUNTIME says otherwise).
pub fn runtime() -> String {
    std::env::var("CLAW_TEST_RUNTIME").unwrap_or_else(|_| "podman".into())
}

/// Panic with a clear message unless the runtime and image are there: these tests must not skip.
pub fn require_image() {
    // `image inspect` (not podman's `image exists`) so docker works too.
    let out = Command::new(runtime())
        .args(["image", "inspect", &image()])
        .stdout(std::process::Stdio::null())
        .status();
    match out {
        Ok(s) if s.success() => {}
        Ok(_) => panic!(
            "image {} is missing: run bin/test (it builds it) or `claw image build --tag {}`",
            image(),
            image()
        ),
        Err(e) => panic!(
            "container runtime `{}` not runnable ({e}): run bin/setup-runtime",
            runtime()
        ),
    }
}

/// A temporary claw home.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub allowlist: PathBuf,
    pub extra_config: String,
    pub entrypoint: Option<String>,
    pub anthropic_base: String,
    pub openai_base: String,
    pub max_concurrent: usize,
    pub timeout_secs: u64,
    /// Let the steps chain (ingest → dispatch → run-group → deliver), as installed.
    pub chain: bool,
}

impl Env {
    /// `claw init` in a fresh temp dir (main group on `cli:local`).
    pub fn new() -> Env {
        require_image();
        let dir = tempfile::tempdir().unwrap();
        // The container user must traverse into mounted folders.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        let allowlist = dir.path().join("mount-allowlist.json");
        let env = Env {
            dir,
            home,
            allowlist,
            extra_config: String::new(),
            entrypoint: None,
            anthropic_base: "http://127.0.0.1:9".into(),
            openai_base: "http://127.0.0.1:9".into(),
            max_concurrent: 3,
            timeout_secs: 60,
            chain: false,
        };
        env.claw().arg("init").assert().success();
        env.write_config();
        env
    }

    /// A `claw` command for this home. Steps are not chained (`CLAW_CHAIN=0`) unless
    /// `chain` is set: most tests drive each step themselves.
    pub fn claw(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("claw").unwrap();
        c.env("CLAW_HOME", &self.home)
            .env("CLAW_MOUNT_ALLOWLIST", &self.allowlist)
            .env("CLAW_CHAIN", if self.chain { "1" } else { "0" })
            .env_remove("CLAW_LOG");
        c.timeout(std::time::Duration::from_secs(180));
        c
    }

    /// A std Command for `claw` (for background processes).
    pub fn claw_std(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_claw"));
        c.env("CLAW_HOME", &self.home)
            .env("CLAW_MOUNT_ALLOWLIST", &self.allowlist)
            .env("CLAW_CHAIN", if self.chain { "1" } else { "0" });
        c
    }

    /// Rewrite claw.toml from the fields of this struct.
    pub fn write_config(&self) {
        let mut extra_args: Vec<String> = vec![];
        if let Some(e) = &self.entrypoint {
            extra_args.push("--entrypoint".into());
            extra_args.push(e.clone());
        }
        let text = format!(
            r#"assistant_name = "Andy"
[runtime]
kind = "{rt}"
image = "{img}"
max_concurrent = {mc}
extra_args = {args}
[limits]
idle_secs = 1
timeout_secs = {to}
retry_base_secs = 60
max_attempts = 3
pids = 64
memory = "256m"
[providers.anthropic]
base_url = "{ab}"
[providers.openai]
base_url = "{ob}"
{extra}
"#,
            rt = runtime(),
            img = image(),
            mc = self.max_concurrent,
            args = serde_json::to_string(&extra_args).unwrap(),
            to = self.timeout_secs,
            ab = self.anthropic_base,
            ob = self.openai_base,
            extra = self.extra_config
        );
        std::fs::write(self.home.join("claw.toml"), text).unwrap();
    }

    /// Write a secret into secrets.env.
    pub fn set_secret(&self, name: &str, value: &str) {
        let p = self.home.join("secrets.env");
        let mut s = std::fs::read_to_string(&p).unwrap_or_default();
        s.push_str(&format!("{name}={value}\n"));
        std::fs::write(&p, s).unwrap();
    }

    /// Register a group.
    pub fn add_group(&self, folder: &str, chat: &str) {
        self.claw()
            .args([
                "group",
                "add",
                "--chat",
                chat,
                "--folder",
                folder,
                "--no-trigger",
            ])
            .assert()
            .success();
    }

    /// Store one message for a chat.
    pub fn say(&self, chat: &str, text: &str) {
        self.claw()
            .args(["ingest", "--chat", chat, "--text", text])
            .assert()
            .success();
    }

    /// The group's workspace on the host.
    pub fn group_dir(&self, folder: &str) -> PathBuf {
        self.home.join("groups").join(folder)
    }

    /// Put an executable probe script into a group's folder and make it the container entrypoint.
    pub fn install_probe(&mut self, folder: &str, script: &str) {
        let p = self.group_dir(folder).join("probe.sh");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.entrypoint = Some("/workspace/group/probe.sh".into());
        self.write_config();
    }

    /// Open the database.
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.home.join("claw.db")).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c
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

    /// Audit kinds and details for a group.
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

    /// Status, cursor and error of the newest run of a group.
    pub fn last_run(&self, folder: &str) -> (String, Option<String>, Option<i64>, i64) {
        self.db()
            .query_row(
                "SELECT status, error, retry_at, attempt FROM runs WHERE folder = ?1 ORDER BY id DESC LIMIT 1",
                [folder],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    }

    /// The group's cursor.
    pub fn cursor(&self, folder: &str) -> i64 {
        self.db()
            .query_row("SELECT seq FROM cursors WHERE folder = ?1", [folder], |r| {
                r.get(0)
            })
            .unwrap_or(0)
    }

    /// All text under the home's logs folder.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        collect(&self.home.join("logs"), &mut out);
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

impl Env {
    /// Names of this home's running containers (tests run in parallel; other homes are ignored).
    pub fn containers(&self) -> Vec<String> {
        let tag = format!("x{}", claw::paths::Home::new(&self.home).tag());
        let out = Command::new(runtime())
            .args(["ps", "--format", "{{.Names}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("claw-") && l.ends_with(&tag))
            .map(String::from)
            .collect()
    }
}

/// The probe preamble: read the start line, define `report KEY VALUE` collecting JSON, and
/// `finish` printing it as the result followed by idle.
pub const PROBE_HEAD: &str = r#"#!/bin/bash
read -r START
REPORT='{}'
report() { REPORT=$(jq -c --arg k "$1" --arg v "$2" '. + {($k): $v}' <<<"$REPORT"); }
finish() {
  jq -cn --arg t "$REPORT" '{type:"result", text:$t}'
  echo '{"type":"idle"}'
  exit "${1:-0}"
}
"#;

/// Parse the single JSON report a probe sent as its result.
pub fn probe_report(env: &Env, chat: &str) -> serde_json::Value {
    let texts = env.outbox(chat);
    let last = texts
        .last()
        .unwrap_or_else(|| panic!("probe sent no result; logs:\n{}", env.all_logs()));
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "probe result is not JSON ({e}): {last}\nlogs:\n{}",
            env.all_logs()
        )
    })
}
