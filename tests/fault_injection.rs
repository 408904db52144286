//! Fault injection (issue 7): kill -9 each pipeline step at random points while messages flow,
//! then let the timer (`claw tick`) run, and check that no message was lost, no reply duplicated
//! (except in deliver's documented window), no lock stuck and no container orphaned. Also: disk
//! full, a corrupt IPC folder, the runtime missing or dying mid-run, and 20 parallel ticks.
//!
//! Iterations default to 30; set FAULT_ITERS for a longer soak.

#[path = "support/e2e.rs"]
mod e2e;

use e2e::Env;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A tiny deterministic PRNG (xorshift) so a failing seed can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The probe agent: answers every prompt with the message tokens it saw, and asks the host (over
/// IPC) to send one extra message per prompt, so ipc-apply has work to be killed in.
const ECHO_AGENT: &str = r#"#!/bin/bash
answer() {
  toks=$(grep -o 'm-[0-9]*' <<<"$1" | sort -u | tr '\n' ' ')
  jq -cn --arg t "echo $toks" '{type:"result", text:$t}'
  first=$(awk '{print $1}' <<<"$toks")
  if [ -n "$first" ]; then
    jq -cn --arg t "ipc $first" '{type:"send_message", text:$t}' > "/workspace/ipc/messages/.tmp-$first"
    mv "/workspace/ipc/messages/.tmp-$first" "/workspace/ipc/messages/ipc-$first-$RANDOM.json"
  fi
  echo '{"type":"idle"}'
}
while IFS= read -r line; do
  case "$(jq -r .type <<<"$line")" in
    start) answer "$(jq -r .prompt <<<"$line")" ;;
    message) answer "$(jq -r .text <<<"$line")" ;;
    close) exit 0 ;;
  esac
done
"#;

const GROUPS: [(&str, &str); 3] = [("g1", "fx:1"), ("g2", "fx:2"), ("g3", "fx:3")];

fn setup() -> (Env, std::path::PathBuf) {
    let mut env = Env::new();
    let sent = env.dir.path().join("sent.jsonl");
    let script = env.dir.path().join("send.sh");
    std::fs::write(&script, format!("#!/bin/bash\ncat >> {}\n", sent.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.extra_config = format!("[channels.fx]\nsend_command = [\"{}\"]\n", script.display());
    env.max_concurrent = 2;
    env.write_config();
    // Many kills make many failed attempts; the suite checks loss, not the attempt limit.
    let toml = std::fs::read_to_string(env.root.join("claw.toml"))
        .unwrap()
        .replace("max_attempts = 3", "max_attempts = 50");
    std::fs::write(env.root.join("claw.toml"), toml).unwrap();
    for (f, c) in GROUPS {
        env.add_group(c, f, &["--no-trigger"]);
        env.install_probe(f, ECHO_AGENT);
    }
    (env, sent)
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on a pid we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

/// Run `claw tick` until nothing is pending (or fail after `limit`).
fn settle(env: &Env, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        // Backoff timing is tested elsewhere; here only the eventual outcome counts.
        env.db()
            .execute(
                "UPDATE runs SET retry_at = 0 WHERE retry_at IS NOT NULL",
                [],
            )
            .unwrap();
        env.db()
            .execute("UPDATE outbox SET next_attempt_at = 0", [])
            .unwrap();
        let out = env.claw_std().arg("tick").output().unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("database is locked"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let db = env.db();
        let busy: i64 = db
            .query_row(
                "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let unsent: i64 = db
            .query_row(
                "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let behind: i64 = db
            .query_row(
                "SELECT count(*) FROM messages m JOIN groups g ON g.chat_id = m.chat_id
                 LEFT JOIN cursors c ON c.folder = g.folder WHERE m.seq > coalesce(c.seq, 0) AND m.is_bot = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let files = ["g1", "g2", "g3"]
            .iter()
            .map(|g| {
                // A `.tmp-…` file is a request a killed container never finished writing: it
                // was never committed, so it is not pending work (the group's next run clears it).
                std::fs::read_dir(env.root.join("ipc").join(g).join("messages"))
                    .map(|d| {
                        d.flatten()
                            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum::<usize>();
        if busy == 0 && unsent == 0 && behind == 0 && files == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "did not settle: {busy} runs busy, {unsent} unsent, {behind} messages behind, {files} IPC files\n{}",
            env.all_logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn kill_nine_anywhere_loses_nothing() {
    let (env, sent) = setup();
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c1a7_u64);
    let iters: usize = std::env::var("FAULT_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut rng = Rng(seed);
    let mut deliver_killed = false;
    let mut kills: HashMap<&str, usize> = HashMap::new();
    for i in 0..iters {
        for _ in 0..2 {
            let (_, chat) = GROUPS[rng.below(3) as usize];
            let mut ingest = env
                .claw_std()
                .args([
                    "ingest",
                    "--chat",
                    chat,
                    "--text",
                    &format!("m-{i}{} please", rng.below(1000)),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if rng.below(5) == 0 {
                std::thread::sleep(Duration::from_millis(rng.below(30)));
                kill9(&mut ingest);
                *kills.entry("ingest").or_default() += 1;
            } else {
                ingest.wait().unwrap();
            }
        }
        let step: Vec<&str> = match rng.below(7) {
            0 => vec!["dispatch"],
            1 => vec!["run-group", GROUPS[rng.below(3) as usize].0],
            2 => vec!["ipc-apply"],
            3 => vec!["schedule"],
            4 => vec!["deliver"],
            5 => vec!["tick"],
            _ => vec!["dispatch", "--wait"],
        };
        let mut child = env
            .claw_std()
            .args(&step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        if child.try_wait().unwrap().is_none() {
            kill9(&mut child);
            *kills.entry(step[0]).or_default() += 1;
            if step[0] == "deliver" || step[0] == "tick" {
                deliver_killed = true;
            }
        }
        // Now and then, kill a run-group that dispatch started in the background.
        if rng.below(4) == 0 {
            let pid: Option<i64> = env
                .db()
                .query_row(
                    "SELECT pid FROM runs WHERE status = 'running' ORDER BY random() LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .ok();
            if let Some(pid) = pid {
                // SAFETY: kill(2); the pid belongs to a run-group of this test's home.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                *kills.entry("run-group (detached)").or_default() += 1;
            }
        }
    }
    eprintln!("seed {seed:#x}, {iters} iterations, kills: {kills:?}");
    settle(&env, Duration::from_secs(240));

    // Every stored message was answered, by exactly one reply row.
    let db = env.db();
    let mut st = db
        .prepare("SELECT m.text FROM messages m JOIN groups g ON g.chat_id = m.chat_id WHERE g.folder != 'main'")
        .unwrap();
    let tokens: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|t| t.unwrap().split_whitespace().next().unwrap().to_string())
        .collect();
    assert!(!tokens.is_empty());
    let mut st = db
        .prepare("SELECT id, text FROM outbox WHERE origin LIKE 'run:%'")
        .unwrap();
    let replies: Vec<(i64, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for t in &tokens {
        let n = replies
            .iter()
            .filter(|(_, text)| text.split_whitespace().any(|w| w == t))
            .count();
        assert_eq!(n, 1, "message {t} answered {n} times");
        let ipc = db
            .query_row(
                "SELECT count(*) FROM outbox WHERE text = ?1",
                [format!("ipc {t}")],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        let first_of_prompt = replies
            .iter()
            .any(|(_, text)| text.split_whitespace().nth(1) == Some(t.as_str()));
        if first_of_prompt {
            assert!(ipc >= 1, "IPC send_message for {t} lost");
        }
    }
    // Every outbox row reached the channel; more than once only if a deliver was killed.
    let delivered = std::fs::read_to_string(&sent).unwrap_or_default();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for line in delivered.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *seen.entry(v["id"].as_i64().unwrap()).or_default() += 1;
    }
    let all_ids: HashSet<i64> = db
        .prepare("SELECT id FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for id in &all_ids {
        let n = seen.get(id).copied().unwrap_or(0);
        assert!(n >= 1, "outbox row {id} never delivered");
        assert!(
            n == 1 || (deliver_killed && n == 2),
            "outbox row {id} delivered {n} times"
        );
    }
    // No stuck lock, no orphaned container, nothing left running.
    for entry in std::fs::read_dir(env.root.join("locks")).unwrap() {
        let p = entry.unwrap().path();
        assert!(
            claw::infra::lock::try_acquire(&p).unwrap().is_some(),
            "lock {} still held",
            p.display()
        );
    }
    assert!(
        env.containers().is_empty(),
        "orphaned containers: {:?}",
        env.containers()
    );
}

#[test]
fn twenty_parallel_ticks_never_see_a_locked_database() {
    let (env, _) = setup();
    for (_, c) in GROUPS {
        env.say(c, "m-1 hello");
    }
    let children: Vec<Child> = (0..20)
        .map(|_| {
            env.claw_std()
                .arg("tick")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("locked") && !err.contains("busy"), "{err}");
        assert!(out.status.success(), "tick failed: {err}");
    }
    settle(&env, Duration::from_secs(120));
    let runs: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM runs WHERE status = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 3, "one run per group, not one per tick");
}

#[test]
fn runtime_missing_or_dying_mid_run_is_a_retried_failure() {
    let (env, _) = setup();
    env.say("fx:1", "m-7 hi");
    // The runtime is not on PATH: a clear failure, the message kept for a retry.
    let out = env
        .claw_std()
        .args(["run-group", "g1"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (status, error, retry_at, _) = env.last_run("g1");
    assert_eq!(status, "failed");
    assert!(
        error.unwrap_or_default().contains("runtime"),
        "error does not name the runtime"
    );
    assert!(retry_at.is_some());
    assert_eq!(env.cursor("g1"), 0);
    // The runtime client dies mid-run: the run fails and is retried, not lost.
    let slow = env.group_dir("g2").join("probe.sh");
    std::fs::write(&slow, "#!/bin/bash\nsleep 120\n").unwrap();
    env.say("fx:2", "m-8 hi");
    let mut rg = env
        .claw_std()
        .args(["run-group", "g2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.containers().is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = std::process::Command::new("pkill")
        .args(["-9", "-f", "--", &format!("--name {}", env.containers()[0])])
        .status()
        .unwrap();
    assert!(client.success(), "could not kill the runtime client");
    assert!(!rg.wait().unwrap().success());
    assert_eq!(env.last_run("g2").0, "failed");
    std::fs::write(&slow, ECHO_AGENT).unwrap();
    settle(&env, Duration::from_secs(120));
    // The chat heard once that the assistant could not start, then got its answer.
    let fx1 = env.outbox("fx:1");
    assert!(
        fx1[0].starts_with("I could not start just now: the container runtime is not working"),
        "{fx1:?}"
    );
    assert_eq!(fx1[1..], ["echo m-7".to_string(), "ipc m-7".to_string()]);
    assert_eq!(
        env.outbox("fx:2"),
        vec!["echo m-8".to_string(), "ipc m-8".to_string()]
    );
    assert!(env.containers().is_empty());
}

#[test]
fn corrupt_ipc_folders_are_reported_and_the_rest_carries_on() {
    let (env, _) = setup();
    // g1's IPC folder is a file; g2's messages folder points at a host folder.
    let ipc = env.root.join("ipc");
    std::fs::remove_dir_all(ipc.join("g1")).unwrap();
    std::fs::write(ipc.join("g1"), "not a folder").unwrap();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("x.json"),
        r#"{"type":"send_message","text":"from outside"}"#,
    )
    .unwrap();
    std::fs::remove_dir_all(ipc.join("g2/messages")).unwrap();
    std::os::unix::fs::symlink(&outside, ipc.join("g2/messages")).unwrap();
    std::fs::write(
        ipc.join("g3/messages/ok.json"),
        r#"{"type":"send_message","text":"fine"}"#,
    )
    .unwrap();
    let out = env.claw_std().arg("ipc-apply").output().unwrap();
    assert!(!out.status.success(), "corruption not reported");
    assert_eq!(env.outbox("fx:3"), vec!["fine".to_string()]);
    assert!(env.outbox("fx:2").is_empty(), "followed a planted symlink");
    assert!(
        outside.join("x.json").exists(),
        "touched a file outside the home"
    );
    // The timer keeps working for everyone else.
    env.say("fx:3", "m-9 hi");
    let out = env.claw_std().arg("tick").output().unwrap();
    let _ = out;
    settle_group(&env, "fx:3", "echo m-9");
}

fn settle_group(env: &Env, chat: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.outbox(chat).iter().any(|t| t == want) {
        assert!(
            Instant::now() < deadline,
            "no answer in {chat}; logs:\n{}",
            env.all_logs()
        );
        let _ = env.claw_std().arg("tick").output();
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn disk_full_fails_clearly_and_recovers() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts a small tmpfs and needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "cannot mount a tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let home = mnt.join("home");
    let claw = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_claw"))
            .env("CLAW_HOME", &home)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(claw(&["init"]).status.success());
    assert!(
        claw(&["group", "add", "--chat", "fx:1", "--folder", "g1"])
            .status
            .success()
    );
    assert!(
        claw(&[
            "ingest",
            "--chat",
            "fx:1",
            "--text",
            "before the disk filled"
        ])
        .status
        .success()
    );
    // Fill the disk.
    let filler = mnt.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=100"])
        .arg(format!("of={}", filler.display()))
        .output();
    let big: String = "x".repeat(60_000);
    let mut failed = None;
    for i in 0..50 {
        let out = claw(&["ingest", "--chat", "fx:1", "--text", &format!("{i} {big}")]);
        if !out.status.success() {
            failed = Some(String::from_utf8_lossy(&out.stderr).to_string());
            break;
        }
    }
    let err = failed.expect("the disk never filled");
    assert!(
        err.contains("full") || err.contains("space"),
        "unclear disk-full error: {err}"
    );
    // Free the space: the database is intact and ingest works again.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        claw(&["ingest", "--chat", "fx:1", "--text", "after"])
            .status
            .success()
    );
    let db = rusqlite::Connection::open(home.join("claw.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let texts: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE text IN ('before the disk filled', 'after')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(texts, 2);
}
