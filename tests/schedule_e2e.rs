//! End-to-end (issue 5): an agent's `schedule_task` tool call creates a task (applied by
//! run-group while the container runs), `claw schedule` queues it when due, dispatch runs it in a
//! fresh container, and its result lands in the outbox of the group's chat.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::{FakeLlm, Reply};
use serde_json::json;
use std::time::Duration;

#[test]
fn agent_schedules_a_task_that_later_runs_and_answers_in_its_chat() {
    let llm = FakeLlm::start();
    let mut env = Env::new();
    env.anthropic_base = llm.url();
    env.write_config();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-sched");
    env.add_group("fx:42", "family", &["--no-trigger"]);
    let at = (chrono::Utc::now() + chrono::Duration::seconds(4))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    llm.push(Reply::tool(
        "schedule_task",
        json!({"prompt": "Remind everyone to water the plants", "schedule_type": "once", "schedule_value": at}),
    ));
    llm.push(Reply::text("Done, I will remind you.").when("tool_result"));
    llm.push(
        Reply::text("Time to water the plants! <internal>task done</internal>")
            .when("scheduled_task"),
    );
    env.say("fx:42", "remind us to water the plants in a moment");
    env.claw().args(["dispatch", "--wait"]).assert().success();
    assert_eq!(
        env.outbox("fx:42"),
        vec!["Done, I will remind you.".to_string()],
        "logs:\n{}",
        env.all_logs()
    );
    // The request was applied during the run; the agent's tool saw the created task id.
    let (task_id, folder, chat, status): (i64, String, String, String) = env
        .db()
        .query_row("SELECT id, folder, chat_id, status FROM tasks", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(
        (folder.as_str(), chat.as_str(), status.as_str()),
        ("family", "fx:42", "active")
    );
    let tool_result = llm.requests()[1].text().to_string();
    assert!(
        tool_result.contains(&task_id.to_string()),
        "agent did not get the task id back: {tool_result}"
    );
    // Not due yet: schedule queues nothing. The clock is given explicitly (a second before the
    // task's time), so a slow first run on a loaded machine cannot make it due already.
    let next_run: i64 = env
        .db()
        .query_row("SELECT next_run FROM tasks WHERE id = ?1", [task_id], |r| {
            r.get(0)
        })
        .unwrap();
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let out = env
        .claw()
        .args(["schedule", "--json", "--now", &rfc(next_run - 1000)])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["claimed"].as_array().unwrap().is_empty(), "{r}");
    // Wait until it is due by the real clock too (dispatch starts runs by the real clock).
    while chrono::Utc::now().timestamp_millis() < next_run {
        std::thread::sleep(Duration::from_millis(100));
    }
    env.claw().args(["schedule"]).assert().success();
    env.claw().args(["dispatch", "--wait"]).assert().success();
    assert_eq!(
        env.outbox("fx:42"),
        vec![
            "Done, I will remind you.".to_string(),
            "Time to water the plants!".to_string()
        ],
        "logs:\n{}",
        env.all_logs()
    );
    let (run_status, task_status): (String, String) = env
        .db()
        .query_row(
            "SELECT tr.status, t.status FROM task_runs tr JOIN tasks t ON t.id = tr.task_id ORDER BY tr.id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (run_status.as_str(), task_status.as_str()),
        ("succeeded", "completed")
    );
    // The task ran isolated: the model saw the task prompt, not the earlier chat.
    let last = llm.requests().last().unwrap().text().to_string();
    assert!(
        last.contains("scheduled_task") && !last.contains("in a moment"),
        "{last}"
    );
}
