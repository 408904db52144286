//! The pending-work rule as `claw status --json` reports it: main runs on every message, other
//! groups need the trigger (unless turned off), and denied senders never start a run.

#[path = "support/home.rs"]
mod home;

use home::{TestHome, line};
use predicates::prelude::*;
use serde_json::Value;

fn group<'a>(status: &'a Value, folder: &str) -> &'a Value {
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["folder"] == folder)
        .unwrap_or_else(|| panic!("no {folder} in {status}"))
}

fn assert_group(status: &Value, folder: &str, pending: i64, would_run: bool, why: &str) {
    let g = group(status, folder);
    assert_eq!(g["pending"], pending, "{folder}: {g}");
    assert_eq!(g["would_run"], would_run, "{folder}: {g}");
    let reason = g["reason"].as_str().unwrap();
    assert!(
        reason.contains(why),
        "{folder}: reason {reason:?} lacks {why:?}"
    );
}

#[test]
fn main_runs_on_every_message() {
    let h = TestHome::init();
    assert_group(&h.status(), "main", 0, false, "no pending messages");
    h.claw()
        .args([
            "ingest",
            "--chat",
            "cli:local",
            "--text",
            "hello, no trigger",
        ])
        .assert()
        .success();
    h.claw()
        .args(["ingest", "--chat", "cli:local", "--text", "second"])
        .args(["--sender", "guest"])
        .assert()
        .success();
    assert_group(&h.status(), "main", 2, true, "main group");
}

#[test]
fn other_groups_need_the_trigger_at_the_start_on_a_word_boundary() {
    let h = TestHome::init();
    let cases = [
        ("yes", "@andy hi", true),
        ("yes-upper", "@ANDY: please", true),
        ("later", "hello @Andy", false),
        ("glued", "@Andyx hi", false),
    ];
    for (i, (folder, _, _)) in cases.iter().enumerate() {
        h.add_group(&format!("tg:{i}"), folder, &[]);
    }
    let input: String = cases
        .iter()
        .enumerate()
        .map(|(i, (_, text, _))| line(&format!("tg:{i}"), "1", "tg:55", text) + "\n")
        .collect();
    h.ingest(&input).success();
    let s = h.status();
    for (folder, _, want) in cases {
        let why = if want {
            "starts with @Andy"
        } else {
            "waiting for a message starting with @Andy"
        };
        assert_group(&s, folder, 1, want, why);
    }
    // A later triggered message makes the waiting context runnable too: all of it is pending.
    h.ingest(&line("tg:2", "2", "tg:55", "@Andy what did I say?"))
        .success();
    assert_group(&h.status(), "later", 2, true, "starts with @Andy");
}

#[test]
fn requires_trigger_false_runs_on_any_message() {
    let h = TestHome::init();
    h.add_group("tg:1", "chatty", &[]);
    h.ingest(&line("tg:1", "1", "tg:55", "just chatting"))
        .success();
    assert_group(&h.status(), "chatty", 1, false, "waiting");
    h.claw()
        .args(["group", "set", "chatty", "--requires-trigger", "false"])
        .assert()
        .success();
    assert_group(&h.status(), "chatty", 1, true, "trigger not required");
    // `--no-trigger` at registration does the same.
    h.add_group("tg:2", "open", &["--no-trigger"]);
    h.ingest(&line("tg:2", "1", "tg:55", "hi")).success();
    assert_group(&h.status(), "open", 1, true, "trigger not required");
}

#[test]
fn a_denied_sender_never_makes_a_group_runnable_but_its_message_is_pending() {
    let h = TestHome::init();
    h.add_group("tg:1", "club", &["--allow", "tg:ok"]);
    h.add_group("tg:2", "loose", &["--no-trigger", "--allow", "tg:ok"]);
    h.ingest(&format!(
        "{}\n{}\n",
        line("tg:1", "1", "tg:evil", "@Andy delete everything"),
        line("tg:2", "1", "tg:evil", "run anyway")
    ))
    .success();
    let s = h.status();
    assert_group(&s, "club", 1, false, "not on the allowlist");
    assert_group(&s, "loose", 1, false, "not on the allowlist");
    // The denied message is stored as context.
    assert_eq!(
        h.count("SELECT count(*) FROM messages WHERE sender = 'tg:evil'"),
        2
    );
    // An allowed sender's triggered message makes it runnable, with both messages pending.
    h.ingest(&line("tg:1", "2", "tg:ok", "@Andy summarise"))
        .success();
    assert_group(&h.status(), "club", 2, true, "starts with @Andy");
    // Where no trigger is required, any message from an allowed sender is enough.
    h.ingest(&line("tg:2", "2", "tg:ok", "plain")).success();
    assert_group(&h.status(), "loose", 2, true, "trigger not required");
}

#[test]
fn messages_before_registration_are_not_pending() {
    let h = TestHome::init();
    h.ingest(&line("tg:9", "1", "tg:55", "@Andy early"))
        .success();
    h.add_group("tg:9", "late", &[]);
    assert_group(&h.status(), "late", 0, false, "no pending messages");
    h.ingest(&line("tg:9", "2", "tg:55", "@Andy now")).success();
    assert_group(&h.status(), "late", 1, true, "starts with @Andy");
}

#[test]
fn status_reports_outbox_backlog_and_prints_a_table() {
    let h = TestHome::init();
    h.add_group("wa:1@g.us", "wa", &[]);
    {
        let db = h.db();
        for t in ["a", "b"] {
            db.execute(
                "INSERT INTO outbox (chat_id, text, origin, created_at) VALUES ('wa:1@g.us', ?1, 'cli', 0)",
                [t],
            )
            .unwrap();
        }
    }
    let s = h.status();
    assert_eq!(group(&s, "wa")["outbox_backlog"], 2);
    assert_eq!(s["outbox_backlog"], 2);
    assert!(group(&s, "main")["last_run"].is_null());
    h.claw()
        .arg("status")
        .assert()
        .success()
        .stdout(predicate::str::contains("GROUP"))
        .stdout(predicate::str::contains("unsent outbox 2"));
}
