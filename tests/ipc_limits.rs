//! Spending limits on non-main groups, through real request files, the real `claw` binary and a
//! real SQLite file (no container: the limits stop things before one would start).

#[path = "support/ipc.rs"]
mod ipc;
#[path = "support/rss.rs"]
#[allow(clippy::zombie_processes)] // wait_measured reaps it with wait4
mod rss;

use assert_cmd::Command;
use claw::infra::protocol::IpcReply;

fn claw(e: &ipc::Env) -> Command {
    let mut c = Command::cargo_bin("claw").unwrap();
    // Steps are driven by hand here (dry runs see the work ingest stored): no chaining.
    c.arg("--home")
        .arg(&e.home.root)
        .env("CLAW_CHAIN", "0")
        .env_remove("CLAW_LOG");
    c.timeout(std::time::Duration::from_secs(300));
    c
}

fn schedule(kind: &str, value: &str) -> String {
    format!(
        r#"{{"type":"schedule_task","prompt":"p","schedule_type":"{kind}","schedule_value":"{value}","timezone":"UTC"}}"#
    )
}

fn notices(e: &ipc::Env, origin_like: &str) -> Vec<(String, String)> {
    let mut st = e
        .store
        .conn
        .prepare("SELECT chat_id, text FROM outbox WHERE origin LIKE ?1 ORDER BY id")
        .unwrap();
    st.query_map([origin_like], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn live_tasks(e: &ipc::Env, folder: &str) -> i64 {
    claw::infra::store::tasks::count_live(&e.store.conn, folder).unwrap()
}

#[test]
fn agent_schedules_more_frequent_than_the_minimum_are_refused() {
    let mut e = ipc::env();
    // (file stem, kind, value, allowed) with the default minimum of 300 s.
    let cases = [
        ("i1", "interval", "1", false),
        ("i60", "interval", "60", false),
        ("i299", "interval", "299", false),
        ("i300", "interval", "300", true),
        ("i3600", "interval", "3600", true),
        ("cmin", "cron", "* * * * *", false),
        ("c2", "cron", "*/2 * * * *", false),
        ("cpair", "cron", "0,1 9 * * *", false),
        ("chour", "cron", "59 9,10 * * *", true),
        ("cedge", "cron", "0,59 9,10 * * *", false),
        ("c5", "cron", "*/5 * * * *", true),
        ("cday", "cron", "0 9 * * 1-5", true),
        ("once", "once", "2099-01-01T09:00:00Z", true),
    ];
    for (stem, kind, value, _) in &cases {
        e.put(
            "fam",
            "tasks",
            &format!("{stem}.json"),
            &schedule(kind, value),
        );
    }
    e.apply("fam");
    for (stem, kind, value, allowed) in &cases {
        let r: IpcReply = e.reply("fam", stem);
        assert_eq!(r.ok, *allowed, "{kind} {value}: {r:?}");
        if !allowed {
            let why = r.error.unwrap();
            assert!(
                why.contains("limits.min_task_interval_secs = 300") && why.contains("every 5 min"),
                "{why}"
            );
        }
    }
    assert_eq!(live_tasks(&e, "fam"), 6);
    // The chat is told once, however many were refused.
    let told = notices(&e, "notice:limit:task-interval:fam");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].0, "tg:2");
    assert!(told[0].1.contains("at most every 5 min"), "{}", told[0].1);
    e.put("fam", "tasks", "again.json", &schedule("interval", "5"));
    e.apply("fam");
    assert!(!e.reply("fam", "again").ok);
    assert_eq!(notices(&e, "notice:limit:task-interval:%").len(), 1);
}

#[test]
fn an_agent_keeps_at_most_max_tasks_and_main_is_not_limited() {
    let mut e = ipc::env();
    for i in 0..25 {
        e.put(
            "fam",
            "tasks",
            &format!("t{i:02}.json"),
            &schedule("interval", "3600"),
        );
    }
    e.apply("fam");
    let ok = (0..25)
        .filter(|i| e.reply("fam", &format!("t{i:02}")).ok)
        .count();
    assert_eq!(ok, 20);
    let refused = e.reply("fam", "t24");
    assert!(
        refused
            .error
            .as_deref()
            .unwrap()
            .contains("limits.max_tasks = 20"),
        "{refused:?}"
    );
    assert_eq!(live_tasks(&e, "fam"), 20);
    assert_eq!(notices(&e, "notice:limit:task-count:fam").len(), 1);

    // A paused task still counts; a cancelled one frees a place.
    let first = e.reply("fam", "t00").task_id.unwrap();
    e.put(
        "fam",
        "tasks",
        "p.json",
        &format!(r#"{{"type":"pause_task","task_id":{first}}}"#),
    );
    e.put("fam", "tasks", "u.json", &schedule("interval", "3600"));
    e.apply("fam");
    assert!(e.reply("fam", "p").ok && !e.reply("fam", "u").ok);
    e.put(
        "fam",
        "tasks",
        "c.json",
        &format!(r#"{{"type":"cancel_task","task_id":{first}}}"#),
    );
    e.put("fam", "tasks", "v.json", &schedule("interval", "3600"));
    e.apply("fam");
    assert!(e.reply("fam", "c").ok && e.reply("fam", "v").ok);

    // Main: the owner's chat, every minute, 25 tasks, for itself and for fam.
    let main = e.main_folder();
    for i in 0..25 {
        let body = format!(
            r#"{{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"60","folder":"{}"}}"#,
            if i % 2 == 0 { "main" } else { "other" }
        );
        e.put(&main, "tasks", &format!("m{i:02}.json"), &body);
    }
    let r = e.apply(&main);
    assert_eq!((r.applied, r.rejected), (25, 0), "{:?}", r.entries);
}

#[test]
fn update_and_resume_cannot_make_a_task_more_frequent() {
    let mut e = ipc::env();
    let now = claw::infra::time::now_ms();
    // The owner may set a short schedule in any group (the owner chose it).
    let owners = e.task("fam", "interval", "60", now);
    let put = |e: &ipc::Env, stem: &str, body: String| {
        e.put("fam", "tasks", &format!("{stem}.json"), &body);
    };
    put(
        &e,
        "a",
        format!(r#"{{"type":"update_task","task_id":{owners},"prompt":"new words"}}"#),
    );
    put(
        &e,
        "b",
        format!(r#"{{"type":"pause_task","task_id":{owners}}}"#),
    );
    put(
        &e,
        "c",
        format!(r#"{{"type":"resume_task","task_id":{owners}}}"#),
    );
    put(
        &e,
        "d",
        format!(
            r#"{{"type":"update_task","task_id":{owners},"schedule_type":"cron","schedule_value":"* * * * *"}}"#
        ),
    );
    put(
        &e,
        "e",
        format!(r#"{{"type":"update_task","task_id":{owners},"schedule_value":"7200"}}"#),
    );
    put(
        &e,
        "f",
        format!(r#"{{"type":"resume_task","task_id":{owners}}}"#),
    );
    e.apply("fam");
    let got: Vec<(bool, Option<String>)> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|s| {
            let r = e.reply("fam", s);
            (r.ok, r.error)
        })
        .collect();
    let oks: Vec<bool> = got.iter().map(|g| g.0).collect();
    assert_eq!(oks, [true, true, false, false, true, true], "{got:?}");
    assert!(
        got[2].1.as_deref().unwrap().contains("interval `60`"),
        "{got:?}"
    );
    assert!(
        got[3].1.as_deref().unwrap().contains("cron `* * * * *`"),
        "{got:?}"
    );
    let t = claw::infra::store::tasks::get(&e.store.conn, owners)
        .unwrap()
        .unwrap();
    assert_eq!((t.schedule.as_str(), t.status.as_str()), ("7200", "active"));
}

#[test]
fn the_owner_cli_is_not_limited_by_the_minimum() {
    let e = ipc::env();
    let out = claw(&e)
        .args([
            "task", "add", "--group", "fam", "--prompt", "x", "--every", "60", "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["schedule"], "60");
}

fn fake_runs(e: &ipc::Env, folder: &str, n: i64, minutes_ago: i64) {
    let now = claw::infra::time::now_ms();
    for i in 0..n {
        let t = now - minutes_ago * 60_000 - i * 1000;
        e.store
            .conn
            .execute(
                "INSERT INTO runs (folder, kind, status, attempt, queued_at, started_at, ended_at)
                 VALUES (?1, 'messages', 'succeeded', 1, ?2, ?2, ?2)",
                rusqlite::params![folder, t],
            )
            .unwrap();
    }
}

fn dry_run(e: &ipc::Env) -> Vec<serde_json::Value> {
    let out = claw(e)
        .args(["dispatch", "--dry-run", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["decisions"].as_array().unwrap().clone()
}

#[test]
fn a_group_over_its_runs_per_hour_is_not_started_and_its_chat_is_told_once() {
    let e = ipc::env();
    // 30 runs in the last hour (the default limit) and more from earlier that no longer count.
    fake_runs(&e, "fam", 30, 10);
    fake_runs(&e, "fam", 50, 70);
    fake_runs(&e, "other", 29, 10);
    fake_runs(&e, "main", 100, 10);
    for (chat, text) in [("tg:2", "@Andy hi"), ("tg:3", "@Andy hi"), ("tg:1", "hi")] {
        claw(&e)
            .args(["ingest", "--chat", chat, "--text", text])
            .assert()
            .success();
    }
    let decisions = dry_run(&e);
    let of = |f: &str| decisions.iter().find(|d| d["folder"] == f).unwrap().clone();
    assert_eq!(of("fam")["action"], "skip");
    let why = of("fam")["reason"].as_str().unwrap().to_string();
    assert!(why.contains("30 runs started in the last hour"), "{why}");
    assert!(
        why.contains("claw group set fam --runs-per-hour N"),
        "{why}"
    );
    assert_eq!(of("other")["action"], "start", "29 of 30: may start");
    assert_eq!(of("main")["action"], "start", "main is never limited");
    // A dry run tells nobody.
    assert!(notices(&e, "notice:limit:runs:%").is_empty());

    let status: serde_json::Value =
        serde_json::from_slice(&claw(&e).args(["status", "--json"]).output().unwrap().stdout)
            .unwrap();
    let fam = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["folder"] == "fam")
        .unwrap();
    assert_eq!(fam["would_run"], false);
    assert!(
        fam["reason"].as_str().unwrap().contains("runs limit"),
        "{fam}"
    );

    // Started by hand, run-group refuses before any container (exit 5, busy) and tells the chat.
    let out = claw(&e).args(["run-group", "fam"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs limit"));
    let told = notices(&e, "notice:limit:runs:fam");
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].0, "tg:2");
    assert!(
        told[0].1.starts_with("fam has started 30 runs in the last hour (its limit); new messages will be answered from ")
            && told[0].1.ends_with("The owner can change this with `claw group set fam --runs-per-hour N`."),
        "{}",
        told[0].1
    );
    // Again, by hand and by dispatch (only fam: the others would start containers).
    claw(&e).args(["run-group", "fam"]).assert().code(5);
    assert_eq!(
        notices(&e, "notice:limit:runs:fam").len(),
        1,
        "told once per hour"
    );
    assert_eq!(
        e.store
            .conn
            .query_row(
                "SELECT count(*) FROM runs WHERE status IN ('queued','running')",
                [],
                |r| r.get::<_, i64>(0)
            )
            .unwrap(),
        0,
        "nothing was queued or started"
    );

    // The owner lifts it for this group.
    claw(&e)
        .args(["group", "set", "fam", "--runs-per-hour", "0"])
        .assert()
        .success();
    let decisions = dry_run(&e);
    assert_eq!(
        decisions.iter().find(|d| d["folder"] == "fam").unwrap()["action"],
        "start"
    );
}

#[test]
fn dispatch_skips_a_limited_queued_task_run_and_tells_the_chat_once() {
    let e = ipc::env();
    std::fs::write(
        e.home.config(),
        std::fs::read_to_string(e.home.config())
            .unwrap()
            .replace("runs_per_hour = 30", "runs_per_hour = 2"),
    )
    .unwrap();
    fake_runs(&e, "fam", 2, 1);
    let now = claw::infra::time::now_ms();
    let id = e.task("fam", "interval", "3600", now - 7_200_000);
    claw::infra::store::tasks::set_next_run(&e.store.conn, id, Some(now - 1000)).unwrap();
    claw(&e).arg("schedule").assert().success();
    for _ in 0..2 {
        let out = claw(&e).args(["dispatch", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = &v["decisions"][0];
        assert_eq!(
            (d["folder"].as_str(), d["action"].as_str()),
            (Some("fam"), Some("skip")),
            "{v}"
        );
        assert!(
            d["reason"].as_str().unwrap().contains("2 runs started"),
            "{v}"
        );
    }
    // The task run waits in the queue (delayed, not dropped) and the chat heard of it once.
    let queued: i64 = e
        .store
        .conn
        .query_row(
            "SELECT count(*) FROM runs WHERE folder = 'fam' AND kind = 'task' AND status = 'queued'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(queued, 1);
    assert_eq!(notices(&e, "notice:limit:runs:fam").len(), 1);
}

#[test]
fn ipc_apply_memory_does_not_grow_with_what_an_agent_wrote() {
    let e = ipc::env();
    // 100 valid requests of 1 MiB each (the old scan held them all: over 100 MB) and 2,500 small.
    let text = "x".repeat(1024 * 1024 - 64);
    let dir = e.home.ipc_dir("fam").join("messages");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..100 {
        std::fs::write(
            dir.join(format!("a-{i:04}.json")),
            format!(r#"{{"type":"send_message","text":"{text}"}}"#),
        )
        .unwrap();
    }
    for i in 0..2_500 {
        std::fs::write(
            dir.join(format!("b-{i:05}.json")),
            format!(r#"{{"type":"send_message","text":"small {i}"}}"#),
        )
        .unwrap();
    }
    for i in 0..5 {
        e.put(
            "other",
            "messages",
            &format!("m{i}.json"),
            r#"{"type":"send_message","text":"still here"}"#,
        );
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_claw"));
    cmd.arg("--home")
        .arg(&e.home.root)
        .args(["ipc-apply", "--json"])
        .stdout(std::process::Stdio::null())
        .env_remove("CLAW_LOG");
    let (code, peak_kb) = rss::run_measured(&mut cmd);
    assert_eq!(code, Some(0));
    assert!(peak_kb < 64 * 1024, "ipc-apply peak RSS {peak_kb} KiB");
    // The other group was applied in the same pass; fam got one pass's worth (64 MiB).
    let count = |chat: &str| -> i64 {
        e.store
            .conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE chat_id = ?1",
                [chat],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(count("tg:3"), 5);
    let first = count("tg:2");
    assert!((60..=64).contains(&first), "{first}");
    // Later passes drain the rest, oldest first, each within the caps.
    let mut passes = 1;
    loop {
        let out = claw(&e).args(["ipc-apply", "--json"]).output().unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        passes += 1;
        assert!(r["applied"].as_u64().unwrap() <= 1000);
        if r["deferred"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(passes < 20, "not drained after {passes} passes");
    }
    assert_eq!(count("tg:2"), 2_600);
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}
