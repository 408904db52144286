//! An idle tick costs nothing (issue 11): with no pending work, no due task, no due outbox row and
//! no live run, `claw tick` starts no process at all. Every program claw could run is a stub on
//! PATH that records its calls, and where strace is installed the tick runs under it so that a
//! child of any kind (claw itself included) would show. The stray sweep runs only when the
//! database says a run ended abnormally, and once it has looked, idle ticks are idle again.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs claw runs by name: the runtimes and the channel tools.
const STUBS: [&str; 4] = ["podman", "docker", "container", "signal-cli"];

struct Idle {
    h: TestHome,
    stubs: PathBuf,
    calls: PathBuf,
}

fn setup() -> Idle {
    let h = TestHome::init();
    let stubs = h.scratch("stubs");
    let calls = h.scratch("calls.log");
    std::fs::create_dir_all(&stubs).unwrap();
    for name in STUBS {
        let p = stubs.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 0\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cfg = h.root.join("claw.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("kind = \"auto\"", "kind = \"podman\"");
    std::fs::write(&cfg, text).unwrap();
    h.add_group("fx:1", "g1", &["--no-trigger"]);
    // Things that are there but are not work: an answered message, a task not due for an hour,
    // a terminal reply waiting for `claw chat`.
    h.claw()
        .args(["ingest", "--chat", "fx:1", "--text", "old news"])
        .assert()
        .success();
    let db = h.db();
    db.execute(
        "INSERT INTO cursors (folder, seq) VALUES ('g1', (SELECT max(seq) FROM messages))
         ON CONFLICT(folder) DO UPDATE SET seq = excluded.seq",
        [],
    )
    .unwrap();
    h.claw()
        .args([
            "task", "add", "--group", "g1", "--prompt", "later", "--every", "3600",
        ])
        .assert()
        .success();
    db.execute(
        "INSERT INTO outbox (chat_id, text, origin, created_at) VALUES ('cli:local', 'for chat', 'cli', 0)",
        [],
    )
    .unwrap();
    Idle { h, stubs, calls }
}

impl Idle {
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Run one tick; returns the processes it started (from strace) when strace is installed.
    fn tick(&self) -> Option<Vec<String>> {
        let trace = self.h.scratch("trace.txt");
        let claw = assert_cmd::cargo::cargo_bin("claw");
        let out = if strace_available() {
            Command::new("strace")
                .args([
                    "-f",
                    "-qq",
                    "-e",
                    "trace=execve,fork,vfork,clone,clone3",
                    "-o",
                ])
                .arg(&trace)
                .arg(&claw)
                .arg("tick")
                .env("CLAW_HOME", &self.h.root)
                .env("PATH", self.path())
                .env_remove("CLAW_CHAIN")
                .output()
                .unwrap()
        } else {
            Command::new(&claw)
                .arg("tick")
                .env("CLAW_HOME", &self.h.root)
                .env("PATH", self.path())
                .env_remove("CLAW_CHAIN")
                .output()
                .unwrap()
        };
        assert!(
            out.status.success(),
            "tick failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        strace_available().then(|| started(&trace))
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn clear_calls(&self) {
        let _ = std::fs::remove_file(&self.calls);
    }
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every process the traced tick started: execve calls after the first (the tick itself), and
/// clones that make a process rather than a thread.
fn started(trace: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut execs = text
        .lines()
        .filter(|l| l.contains("execve(") && !l.contains("resumed>"));
    execs.next();
    let mut out: Vec<String> = execs.map(String::from).collect();
    out.extend(
        text.lines()
            .filter(|l| {
                (l.contains("clone(") || l.contains("clone3(") || l.contains("fork("))
                    && !l.contains("CLONE_THREAD")
                    && !l.contains("resumed>")
            })
            .map(String::from),
    );
    out
}

#[test]
fn an_idle_tick_starts_no_process() {
    let idle = setup();
    // The first tick may do its hourly housekeeping; even that starts nothing.
    for round in 0..4 {
        if let Some(procs) = idle.tick() {
            assert!(procs.is_empty(), "tick {round} started: {procs:#?}");
        } else if round == 0 {
            eprintln!("strace is not installed: checked through the stubs only");
        }
    }
    assert!(
        idle.calls().is_empty(),
        "idle ticks ran: {:?}",
        idle.calls()
    );
    // Nothing was written either: the task still waits, the terminal row still waits for chat.
    assert_eq!(idle.h.count("SELECT count(*) FROM runs"), 0);
    assert_eq!(
        idle.h.count(
            "SELECT count(*) FROM outbox WHERE status = 'pending' AND chat_id = 'cli:local'"
        ),
        1
    );
}

#[test]
fn the_stray_sweep_runs_only_when_a_run_ended_abnormally() {
    let idle = setup();
    idle.tick();
    assert!(idle.calls().is_empty());
    // A run-group that died (its pid is gone, its group lock free): recovered, then one sweep.
    let db = idle.h.db();
    db.execute(
        "INSERT INTO runs (folder, kind, status, attempt, pid, queued_at, started_at)
         VALUES ('g1', 'task', 'running', 1, 2147483646, 0, 0)",
        [],
    )
    .unwrap();
    idle.tick();
    let calls = idle.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("podman ps -a"), "{calls:?}");
    assert_eq!(
        idle.h
            .count("SELECT count(*) FROM runs WHERE status = 'failed'"),
        1
    );
    idle.clear_calls();
    idle.tick();
    assert!(idle.calls().is_empty(), "swept again: {:?}", idle.calls());

    // A container recorded for a finished run (its run-group could not see it gone): one sweep,
    // which finds it gone and forgets it; then idle again.
    db.execute(
        "INSERT INTO containers (name, folder, run_id, runtime, started_at)
         VALUES ('claw-g1-1xabc', 'g1', 1, 'podman', 0)",
        [],
    )
    .unwrap();
    // The sweep after a recovery is recent: a recorded container waits out the short gap.
    db.execute("UPDATE marks SET at = 0 WHERE key = 'dispatch.sweep'", [])
        .unwrap();
    if let Some(procs) = idle.tick() {
        assert!(procs.iter().any(|p| p.contains("podman")), "{procs:#?}");
    }
    assert_eq!(idle.calls().len(), 1, "{:?}", idle.calls());
    assert_eq!(idle.h.count("SELECT count(*) FROM containers"), 0);
    idle.clear_calls();
    if let Some(procs) = idle.tick() {
        assert!(procs.is_empty(), "{procs:#?}");
    }
    assert!(idle.calls().is_empty(), "{:?}", idle.calls());
}
