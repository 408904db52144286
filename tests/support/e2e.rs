//! Shared set-up for end-to-end tests: a [`TestHome`] wired to a real container runtime and the
//! agent image built by `bin/test` (tag in CLAW_TEST_IMAGE, default `claw-agent:test`).
//! Probe tests replace the agent with a script in the group folder (via `--entrypoint`), so the
//! real run-group, proxy, mounts and hardening are exercised by code that tries to break out.
#![allow(dead_code)]

#[path = "home.rs"]
pub mod home;

use home::TestHome;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
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

/// A [`TestHome`] whose config points at the runtime and image under test, with the knobs
/// `write_config` turns into `claw.toml`. Derefs to the home for commands and queries.
pub struct Env {
    pub base: TestHome,
    pub extra_config: String,
    pub entrypoint: Option<String>,
    pub anthropic_base: String,
    pub openai_base: String,
    pub max_concurrent: usize,
    pub timeout_secs: u64,
}

impl std::ops::Deref for Env {
    type Target = TestHome;
    fn deref(&self) -> &TestHome {
        &self.base
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut TestHome {
        &mut self.base
    }
}

impl Env {
    /// `claw init` in a fresh temp dir (main group on `cli:local`).
    pub fn new() -> Env {
        require_image();
        let mut base = TestHome::new();
        // The container user must traverse into mounted folders.
        std::fs::set_permissions(base.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        base.timeout = Some(std::time::Duration::from_secs(180));
        let env = Env {
            base,
            extra_config: String::new(),
            entrypoint: None,
            anthropic_base: "http://127.0.0.1:9".into(),
            openai_base: "http://127.0.0.1:9".into(),
            max_concurrent: 3,
            timeout_secs: 60,
        };
        env.claw().arg("init").assert().success();
        env.write_config();
        env
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
        std::fs::write(self.root.join("claw.toml"), text).unwrap();
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
        self.root.join("groups").join(folder)
    }

    /// Put an executable probe script into a group's folder and make it the container entrypoint.
    pub fn install_probe(&mut self, folder: &str, script: &str) {
        let p = self.group_dir(folder).join("probe.sh");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.entrypoint = Some("/workspace/group/probe.sh".into());
        self.write_config();
    }

    /// Names of this home's running containers (tests run in parallel; other homes are ignored).
    pub fn containers(&self) -> Vec<String> {
        let tag = format!("x{}", claw::infra::paths::Home::new(&self.root).tag());
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
