//! `claw schedule`: atomic claims, no double start, paused tasks, once tasks, catch-up.

#[path = "support/ipc.rs"]
mod ipc;

use assert_cmd::Command;
use claw::infra::store::tasks;
use claw::steps::schedule::{claim_due, finish_task_run, start_task_run};

fn ms(s: &str) -> i64 {
    claw::infra::time::parse_rfc3339(s).unwrap()
}

fn task_runs(e: &ipc::Env, id: i64) -> Vec<tasks::TaskRun> {
    tasks::runs(&e.store.conn, id, 100).unwrap()
}

#[test]
fn a_queued_or_running_task_is_never_claimed_again() {
    let mut e = ipc::env();
    let t0 = ms("2026-06-01T12:00:00Z");
    let id = e.task("fam", "interval", "60", t0);
    let r1 = claim_due(&mut e.store, t0 + 60_000).unwrap();
    assert_eq!(r1.claimed.len(), 1);
    let c = &r1.claimed[0];
    let run = claw::infra::store::runs::get(&e.store.conn, c.run_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            run.kind.as_str(),
            run.status.as_str(),
            run.task_id,
            run.task_run_id,
            run.folder.as_str()
        ),
        ("task", "queued", Some(id), Some(c.task_run_id), "fam")
    );
    // Still queued two slots later: skipped, not doubled.
    let r2 = claim_due(&mut e.store, t0 + 120_000).unwrap();
    assert!(r2.claimed.is_empty());
    assert_eq!(r2.skipped_busy, vec![id]);
    assert!(start_task_run(&e.store.conn, c.task_run_id).unwrap());
    let r3 = claim_due(&mut e.store, t0 + 180_000).unwrap();
    assert!(r3.claimed.is_empty());
    assert_eq!(task_runs(&e, id).len(), 1);
    // Once it finished, the next slot runs.
    assert!(finish_task_run(&e.store.conn, c.task_run_id, true, Some("done"), None).unwrap());
    assert!(!finish_task_run(&e.store.conn, c.task_run_id, true, Some("again"), None).unwrap());
    let r4 = claim_due(&mut e.store, t0 + 240_000).unwrap();
    assert_eq!(r4.claimed.len(), 1);
    let t = tasks::get(&e.store.conn, id).unwrap().unwrap();
    assert_eq!(t.last_result.as_deref(), Some("done"));
    assert_eq!(t.next_run, Some(t0 + 300_000));
}

#[test]
fn two_schedule_processes_at_once_queue_exactly_one_run() {
    let e = ipc::env();
    let t0 = claw::infra::time::now_ms();
    let ids: Vec<i64> = (0..20)
        .map(|_| e.task("fam", "interval", "60", t0))
        .collect();
    let later = claw::infra::time::rfc3339(t0 + 61_000);
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("claw"))
            .args(["--home"])
            .arg(&e.home.root)
            .args(["schedule", "--json", "--now", &later])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let claimed = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["claimed"].as_array().unwrap().len()
    };
    assert_eq!(claimed(&a) + claimed(&b), ids.len());
    for id in ids {
        assert_eq!(task_runs(&e, id).len(), 1, "task {id}");
    }
    let runs: i64 = e
        .store
        .conn
        .query_row("SELECT count(*) FROM runs WHERE kind = 'task'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(runs, 20);
}

#[test]
fn a_paused_task_never_runs_and_resumes_from_the_next_slot() {
    let mut e = ipc::env();
    let t0 = ms("2026-06-01T12:00:00Z");
    let id = e.task("fam", "interval", "60", t0);
    claw::rules::tasks::pause(&e.store.conn, id, "test").unwrap();
    for k in 1..5 {
        assert!(
            claim_due(&mut e.store, t0 + k * 3_600_000)
                .unwrap()
                .claimed
                .is_empty()
        );
    }
    assert!(task_runs(&e, id).is_empty());
    let now = t0 + 5 * 3_600_000 + 30_000;
    let t = claw::rules::tasks::resume(&e.store.conn, id, "test", now).unwrap();
    assert_eq!(t.status, "active");
    assert_eq!(
        tasks::get(&e.store.conn, id).unwrap().unwrap().next_run,
        Some(now + 30_000)
    );
}

#[test]
fn a_once_task_runs_once_and_completes() {
    let mut e = ipc::env();
    let t0 = ms("2026-06-01T12:00:00Z");
    let id = e.task("fam", "once", "2026-06-01T13:00:00Z", t0);
    assert!(
        claim_due(&mut e.store, ms("2026-06-01T12:59:59Z"))
            .unwrap()
            .claimed
            .is_empty()
    );
    let r = claim_due(&mut e.store, ms("2026-06-02T00:00:00Z")).unwrap();
    assert_eq!(r.claimed.len(), 1);
    assert_eq!(r.claimed[0].next_run, None);
    assert_eq!(r.claimed[0].scheduled_for, ms("2026-06-01T13:00:00Z"));
    assert_eq!(
        tasks::get(&e.store.conn, id).unwrap().unwrap().status,
        "active"
    );
    finish_task_run(
        &e.store.conn,
        r.claimed[0].task_run_id,
        false,
        None,
        Some("model timed out"),
    )
    .unwrap();
    let t = tasks::get(&e.store.conn, id).unwrap().unwrap();
    assert_eq!(t.status, "completed");
    assert_eq!(t.last_result.as_deref(), Some("error: model timed out"));
    let runs = task_runs(&e, id);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].error.as_deref()),
        ("failed", Some("model timed out"))
    );
    assert!(
        claim_due(&mut e.store, ms("2027-01-01T00:00:00Z"))
            .unwrap()
            .claimed
            .is_empty()
    );
}

#[test]
fn after_downtime_an_overdue_task_runs_once() {
    let mut e = ipc::env();
    let t0 = ms("2026-06-01T12:00:00Z");
    let iv = e.task("fam", "interval", "60", t0);
    let cr = e.task("fam", "cron", "*/15 * * * *", t0);
    // Five hours of missed slots.
    let now = t0 + 5 * 3_600_000 + 20_000;
    let r = claim_due(&mut e.store, now).unwrap();
    assert_eq!(r.claimed.len(), 2);
    let next = |id| {
        tasks::get(&e.store.conn, id)
            .unwrap()
            .unwrap()
            .next_run
            .unwrap()
    };
    // Interval keeps its phase (slots at t0 + k·60 s); cron moves to the next quarter hour.
    assert_eq!(next(iv), t0 + 5 * 3_600_000 + 60_000);
    assert_eq!(next(cr), ms("2026-06-01T17:15:00Z"));
    for c in &r.claimed {
        finish_task_run(&e.store.conn, c.task_run_id, true, Some("ok"), None).unwrap();
    }
    assert!(
        claim_due(&mut e.store, now + 1_000)
            .unwrap()
            .claimed
            .is_empty()
    );
    assert_eq!(task_runs(&e, iv).len(), 1);
    assert_eq!(task_runs(&e, cr).len(), 1);
}

#[test]
fn schedule_cli_reports_and_refuses_a_bad_now() {
    let e = ipc::env();
    Command::cargo_bin("claw")
        .unwrap()
        .arg("--home")
        .arg(&e.home.root)
        .args(["schedule", "--now", "yesterday"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("RFC 3339"));
    Command::cargo_bin("claw")
        .unwrap()
        .arg("--home")
        .arg(&e.home.root)
        .args(["schedule"])
        .assert()
        .success()
        .stdout(predicates::str::contains("no task is due"));
}

#[test]
fn a_run_that_ended_without_reporting_stops_blocking_its_task() {
    let mut e = ipc::env();
    let t0 = claw::infra::time::now_ms() - 3_600_000;
    let id = e.task("fam", "interval", "60", t0);
    let r = claim_due(&mut e.store, t0 + 60_000).unwrap();
    let c = &r.claimed[0];
    // run-group failed for good and never called finish_task_run.
    claw::infra::store::runs::finish(
        &e.store.conn,
        c.run_id,
        false,
        Some(1),
        Some("container died"),
        None,
    )
    .unwrap();
    let soon = claw::infra::time::now_ms();
    assert!(
        claim_due(&mut e.store, soon).unwrap().claimed.is_empty(),
        "within the grace period"
    );
    let later = soon + claw::steps::schedule::ORPHAN_GRACE_MS + 1;
    let r = claim_due(&mut e.store, later).unwrap();
    assert_eq!(r.claimed.len(), 1);
    let runs = task_runs(&e, id);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].status, "failed");
    assert!(
        runs[1]
            .error
            .as_deref()
            .unwrap()
            .contains("ended without reporting")
    );
}
