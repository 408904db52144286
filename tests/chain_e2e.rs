//! Chaining (issue 11): with no timer running, a message ingested is answered and the answer
//! handed to its channel (ingest → dispatch → run-group → deliver, each step started by the one
//! before); a follow-up to a live run is fed to the same container at once (the wake). A real
//! container runs the real agent against the fake model; the channel is a command script that
//! records each message with its arrival time. The test itself never runs tick, dispatch or
//! deliver.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::{FakeLlm, Reply};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A home whose group `g1` (chat `fx:1`) answers through the fake model, and whose `fx` channel
/// is a script appending `<ms> <json>` per message to `sent.log`. Idle runs close after
/// `idle_secs`.
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
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-chain");
    env.add_group("fx:1", "g1", &["--no-trigger"]);
    (env, sent)
}

/// Lines the channel received, as (arrival ms, text).
fn sent(path: &PathBuf) -> Vec<(i64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (ms, json) = l.split_once(' ').unwrap();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            (ms.parse().unwrap(), v["text"].as_str().unwrap().to_string())
        })
        .collect()
}

fn wait_sent(env: &Env, path: &PathBuf, n: usize) -> Vec<(i64, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = sent(path);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages reached the channel; logs:\n{}",
            got.len(),
            env.all_logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_runs_done(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let busy: i64 = env
            .db()
            .query_row(
                "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if busy == 0 && env.containers().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "runs did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_message_ingested_with_no_timer_gets_its_reply_delivered() {
    let llm = FakeLlm::start();
    llm.push(Reply::text("first answer"));
    llm.push(Reply::text("second answer"));
    let (env, log) = setup(&llm, 5);
    env.say("fx:1", "hello there");
    let got = wait_sent(&env, &log, 1);
    assert_eq!(got[0].1, "first answer");
    let stored: i64 = env
        .db()
        .query_row(
            "SELECT stored_at FROM messages WHERE text = 'hello there'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!("stored → handed to the channel: {} ms", got[0].0 - stored);

    // A follow-up while the container is still up goes into the same container, woken at once.
    env.say("fx:1", "and another thing");
    let got = wait_sent(&env, &log, 2);
    assert_eq!(got[1].1, "second answer");
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].text().contains("and another thing"));
    wait_runs_done(&env);
    let db = env.db();
    let runs: i64 = db
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        runs, 1,
        "the follow-up was fed to the live run, not a new one"
    );
    assert!(
        env.all_logs().contains("fed 1 new message(s)"),
        "{}",
        env.all_logs()
    );
    // Both rows are marked sent by the chained delivers, each exactly once.
    let sent_rows: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE status = 'sent' AND attempts = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sent_rows, 2);
    assert_eq!(sent(&log).len(), 2, "a reply was sent twice");
}

#[test]
fn a_message_arriving_while_the_run_closes_is_chained_on() {
    // idle_secs = 0: the run closes as soon as it answers, so a second message usually meets a
    // closing or finished run; either the wake or the run's own exit must start it.
    let llm = FakeLlm::start();
    for i in 0..4 {
        llm.push(Reply::text(&format!("answer {i}")));
    }
    let (env, log) = setup(&llm, 0);
    for i in 0..4 {
        env.say("fx:1", &format!("question {i}"));
        wait_sent(&env, &log, i + 1);
        // Vary the moment the next message meets the previous run.
        std::thread::sleep(Duration::from_millis(150 * i as u64));
    }
    wait_runs_done(&env);
    let texts: Vec<String> = sent(&log).into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        texts,
        (0..4).map(|i| format!("answer {i}")).collect::<Vec<_>>()
    );
}
