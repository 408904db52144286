//! Test support. This file (`mod support;`) is the agent harness: it runs the real `claw-agent`
//! binary on the host, with its proxy socket pointed at the fake LLM server and its workspace in a
//! temp dir. Every other file here is included on its own, `#[path = "support/NAME.rs"] mod NAME;`,
//! so a test binary compiles only what it uses:
//!
//! - `home.rs`: the one temporary claw home (`TestHome`) for tests that drive the `claw` binary:
//!   `claw` commands pointed at it, its config, secrets and database.
//! - `e2e.rs`: a `TestHome` wired to the real container runtime and the agent image (`Env`),
//!   and probe scripts that replace the agent to try to break out.
//! - `ipc.rs`: an in-process home with three groups and an open store, for IPC, task and
//!   schedule tests that call the library directly.
//! - `fake_llm.rs` (with `fake_wire.rs`, `fake_billing.rs`): the fake Anthropic/OpenAI server.
//! - `fake_telegram.rs`: the fake Telegram Bot API. `fake_https.rs`: a fake HTTPS API with its
//!   own CA, for credential tests.
//! - `proxy_harness.rs`: a real proxy on a temp socket with fake upstreams.
//! - `rss.rs`: a child's peak memory. `pty.rs`: a command run on a pseudo-terminal.
//! - `systemd_box.rs`: a real systemd in a container, for the service tests.
#![allow(dead_code)]

pub mod fake_llm;

use claw::infra::protocol::{AgentLimits, AgentLine, HostLine, ModelSettings, Start};
use fake_llm::FakeLlm;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long any single wait in these tests may take before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// A temp world for one agent: workspace folders, state dir and a fake LLM on the proxy socket.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub llm: FakeLlm,
}

impl Sandbox {
    /// Create `workspace/{group,global,ipc,skills}`, `state/` and the fake server on `proxy.sock`.
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in [
            "workspace/group",
            "workspace/global",
            "workspace/ipc",
            "workspace/skills",
            "state",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let llm = FakeLlm::start_with_socket(&dir.path().join("proxy.sock"));
        Sandbox { dir, llm }
    }
    /// `$CLAW_WORKSPACE`.
    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }
    /// The group folder (`$CLAW_WORKSPACE/group`).
    pub fn group(&self) -> PathBuf {
        self.workspace().join("group")
    }
    /// The IPC folder (`$CLAW_WORKSPACE/ipc`).
    pub fn ipc(&self) -> PathBuf {
        self.workspace().join("ipc")
    }
    /// `$CLAW_STATE_DIR`.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    /// Start `claw-agent` with this sandbox's environment and send it `start`.
    pub fn spawn(&self, start: Start) -> Agent {
        self.spawn_with_env(start, &[])
    }
    /// [`Sandbox::spawn`] with extra environment variables (e.g. `CLAW_PROMPT_CACHE=0`).
    pub fn spawn_with_env(&self, start: Start, env: &[(&str, &str)]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_claw-agent"))
            .envs(env.iter().copied())
            .env("CLAW_PROXY_SOCKET", self.dir.path().join("proxy.sock"))
            .env("CLAW_WORKSPACE", self.workspace())
            .env("CLAW_STATE_DIR", self.state())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start claw-agent");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // Anything on stdout that is not a protocol line is a bug in the agent.
                let parsed = serde_json::from_str::<AgentLine>(&line).unwrap_or_else(|e| {
                    panic!("claw-agent wrote a non-protocol line to stdout ({e}): {line}")
                });
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        let mut agent = Agent {
            child,
            stdin,
            lines,
            stderr,
        };
        agent.send(&HostLine::Start(start.into()));
        agent
    }
    /// Run one prompt to the end: start, EOF on stdin, wait for exit.
    pub fn run(&self, start: Start) -> Outcome {
        self.run_with_env(start, &[])
    }
    /// [`Sandbox::run`] with extra environment variables.
    pub fn run_with_env(&self, start: Start, env: &[(&str, &str)]) -> Outcome {
        let mut a = self.spawn_with_env(start, env);
        a.close_stdin();
        a.finish()
    }
}

/// A start line for `provider` with small limits suited to tests.
pub fn start(provider: &str, prompt: &str) -> Start {
    Start {
        prompt: prompt.into(),
        group_folder: "team".into(),
        chat_id: "tg:-100".into(),
        is_main: false,
        is_task: false,
        task_id: None,
        session_id: None,
        assistant_name: "Andy".into(),
        channel: "telegram".into(),
        model: ModelSettings {
            provider: provider.into(),
            model: "fake-model".into(),
            max_tokens: 1000,
            context_window: 200_000,
        },
        limits: AgentLimits {
            max_steps: 10,
            bash_timeout_secs: 10,
            tool_output_cap: 4000,
        },
        mcp: vec![],
        images: vec![],
        vision: true,
    }
}

/// A running agent process.
pub struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<AgentLine>,
    stderr: Arc<Mutex<String>>,
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub lines: Vec<AgentLine>,
    pub code: i32,
    pub stderr: String,
}

impl Outcome {
    /// Texts of `result` lines.
    pub fn results(&self) -> Vec<String> {
        let f = |l: &AgentLine| {
            if let AgentLine::Result { text } = l {
                Some(text.clone())
            } else {
                None
            }
        };
        self.lines.iter().filter_map(f).collect()
    }
    /// The session id the agent announced.
    pub fn session(&self) -> String {
        let f = |l: &AgentLine| {
            if let AgentLine::Session { id } = l {
                Some(id.clone())
            } else {
                None
            }
        };
        self.lines.iter().find_map(f).expect("a session line")
    }
}

impl Agent {
    /// Write one host line.
    pub fn send(&mut self, line: &HostLine) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(line.to_line().as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    /// Close stdin (EOF), which the agent treats like `close`.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }
    /// The next protocol line (panics after [`WAIT`], showing stderr).
    pub fn next(&self) -> AgentLine {
        self.lines.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "no line from claw-agent; stderr:\n{}",
                self.stderr.lock().unwrap()
            )
        })
    }
    /// Lines up to and including the next `idle` (or `error`).
    pub fn until_idle(&self) -> Vec<AgentLine> {
        let mut out = Vec::new();
        loop {
            let l = self.next();
            let stop = matches!(l, AgentLine::Idle { .. } | AgentLine::Error { .. });
            out.push(l);
            if stop {
                return out;
            }
        }
    }
    /// Peak resident set size so far (VmHWM), in KiB. Read it while the agent is idle: after exit
    /// the kernel's figure includes the test process's memory at exec time.
    pub fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .unwrap_or("VmHWM: 0 kB");
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    /// Wait for exit and collect the remaining lines.
    pub fn finish(self) -> Outcome {
        let Agent {
            mut child,
            stdin,
            lines,
            stderr,
        } = self;
        drop(stdin);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let code = child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
            let _ = tx.send(code);
        });
        let code = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "claw-agent did not exit; stderr:\n{}",
                stderr.lock().unwrap()
            )
        });
        // The stdout reader ends at EOF after exit; the timeout only guards a stuck reader.
        let mut rest = Vec::new();
        while let Ok(l) = lines.recv_timeout(Duration::from_secs(2)) {
            rest.push(l);
        }
        let stderr = stderr.lock().unwrap().clone();
        Outcome {
            lines: rest,
            code,
            stderr,
        }
    }
}
