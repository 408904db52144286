//! `claw deliver` through the command channel, and `claw outbox`: success marks rows sent, a
//! failing bridge leaves them pending with backoff, and kill -9 mid-batch loses nothing.
//! The bridge is a real shell script in the temp dir; rows are enqueued straight into the
//! outbox table because nothing else writes it yet.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use predicates::prelude::*;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHAT: &str = "wa:1203@g.us";

/// Write an executable shell script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A home whose `wa` channel pipes rows to `send.sh`; returns the script and its output file.
fn setup(body_after_cat: &str) -> (TestHome, PathBuf, PathBuf) {
    let h = TestHome::init();
    let send = h.scratch("send.sh");
    let out = h.scratch("sent.jsonl");
    script(
        &send,
        &format!("cat >> '{}'\n{body_after_cat}", out.display()),
    );
    h.append_config(&format!(
        "[channels.wa]\nsend_command = [\"{}\"]\n",
        send.display()
    ));
    (h, send, out)
}

fn enqueue(h: &TestHome, chat: &str, texts: &[String]) -> Vec<i64> {
    let db = h.db();
    texts
        .iter()
        .map(|t| {
            db.execute(
                "INSERT INTO outbox (chat_id, text, origin, created_at) VALUES (?1, ?2, 'test', 0)",
                [chat, t.as_str()],
            )
            .unwrap();
            db.last_insert_rowid()
        })
        .collect()
}

/// (status, attempts, last_error, next_attempt_at) of a row.
fn row(h: &TestHome, id: i64) -> (String, i64, Option<String>, i64) {
    h.db()
        .query_row(
            "SELECT status, attempts, last_error, next_attempt_at FROM outbox WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

fn sent_lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("bridge got a JSON line"))
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn success_marks_rows_sent_and_the_bridge_gets_one_json_line_each() {
    let (h, _, out) = setup("echo wamid-$$");
    let texts: Vec<String> = ["hello", "line one\nline two", "ünïcode \"quoted\""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ids = enqueue(&h, CHAT, &texts);
    h.claw()
        .arg("deliver")
        .assert()
        .success()
        .stdout("sent 3, failed 0, released 0\n");
    let lines = sent_lines(&out);
    assert_eq!(lines.len(), 3);
    for ((l, id), text) in lines.iter().zip(&ids).zip(&texts) {
        assert_eq!(l["id"], *id);
        assert_eq!(l["chat"], CHAT);
        assert_eq!(l["text"], text.as_str());
    }
    for id in &ids {
        let (status, attempts, err, _) = row(&h, *id);
        assert_eq!((status.as_str(), attempts, err), ("sent", 1, None));
    }
    let msg_id: String = h
        .db()
        .query_row(
            "SELECT channel_msg_id FROM outbox WHERE id = ?1",
            [ids[0]],
            |r| r.get(0),
        )
        .unwrap();
    assert!(msg_id.starts_with("wamid-"), "{msg_id}");
    assert_eq!(
        h.count("SELECT count(*) FROM audit WHERE kind = 'message.delivered'"),
        3
    );
    // Nothing is due any more: a second pass sends nothing.
    h.claw()
        .arg("deliver")
        .assert()
        .success()
        .stdout("sent 0, failed 0, released 0\n");
    assert_eq!(sent_lines(&out).len(), 3);

    let listing = h.claw().args(["outbox", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("outbox --json");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "sent" && r["attempts"] == 1)
    );
    h.claw()
        .args(["outbox", "--status", "pending", "--json"])
        .assert()
        .success()
        .stdout("[]\n");
    h.claw()
        .arg("outbox")
        .assert()
        .success()
        .stdout(predicate::str::contains("sent"))
        .stdout(predicate::str::contains(CHAT));
}

#[test]
fn a_failing_bridge_keeps_the_row_pending_with_backoff_and_a_later_deliver_retries() {
    let (h, send, out) = setup("echo 'bridge is down' >&2\nexit 1");
    let id = enqueue(&h, CHAT, &["hi".into()])[0];
    let before = now_ms();
    h.claw()
        .arg("deliver")
        .assert()
        .code(1)
        .stdout("sent 0, failed 1, released 0\n")
        .stderr(predicate::str::contains("will be retried"));
    let (status, attempts, err, next) = row(&h, id);
    assert_eq!(status, "pending");
    assert_eq!(attempts, 1);
    let err = err.expect("error recorded");
    assert!(
        err.contains("bridge is down") && err.contains("exit"),
        "{err}"
    );
    assert!(
        next >= before + 5_000,
        "next attempt {next} is not in the future"
    );

    // Before the backoff has passed, deliver leaves it alone.
    h.claw()
        .arg("deliver")
        .assert()
        .success()
        .stdout("sent 0, failed 0, released 0\n");
    assert_eq!(row(&h, id).1, 1);
    let listing = h
        .claw()
        .args(["outbox", "--status", "pending", "--json"])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(rows[0]["id"], id);
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("bridge is down")
    );

    // Time passes and the bridge recovers: the retry sends it.
    script(&send, &format!("cat >> '{}'", out.display()));
    h.db()
        .execute("UPDATE outbox SET next_attempt_at = 0 WHERE id = ?1", [id])
        .unwrap();
    h.claw()
        .arg("deliver")
        .assert()
        .success()
        .stdout("sent 1, failed 0, released 0\n");
    let (status, attempts, err, _) = row(&h, id);
    assert_eq!((status.as_str(), attempts, err), ("sent", 2, None));
    // The failed attempt also wrote its line before failing, so the bridge saw it twice.
    assert_eq!(sent_lines(&out).len(), 2);
}

#[test]
fn backoff_doubles_and_a_row_is_given_up_after_the_last_attempt() {
    let (h, _, _) = setup("exit 3");
    let id = enqueue(&h, CHAT, &["hi".into()])[0];
    h.claw().arg("deliver").assert().code(1);
    let first = row(&h, id).3 - now_ms();
    h.db()
        .execute("UPDATE outbox SET next_attempt_at = 0 WHERE id = ?1", [id])
        .unwrap();
    h.claw().arg("deliver").assert().code(1);
    let second = row(&h, id).3 - now_ms();
    assert!(
        second > first + 3_000,
        "backoff did not grow: {first} then {second}"
    );
    h.db()
        .execute(
            "UPDATE outbox SET next_attempt_at = 0, attempts = 9 WHERE id = ?1",
            [id],
        )
        .unwrap();
    h.claw().arg("deliver").assert().code(1);
    let (status, attempts, err, _) = row(&h, id);
    assert_eq!((status.as_str(), attempts), ("failed", 10));
    assert!(err.unwrap().contains("exit status: 3"));
    h.claw()
        .args(["outbox", "--status", "failed", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"failed\""));
}

#[test]
fn a_channel_without_a_sender_is_skipped_and_its_rows_stay_pending() {
    let (h, _, out) = setup("");
    // `zz` is a prefix no built-in channel serves and claw.toml gives no send command.
    let zz = enqueue(&h, "zz:-100", &["to nowhere".into()])[0];
    let wa = enqueue(&h, CHAT, &["to whatsapp".into()])[0];
    h.claw()
        .arg("deliver")
        .assert()
        .success()
        .stdout(predicate::str::contains("sent 1, failed 0"))
        .stdout(predicate::str::contains("skipped zz"))
        .stdout(predicate::str::contains("send_command"));
    assert_eq!(row(&h, zz), ("pending".into(), 0, None, 0));
    assert_eq!(row(&h, wa).0, "sent");
    assert_eq!(sent_lines(&out).len(), 1);
    // --channel restricts the pass to one prefix.
    let wa2 = enqueue(&h, CHAT, &["again".into()])[0];
    h.claw()
        .args(["deliver", "--channel", "zz"])
        .assert()
        .success()
        .stdout(predicate::str::contains("sent 0"));
    assert_eq!(row(&h, wa2).0, "pending");
}

#[test]
fn kill_9_mid_batch_loses_no_row_and_duplicates_at_most_one() {
    const ROWS: usize = 20;
    let (h, _, out) = setup("sleep 0.2");
    let texts: Vec<String> = (0..ROWS).map(|i| format!("message {i}")).collect();
    let ids = enqueue(&h, CHAT, &texts);

    let mut child = h
        .claw_std()
        .arg("deliver")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent_lines(&out).len() < 5 {
        assert!(Instant::now() < deadline, "deliver made no progress");
        assert!(child.try_wait().unwrap().is_none(), "deliver ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());
    let unsent = h.count("SELECT count(*) FROM outbox WHERE status != 'sent'");
    assert!(
        unsent > 0,
        "deliver finished before the kill; the test proved nothing"
    );
    assert!(
        h.count("SELECT count(*) FROM outbox WHERE status = 'sending'") > 0,
        "the killed batch left no claimed rows"
    );
    // Let the orphaned script of the interrupted send finish its sleep.
    std::thread::sleep(Duration::from_millis(300));

    h.claw()
        .arg("deliver")
        .assert()
        .success()
        .stdout(predicate::str::contains("failed 0"))
        .stdout(predicate::str::contains("released 0").not());
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE status = 'sent'"),
        ROWS as i64
    );
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for l in sent_lines(&out) {
        *seen.entry(l["id"].as_i64().unwrap()).or_default() += 1;
    }
    for id in &ids {
        assert!(
            seen.get(id).copied().unwrap_or(0) >= 1,
            "row {id} never sent"
        );
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(duplicates <= 1, "{duplicates} duplicates: {seen:?}");
    assert_eq!(seen.len(), ROWS);
}
