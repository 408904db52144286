//! History search on the host: `claw search` over a real SQLite file (messages, the agent's
//! replies, compaction archives), ranking and snippets, the index staying consistent after a
//! `kill -9` during ingest and after migrating a database that predates the index, and the
//! proxy's `/search` route refusing to cross groups whatever the request says.

#[path = "support/home.rs"]
mod home;

use claw::infra::protocol::{SearchRequest, SearchResponse};
use home::TestHome;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn msg(chat: &str, id: &str, sender: &str, name: &str, text: &str, time: &str) -> String {
    json!({"chat": chat, "id": id, "sender": sender, "sender_name": name, "text": text, "time": time})
        .to_string()
}

fn search(h: &TestHome, args: &[&str]) -> Vec<Value> {
    let out = h
        .claw()
        .arg("search")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "claw search {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// Two groups with a few months of chat, the interesting messages long ago among noise.
fn family_and_work() -> TestHome {
    let h = TestHome::init();
    h.add_group("tg:-1", "family", &[]);
    h.add_group("tg:-2", "work", &[]);
    let mut input = String::new();
    for i in 0..300 {
        input.push_str(&msg(
            "tg:-1",
            &format!("n{i}"),
            "tg:7",
            "Noise",
            &format!("ordinary chatter number {i} about dinner and the weather"),
            "2026-11-20T10:00:00Z",
        ));
        input.push('\n');
    }
    for (id, name, text, time) in [
        (
            "p1",
            "Ana",
            "The passport renewal form is in the blue folder",
            "2026-03-14T09:30:00Z",
        ),
        (
            "p2",
            "Bo",
            "Did anyone see where I left my keys? Also the renewal of the car insurance, the gym, \
             the magazine and the passport photos can wait until after the holidays are over",
            "2026-04-02T18:00:00Z",
        ),
        (
            "p3",
            "Ana",
            "Café Ölmühle opens at nine",
            "2026-05-01T08:00:00Z",
        ),
    ] {
        input.push_str(&msg("tg:-1", id, "tg:55", name, text, time));
        input.push('\n');
    }
    input.push_str(&msg(
        "tg:-2",
        "w1",
        "tg:99",
        "Boss",
        "WORKSECRET the passport of the merger is confidential",
        "2026-03-15T09:00:00Z",
    ));
    input.push('\n');
    h.ingest(&input).success();
    h
}

#[test]
fn an_old_message_is_found_by_its_words_ranked_with_the_right_snippet() {
    let h = family_and_work();
    let hits = search(&h, &["passport", "renewal", "--group", "family"]);
    assert_eq!(hits.len(), 2, "{hits:#?}");
    // The short message about exactly that ranks above the long one that mentions it in passing.
    assert_eq!(hits[0]["id"], "p1");
    assert_eq!(hits[0]["kind"], "message");
    assert_eq!(hits[0]["sender"], "Ana (tg:55)");
    assert_eq!(
        hits[0]["snippet"],
        "The **passport** **renewal** form is in the blue folder"
    );
    assert_eq!(
        hits[0]["at"].as_i64(),
        claw::infra::time::parse_rfc3339("2026-03-14T09:30:00Z")
    );
    assert_eq!(hits[1]["id"], "p2");
    assert!(
        hits[1]["snippet"]
            .as_str()
            .unwrap()
            .contains("**passport**")
    );
    assert!(hits[0]["rank"].as_f64() < hits[1]["rank"].as_f64());

    // Case and accents do not matter; dates and senders narrow; a prefix matches.
    assert_eq!(search(&h, &["cafe", "olmuhle"])[0]["id"], "p3");
    assert_eq!(search(&h, &["renew*", "--sender", "Bo"])[0]["id"], "p2");
    assert!(
        search(
            &h,
            &["passport", "--group", "family", "--until", "2026-03-13"]
        )
        .is_empty()
    );
    let since = search(
        &h,
        &["passport", "--group", "family", "--since", "2026-04-01"],
    );
    assert_eq!(since.len(), 1);
    assert_eq!(since[0]["id"], "p2");
    // Every word first; when no message has them all, any of them.
    let any = search(&h, &["passport", "zebra", "--group", "family"]);
    assert_eq!(any.len(), 2);
    // The owner's search without --group covers every group.
    let all = search(&h, &["passport"]);
    assert!(all.iter().any(|x| x["group"] == "work"));
    // FTS syntax is searched as words: nothing errors, nothing widens.
    for q in ["\"", "NEAR(passport", "passport OR", "text:passport", "* ^"] {
        let out = h.claw().args(["search", q, "--json"]).output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0) | Some(2)),
            "{q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The table for people names the group, sender and match.
    let out = h
        .claw()
        .args(["search", "blue", "folder"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("family") && table.contains("**blue** **folder**"),
        "{table}"
    );
}

#[test]
fn replies_and_archives_are_found_and_notices_are_not() {
    let h = family_and_work();
    let db = h.db();
    db.execute_batch(
        "INSERT INTO outbox (chat_id, text, origin, created_at) VALUES
           ('tg:-1', 'I booked the TRAINTICKET for Friday', 'run:1', 1767225600000),
           ('tg:-1', 'TRAINTICKET budget notice', 'notice:budget', 1767225600000),
           ('tg:-1', 'Sent via ipc: TRAINTICKET reminder', 'ipc:family/req1', 1767225600000),
           ('tg:-1', 'TRAINTICKET run failed', 'run:1:failure', 1767225600000);",
    )
    .unwrap();
    let hits = search(&h, &["trainticket"]);
    let origins: Vec<&str> = hits.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(origins, ["reply", "reply"], "{hits:#?}");
    assert!(hits.iter().all(|x| x["sender"] == "assistant"));

    // An archive the agent wrote at compaction, plus things that must not be indexed.
    let conv = h.root.join("groups/family/conversations");
    std::fs::create_dir_all(&conv).unwrap();
    std::fs::write(
        conv.join("2026-02-01-101500.md"),
        "# Conversation archived\n\n## Summary\n\nThe WIFIPASSWORD is taped under the router.\n",
    )
    .unwrap();
    std::fs::write(conv.join("notes.txt"), "WIFIPASSWORD in a text file").unwrap();
    std::os::unix::fs::symlink(h.root.join("claw.toml"), conv.join("2026-02-02-000000.md"))
        .unwrap();
    h.claw().args(["search", "--reindex"]).assert().success();
    let hits = search(&h, &["wifipassword"]);
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0]["kind"], "archive");
    assert_eq!(hits[0]["group"], "family");
    assert_eq!(hits[0]["id"], "2026-02-01-101500.md");
    assert_eq!(
        hits[0]["at"].as_i64(),
        claw::infra::time::parse_rfc3339("2026-02-01T10:15:00Z")
    );
    assert!(
        search(&h, &["assistant_name"]).is_empty(),
        "the symlink was not followed"
    );
    // Re-indexing is idempotent; a changed file replaces its entry; a removed one is dropped.
    h.claw().args(["search", "--reindex"]).assert().success();
    assert_eq!(h.count("SELECT count(*) FROM archives"), 1);
    std::fs::write(
        conv.join("2026-02-01-101500.md"),
        "## Summary\n\nThe router moved; the NEWROUTER sits in the hall.\n",
    )
    .unwrap();
    h.claw().args(["search", "--reindex"]).assert().success();
    assert!(search(&h, &["wifipassword"]).is_empty());
    assert_eq!(search(&h, &["newrouter"]).len(), 1);
    std::fs::remove_file(conv.join("2026-02-01-101500.md")).unwrap();
    h.claw().args(["search", "--reindex"]).assert().success();
    assert!(search(&h, &["newrouter"]).is_empty());
    h.claw().args(["search", "--check"]).assert().success();
}

#[test]
fn the_index_stays_consistent_after_kill_9_during_ingest() {
    let h = TestHome::init();
    h.add_group("tg:-1", "family", &[]);
    let mut input = String::new();
    for i in 0..200_000 {
        input.push_str(&msg(
            "tg:-1",
            &format!("k{i}"),
            "tg:5",
            "Kim",
            &format!("killtest message {i} with a few words to index"),
            "2026-06-01T10:00:00Z",
        ));
        input.push('\n');
    }
    let mut child = h
        .claw_std()
        .arg("ingest")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    // Kill it once some batches are committed and more are on their way.
    let t = Instant::now();
    while h.count("SELECT count(*) FROM messages") < 8_000 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "ingest made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = writer.join();
    let stored = h.count("SELECT count(*) FROM messages");
    assert!(stored > 0 && stored < 200_000, "killed mid-way: {stored}");
    h.claw().args(["search", "--check"]).assert().success();
    let indexed = h.count("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'killtest'");
    assert_eq!(indexed, stored);
    let db = h.db();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn a_database_from_before_the_index_is_migrated_and_searchable() {
    let h = family_and_work();
    // Take the database back to schema 7: no index, no triggers, no archives table; then store
    // more rows the way an old binary would (no trigger to index them).
    h.db()
        .execute_batch(
            "DROP TRIGGER messages_fts_delete;
             DROP TRIGGER messages_fts_update; DROP TRIGGER outbox_fts_insert;
             DROP TRIGGER outbox_fts_delete; DROP TRIGGER outbox_fts_update_old;
             DROP TRIGGER outbox_fts_update_new; DROP TRIGGER archives_fts_insert;
             DROP TRIGGER archives_fts_delete; DROP TRIGGER archives_fts_update;
             DROP TABLE messages_fts; DROP TABLE outbox_fts; DROP TABLE archives_fts;
             DROP VIEW outbox_replies; DROP TABLE archives;
             INSERT INTO messages (chat_id, msg_id, sender, sender_name, text, sent_at, stored_at)
               VALUES ('tg:-1', 'old1', 'tg:55', 'Ana', 'the OLDSCHEMA message', 1, 1);
             INSERT INTO outbox (chat_id, text, origin, created_at)
               VALUES ('tg:-1', 'OLDSCHEMA reply', 'run:3', 1);
             PRAGMA user_version = 7;",
        )
        .unwrap();
    let hits = search(&h, &["oldschema"]);
    let kinds: Vec<&str> = hits.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 2, "{hits:#?}");
    assert!(kinds.contains(&"message") && kinds.contains(&"reply"));
    assert_eq!(
        search(&h, &["passport", "renewal", "--group", "family"])[0]["id"],
        "p1"
    );
    assert_eq!(
        h.count("PRAGMA user_version"),
        claw::infra::store::SCHEMA_VERSION
    );
    h.claw().args(["search", "--check"]).assert().success();
    // New rows after the migration are indexed by the triggers.
    h.ingest(&msg(
        "tg:-1",
        "new1",
        "tg:1",
        "X",
        "POSTMIGRATION text",
        "2026-12-01T00:00:00Z",
    ))
    .success();
    assert_eq!(search(&h, &["postmigration"]).len(), 1);
    h.claw().args(["search", "--check"]).assert().success();
}

#[test]
fn bad_search_input_gets_a_clear_error_and_exit_2() {
    let h = family_and_work();
    for (args, needle) in [
        (vec!["search", "***"], "no words"),
        (vec!["search", "x", "--since", "yesterday"], "not a date"),
        (
            vec!["search", "x", "--group", "nosuch"],
            "no group `nosuch`",
        ),
    ] {
        let out = h.claw().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = h.claw().args(["search"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// POST a body to the proxy's /search route and return status and body.
fn post(sock: &std::path::Path, body: &str) -> (u16, String) {
    let mut c = UnixStream::connect(sock).unwrap();
    write!(
        c,
        "POST http://claw/search HTTP/1.1\r\nhost: claw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn the_proxy_route_searches_only_the_runs_own_group_whatever_the_request_says() {
    let h = family_and_work();
    let home = claw::infra::paths::Home::new(h.root.clone());
    let sock = h.dir.path().join("proxy.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    let searcher = claw::steps::run_group::searcher_for(&home, "family");
    let cfg = claw::infra::proxy::ProxyConfig {
        socket_path: sock.clone(),
        anthropic: claw::infra::proxy::Upstream {
            base_url: "http://127.0.0.1:9".into(),
            api_key: None,
        },
        openai: claw::infra::proxy::Upstream {
            base_url: "http://127.0.0.1:9".into(),
            api_key: None,
        },
        egress_allow: vec![],
        folder: Some("family".into()),
        llm: claw::infra::proxy::LlmPolicy {
            provider: claw::infra::proxy::Provider::Anthropic,
            model: "m".into(),
            allowed_models: vec![],
            max_tokens: 1000,
            concurrency: 1,
            requests_per_run: 10,
        },
        asker: None,
        credentials: None,
        searcher: Some(searcher),
        mcp: vec![],
    };
    let _proxy = claw::infra::proxy::Proxy::start(cfg, tx).unwrap();

    let ask = |req: &SearchRequest| post(&sock, &serde_json::to_string(req).unwrap());
    let (status, body) = ask(&SearchRequest {
        query: "passport".into(),
        ..Default::default()
    });
    assert_eq!(status, 200, "{body}");
    let r: SearchResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(r.hits.len(), 2);
    assert!(r.hits.iter().all(|x| x.group.as_deref() == Some("family")));
    // Another group's words find nothing, by any query.
    for q in [
        "worksecret",
        "WORKSECRET merger confidential",
        "worksec*",
        "confidential OR passport",
    ] {
        let (status, body) = ask(&SearchRequest {
            query: q.into(),
            ..Default::default()
        });
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("WORKSECRET") && !body.contains("\"work\""),
            "{q}: {body}"
        );
    }
    // Naming the other group is refused; unknown fields (a forged asker) are refused.
    let (status, body) = ask(&SearchRequest {
        query: "passport".into(),
        group: Some("work".into()),
        ..Default::default()
    });
    assert_eq!(status, 400);
    assert!(body.contains("only its own history"), "{body}");
    let (status, _) = post(
        &sock,
        r#"{"query":"worksecret","folder":"work","asker":"main","is_main":true}"#,
    );
    assert_eq!(status, 400);
    // Bodies are bounded; only POST is served.
    // (The head alone announces it: the proxy answers before reading, then closes.)
    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(b"POST /search HTTP/1.1\r\nhost: claw\r\ncontent-length: 10000\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(b"GET /search HTTP/1.1\r\nhost: claw\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    // Each request is one event for the audit table, the query never in it.
    let events: Vec<_> = rx.try_iter().collect();
    assert!(
        events
            .iter()
            .all(|e| !format!("{e:?}").contains("passport"))
    );
    assert!(events.iter().any(|e| matches!(e, claw::infra::proxy::ProxyEvent::Local { path, status: 200, .. } if path == "/search")));
}
