//! A group's budget stops it mid-conversation, end to end with a real container: the first message
//! is answered and its usage recorded from what the upstream reported to the host proxy; that
//! spends the budget, so the chat and the main chat are told (once), the next model request is
//! refused by the proxy before it reaches the upstream, no new run starts for the group, and
//! another group keeps working.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::{FakeLlm, Reply};
use std::process::Stdio;
use std::time::{Duration, Instant};

const FAMILY: &str = "tg:-100";
const WORK: &str = "tg:-200";

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (requests, input, output) recorded for a group.
fn recorded(env: &Env, folder: &str) -> (i64, i64, i64) {
    env.db()
        .query_row(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0),
                    coalesce(sum(output_tokens), 0) FROM usage WHERE folder = ?1",
            [folder],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

#[test]
fn a_group_budget_stops_it_mid_conversation_and_other_groups_keep_working() {
    let llm = FakeLlm::start();
    let mut env = Env::new();
    env.anthropic_base = llm.url();
    env.extra_config = "[model]\nprovider = \"anthropic\"\nname = \"fake-model\"\n".into();
    env.write_config();
    // Keep the container waiting for a follow-up long enough to feed it one.
    let path = env.root.join("claw.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("idle_secs = 1\n", "idle_secs = 60\n")).unwrap();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-e2e-key");
    env.add_group(FAMILY, "family", &["--no-trigger"]);
    env.add_group(WORK, "work", &["--no-trigger"]);
    // The fake model reports 10 input and 5 output tokens per reply: one reply spends it.
    env.claw()
        .args(["group", "set", "family", "--budget-daily-tokens", "15"])
        .assert()
        .success();

    llm.push(Reply::text("Hello family.").when("first question"));
    env.say(FAMILY, "first question");
    let mut run = env
        .claw_std()
        .args(["run-group", "family"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the first answer", Duration::from_secs(120), || {
        env.outbox(FAMILY).iter().any(|t| t == "Hello family.")
    });
    // Recorded as the upstream reported it, while the run goes on.
    wait_until("usage recorded", Duration::from_secs(30), || {
        recorded(&env, "family") == (1, 10, 5)
    });
    // Spent: the chat and the owner are told, without waiting for the next request.
    wait_until("the budget notices", Duration::from_secs(30), || {
        env.outbox("cli:local").len() == 1 && env.outbox(FAMILY).len() == 2
    });

    // The follow-up is fed into the running container; its model request is refused.
    llm.push(Reply::text("This must never be sent.").when("second question"));
    env.say(FAMILY, "second question");
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "run-group did not end");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success(), "the agent ends its run on the refusal");
    assert_eq!(
        llm.requests().len(),
        1,
        "the refused request reached the upstream"
    );
    assert_eq!(llm.remaining(), 1);
    let refused: Vec<_> = env
        .audit("llm.request")
        .into_iter()
        .filter(|d| d["status"] == 402)
        .collect();
    assert_eq!(refused.len(), 1, "logs:\n{}", env.all_logs());
    let (_, error, _, _) = env.last_run("family");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("402") && error.contains("has used its 15 tokens for today"),
        "the agent passed the proxy's reason on: {error}"
    );
    assert_eq!(recorded(&env, "family"), (1, 10, 5), "nothing more counted");

    // Told once each, however often it is tried again.
    env.claw().args(["run-group", "family"]).assert().code(5);
    env.claw().arg("dispatch").assert().success();
    // The notice may come before or after the answer: the proxy reports usage as the reply
    // ends, the agent prints its result just after.
    let mut chat = env.outbox(FAMILY);
    chat.sort();
    assert_eq!(
        chat,
        [
            "Hello family.",
            "family has used its 15 tokens for today; it resumes at 00:00 or when the owner raises it."
        ]
    );
    let main = env.outbox("cli:local");
    assert_eq!(main.len(), 1, "{main:?}");
    assert!(
        main[0].starts_with("Budget: family has used its 15 tokens for today (15 tokens so far)")
            && main[0].contains("claw group set family --budget-daily-tokens"),
        "{main:?}"
    );
    let runs: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM runs WHERE folder = 'family' AND status = 'running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 0);

    // Another group is unaffected (and its run may close as soon as it is idle).
    std::fs::write(&path, text).unwrap();
    llm.push(Reply::text("Hello work.").when("work question"));
    env.say(WORK, "work question");
    env.claw().args(["run-group", "work"]).assert().success();
    assert_eq!(env.outbox(WORK), vec!["Hello work.".to_string()]);
    assert_eq!(recorded(&env, "work"), (1, 10, 5));
    let out = env
        .claw()
        .args(["usage", "--by", "group", "--json"])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["total"]["requests"], 2);
    assert_eq!(r["total"]["input_tokens"], 20);
    assert_eq!(r["unpriced_models"], serde_json::json!(["fake-model"]));
}
