//! A request file applied again (as after a crash between the commit and the file's deletion)
//! must not send a second message or create a second task.

use assert_cmd::Command;

fn claw(home: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("claw").unwrap();
    c.env("CLAW_HOME", home);
    c
}

#[test]
fn reapplying_a_request_file_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    claw(&home).arg("init").assert().success();
    let ipc = home.join("ipc/main");
    for _ in 0..2 {
        std::fs::write(
            ipc.join("messages/req-1.json"),
            r#"{"type":"send_message","text":"only once"}"#,
        )
        .unwrap();
        std::fs::write(
            ipc.join("tasks/req-2.json"),
            r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"3600"}"#,
        )
        .unwrap();
        claw(&home).arg("ipc-apply").assert().success();
    }
    let db = rusqlite::Connection::open(home.join("claw.db")).unwrap();
    let sent: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE text = 'only once'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let tasks: i64 = db
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!((sent, tasks), (1, 1));
    let reply: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ipc.join("replies/req-2.json")).unwrap())
            .unwrap();
    assert_eq!(reply["ok"], true);
    assert!(reply["task_id"].as_i64().is_some());
}
