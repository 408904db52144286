//! Approvals through the real binary and a real SQLite file: IPC acts that wait in place for the
//! owner's answer (typed in the main chat, pressed as a Telegram button against the fake Bot API,
//! or given at the terminal), denial, expiry, and that one approval never unlocks another act.

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
#[path = "support/home.rs"]
mod home;

use fake_telegram::{FakeTelegram, TOKEN};
use home::TestHome;
use serde_json::{Value, json};

const MAIN: &str = "tg:100";
const FAMILY: &str = "tg:-100";
const GRANDMA: &str = "tg:-200";

/// A home whose main chat is a Telegram private chat, with group `fam` asking before it
/// messages other chats, and a known chat `GRANDMA` it may ask to message.
fn setup(timeout_secs: u64) -> (TestHome, FakeTelegram) {
    let fake = FakeTelegram::start();
    let h = TestHome::new().with_log("info");
    h.claw()
        .args(["init", "--main-chat", MAIN])
        .assert()
        .success();
    let p = h.path("claw.toml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "timeout_secs = 600       # how long",
        &format!("timeout_secs = {timeout_secs}       # how long"),
    );
    std::fs::write(&p, text).unwrap();
    h.append_config(&format!(
        "[channels.telegram]\nenabled = true\napi_base = \"{}\"\n",
        fake.base
    ));
    h.set_secret("TELEGRAM_BOT_TOKEN", TOKEN);
    h.claw()
        .args([
            "group", "add", "--chat", FAMILY, "--folder", "fam", "--name", "Family",
        ])
        .assert()
        .success();
    h.claw()
        .args(["group", "set", "fam", "--approve", "send_message=ask"])
        .assert()
        .success();
    // A chat claw has seen (unregistered): main is told about it, which is fine here.
    h.claw()
        .args(["ingest", "--chat", GRANDMA, "--text", "hello"])
        .assert()
        .success();
    (h, fake)
}

/// Write an IPC request file as an agent would (temp name, then rename).
fn request(h: &TestHome, folder: &str, sub: &str, stem: &str, body: &Value) {
    let dir = h.path(&format!("ipc/{folder}/{sub}"));
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".tmp-{stem}"));
    std::fs::write(&tmp, body.to_string()).unwrap();
    std::fs::rename(tmp, dir.join(format!("{stem}.json"))).unwrap();
}

fn send_to_grandma(text: &str) -> Value {
    json!({"type": "send_message", "chat": GRANDMA, "text": text, "reason": "she asked for news"})
}

/// Run ipc-apply; it exits 4 when it rejected a request, which some tests expect.
fn ipc_apply(h: &TestHome) -> Value {
    let out = h.claw().args(["ipc-apply", "--json"]).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 4)),
        "ipc-apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reply(h: &TestHome, folder: &str, stem: &str) -> Value {
    let p = h.path(&format!("ipc/{folder}/replies/{stem}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn approvals(h: &TestHome) -> Vec<Value> {
    let out = h
        .claw()
        .args(["approvals", "--all", "--json"])
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

fn outbox(h: &TestHome, chat: &str) -> Vec<String> {
    let db = h.db();
    let mut st = db
        .prepare("SELECT text FROM outbox WHERE chat_id = ?1 ORDER BY id")
        .unwrap();
    st.query_map([chat], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn audit_kinds(h: &TestHome) -> Vec<String> {
    let db = h.db();
    let mut st = db
        .prepare("SELECT kind FROM audit WHERE kind LIKE 'approval.%' ORDER BY id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_message_to_another_chat_waits_for_yes_typed_in_the_main_chat() {
    let (h, fake) = setup(600);
    request(
        &h,
        "fam",
        "messages",
        "m1",
        &send_to_grandma("Lunch on Sunday?"),
    );
    let r = ipc_apply(&h);
    assert_eq!(
        (r["applied"].as_u64(), r["waiting"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    // The request waits in place with a pending reply naming its approval.
    assert!(h.path("ipc/fam/messages/m1.json").exists());
    let pending = reply(&h, "fam", "m1");
    assert_eq!(pending["pending"], true, "{pending}");
    let id = pending["approval_id"].as_i64().unwrap();
    // The card: what, which group, why, and how to answer.
    let card = outbox(&h, MAIN)
        .into_iter()
        .find(|t| t.starts_with(&format!("Approval {id}:")))
        .expect("card in the main chat");
    assert!(
        card.contains("Family wants to send a message to tg:-200"),
        "{card}"
    );
    assert!(card.contains("«Lunch on Sunday?»"), "{card}");
    assert!(card.contains("reason: «she asked for news»"), "{card}");
    assert!(card.contains(&format!("`yes {id}` or `no {id}`")), "{card}");
    assert!(outbox(&h, GRANDMA).is_empty());
    // A second pass neither applies it nor asks again.
    ipc_apply(&h);
    assert_eq!(approvals(&h).len(), 1);

    // "yes 42" from another chat is an ordinary message there, not an answer.
    fake.push_message(
        json!({"id": -100, "type": "supergroup", "title": "Family"}),
        json!({"id": 55, "first_name": "Ana"}),
        &format!("yes {id}"),
    );
    // The owner answers in the main chat.
    fake.push_message(
        json!({"id": 100, "type": "private", "first_name": "Owner"}),
        json!({"id": 100, "first_name": "Owner"}),
        &format!("yes {id}"),
    );
    h.claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .assert()
        .success();
    let stored_answers = h.count(&format!(
        "SELECT count(*) FROM messages WHERE chat_id = '{MAIN}' AND text = 'yes {id}'"
    ));
    assert_eq!(stored_answers, 0, "the main agent never sees the answer");
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM messages WHERE chat_id = '{FAMILY}' AND text = 'yes {id}'"
        )),
        1
    );
    let a = &approvals(&h)[0];
    assert_eq!(a["status"], "approved", "{a}");
    assert!(
        a["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("chat:tg:100:"),
        "{a}"
    );
    assert!(
        outbox(&h, MAIN)
            .iter()
            .any(|t| t.starts_with(&format!("Approved {id}: fam may send")))
    );

    let r = ipc_apply(&h);
    assert_eq!(r["applied"].as_u64(), Some(1), "{r}");
    assert_eq!(outbox(&h, GRANDMA), vec!["Lunch on Sunday?".to_string()]);
    assert_eq!(reply(&h, "fam", "m1")["ok"], true);
    assert!(!h.path("ipc/fam/messages/m1.json").exists());
    assert_eq!(
        audit_kinds(&h),
        vec!["approval.requested", "approval.approved"]
    );
}

#[test]
fn telegram_buttons_carry_the_nonce_and_only_the_main_chat_can_press_them() {
    let (h, fake) = setup(600);
    request(&h, "fam", "messages", "b1", &send_to_grandma("first"));
    ipc_apply(&h);
    let id = reply(&h, "fam", "b1")["approval_id"].as_i64().unwrap();
    h.claw().arg("deliver").assert().success();
    let card = fake
        .sent()
        .into_iter()
        .find(|m| {
            m["text"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("Approval {id}:"))
        })
        .expect("card sent");
    assert_eq!(card["chat_id"], "100");
    let buttons = card["reply_markup"]["inline_keyboard"][0]
        .as_array()
        .unwrap();
    let yes = buttons[0]["callback_data"].as_str().unwrap().to_string();
    let no = buttons[1]["callback_data"].as_str().unwrap().to_string();
    assert!(
        yes.len() <= 64 && yes.starts_with(&format!("ap:{id}:")),
        "{yes}"
    );
    assert!(no.ends_with(":n"), "{no}");

    let owner = json!({"id": 100, "first_name": "Owner"});
    let main_chat = json!({"id": 100, "type": "private", "first_name": "Owner"});
    // A forged press (right id, wrong nonce) and a press in another chat decide nothing.
    fake.push_callback(
        main_chat.clone(),
        owner.clone(),
        7,
        &format!("ap:{id}:0000000000000000:y"),
    );
    fake.push_callback(
        json!({"id": -100, "type": "supergroup", "title": "Family"}),
        json!({"id": 55, "first_name": "Ana"}),
        7,
        &yes,
    );
    h.claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .assert()
        .success();
    assert_eq!(approvals(&h)[0]["status"], "requested");
    let answers = fake.callback_answers();
    assert_eq!(answers.len(), 2, "every press is acknowledged: {answers:?}");
    assert!(
        answers[0]["text"].as_str().unwrap().contains("no approval"),
        "{answers:?}"
    );
    assert!(
        answers[1]["text"]
            .as_str()
            .unwrap()
            .contains("only in the main chat"),
        "{answers:?}"
    );

    // The owner's press approves; a second press says it is already decided.
    fake.push_callback(main_chat.clone(), owner.clone(), 7, &yes);
    fake.push_callback(main_chat, owner, 7, &no);
    h.claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .assert()
        .success();
    let a = &approvals(&h)[0];
    assert_eq!(
        (a["status"].as_str(), a["decided_by"].as_str()),
        (Some("approved"), Some("telegram:100"))
    );
    let answers = fake.callback_answers();
    assert!(
        answers[2]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Approved {id}")),
        "{answers:?}"
    );
    assert!(
        answers[3]["text"]
            .as_str()
            .unwrap()
            .contains("already approved"),
        "{answers:?}"
    );
    assert_eq!(answers[2]["callback_query_id"], "cbq-3");
    ipc_apply(&h);
    assert_eq!(outbox(&h, GRANDMA), vec!["first".to_string()]);
}

#[test]
fn one_approval_never_unlocks_another_act() {
    let (h, _fake) = setup(600);
    request(&h, "fam", "messages", "a", &send_to_grandma("act A"));
    request(&h, "fam", "messages", "b", &send_to_grandma("act B"));
    ipc_apply(&h);
    let ida = reply(&h, "fam", "a")["approval_id"].as_i64().unwrap();
    let idb = reply(&h, "fam", "b")["approval_id"].as_i64().unwrap();
    assert_ne!(ida, idb, "a row per act");
    h.claw()
        .args(["approve", &ida.to_string()])
        .assert()
        .success();
    ipc_apply(&h);
    assert_eq!(outbox(&h, GRANDMA), vec!["act A".to_string()]);
    assert!(h.path("ipc/fam/messages/b.json").exists(), "B still waits");
    assert_eq!(reply(&h, "fam", "b")["pending"], true);

    // The agent rewrites B after asking: the rewritten content is a new act with a new card, and
    // approving the old row does not send the new text.
    request(
        &h,
        "fam",
        "messages",
        "b",
        &send_to_grandma("act B, changed"),
    );
    ipc_apply(&h);
    let idb2 = reply(&h, "fam", "b")["approval_id"].as_i64().unwrap();
    assert_ne!(idb2, idb);
    h.claw()
        .args(["approve", &idb.to_string()])
        .assert()
        .success();
    ipc_apply(&h);
    assert_eq!(outbox(&h, GRANDMA), vec!["act A".to_string()]);
    h.claw()
        .args(["deny", &idb2.to_string()])
        .assert()
        .success();
    ipc_apply(&h);
    assert_eq!(outbox(&h, GRANDMA), vec!["act A".to_string()]);
    let r = reply(&h, "fam", "b");
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains(&format!("the owner denied it (approval {idb2})")),
        "{r}"
    );
    // The denied file went to ipc/errors with its reason, like any refusal.
    assert!(!h.path("ipc/fam/messages/b.json").exists());
    // A request the owner already answered cannot be answered again.
    let again = h.claw().args(["deny", &ida.to_string()]).assert().code(1);
    assert!(String::from_utf8_lossy(&again.get_output().stdout).contains("already approved"));
    h.claw().args(["approve", "9999"]).assert().code(2);
}

#[test]
fn an_unanswered_act_expires_denied_and_a_late_yes_changes_nothing() {
    let (h, _fake) = setup(1);
    // A non-main group scheduling a task, with the group's policy set to ask.
    h.claw()
        .args(["group", "set", "fam", "--approve", "schedule_task=ask"])
        .assert()
        .success();
    request(
        &h,
        "fam",
        "tasks",
        "t1",
        &json!({"type": "schedule_task", "prompt": "water the plants", "schedule_type": "interval",
                "schedule_value": "86400", "reason": "you asked me to remember"}),
    );
    ipc_apply(&h);
    let id = reply(&h, "fam", "t1")["approval_id"].as_i64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    ipc_apply(&h);
    let r = reply(&h, "fam", "t1");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("did not answer in time"),
        "{r}"
    );
    assert_eq!(h.count("SELECT count(*) FROM tasks"), 0);
    let late = h.claw().args(["approve", &id.to_string()]).assert().code(1);
    assert!(String::from_utf8_lossy(&late.get_output().stdout).contains("already expired"));
    assert_eq!(approvals(&h)[0]["status"], "expired");
    assert_eq!(
        audit_kinds(&h),
        vec!["approval.requested", "approval.expired"]
    );
    // Listing open approvals shows none, and says how to see the rest.
    let out = h.claw().arg("approvals").assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("no open approvals"));
}

#[test]
fn policies_are_set_per_group_and_deny_refuses_without_asking() {
    let (h, _fake) = setup(600);
    let bad = h
        .claw()
        .args(["group", "set", "fam", "--approve", "egress=perhaps"])
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&bad.get_output().stderr).contains("allow, deny or ask"));
    h.claw()
        .args([
            "group",
            "set",
            "fam",
            "--approve",
            "send_message=deny",
            "--approve",
            "egress=ask",
        ])
        .assert()
        .success();
    let show = h.claw().args(["group", "show", "fam"]).assert().success();
    let show = String::from_utf8_lossy(&show.get_output().stdout).to_string();
    assert!(show.contains("egress=ask, credential=allow, send_message=deny, add_mcp_server=ask, schedule_task=allow"), "{show}");
    request(&h, "fam", "messages", "d1", &send_to_grandma("nope"));
    ipc_apply(&h);
    let r = reply(&h, "fam", "d1");
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("may only message its own chat"),
        "{r}"
    );
    assert!(approvals(&h).is_empty(), "deny never asks");
    // Back to the built-in default (non-main: deny), and main's default (allow) never asks.
    h.claw()
        .args(["group", "set", "fam", "--approve", "send_message=default"])
        .assert()
        .success();
    request(
        &h,
        "main",
        "messages",
        "m1",
        &json!({"type": "send_message", "chat": GRANDMA, "text": "from main"}),
    );
    ipc_apply(&h);
    assert_eq!(outbox(&h, GRANDMA), vec!["from main".to_string()]);
    assert!(approvals(&h).is_empty());
}

#[test]
fn an_answer_claw_itself_sent_is_not_an_answer() {
    let (h, _fake) = setup(600);
    request(&h, "fam", "messages", "e1", &send_to_grandma("echo test"));
    ipc_apply(&h);
    let id = reply(&h, "fam", "e1")["approval_id"].as_i64().unwrap();
    // The main agent made claw send `yes ID` to the main chat; WhatsApp-like channels show it
    // back as the owner's own message, under the id the channel gave it when it was sent.
    h.db()
        .execute(
            "INSERT INTO outbox (chat_id, text, origin, status, created_at, channel_msg_id)
             VALUES (?1, ?2, 'ipc:main/x', 'sent', 0, '5001,5002')",
            rusqlite::params![MAIN, format!("yes {id}")],
        )
        .unwrap();
    let echo = json!({"chat": MAIN, "id": "5002", "sender": "tg:100", "text": format!("yes {id}"),
                      "from_me": true});
    h.claw()
        .arg("ingest")
        .write_stdin(format!("{echo}\n"))
        .assert()
        .success();
    assert_eq!(approvals(&h)[0]["status"], "requested");
    // The owner's own typed answer (a different message id) still counts.
    let typed = json!({"chat": MAIN, "id": "5003", "sender": "tg:100", "text": format!("no {id}")});
    let out = h
        .claw()
        .arg("ingest")
        .write_stdin(format!("{typed}\n"))
        .assert()
        .success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("approval answers 1"));
    assert_eq!(approvals(&h)[0]["status"], "denied");
}

#[test]
fn a_flood_of_requests_sends_at_most_max_per_run_cards() {
    let (h, _fake) = setup(600);
    for i in 0..25 {
        request(
            &h,
            "fam",
            "messages",
            &format!("f{i:02}"),
            &send_to_grandma(&format!("spam {i}")),
        );
    }
    ipc_apply(&h);
    let cards = outbox(&h, MAIN)
        .into_iter()
        .filter(|t| t.starts_with("Approval "))
        .count();
    assert_eq!(cards, 20, "approvals.max_per_run");
    let r = reply(&h, "fam", "f24");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("already wait for the owner"),
        "{r}"
    );
}

#[test]
fn yes_typed_in_claw_chat_answers_without_waking_the_agent() {
    let h = TestHome::init().with_log("info"); // main chat: the terminal (cli:local)
    h.set_secret("ANTHROPIC_API_KEY", "sk-ant-unused"); // chat checks for it; no model is called
    h.claw()
        .args([
            "group", "add", "--chat", FAMILY, "--folder", "fam", "--name", "Family",
        ])
        .assert()
        .success();
    h.claw()
        .args(["group", "set", "fam", "--approve", "send_message=ask"])
        .assert()
        .success();
    h.claw()
        .args(["ingest", "--chat", GRANDMA, "--text", "hello"])
        .assert()
        .success();
    request(&h, "fam", "messages", "c1", &send_to_grandma("via chat"));
    ipc_apply(&h);
    let id = reply(&h, "fam", "c1")["approval_id"].as_i64().unwrap();
    let out = h
        .claw()
        .args(["chat", "-m", &format!("yes {id}")])
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .success();
    let said = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        said.contains(&format!("Approved {id}: fam may send")),
        "{said}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM runs"),
        0,
        "no agent run for an answer"
    );
    ipc_apply(&h);
    assert_eq!(outbox(&h, GRANDMA), vec!["via chat".to_string()]);
}
