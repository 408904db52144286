//! Failures are never silent: a run that cannot start tells its chat (once) and main (when it
//! persists); a delivery that keeps failing is told to the agent in its next prompt and, once
//! given up, to main; messages left waiting are flagged by `claw status --problems`,
//! `claw doctor` and the timer's own log. Real runtime and image, real fake Bot API.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_telegram.rs"]
mod fake_telegram;

use e2e::Env;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

/// Answers each prompt with the prompt itself, so a test can read what the agent was told.
const ECHO_PROMPT: &str = r#"#!/bin/bash
while IFS= read -r line; do
  case "$(jq -r .type <<<"$line")" in
    start) jq -cn --arg t "$(jq -r .prompt <<<"$line")" '{type:"result", text:("PROMPT " + $t)}'; echo '{"type":"idle"}' ;;
    message) echo '{"type":"idle"}' ;;
    close) exit 0 ;;
  esac
done
"#;

/// A home with group g1 on chat fx:1 whose channel sends with `send_script` (a bash body).
fn setup(send_script: &str) -> Env {
    let mut env = Env::new();
    let script = env.dir.path().join("send.sh");
    std::fs::write(&script, format!("#!/bin/bash\n{send_script}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.extra_config = format!("[channels.fx]\nsend_command = [\"{}\"]\n", script.display());
    env.add_group("fx:1", "g1", &["--no-trigger"]);
    env.install_probe("g1", ECHO_PROMPT);
    env
}

fn problems(env: &Env) -> (i32, Vec<Value>) {
    let out = env
        .claw_std()
        .args(["status", "--problems", "--json"])
        .output()
        .unwrap();
    let v: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), v)
}

fn run_group(env: &Env, path: Option<&str>) -> i32 {
    let mut c = env.claw_std();
    c.args(["run-group", "g1"]);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().unwrap().status.code().unwrap()
}

#[test]
fn a_run_without_a_runtime_tells_the_chat_once_then_main_and_keeps_the_message() {
    let env = setup("cat >/dev/null");
    env.say("fx:1", "hello there");
    for attempt in 1..=4 {
        assert_eq!(
            run_group(&env, Some("/nonexistent")),
            6,
            "attempt {attempt}"
        );
        if attempt == 1 {
            let status: Value = serde_json::from_slice(
                &env.claw_std()
                    .args(["status", "--json"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap();
            let why = status["groups"][1]["reason"].as_str().unwrap();
            assert!(
                why.starts_with("could not start: the container runtime is not working")
                    && why.contains("claw doctor"),
                "{status}"
            );
        }
        env.db()
            .execute(
                "UPDATE runs SET retry_at = 0 WHERE retry_at IS NOT NULL",
                [],
            )
            .unwrap();
        let chat = env.outbox("fx:1");
        assert_eq!(
            chat.len(),
            1,
            "the chat is told once, not per attempt: {chat:?}"
        );
        assert!(
            chat[0].contains("the container runtime is not working")
                && chat[0].contains("claw doctor"),
            "{chat:?}"
        );
        let main = env.outbox("cli:local");
        if attempt < 3 {
            assert!(main.is_empty(), "main told too early: {main:?}");
        } else {
            assert_eq!(main.len(), 1, "{main:?}");
            assert!(
                main[0].contains("g1") && main[0].contains("claw doctor"),
                "{main:?}"
            );
        }
    }
    // Past max_attempts (3) a run that never started is still not given up: the message waits.
    let (status, error, retry_at, attempt) = env.last_run("g1");
    assert_eq!(status, "failed");
    assert!(
        attempt >= 4 && retry_at.is_some(),
        "given up after {attempt}"
    );
    assert!(error.unwrap().contains("runtime"));
    assert_eq!(env.cursor("g1"), 0);
    let (code, rows) = problems(&env);
    assert_eq!(code, 1);
    let failed = rows
        .iter()
        .find(|p| p["kind"] == "run_failed" && p["group"] == "g1")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(failed["detail"].as_str().unwrap().contains("runtime"));
    // With the runtime back, the kept message is answered.
    assert_eq!(run_group(&env, None), 0, "{}", env.all_logs());
    let chat = env.outbox("fx:1");
    assert!(chat.last().unwrap().contains("hello there"), "{chat:?}");
}

#[test]
fn a_missing_image_is_named_with_the_command_that_fixes_it() {
    let env = setup("cat >/dev/null");
    let cfg = std::fs::read_to_string(env.root.join("claw.toml"))
        .unwrap()
        .replace(&e2e::image(), "localhost/claw-no-such-image:gone");
    std::fs::write(env.root.join("claw.toml"), cfg).unwrap();
    env.say("fx:1", "anyone?");
    assert_eq!(run_group(&env, None), 6);
    let chat = env.outbox("fx:1");
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert!(
        chat[0].contains("container image is missing") && chat[0].contains("claw image build"),
        "{chat:?}"
    );
    let status: Value = serde_json::from_slice(
        &env.claw_std()
            .args(["status", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let g1 = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["folder"] == "g1")
        .unwrap();
    assert!(
        g1["last_run"]["error"]
            .as_str()
            .unwrap()
            .contains("image not known"),
        "{g1}"
    );
}

#[test]
fn a_failing_delivery_is_told_to_the_agent_and_to_main_after_the_last_retry() {
    let env = setup("echo 'channel down' >&2; exit 1");
    env.say("fx:1", "first question");
    assert_eq!(run_group(&env, None), 0, "{}", env.all_logs());
    // Deliver until the answer is given up (10 attempts, backoff skipped).
    for _ in 0..12 {
        env.db()
            .execute("UPDATE outbox SET next_attempt_at = 0", [])
            .unwrap();
        env.claw_std().args(["deliver"]).output().unwrap();
    }
    let failed: (String, String) = env
        .db()
        .query_row(
            "SELECT status, last_error FROM outbox WHERE chat_id = 'fx:1' ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(failed.0, "failed");
    assert!(failed.1.contains("channel down"), "{failed:?}");
    let main = env.outbox("cli:local");
    assert_eq!(main.len(), 1, "{main:?}");
    assert!(main[0].contains("could not be delivered") && main[0].contains("channel down"));
    let (_, rows) = problems(&env);
    assert!(rows.iter().any(|p| p["kind"] == "undelivered"), "{rows:?}");
    // The next run's prompt tells the agent, once.
    env.say("fx:1", "second question");
    assert_eq!(run_group(&env, None), 0, "{}", env.all_logs());
    let prompt = env
        .db()
        .query_row(
            "SELECT text FROM outbox WHERE chat_id = 'fx:1' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    assert!(
        prompt.contains("<delivery_problems>")
            && prompt.contains("could not be delivered and was given up: ")
            && prompt.contains("channel down")
            && prompt.contains("It began: \"PROMPT"),
        "{prompt}"
    );
    env.say("fx:1", "third question");
    assert_eq!(run_group(&env, None), 0);
    let third = env.outbox("fx:1").pop().unwrap();
    assert!(third.contains("third question"), "{third}");
    // The second answer was never tried (no deliver since), so only the first was news.
    assert!(
        !third.contains("<delivery_problems>"),
        "told twice: {third}"
    );
}

#[test]
fn bot_api_500s_are_retried_listed_and_finally_told_to_main() {
    let fake = fake_telegram::FakeTelegram::start();
    let env = setup("cat >/dev/null");
    let cfg = format!(
        "{}\n[channels.telegram]\nenabled = true\napi_base = \"{}\"\n",
        std::fs::read_to_string(env.root.join("claw.toml")).unwrap(),
        fake.base
    );
    std::fs::write(env.root.join("claw.toml"), cfg).unwrap();
    env.set_secret("TELEGRAM_BOT_TOKEN", fake_telegram::TOKEN);
    env.claw()
        .args([
            "group",
            "add",
            "--chat",
            "tg:-100",
            "--folder",
            "fam",
            "--no-trigger",
        ])
        .assert()
        .success();
    let db = env.db();
    db.execute(
        "INSERT INTO outbox (chat_id, text, origin, created_at, next_attempt_at) VALUES ('tg:-100', 'dinner at 8', 'run:1', CAST(strftime('%s','now') AS INTEGER) * 1000, 0)",
        [],
    )
    .unwrap();
    fake.fail_sends(100);
    for i in 0..10 {
        db.execute("UPDATE outbox SET next_attempt_at = 0", [])
            .unwrap();
        env.claw_std()
            .args(["deliver", "--channel", "tg"])
            .output()
            .unwrap();
        if i == 2 {
            let (_, rows) = problems(&env);
            let r = rows
                .iter()
                .find(|p| p["kind"] == "delivery_retrying")
                .unwrap_or_else(|| panic!("{rows:?}"));
            assert!(r["detail"].as_str().unwrap().contains("500"), "{r}");
        }
    }
    let status: String = db
        .query_row(
            "SELECT status FROM outbox WHERE chat_id = 'tg:-100'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "failed");
    assert!(fake.sent().is_empty());
    let main = env.outbox("cli:local");
    assert_eq!(main.len(), 1, "{main:?}");
    assert!(main[0].contains("dinner at 8"), "{main:?}");
}

#[test]
fn a_message_left_waiting_is_flagged_by_status_doctor_and_the_tick_log() {
    let env = setup("cat >/dev/null");
    let cfg = std::fs::read_to_string(env.root.join("claw.toml"))
        .unwrap()
        .replace("[limits]\n", "[limits]\nstale_after_secs = 1\n");
    std::fs::write(env.root.join("claw.toml"), cfg).unwrap();
    env.say("fx:1", "is anyone there");
    // Held: a failed run with its retry far in the future, nothing running.
    assert_eq!(run_group(&env, Some("/nonexistent")), 6);
    env.db()
        .execute(
            "UPDATE runs SET retry_at = ?1",
            [claw::infra::time::now_ms() + 3_600_000],
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    let (code, rows) = problems(&env);
    assert_eq!(code, 1);
    let w = rows
        .iter()
        .find(|p| p["kind"] == "waiting" && p["group"] == "g1")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(
        w["detail"]
            .as_str()
            .unwrap()
            .contains("1 message(s) waiting"),
        "{w}"
    );
    let doctor = env.claw_std().args(["doctor", "--json"]).output().unwrap();
    let d = String::from_utf8_lossy(&doctor.stdout);
    assert!(d.contains("\"work\"") && d.contains("waiting since"), "{d}");
    let tick = env
        .claw_std()
        .arg("tick")
        .env("CLAW_LOG", "warn")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&tick.stderr);
    assert!(log.contains("g1") && log.contains("waiting since"), "{log}");
    // At most once a minute: the next tick does not repeat it.
    let again = env
        .claw_std()
        .arg("tick")
        .env("CLAW_LOG", "warn")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&again.stderr).contains("waiting since"));
}
