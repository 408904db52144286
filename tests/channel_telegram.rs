//! Telegram against a fake Bot API on loopback: exactly-once ingest across restarts and crashes,
//! mention-as-trigger, 4096 splitting, 429 retry-after, and the one-a-day unknown-chat notice.

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
#[path = "support/home.rs"]
mod home;

use fake_telegram::{FakeTelegram, TOKEN};
use home::TestHome;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn setup() -> (TestHome, FakeTelegram) {
    let fake = FakeTelegram::start();
    let h = TestHome::init().with_log("info");
    h.append_config(&format!(
        "[channels.telegram]\nenabled = true\napi_base = \"{}\"\n",
        fake.base
    ));
    h.set_secret("TELEGRAM_BOT_TOKEN", TOKEN);
    (h, fake)
}

fn family() -> Value {
    json!({"id": -100, "type": "supergroup", "title": "Family"})
}

fn ana() -> Value {
    json!({"id": 55, "first_name": "Ana"})
}

fn ingest(h: &TestHome) -> String {
    let out = h
        .claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .assert()
        .success();
    String::from_utf8_lossy(&out.get_output().stdout).to_string()
}

fn offset(h: &TestHome) -> i64 {
    h.db()
        .query_row(
            "SELECT value FROM channel_state WHERE channel = 'telegram' AND key = 'offset'",
            [],
            |r| r.get::<_, String>(0),
        )
        .map(|s| s.parse().unwrap())
        .unwrap_or(0)
}

fn stored(h: &TestHome, chat: &str) -> i64 {
    h.count(&format!(
        "SELECT count(*) FROM messages WHERE chat_id = '{chat}'"
    ))
}

#[test]
fn long_poll_stores_each_update_exactly_once_across_restarts() {
    let (h, fake) = setup();
    h.add_group("tg:-100", "family", &[]);
    for i in 0..150 {
        fake.push_message(family(), ana(), &format!("message {i}"));
    }
    let out = ingest(&h);
    assert!(out.contains("150 update(s), stored 150"), "{out}");
    assert_eq!(offset(&h), 151);
    assert_eq!(
        fake.offsets(),
        vec![0, 101],
        "a full batch is followed by a drain call"
    );

    // A restart asks from the stored offset and finds nothing new.
    let out = ingest(&h);
    assert!(out.contains("0 update(s)"), "{out}");
    assert_eq!(*fake.offsets().last().unwrap(), 151);

    // Telegram serving confirmed updates again (a lost confirmation) doubles nothing.
    fake.serve_again_from(100);
    let out = ingest(&h);
    assert!(
        out.contains("51 update(s), stored 0, duplicates 51"),
        "{out}"
    );
    assert_eq!(stored(&h, "tg:-100"), 150);
    assert_eq!(offset(&h), 151);
}

#[test]
fn a_crash_between_fetch_and_commit_refetches_without_loss_or_doubling() {
    let (h, fake) = setup();
    h.add_group("tg:-100", "family", &[]);
    for i in 0..40 {
        fake.push_message(family(), ana(), &format!("first {i}"));
    }
    ingest(&h);
    for i in 0..60 {
        fake.push_message(family(), ana(), &format!("second {i}"));
    }
    // Hold the database's write lock so the poller fetches the batch and then blocks on its
    // commit; kill it there.
    let blocker = h.db();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let calls_before = fake.get_updates_calls();
    let mut child = h
        .claw_std()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.get_updates_calls() == calls_before {
        assert!(Instant::now() < deadline, "poller never fetched");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "poller should be blocked on its commit"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        stored(&h, "tg:-100"),
        40,
        "nothing of the killed batch was stored"
    );
    assert_eq!(
        offset(&h),
        41,
        "the offset did not move without its messages"
    );

    let out = ingest(&h);
    assert!(
        out.contains("60 update(s), stored 60, duplicates 0"),
        "{out}"
    );
    assert_eq!(
        fake.offsets().iter().filter(|&&o| o == 41).count(),
        2,
        "the batch was fetched again"
    );
    assert_eq!(stored(&h, "tg:-100"), 100);
    assert_eq!(
        h.count("SELECT count(DISTINCT text) FROM messages WHERE chat_id = 'tg:-100'"),
        100
    );
}

#[test]
fn killed_while_waiting_on_the_network_loses_nothing() {
    let (h, fake) = setup();
    h.add_group("tg:-100", "family", &[]);
    for i in 0..250 {
        fake.push_message(family(), ana(), &format!("m{i}"));
    }
    // First batch answers, the drain call hangs: the process is killed mid-poll.
    fake.stall_get_updates_from(1);
    let mut child = h
        .claw_std()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.get_updates_calls() < 2 {
        assert!(
            Instant::now() < deadline,
            "poller never made its second call"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(stored(&h, "tg:-100"), 100, "the first batch was committed");
    assert_eq!(offset(&h), 101);
    fake.unstall();
    let out = ingest(&h);
    assert!(
        out.contains("150 update(s), stored 150, duplicates 0"),
        "{out}"
    );
    assert_eq!(stored(&h, "tg:-100"), 250);
}

#[test]
fn bot_mention_at_the_start_becomes_the_trigger() {
    let (h, fake) = setup();
    h.add_group("tg:-100", "family", &[]);
    h.claw()
        .args([
            "group",
            "add",
            "--chat",
            "tg:-300",
            "--folder",
            "work",
            "--trigger",
            "@Max",
        ])
        .assert()
        .success();
    fake.push_message(family(), ana(), "@Claw_Test_Bot what's for dinner?");
    fake.push_message(family(), ana(), "tell @claw_test_bot later");
    fake.push_message(
        json!({"id": -300, "type": "group", "title": "Work"}),
        ana(),
        "@claw_test_bot status",
    );
    ingest(&h);
    let db = h.db();
    let texts: Vec<String> = db
        .prepare("SELECT text FROM messages ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        texts,
        [
            "@Andy what's for dinner?",
            "tell @claw_test_bot later",
            "@Max status"
        ]
    );
}

#[test]
fn replies_captions_and_textless_updates() {
    let (h, fake) = setup();
    h.add_group("tg:-100", "family", &[]);
    fake.push(|id| json!({"update_id": id, "message": {"message_id": 10, "date": 1, "chat": family(), "from": ana(),
        "caption": "our cat", "photo": [{"file_id": "p"}]}}));
    fake.push(|id| json!({"update_id": id, "message": {"message_id": 11, "date": 2, "chat": family(), "from": ana(),
        "text": "agreed", "reply_to_message": {"message_id": 10, "date": 1, "chat": family(), "from": ana(), "caption": "our cat"}}}));
    fake.push(|id| json!({"update_id": id, "message": {"message_id": 12, "date": 3, "chat": family(), "from": ana(),
        "sticker": {"file_id": "s"}}}));
    let out = h
        .claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        stdout.contains("3 update(s), stored 2") && stdout.contains("skipped 1"),
        "{stdout}"
    );
    assert!(
        stderr.contains("telegram update skipped") && stderr.contains("no text, caption or file"),
        "{stderr}"
    );
    let (text, reply_text, reply_sender): (String, String, String) = h
        .db()
        .query_row(
            "SELECT text, reply_to_text, reply_to_sender FROM messages WHERE msg_id = '11'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (text.as_str(), reply_text.as_str(), reply_sender.as_str()),
        ("agreed", "our cat", "Ana")
    );
    assert_eq!(stored(&h, "tg:-100"), 2);
}

#[test]
fn unknown_chats_get_one_notice_to_main_not_one_per_message() {
    let (h, fake) = setup();
    let stranger = json!({"id": -200, "type": "group", "title": "Book Club"});
    for i in 0..3 {
        fake.push_message(stranger.clone(), ana(), &format!("hello {i}"));
    }
    fake.push_message(
        json!({"id": 77, "type": "private", "first_name": "Eve"}),
        json!({"id": 77, "first_name": "Eve"}),
        "let me in",
    );
    let out = ingest(&h);
    assert!(
        out.contains("unregistered 4") && out.contains("notices 2"),
        "{out}"
    );
    for i in 0..5 {
        fake.push_message(stranger.clone(), ana(), &format!("again {i}"));
    }
    let out = ingest(&h);
    assert!(
        out.contains("unregistered 5") && out.contains("notices 0"),
        "{out}"
    );

    assert_eq!(
        h.count("SELECT count(*) FROM messages"),
        0,
        "strangers' text is never stored"
    );
    let db = h.db();
    let notices: Vec<(String, String)> = db
        .prepare("SELECT chat_id, text FROM outbox WHERE origin LIKE 'notice:unknown-chat:%' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(notices.len(), 2);
    assert!(
        notices.iter().all(|(chat, _)| chat == "cli:local"),
        "notices go to main's chat"
    );
    let about = |needle: &str| {
        notices
            .iter()
            .find(|(_, t)| t.contains(needle))
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    let club = about("tg:-200");
    assert!(
        club.contains("\"Book Club\" (\"tg:-200\") has a message from \"Ana\" (\"tg:55\")"),
        "{club}"
    );
    assert!(
        club.contains("claw group add --chat tg:-200 --folder book-club"),
        "{club}"
    );
    let eve = about("tg:77");
    assert!(
        eve.contains("\"Eve\" (\"tg:77\") sent a private telegram message"),
        "{eve}"
    );
    assert!(
        eve.contains("claw group add --chat tg:77 --folder eve"),
        "{eve}"
    );

    // The suggested command works, and after it the chat's messages are stored.
    h.add_group("tg:-200", "book-club", &[]);
    fake.push_message(stranger, ana(), "now I'm in");
    let out = ingest(&h);
    assert!(out.contains("stored 1"), "{out}");
}

fn enqueue(h: &TestHome, chat: &str, text: &str) -> i64 {
    let home = claw::infra::paths::Home::new(&h.root);
    let store = claw::infra::store::Store::open(&home).unwrap();
    claw::infra::store::outbox::enqueue(&store.conn, chat, text, "test").unwrap()
}

#[test]
fn long_replies_are_split_at_paragraphs_and_sent_as_html() {
    let (h, fake) = setup();
    let paras: Vec<String> = (0..5)
        .map(|i| format!("**Part {i}** {}", "word & <tag> ".repeat(150)))
        .collect();
    let text = paras.join("\n\n");
    assert!(text.chars().count() > 8192);
    let id = enqueue(&h, "tg:-100", &text);
    h.claw()
        .args(["deliver", "--channel", "tg"])
        .assert()
        .success();
    let sent = fake.sent();
    assert!(sent.len() >= 3, "{} pieces", sent.len());
    for m in &sent {
        assert_eq!(m["chat_id"], "-100");
        assert_eq!(m["parse_mode"], "HTML");
        let t = m["text"].as_str().unwrap();
        assert!(!t.contains("<tag>") && t.contains("&lt;tag&gt;"), "escaped");
        let visible = t
            .replace("<b>", "")
            .replace("</b>", "")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        assert!(visible.encode_utf16().count() <= 4096);
        assert!(
            t.starts_with("<b>Part"),
            "pieces start at paragraph boundaries: {}",
            &t[..20]
        );
    }
    let all: String = sent
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("");
    for i in 0..5 {
        assert_eq!(all.matches(&format!("<b>Part {i}</b>")).count(), 1);
    }
    let (status, msg_ids): (String, String) = h
        .db()
        .query_row(
            "SELECT status, channel_msg_id FROM outbox WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "sent");
    assert_eq!(msg_ids.split(',').count(), sent.len());
}

#[test]
fn rate_limit_retry_after_is_honoured() {
    let (h, fake) = setup();
    let id = enqueue(&h, "tg:-100", "hello");
    fake.script_sends(&[Some(2)]);
    let before = claw::infra::time::now_ms();
    h.claw()
        .args(["deliver", "--channel", "tg"])
        .assert()
        .code(1);
    let (status, next, err): (String, i64, String) = h
        .db()
        .query_row(
            "SELECT status, next_attempt_at, last_error FROM outbox WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(status, "pending");
    assert!(err.contains("retry after 2s"), "{err}");
    let wait = next - before;
    assert!(
        (1_900..=3_000).contains(&wait),
        "retry scheduled {wait} ms later, not the 5 s default backoff"
    );
    // Not due yet: a deliver right away sends nothing.
    h.claw()
        .args(["deliver", "--channel", "tg"])
        .assert()
        .success();
    assert!(fake.sent().is_empty());
    std::thread::sleep(Duration::from_millis(
        (next - claw::infra::time::now_ms()).max(0) as u64 + 100,
    ));
    h.claw()
        .args(["deliver", "--channel", "tg"])
        .assert()
        .success();
    assert_eq!(fake.sent().len(), 1);
    assert_eq!(fake.sent()[0]["text"], "hello");
}

#[test]
fn a_rate_limit_mid_message_is_waited_out_without_resending_pieces() {
    let (h, fake) = setup();
    let text = format!(
        "{}\n\n{}\n\n{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(4000)
    );
    enqueue(&h, "tg:-100", &text);
    fake.script_sends(&[None, Some(1)]);
    h.claw()
        .args(["deliver", "--channel", "tg"])
        .assert()
        .success();
    let firsts: Vec<char> = fake
        .sent()
        .iter()
        .map(|m| m["text"].as_str().unwrap().chars().next().unwrap())
        .collect();
    assert_eq!(firsts, ['a', 'b', 'c']);
}

#[test]
fn typing_indicator_and_token_never_in_logs() {
    let (h, fake) = setup();
    let config = claw::infra::config::Config::load(&h.path("claw.toml")).unwrap();
    let secrets = claw::infra::secrets::Secrets::load(&h.path("secrets.env")).unwrap();
    claw::channels::typing(&config, &secrets, "tg:-100");
    claw::channels::typing(&config, &secrets, "wa:1@s.whatsapp.net");
    assert_eq!(
        fake.actions(),
        vec![json!({"chat_id": "-100", "action": "typing"})]
    );

    // A dead API base: the error names the problem but never the token.
    let h2 = TestHome::init().with_log("info");
    h2.append_config("[channels.telegram]\napi_base = \"http://127.0.0.1:9\"\n");
    h2.set_secret("TELEGRAM_BOT_TOKEN", TOKEN);
    let out = h2
        .claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .env("CLAW_LOG", "trace")
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(stderr.contains("getUpdates failed"), "{stderr}");
    assert!(!stderr.contains("TEST-token"), "token leaked: {stderr}");
}
