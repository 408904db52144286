//! Scheduled tasks with a check command (issue 11): the check runs in the group's container
//! first; the model is woken only when it exits 0 and prints something, and then gets what it
//! printed. A check that says "nothing" (no output, or exit 1) costs no model request; a check
//! that fails is recorded and told to the chat, again without the model. The check has no way
//! out: its sandbox holds no proxy socket.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::{FakeLlm, Reply};
use std::time::Duration;

fn setup(llm: &FakeLlm) -> Env {
    let mut env = Env::new();
    env.anthropic_base = llm.url();
    env.extra_config = "[model]\nprovider = \"anthropic\"\nname = \"fake-model\"\n".into();
    env.write_config();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-check");
    env.add_group("fx:1", "g1", &["--no-trigger"]);
    env
}

/// Add a task for g1 with this check; returns its id.
fn add_task(env: &Env, check: &str, extra: &[&str]) -> i64 {
    let out = env
        .claw()
        .args([
            "task",
            "add",
            "--group",
            "g1",
            "--prompt",
            "Summarise the new mail",
            "--every",
            "3600",
            "--check",
            check,
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// Run the task now, as a due task would run; returns the newest task run (status, result, error).
fn run_task(env: &Env, id: i64) -> (String, Option<String>, Option<String>) {
    let _ = env
        .claw()
        .args(["run-group", "g1", "--task", &id.to_string()])
        .output()
        .unwrap();
    env.db()
        .query_row(
            "SELECT status, result, error FROM task_runs WHERE task_id = ?1 ORDER BY id DESC LIMIT 1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

#[test]
fn a_check_that_prints_nothing_never_reaches_the_model() {
    let llm = FakeLlm::start();
    llm.push(Reply::text("should never be asked"));
    let env = setup(&llm);
    // Exit 0, nothing printed.
    let quiet = add_task(&env, "true", &[]);
    let (status, result, _) = run_task(&env, quiet);
    assert_eq!(status, "succeeded");
    assert_eq!(result.as_deref(), Some("skipped: check printed nothing"));
    // Exit 1: nothing to do, whatever it printed.
    let no = add_task(&env, "echo 'no new mail'; exit 1", &[]);
    let (status, result, _) = run_task(&env, no);
    assert_eq!(status, "succeeded");
    assert_eq!(
        result.as_deref(),
        Some("skipped: check exited 1 (nothing to do)")
    );
    // The check has no way out: no proxy socket in its sandbox, no network.
    let out = add_task(
        &env,
        "test -S /run/claw/proxy.sock && echo socket; curl -s -m 3 http://1.1.1.1 >/dev/null && echo net; true",
        &[],
    );
    let (status, result, _) = run_task(&env, out);
    assert_eq!(
        (status.as_str(), result.as_deref()),
        ("succeeded", Some("skipped: check printed nothing")),
        "the check could reach the proxy or the network; logs:\n{}",
        env.all_logs()
    );
    // A failing check: recorded as failed, the chat told, still no model.
    let broken = add_task(&env, "echo oops >&2; exit 3", &[]);
    let (status, _, error) = run_task(&env, broken);
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.contains("exit code 3") && error.contains("oops"),
        "{error}"
    );
    assert!(
        env.outbox("fx:1")
            .iter()
            .any(|t| t.contains(&format!("Scheduled task {broken} did not run"))),
        "{:?}",
        env.outbox("fx:1")
    );
    // A second failure within the day does not tell the chat again.
    run_task(&env, broken);
    let told = env
        .outbox("fx:1")
        .iter()
        .filter(|t| t.contains("did not run"))
        .count();
    assert_eq!(told, 1);
    // A check over its time limit is stopped and recorded as failed.
    let slow = add_task(&env, "sleep 30", &["--check-timeout", "2"]);
    let (status, _, error) = run_task(&env, slow);
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("2s limit"));

    assert!(
        llm.requests().is_empty(),
        "the model was asked {} time(s)",
        llm.requests().len()
    );
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    assert_eq!(
        env.db()
            .query_row("SELECT count(*) FROM containers", [], |r| r
                .get::<_, i64>(0))
            .unwrap(),
        0
    );
}

#[test]
fn a_check_that_prints_wakes_the_model_with_its_output() {
    let llm = FakeLlm::start();
    llm.push(Reply::text("You have 2 new mails: from Ana and from Bo."));
    let env = setup(&llm);
    std::fs::write(
        env.group_dir("g1").join("inbox.txt"),
        "From: Ana <a@x>\nFrom: Bo <b@y>\n",
    )
    .unwrap();
    let id = add_task(&env, "grep '^From:' /workspace/group/inbox.txt", &[]);
    let (status, result, _) = run_task(&env, id);
    assert_eq!(status, "succeeded", "logs:\n{}", env.all_logs());
    assert_eq!(
        result.as_deref(),
        Some("You have 2 new mails: from Ana and from Bo.")
    );
    let reqs = llm.wait_for(1, Duration::from_secs(30));
    assert_eq!(reqs.len(), 1);
    let body = reqs[0].text();
    assert!(body.contains("Summarise the new mail"), "{body}");
    assert!(body.contains("check_output"), "{body}");
    assert!(body.contains("From: Ana &lt;a@x&gt;"), "{body}");
    assert_eq!(
        env.outbox("fx:1"),
        vec!["You have 2 new mails: from Ana and from Bo.".to_string()]
    );
    // The same task with the inbox empty: grep exits 1, the model is not asked again.
    std::fs::write(env.group_dir("g1").join("inbox.txt"), "").unwrap();
    let (status, result, _) = run_task(&env, id);
    assert_eq!(
        (status.as_str(), result.as_deref()),
        ("succeeded", Some("skipped: check exited 1 (nothing to do)"))
    );
    assert_eq!(llm.requests().len(), 1);
    // Audit: the check's container is recorded with no proxy and no network.
    let starts = env.audit("container.start");
    assert!(
        starts
            .iter()
            .any(|s| s["check"] == true && s["proxy"] == false && s["network"] == "none"),
        "{starts:?}"
    );
}
