//! The latency and idle benchmarks of issue 11 (run by bin/bench-chain; ignored in normal test
//! runs). Prints figures; never fails on them.
//!
//! - latency: message stored (its `stored_at`) → reply handed to the channel (the arrival time a
//!   command-channel script records), with the real agent in a real container and a fake model
//!   that answers at once; 20 messages each as a fresh run and as follow-ups to a live run;
//! - the chained deliver: wall and CPU of one `claw deliver --channel` for one row (what a run
//!   pays per result for handing it off through a detached process instead of a thread);
//! - idle: CPU (user + system, from wait4) and wall of `claw tick` on a home with nothing to do,
//!   and CPU-seconds per day at the shipped 2 s timer cadence.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::{FakeLlm, Reply};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MESSAGES: usize = 20;

fn setup(llm: &FakeLlm, idle_secs: u64) -> (Env, PathBuf) {
    let mut env = Env::new();
    env.chain = true;
    let sent = env.dir.path().join("sent.log");
    let script = env.dir.path().join("send.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nline=$(cat)\necho \"$(date +%s%3N) $line\" >> {}\n",
            sent.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.anthropic_base = llm.url();
    env.extra_config = format!(
        "[model]\nprovider = \"anthropic\"\nname = \"fake-model\"\n[channels.fx]\nsend_command = [\"{}\"]\n",
        script.display()
    );
    env.write_config();
    let toml = std::fs::read_to_string(env.root.join("claw.toml"))
        .unwrap()
        .replace("idle_secs = 1", &format!("idle_secs = {idle_secs}"));
    std::fs::write(env.root.join("claw.toml"), toml).unwrap();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-bench");
    env.add_group("fx:1", "g1", &["--no-trigger"]);
    (env, sent)
}

fn arrivals(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_once(' ').unwrap().0.parse().unwrap())
        .collect()
}

fn wait_arrivals(path: &Path, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = arrivals(path);
        if a.len() >= n {
            return a;
        }
        assert!(Instant::now() < deadline, "reply {n} never arrived");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_idle(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while env
        .db()
        .query_row(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        > 0
    {
        assert!(Instant::now() < deadline, "run did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stored_at(env: &Env, text: &str) -> i64 {
    env.db()
        .query_row(
            "SELECT stored_at FROM messages WHERE text = ?1",
            [text],
            |r| r.get(0),
        )
        .unwrap()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn report(what: &str, mut ms: Vec<f64>) {
    let min = ms.iter().cloned().fold(f64::MAX, f64::min);
    let max = ms.iter().cloned().fold(0.0, f64::max);
    println!(
        "bench chain {what}: median {:.0} ms, p90 {:.0} ms (min {min:.0}, max {max:.0}, n {})",
        percentile(&mut ms, 0.5),
        percentile(&mut ms, 0.9),
        ms.len()
    );
}

/// Run claw to completion: (wall ms, user+system CPU ms) from wait4.
#[allow(clippy::zombie_processes)]
fn measure(mut cmd: std::process::Command) -> (f64, f64) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child, not yet reaped; both pointers are valid for the call.
    unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = started.elapsed().as_secs_f64() * 1000.0;
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    (wall, tv(ru.ru_utime) + tv(ru.ru_stime))
}

#[test]
#[ignore = "benchmark: run bin/bench-chain"]
fn bench_latency_fresh_runs() {
    let llm = FakeLlm::start();
    for i in 0..=MESSAGES {
        llm.push(Reply::text(&format!("answer {i}")));
    }
    let (env, sent) = setup(&llm, 0);
    // One run first, so the image is warm in the page cache like on a machine in use.
    env.say("fx:1", "warm-up");
    wait_arrivals(&sent, 1);
    wait_idle(&env);
    let mut ms = Vec::new();
    for i in 0..MESSAGES {
        let text = format!("fresh question {i}");
        env.say("fx:1", &text);
        let a = wait_arrivals(&sent, i + 2);
        ms.push((a[i + 1] - stored_at(&env, &text)) as f64);
        wait_idle(&env);
    }
    report(
        "latency, each message a fresh run (container start included)",
        ms,
    );
}

#[test]
#[ignore = "benchmark: run bin/bench-chain"]
fn bench_latency_follow_ups() {
    let llm = FakeLlm::start();
    for i in 0..=MESSAGES {
        llm.push(Reply::text(&format!("answer {i}")));
    }
    let (env, sent) = setup(&llm, 10);
    env.say("fx:1", "first");
    wait_arrivals(&sent, 1);
    let mut ms = Vec::new();
    for i in 0..MESSAGES {
        let text = format!("follow-up {i}");
        env.say("fx:1", &text);
        let a = wait_arrivals(&sent, i + 2);
        ms.push((a[i + 1] - stored_at(&env, &text)) as f64);
    }
    report("latency, follow-ups fed to the live container", ms);
    let runs: i64 = env
        .db()
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    println!(
        "bench chain follow-ups: {runs} run(s) served {} messages",
        MESSAGES + 1
    );
    wait_idle(&env);
}

#[test]
#[ignore = "benchmark: run bin/bench-chain"]
fn bench_chained_deliver_and_idle_tick() {
    let llm = FakeLlm::start();
    let (env, sent) = setup(&llm, 0);
    for g in 2..=4 {
        env.add_group(&format!("fx:{g}"), &format!("g{g}"), &["--no-trigger"]);
    }
    // The chained deliver: one row, one process.
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for i in 0..MESSAGES {
        env.db()
            .execute(
                "INSERT INTO outbox (chat_id, text, origin, created_at) VALUES ('fx:1', ?1, 'bench', 0)",
                [format!("row {i}")],
            )
            .unwrap();
        let mut cmd = env.claw_std();
        cmd.args(["deliver", "--channel", "fx"]);
        let (w, c) = measure(cmd);
        wall.push(w);
        cpu.push(c);
    }
    assert_eq!(arrivals(&sent).len(), MESSAGES);
    report(
        "one chained `claw deliver --channel` (wall, send script included)",
        wall,
    );
    report(
        "one chained `claw deliver --channel` (CPU, the send script included)",
        cpu,
    );

    // Idle ticks: settle housekeeping first, then measure.
    for _ in 0..3 {
        env.claw().arg("tick").assert().success();
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let mut cmd = env.claw_std();
        cmd.arg("tick");
        let (w, c) = measure(cmd);
        wall.push(w);
        cpu.push(c);
    }
    let median_cpu = percentile(&mut cpu.clone(), 0.5);
    report("idle tick wall", wall);
    report("idle tick CPU (user + system)", cpu);
    println!(
        "bench chain idle: {:.1} CPU-seconds per day at one tick every 2 s ({:.3}% of one core)",
        median_cpu * 43_200.0 / 1000.0,
        median_cpu / 2000.0 * 100.0
    );
}
