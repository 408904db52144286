//! `claw task …` at the shell: the owner's view of the same operations IPC uses.

#[path = "support/ipc.rs"]
mod ipc;

use assert_cmd::Command;
use predicates::str::contains;

fn claw(e: &ipc::Env) -> Command {
    let mut c = Command::cargo_bin("claw").unwrap();
    c.arg("--home").arg(&e.home.root);
    c
}

fn json(e: &ipc::Env, args: &[&str]) -> serde_json::Value {
    let out = claw(e).args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn add_list_show_pause_resume_update_cancel_runs() {
    let e = ipc::env();
    let t = json(
        &e,
        &[
            "task",
            "add",
            "--group",
            "fam",
            "--prompt",
            "weekday brief",
            "--cron",
            "0 9 * * 1-5",
            "--tz",
            "Europe/Berlin",
            "--context",
            "group",
        ],
    );
    let id = t["id"].as_i64().unwrap();
    assert_eq!(t["chat_id"], "tg:2");
    assert_eq!(t["context_mode"], "group");
    assert_eq!(t["created_by"], "cli");
    // The snapshot the agent reads already lists it.
    let snap = std::fs::read_to_string(e.home.ipc_dir("fam").join("current_tasks.json")).unwrap();
    assert!(snap.contains("weekday brief"));

    let list = json(&e, &["task", "list", "--group", "fam"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        json(&e, &["task", "show", &id.to_string()])["schedule"],
        "0 9 * * 1-5"
    );
    assert_eq!(
        json(&e, &["task", "pause", &id.to_string()])["status"],
        "paused"
    );
    assert_eq!(
        json(&e, &["task", "resume", &id.to_string()])["status"],
        "active"
    );
    let u = json(
        &e,
        &[
            "task",
            "update",
            &id.to_string(),
            "--every",
            "3600",
            "--prompt",
            "hourly",
        ],
    );
    assert_eq!(
        (
            u["kind"].as_str(),
            u["schedule"].as_str(),
            u["prompt"].as_str()
        ),
        (Some("interval"), Some("3600"), Some("hourly"))
    );
    assert_eq!(
        json(&e, &["task", "runs", &id.to_string()])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        json(&e, &["task", "cancel", &id.to_string()])["status"],
        "cancelled"
    );
    assert_eq!(json(&e, &["task", "list"]).as_array().unwrap().len(), 0);
    assert_eq!(
        json(&e, &["task", "list", "--all"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    claw(&e)
        .args(["task", "resume", &id.to_string()])
        .assert()
        .code(2)
        .stderr(contains("only a paused task can be resumed"));
}

#[test]
fn bad_schedules_and_unknown_things_are_usage_errors() {
    let e = ipc::env();
    for (args, want) in [
        (vec!["--cron", "0 0 9 * * 1"], "6 fields"),
        (vec!["--cron", "61 * * * *"], "not valid"),
        (vec!["--every", "0"], "greater than 0"),
        (vec!["--at", "2001-01-01 10:00"], "in the past"),
        (vec!["--every", "60", "--tz", "Nowhere/Land"], "unknown"),
        (vec![], "say when"),
    ] {
        claw(&e)
            .args(["task", "add", "--group", "fam", "--prompt", "p"])
            .args(&args)
            .assert()
            .code(2)
            .stderr(contains(want));
    }
    claw(&e)
        .args([
            "task", "add", "--group", "ghost", "--prompt", "p", "--every", "60",
        ])
        .assert()
        .code(2)
        .stderr(contains("no group `ghost`"));
    claw(&e)
        .args(["task", "show", "42"])
        .assert()
        .code(2)
        .stderr(contains("no task 42"));
    claw(&e)
        .args([
            "task",
            "add",
            "--group",
            "fam",
            "--prompt",
            "p",
            "--every",
            "60",
            "--cron",
            "* * * * *",
        ])
        .assert()
        .code(2);
}

#[test]
fn ipc_apply_cli_exits_4_when_something_was_rejected() {
    let e = ipc::env();
    e.put(
        "fam",
        "messages",
        "ok.json",
        r#"{"type":"send_message","text":"hi"}"#,
    );
    e.put("fam", "messages", "bad.json", "nope");
    claw(&e)
        .args(["ipc-apply"])
        .assert()
        .code(4)
        .stdout(contains("rejected ipc/fam/messages/bad.json"))
        .stdout(contains("applied 1 request(s), rejected 1"));
    claw(&e)
        .args(["ipc-apply", "--group", "fam"])
        .assert()
        .success();
    claw(&e)
        .args(["ipc-apply", "--group", "ghost"])
        .assert()
        .code(2);
}
