//! Chaining racing the timer (issue 11), in the manner of `fault_injection.rs`: messages are
//! ingested with chaining on (so each ingest starts dispatch, each run hands its results to a
//! detached deliver) while `claw tick` runs in a loop beside it. Without kills every reply is
//! sent exactly once; with kill -9 at random points (ticks, and the chained dispatch, run-group
//! and deliver processes) nothing is lost and a reply is sent twice only when a process that
//! sends was killed mid-send (deliver's documented window).
//!
//! Iterations default to 24; set CHAIN_FAULT_ITERS for a longer soak.

#[path = "support/e2e.rs"]
mod e2e;

use e2e::Env;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Answers every prompt with the message tokens it saw, and sends one IPC message per prompt.
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

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn setup() -> (Env, std::path::PathBuf) {
    let mut env = Env::new();
    env.chain = true;
    let sent = env.dir.path().join("sent.jsonl");
    let script = env.dir.path().join("send.sh");
    std::fs::write(&script, format!("#!/bin/bash\ncat >> {}\n", sent.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.extra_config = format!("[channels.fx]\nsend_command = [\"{}\"]\n", script.display());
    env.max_concurrent = 2;
    env.write_config();
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

/// `claw tick` in a loop until `stop`; with `kill_odds` = n, one tick in n is killed at a
/// random moment. Returns whether a tick was ever killed.
fn tick_loop(
    env: &Env,
    stop: Arc<AtomicBool>,
    kill_odds: u64,
    seed: u64,
) -> std::thread::JoinHandle<bool> {
    let cmd = env.claw_std();
    let (prog, envs): (
        std::path::PathBuf,
        Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ) = (
        cmd.get_program().into(),
        cmd.get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect(),
    );
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let mut killed = false;
        while !stop.load(Ordering::Relaxed) {
            let mut c = std::process::Command::new(&prog)
                .arg("tick")
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if kill_odds > 0 && rng.below(kill_odds) == 0 {
                std::thread::sleep(Duration::from_millis(rng.below(400)));
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
                killed = true;
            }
            let _ = c.wait();
            std::thread::sleep(Duration::from_millis(200 + rng.below(300)));
        }
        killed
    })
}

/// Pids and command lines of this home's chained processes (they carry `--home HOME`).
fn chained(env: &Env) -> Vec<(i32, String)> {
    let home = env.root.to_string_lossy().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == &home)
            && args.first().is_some_and(|a| a.ends_with("/claw"))
            && !args.iter().any(|a| a == "watchdog")
        {
            out.push((pid, args.join(" ")));
        }
    }
    out
}

/// Wait until every message is answered, every row sent, no run busy and no container left.
fn settle(env: &Env, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let db = env.db();
        // Backoff timing is tested elsewhere; here only the outcome counts.
        db.execute(
            "UPDATE runs SET retry_at = 0 WHERE retry_at IS NOT NULL",
            [],
        )
        .unwrap();
        db.execute("UPDATE outbox SET next_attempt_at = 0", [])
            .unwrap();
        let q = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        let busy = q("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')");
        let unsent = q("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')");
        let behind = q("SELECT count(*) FROM messages m JOIN groups g ON g.chat_id = m.chat_id
                 LEFT JOIN cursors c ON c.folder = g.folder WHERE m.seq > coalesce(c.seq, 0) AND m.is_bot = 0");
        let files: usize = GROUPS
            .iter()
            .map(|(g, _)| {
                // A `.tmp-` file of a container killed mid-write is never a request.
                std::fs::read_dir(env.root.join("ipc").join(g).join("messages"))
                    .map(|d| {
                        d.flatten()
                            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum();
        if busy == 0 && unsent == 0 && behind == 0 && files == 0 && env.containers().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "did not settle: {busy} runs busy, {unsent} unsent, {behind} behind, {files} IPC files, containers {:?}\n{}",
            env.containers(),
            env.all_logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every stored message answered by exactly one reply; returns how often each outbox row
/// reached the channel.
fn check(env: &Env, sent: &std::path::Path) -> HashMap<i64, usize> {
    let db = env.db();
    let tokens: Vec<String> = db
        .prepare("SELECT m.text FROM messages m JOIN groups g ON g.chat_id = m.chat_id WHERE g.folder != 'main'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|t| t.unwrap().split_whitespace().next().unwrap().to_string())
        .collect();
    assert!(!tokens.is_empty());
    let replies: Vec<String> = db
        .prepare("SELECT text FROM outbox WHERE origin LIKE 'run:%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for t in &tokens {
        let n = replies
            .iter()
            .filter(|text| text.split_whitespace().any(|w| w == t))
            .count();
        if n != 1 {
            let dump = std::env::temp_dir().join("chain_faults_logs.txt");
            let _ = std::fs::write(&dump, env.all_logs());
            panic!(
                "message {t} answered {n} times (run logs in {})",
                dump.display()
            );
        }
    }
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for line in std::fs::read_to_string(sent).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *seen.entry(v["id"].as_i64().unwrap()).or_default() += 1;
    }
    let ids: Vec<i64> = db
        .prepare("SELECT id FROM outbox")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for id in ids {
        assert!(
            seen.get(&id).copied().unwrap_or(0) >= 1,
            "row {id} never sent"
        );
    }
    seen
}

fn no_stuck_locks(env: &Env) {
    for entry in std::fs::read_dir(env.root.join("locks")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "lock") {
            assert!(
                claw::infra::lock::try_acquire(&p).unwrap().is_some(),
                "lock {} still held",
                p.display()
            );
        }
    }
}

#[test]
fn chaining_and_ticks_racing_send_each_reply_once() {
    let (env, sent) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let ticks: Vec<_> = (0..2)
        .map(|i| tick_loop(&env, stop.clone(), 0, 7 + i))
        .collect();
    let mut rng = Rng(0xc4a1_u64);
    for i in 0..24 {
        let (_, chat) = GROUPS[rng.below(3) as usize];
        env.say(chat, &format!("m-{i} please"));
        std::thread::sleep(Duration::from_millis(rng.below(400)));
    }
    settle(&env, Duration::from_secs(240));
    stop.store(true, Ordering::Relaxed);
    for t in ticks {
        t.join().unwrap();
    }
    let seen = check(&env, &sent);
    for (id, n) in &seen {
        assert_eq!(*n, 1, "outbox row {id} sent {n} times");
    }
    no_stuck_locks(&env);
}

#[test]
fn kill_nine_while_chaining_and_ticks_race_loses_nothing() {
    let (env, sent) = setup();
    let iters: u64 = std::env::var("CHAIN_FAULT_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tick_loop(&env, stop.clone(), 4, 0x71c4);
    let mut rng = Rng(0x5eed_c4a1_u64);
    let mut sender_killed = false;
    let mut kills: HashMap<String, usize> = HashMap::new();
    for i in 0..iters {
        let (_, chat) = GROUPS[rng.below(3) as usize];
        let mut ingest = env
            .claw_std()
            .args(["ingest", "--chat", chat, "--text", &format!("m-{i} please")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ingest.wait().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(500)));
        // Kill one chained step of this home at a random moment.
        if rng.below(2) == 0 {
            let procs = chained(&env);
            if !procs.is_empty() {
                let (pid, cmdline) = &procs[rng.below(procs.len() as u64) as usize];
                // SAFETY: kill(2) on a claw process of this test's home.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                let step = ["deliver", "dispatch", "run-group", "tick"]
                    .into_iter()
                    .find(|s| cmdline.contains(s))
                    .unwrap_or("other");
                *kills.entry(step.to_string()).or_default() += 1;
                sender_killed |= step == "deliver";
            }
        }
    }
    eprintln!("{iters} messages, kills of chained steps: {kills:?}");
    settle(&env, Duration::from_secs(300));
    stop.store(true, Ordering::Relaxed);
    sender_killed |= ticker.join().unwrap();
    let seen = check(&env, &sent);
    for (id, n) in &seen {
        assert!(
            *n == 1 || (sender_killed && *n == 2),
            "outbox row {id} sent {n} times"
        );
    }
    no_stuck_locks(&env);
}
