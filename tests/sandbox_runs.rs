//! End-to-end: run lifecycle in real containers — timeouts, the retry and cursor rules,
//! concurrent dispatch, and recovery after a run-group is killed.

#[path = "support/e2e.rs"]
mod e2e;

use e2e::{Env, PROBE_HEAD};
use std::time::{Duration, Instant};

#[test]
fn run_is_killed_at_the_timeout_and_marked_failed() {
    let mut env = Env::new();
    env.install_probe("main", &format!("{PROBE_HEAD}sleep 600\n"));
    env.claw()
        .args(["group", "set", "main", "--timeout", "3"])
        .assert()
        .success();
    env.say("cli:local", "hang please");
    let t = Instant::now();
    env.claw().args(["run-group", "main"]).assert().code(1);
    assert!(
        t.elapsed() < Duration::from_secs(40),
        "timeout not enforced: {:?}",
        t.elapsed()
    );
    let (status, error, _, _) = env.last_run("main");
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains("timed out"));
    assert!(
        !env.containers().iter().any(|c| c.starts_with("claw-main-")),
        "container survived the timeout"
    );
}

#[test]
fn failure_before_output_keeps_the_cursor_and_retries_after_backoff() {
    let mut env = Env::new();
    env.install_probe(
        "main",
        &format!("{PROBE_HEAD}echo 'agent crashed' >&2\nexit 1\n"),
    );
    env.say("cli:local", "please answer");
    let before = env.cursor("main");
    env.claw().args(["run-group", "main"]).assert().code(1);
    let (status, _, retry_at, attempt) = env.last_run("main");
    assert_eq!((status.as_str(), attempt), ("failed", 1));
    assert!(retry_at.is_some());
    assert_eq!(
        env.cursor("main"),
        before,
        "cursor moved past unanswered messages"
    );
    // Within the backoff, dispatch does not start it again.
    let out = env
        .claw()
        .args(["dispatch", "--dry-run", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["decisions"].as_array().unwrap().is_empty(),
        "started during backoff: {report}"
    );
    // After the backoff the retry runs as attempt 2, and now answers.
    env.install_probe("main", &format!("{PROBE_HEAD}report ok yes\nfinish\n"));
    env.db()
        .execute("UPDATE runs SET retry_at = 0", [])
        .unwrap();
    env.claw().args(["dispatch", "--wait"]).assert().success();
    let (status, _, _, attempt) = env.last_run("main");
    assert_eq!((status.as_str(), attempt), ("succeeded", 2));
    assert!(env.cursor("main") > before);
    assert_eq!(
        env.outbox("cli:local"),
        vec!["{\"ok\":\"yes\"}".to_string()]
    );
}

#[test]
fn failure_after_output_does_not_repeat_the_output() {
    let mut env = Env::new();
    env.install_probe("main", &format!("{PROBE_HEAD}echo '{{\"type\":\"result\",\"text\":\"answer <internal>thinking</internal>once\"}}'\nexit 3\n"));
    env.say("cli:local", "question");
    env.claw().args(["run-group", "main"]).assert().code(1);
    assert_eq!(env.outbox("cli:local"), vec!["answer once".to_string()]);
    env.db()
        .execute("UPDATE runs SET retry_at = 0", [])
        .unwrap();
    env.claw().args(["dispatch", "--wait"]).assert().success();
    assert_eq!(env.outbox("cli:local").len(), 1, "output repeated");
    assert_eq!(
        env.db()
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        1
    );
}

#[test]
fn parallel_dispatches_respect_group_locks_and_max_concurrent() {
    let mut env = Env::new();
    env.max_concurrent = 1;
    env.write_config();
    for (f, c) in [("g1", "tg:1"), ("g2", "tg:2"), ("g3", "tg:3")] {
        env.add_group(c, f, &["--no-trigger"]);
        env.install_probe(
            f,
            &format!("{PROBE_HEAD}sleep 2\nreport done {f}\nfinish\n"),
        );
        env.say(c, "go");
    }
    let mut max_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = env.claw_std().arg("dispatch").output().unwrap();
        let b = env.claw_std().arg("dispatch").output().unwrap();
        assert!(a.status.success() && b.status.success(), "{a:?} {b:?}");
        for _ in 0..5 {
            max_seen = max_seen.max(env.containers().len());
            std::thread::sleep(Duration::from_millis(100));
        }
        // Done when all three succeeded and nothing else is in flight (on a loaded machine a
        // run may be retried, and its spans must be compared once it has ended).
        let (done, busy): (i64, i64) = env
            .db()
            .query_row(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                        count(*) FILTER (WHERE status IN ('queued', 'running')) FROM runs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if done >= 3 && busy == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not finish; logs:\n{}",
            env.all_logs()
        );
    }
    assert!(
        max_seen <= 1,
        "max_concurrent=1 exceeded: saw {max_seen} containers"
    );
    // No two runs ever overlapped in time.
    let db = env.db();
    let mut st = db.prepare("SELECT started_at, ended_at FROM runs WHERE started_at IS NOT NULL ORDER BY started_at").unwrap();
    let spans: Vec<(i64, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlapped: {spans:?}");
    }
    for c in ["tg:1", "tg:2", "tg:3"] {
        assert_eq!(env.outbox(c).len(), 1, "{c}");
    }
}

#[test]
fn two_dispatches_at_once_start_one_container_per_group() {
    let mut env = Env::new();
    env.install_probe(
        "main",
        &format!("{PROBE_HEAD}sleep 3\nreport ok yes\nfinish\n"),
    );
    env.say("cli:local", "go");
    let a = env.claw_std().args(["dispatch", "--json"]).spawn().unwrap();
    let b = env.claw_std().args(["dispatch", "--json"]).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.outbox("cli:local").is_empty() {
        assert!(env.containers().len() <= 1);
        assert!(
            Instant::now() < deadline,
            "no result; logs:\n{}",
            env.all_logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let started: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM audit WHERE kind = 'container.start'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(started, 1);
    assert_eq!(env.outbox("cli:local").len(), 1);
}

#[test]
fn kill_of_run_group_frees_its_lock_and_the_next_dispatch_recovers() {
    let mut env = Env::new();
    env.install_probe("main", &format!("{PROBE_HEAD}sleep 300\n"));
    env.say("cli:local", "go");
    let mut rg = env.claw_std().args(["run-group", "main"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.containers().iter().any(|c| c.starts_with("claw-main-")) {
        assert!(
            Instant::now() < deadline,
            "container never started; logs:\n{}",
            env.all_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(rg.id() as i32, libc::SIGKILL) };
    rg.wait().unwrap();
    let out = env.claw().args(["dispatch", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["recovered_runs"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(
        !env.containers().iter().any(|c| c.starts_with("claw-main-")),
        "orphaned container left: {report}"
    );
    let (status, _, retry_at, _) = env.last_run("main");
    assert_eq!(status, "failed");
    assert!(retry_at.is_some());
    // The lock and slot were released by the OS: after the backoff the run happens.
    env.install_probe("main", &format!("{PROBE_HEAD}report ok yes\nfinish\n"));
    env.db()
        .execute("UPDATE runs SET retry_at = 0", [])
        .unwrap();
    env.claw().args(["dispatch", "--wait"]).assert().success();
    assert_eq!(env.last_run("main").0, "succeeded");
    assert_eq!(env.outbox("cli:local").len(), 1);
}
