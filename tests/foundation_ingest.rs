//! `claw ingest`: what is stored, counted and reported for good, bad, duplicate and unregistered
//! lines, the one-shot form, and many ingest processes writing at once.

#[path = "support/home.rs"]
mod home;

use home::{TestHome, line};
use predicates::prelude::*;
use std::io::Write;
use std::process::Stdio;

fn stored_ids(h: &TestHome, chat: &str) -> Vec<String> {
    let db = h.db();
    let mut stmt = db
        .prepare("SELECT msg_id FROM messages WHERE chat_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([chat], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_mixed_batch_stores_exactly_the_good_lines_and_reports_the_bad_ones() {
    let h = TestHome::init();
    h.set_max_message_bytes(100);
    h.add_group("tg:-100", "fam", &[]);
    // A message already stored by an earlier batch.
    h.ingest(&line("tg:-100", "0", "tg:1", "earlier"))
        .success()
        .stdout("stored 1, duplicates 0, unregistered 0, rejected 0\n");

    let at_cap = "x".repeat(100);
    let over_cap = "é".repeat(51); // 102 bytes: the cap counts bytes, not characters
    let batch = [
        line("tg:-100", "1", "tg:1", "@Andy hi"),       // 1 stored
        "{\"chat\": \"tg:-100\", \"id\": ".to_string(), // 2 bad JSON
        line("tg:-100", "2", "tg:2", "second"),         // 3 stored
        r#"{"chat":"tg:-100","id":"3","text":"no sender"}"#.into(), // 4 missing field
        line("tg:-100", "1", "tg:1", "@Andy hi again"), // 5 duplicate in batch
        r#"{"chat":"tg:-100","id":"4","sender":"tg:1","text":"t","time":"yesterday"}"#.into(), // 6 bad time
        serde_json::json!({"chat":"tg:999","id":"9","sender":"tg:5","text":"who am I",
            "chat_name":"Stranger","is_group":true})
        .to_string(), // 7 unregistered
        line("tg:-100", "5", "tg:1", &over_cap), // 8 oversize
        String::new(),                           // 9 blank: skipped
        line("tg:-100", "0", "tg:1", "earlier"), // 10 duplicate of stored
        line("tg:-100", "6", "tg:1", &at_cap),   // 11 stored (exactly the cap)
    ]
    .join("\n");
    let out = h.ingest(&batch).code(4);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(
        stdout,
        "stored 3, duplicates 2, unregistered 1, rejected 4\n"
    );
    for (needle, line_no) in [
        ("invalid message JSON", 2),
        ("missing field `sender`", 4),
        ("RFC 3339", 6),
        ("102 bytes, over the 100-byte cap", 8),
    ] {
        let want = format!("line {line_no}: ");
        let hit = stderr
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("no report for line {line_no} in {stderr}"));
        assert!(hit.contains(needle), "line {line_no}: {hit}");
    }
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("line ")).count(),
        4,
        "{stderr}"
    );
    assert!(stderr.contains("4 line(s) rejected"), "{stderr}");

    assert_eq!(stored_ids(&h, "tg:-100"), ["0", "1", "2", "6"]);
    let texts: Vec<(String, String)> = {
        let db = h.db();
        let mut s = db
            .prepare("SELECT msg_id, text FROM messages WHERE chat_id = 'tg:-100' ORDER BY seq")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        texts[1].1, "@Andy hi",
        "a duplicate overwrote the first copy"
    );
    assert_eq!(texts[3].1.len(), 100, "text at the cap was changed");
    // The unknown chat is recorded (so main can register it) but its text is not kept.
    assert_eq!(
        h.count("SELECT count(*) FROM messages WHERE chat_id = 'tg:999'"),
        0
    );
    let (name, is_group): (String, bool) = h
        .db()
        .query_row(
            "SELECT name, is_group FROM chats WHERE id = 'tg:999'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((name.as_str(), is_group), ("Stranger", true));
    assert_eq!(h.count("SELECT count(*) FROM messages"), 4);
}

#[test]
fn the_json_summary_lists_reasons_by_line() {
    let h = TestHome::init();
    let input = format!("{}\nnot json\n", line("cli:local", "a", "cli:owner", "hi"));
    let out = h
        .claw()
        .args(["ingest", "--json"])
        .write_stdin(input)
        .assert()
        .code(4);
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["stored"], 1);
    assert_eq!(v["rejected"], 1);
    assert_eq!(v["errors"][0]["line"], 2);
    assert!(
        v["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid message JSON")
    );
}

#[test]
fn reingesting_a_whole_batch_is_a_no_op() {
    let h = TestHome::init();
    h.add_group("tg:-100", "fam", &[]);
    let batch: String = (0..50)
        .map(|i| line("tg:-100", &i.to_string(), "tg:1", "x") + "\n")
        .collect();
    h.ingest(&batch)
        .success()
        .stdout("stored 50, duplicates 0, unregistered 0, rejected 0\n");
    let max_seq = h.count("SELECT max(seq) FROM messages");
    h.ingest(&batch)
        .success()
        .stdout("stored 0, duplicates 50, unregistered 0, rejected 0\n");
    assert_eq!(h.count("SELECT max(seq) FROM messages"), max_seq);
    assert_eq!(h.count("SELECT count(*) FROM messages"), 50);
}

#[test]
fn large_inputs_span_several_transactions_without_losing_or_doubling_a_line() {
    let h = TestHome::init();
    h.add_group("tg:1", "big", &[]);
    // 20,000 short lines (several count-bounded batches) with a bad line and repeats spread
    // across batch boundaries, then 100 lines near the 64 KiB cap (byte-bounded batches).
    let mut input = String::new();
    for i in 0..20_000 {
        if i == 12_345 {
            input.push_str("{oops\n");
        }
        let id = if i % 1000 == 999 { i - 500 } else { i };
        input.push_str(&line("tg:1", &format!("s{id}"), "tg:2", "hi"));
        input.push('\n');
    }
    let big = "b".repeat(60_000);
    for i in 0..100 {
        input.push_str(&line("tg:1", &format!("b{i}"), "tg:2", &big));
        input.push('\n');
    }
    h.ingest(&input)
        .code(4)
        .stdout("stored 20080, duplicates 20, unregistered 0, rejected 1\n")
        .stderr(predicate::str::contains("line 12346: invalid message JSON"));
    assert_eq!(h.count("SELECT count(*) FROM messages"), 20_080);
    assert_eq!(
        h.count("SELECT count(*) FROM messages WHERE length(text) = 60000"),
        100
    );
}

#[test]
fn the_one_shot_form_stores_one_message() {
    let h = TestHome::init();
    h.claw()
        .args(["ingest", "--chat", "cli:local", "--text", "hello there"])
        .assert()
        .success()
        .stdout("stored 1, duplicates 0, unregistered 0, rejected 0\n");
    h.claw()
        .args(["ingest", "--chat", "cli:local", "--text", "from ana"])
        .args(["--sender", "ana"])
        .assert()
        .success();
    let rows: Vec<(String, String, bool)> = {
        let db = h.db();
        let mut s = db
            .prepare("SELECT sender, text, from_me FROM messages WHERE chat_id = 'cli:local' ORDER BY seq")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        rows,
        [
            ("cli:owner".into(), "hello there".into(), true),
            ("cli:ana".into(), "from ana".into(), false)
        ]
    );
    // Unregistered and oversize one-shots are counted, not stored.
    h.claw()
        .args(["ingest", "--chat", "tg:5", "--text", "x"])
        .assert()
        .success()
        .stdout("stored 0, duplicates 0, unregistered 1, rejected 0\n");
    h.set_max_message_bytes(10);
    h.claw()
        .args(["ingest", "--chat", "cli:local", "--text", "01234567890"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("over the 10-byte cap"));
    assert_eq!(h.count("SELECT count(*) FROM messages"), 2);
    // --text without --chat is a usage error.
    h.claw().args(["ingest", "--text", "x"]).assert().code(2);
}

#[test]
fn eight_concurrent_ingests_store_every_message_without_lock_errors() {
    let h = TestHome::init();
    for p in 0..8 {
        h.add_group(&format!("tg:{p}"), &format!("g{p}"), &[]);
    }
    let mut children = Vec::new();
    // Start all eight before feeding any, so their transactions overlap.
    for _ in 0..8 {
        children.push(
            h.claw_std()
                .arg("ingest")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let inputs: Vec<String> = (0..8)
        .map(|p| {
            // Half the processes write one shared chat so their rows interleave on one index range.
            let chat = if p % 2 == 0 {
                "tg:0".to_string()
            } else {
                format!("tg:{p}")
            };
            (0..1000)
                .map(|i| line(&chat, &format!("p{p}-m{i}"), "tg:1", "hello") + "\n")
                .collect()
        })
        .collect();
    let writers: Vec<_> = children
        .iter_mut()
        .zip(inputs)
        .map(|(c, input)| {
            let mut stdin = c.stdin.take().unwrap();
            std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap())
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ingest failed: {stderr}");
        assert!(!stderr.to_lowercase().contains("locked"), "{stderr}");
        assert!(!stderr.to_lowercase().contains("busy"), "{stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "stored 1000, duplicates 0, unregistered 0, rejected 0\n"
        );
    }
    assert_eq!(h.count("SELECT count(*) FROM messages"), 8000);
    assert_eq!(h.count("SELECT count(DISTINCT msg_id) FROM messages"), 8000);
    assert_eq!(
        h.count("SELECT max(seq) - min(seq) + 1 FROM messages"),
        8000
    );
}
