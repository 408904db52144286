//! End-to-end with the real agent: a message ingested for main goes through dispatch and
//! run-group into a real container, whose claw-agent asks the fake model (through the real host
//! proxy), runs a `bash` tool call, sends the result back, and replies into the outbox. Prompt
//! caching survives the proxy: Anthropic breakpoints reach the upstream and are read on the next
//! step and the resumed run; OpenAI requests still extend each other byte for byte.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::billing::{openai_prompt, tokens};
use fake_llm::{FakeLlm, Reply};
use serde_json::json;
use std::time::Duration;

fn env_with(llm: &FakeLlm, provider: &str) -> Env {
    let mut env = Env::new();
    env.anthropic_base = llm.url();
    env.openai_base = llm.url();
    env.extra_config = format!("[model]\nprovider = \"{provider}\"\nname = \"fake-model\"\n");
    env.write_config();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-e2e-key");
    env.set_secret("OPENAI_API_KEY", "sk-oai-e2e-key");
    env
}

fn round_trip(provider: &str) {
    let llm = FakeLlm::start();
    let env = env_with(&llm, provider);
    std::fs::write(env.group_dir("main").join("notes.txt"), "hello").unwrap();
    llm.push(Reply::tool(
        "bash",
        json!({"command": "ls /workspace/group"}),
    ));
    llm.push(Reply::text("Your folder has notes.txt and AGENTS.md."));
    env.say("cli:local", "what is in my folder?");
    env.claw().args(["dispatch", "--wait"]).assert().success();
    let reqs = llm.wait_for(2, Duration::from_secs(60));
    assert_eq!(reqs.len(), 2, "logs:\n{}", env.all_logs());
    // The key was added by the host proxy, and the container never had it.
    let key = if provider == "anthropic" {
        "sk-ant-e2e-key"
    } else {
        "sk-oai-e2e-key"
    };
    let auth = reqs[0]
        .header("x-api-key")
        .or(reqs[0].header("authorization"))
        .unwrap_or("");
    assert!(auth.contains(key), "key not added upstream: {auth}");
    assert!(reqs[0].text().contains("what is in my folder?"));
    // The tool ran inside the container and its output went back to the model.
    assert!(
        reqs[1].text().contains("notes.txt"),
        "tool result missing: {}",
        reqs[1].text()
    );
    assert_eq!(
        env.outbox("cli:local"),
        vec!["Your folder has notes.txt and AGENTS.md.".to_string()]
    );
    assert_eq!(env.last_run("main").0, "succeeded");
    assert!(!env.all_logs().contains(key));
}

#[test]
fn anthropic_round_trip_through_a_real_container() {
    round_trip("anthropic");
}

#[test]
fn openai_round_trip_through_a_real_container() {
    round_trip("openai");
}

#[test]
fn second_message_resumes_the_session() {
    let llm = FakeLlm::start();
    let env = env_with(&llm, "anthropic");
    llm.push(Reply::text("Nice to meet you, Ana."));
    env.say("cli:local", "my name is Ana");
    env.claw().args(["dispatch", "--wait"]).assert().success();
    llm.push(Reply::text("You are Ana."));
    env.say("cli:local", "what is my name?");
    env.claw().args(["dispatch", "--wait"]).assert().success();
    let reqs = llm.wait_for(2, Duration::from_secs(60));
    assert_eq!(reqs.len(), 2, "logs:\n{}", env.all_logs());
    let second = reqs[1].text();
    assert!(
        second.contains("my name is Ana") && second.contains("Nice to meet you, Ana."),
        "earlier turns missing: {second}"
    );
    assert_eq!(
        env.outbox("cli:local"),
        vec![
            "Nice to meet you, Ana.".to_string(),
            "You are Ana.".to_string()
        ]
    );
}

#[test]
fn upstream_401_fails_the_run_with_a_clear_error() {
    let llm = FakeLlm::start();
    let env = env_with(&llm, "anthropic");
    llm.push(Reply::status(401));
    env.say("cli:local", "hello");
    env.claw().args(["run-group", "main"]).assert().code(1);
    let (status, error, _, _) = env.last_run("main");
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default().to_lowercase();
    assert!(error.contains("401") || error.contains("auth"), "{error}");
    assert!(env.outbox("cli:local").is_empty());
}

#[test]
fn chat_one_shot_round_trip() {
    let llm = FakeLlm::start();
    let env = env_with(&llm, "anthropic");
    llm.push(Reply::tool("bash", json!({"command": "echo tool-ran"})));
    llm.push(Reply::text("All done."));
    let out = env
        .claw()
        .args(["chat", "-m", "run something"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.all_logs()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bash"), "tool use not shown: {stdout}");
    assert!(stdout.trim_end().ends_with("All done."), "{stdout}");
    // Printed rows of the terminal chat are marked sent; nothing is left for deliver.
    let pending: i64 = env
        .db()
        .query_row(
            "SELECT count(*) FROM outbox WHERE status != 'sent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0);
}

#[test]
fn chat_conversation_reuses_one_container() {
    let llm = FakeLlm::start();
    let env = env_with(&llm, "anthropic");
    llm.push(Reply::text("first answer"));
    llm.push(Reply::text("second answer"));
    let out = env
        .claw()
        .arg("chat")
        .write_stdin("hello\nand again\n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["first answer", "second answer"],
        "{stdout}"
    );
    assert_eq!(
        env.audit("container.start").len(),
        1,
        "a second container was started"
    );
    assert!(
        llm.requests()[1].text().contains("first answer"),
        "second turn lost the first"
    );
}

fn cache_markers(body: &serde_json::Value) -> usize {
    serde_json::to_string(body)
        .unwrap()
        .matches("\"cache_control\":{\"type\":\"ephemeral\"}")
        .count()
}

/// A tool step, an answer, then a second message that resumes the session in a new container.
fn cached_conversation(provider: &str) -> (FakeLlm, Env) {
    let llm = FakeLlm::start();
    llm.billing(0);
    let env = env_with(&llm, provider);
    llm.push(Reply::tool("bash", json!({"command": "echo cached"})));
    llm.push(Reply::text("First answer."));
    env.say("cli:local", "run something");
    env.claw().args(["dispatch", "--wait"]).assert().success();
    llm.push(Reply::text("Second answer."));
    env.say("cli:local", "and again");
    env.claw().args(["dispatch", "--wait"]).assert().success();
    let reqs = llm.wait_for(3, Duration::from_secs(60));
    assert_eq!(reqs.len(), 3, "logs:\n{}", env.all_logs());
    assert!(
        reqs.iter().all(|r| r.status == 200),
        "logs:\n{}",
        env.all_logs()
    );
    assert_eq!(
        env.outbox("cli:local"),
        vec!["First answer.".to_string(), "Second answer.".to_string()]
    );
    (llm, env)
}

#[test]
fn anthropic_cache_breakpoints_pass_the_proxy_and_are_read() {
    let (llm, env) = cached_conversation("anthropic");
    let reqs = llm.requests();
    for r in &reqs {
        let tools = r.body["tools"].as_array().unwrap();
        assert!(
            tools.last().unwrap().get("cache_control").is_some(),
            "{}",
            r.raw
        );
        assert!(
            r.body["system"][0].get("cache_control").is_some(),
            "{}",
            r.raw
        );
    }
    // 3 breakpoints with one user message, then 4 (tools, system, two user messages).
    let counts: Vec<usize> = reqs.iter().map(|r| cache_markers(&r.body)).collect();
    assert_eq!(
        counts,
        [3, 4, 4],
        "{:?}",
        reqs.iter().map(|r| &r.raw).collect::<Vec<_>>()
    );
    let bills: Vec<_> = reqs.iter().map(|r| r.bill.unwrap()).collect();
    assert_eq!(bills[0].cache_read, 0);
    for (i, w) in bills.windows(2).enumerate() {
        assert_eq!(
            w[1].cache_read,
            w[0].cache_read + w[0].cache_write,
            "request {} (a new container for the last) reads what request {i} wrote: {bills:?}",
            i + 1
        );
    }
    assert_eq!(env.last_run("main").0, "succeeded");
}

#[test]
fn openai_prefix_stays_byte_identical_through_the_proxy() {
    let (llm, _env) = cached_conversation("openai");
    let reqs = llm.requests();
    // The proxy rebuilds the top level (sorting its keys) but passes tools and messages on as
    // the agent wrote them: each prompt is the previous one with messages appended.
    for (i, w) in reqs.windows(2).enumerate() {
        let (before, after) = (openai_prompt(&w[0].raw), openai_prompt(&w[1].raw));
        let stem = before.strip_suffix(']').expect("messages come last");
        assert!(
            after.starts_with(stem),
            "request {} does not extend request {i}:\n{before}\n{after}",
            i + 1,
        );
        assert_eq!(w[1].bill.unwrap().cache_read, tokens(stem.len()));
    }
}
