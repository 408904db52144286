//! claw-agent run as a process against the fake model: failure handling (malformed output,
//! overload, auth, bad start), compaction, the swarm, file and egress tools, and the step limit.

mod support;

use claw::infra::protocol::{AgentLine, HostLine};
use serde_json::json;
use std::time::Duration;
use support::fake_llm::{Part, Reply};
use support::{Sandbox, start};

fn tool_results(req: &support::fake_llm::Recorded) -> String {
    req.text().to_string()
}

#[test]
fn delegate_runs_sub_agents_in_parallel_and_returns_all_results() {
    let sb = Sandbox::new();
    let tasks = json!({"tasks": [
        {"role": "You are RESEARCHER-A.", "prompt": "look into apples"},
        {"role": "You are RESEARCHER-B.", "prompt": "look into pears", "tools": ["read_file"]},
    ]});
    sb.llm.push(Reply::tool("delegate", tasks));
    let pause = Duration::from_millis(500);
    sb.llm.push(
        Reply::text("ANSWER-A apples are red")
            .when("You are RESEARCHER-A.\\n")
            .delay(pause),
    );
    sb.llm.push(
        Reply::text("ANSWER-B pears are green")
            .when("You are RESEARCHER-B.\\n")
            .delay(pause),
    );
    sb.llm
        .push(Reply::text("apples red, pears green").when("ANSWER-B"));
    let out = sb.run(start("anthropic", "compare fruit"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.results(), ["apples red, pears green"]);

    let reqs = sb.llm.requests();
    assert_eq!(reqs.len(), 4);
    let sub = |who: &str| {
        reqs.iter()
            .find(|r| r.system().starts_with(who))
            .unwrap()
            .clone()
    };
    let (a, b) = (sub("You are RESEARCHER-A."), sub("You are RESEARCHER-B."));
    assert!(
        a.overlaps(&b),
        "sub-agent requests must run at the same time"
    );
    let tool_names = |r: &support::fake_llm::Recorded| -> Vec<String> {
        r.body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(tool_names(&b), ["read_file"]);
    assert!(
        !tool_names(&a).contains(&"delegate".to_string()),
        "no nested delegate"
    );
    assert!(
        a.text().contains("look into apples") && !a.text().contains("compare fruit"),
        "own context"
    );
    let last = tool_results(&reqs[3]);
    assert!(
        last.contains("ANSWER-A") && last.contains("ANSWER-B"),
        "{last}"
    );
    let usage = out
        .lines
        .iter()
        .find_map(|l| {
            if let AgentLine::Idle { usage } = l {
                *usage
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(
        usage.input_tokens, 40,
        "sub-agent usage counts toward the turn"
    );
}

#[test]
fn malformed_model_output_goes_back_to_the_model() {
    let sb = Sandbox::new();
    sb.llm.push(Reply::raw_tool("bash", "{\"command\": \"ls"));
    sb.llm.push(Reply::tool("launch_rockets", json!({})));
    sb.llm.push(Reply::tool(
        "bash",
        json!({"command": "head -c 20000 /dev/zero | tr '\\0' a"}),
    ));
    sb.llm.push(Reply::tool(
        "edit_file",
        json!({"path": "none.txt", "old_string": "a", "new_string": "b"}),
    ));
    sb.llm.push(Reply::text("recovered"));
    let out = sb.run(start("openai", "go"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.results(), ["recovered"]);
    let reqs = sb.llm.requests();
    let last_tool = |i: usize| {
        let msgs = reqs[i].body["messages"].as_array().unwrap();
        msgs.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(last_tool(1).contains("not valid JSON"), "{}", last_tool(1));
    assert!(
        last_tool(2).contains("unknown tool `launch_rockets`"),
        "{}",
        last_tool(2)
    );
    let big = last_tool(3);
    assert!(
        big.contains("output truncated") && big.contains("over the 4000-byte cap"),
        "{big}"
    );
    assert!(
        big.contains("12000 more bytes not kept") && big.ends_with("[exit code 0]"),
        "{big}"
    );
    assert!(big.len() < 4300);
    assert!(last_tool(4).contains("cannot read"), "{}", last_tool(4));
}

#[test]
fn overload_and_rate_limits_are_retried() {
    let sb = Sandbox::new();
    sb.llm.push(Reply::status(529).retry_after("0"));
    sb.llm.push(Reply::status(429).retry_after("0.1"));
    sb.llm.push(Reply::text("made it"));
    let out = sb.run(start("anthropic", "hi"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.results(), ["made it"]);
    let statuses: Vec<u16> = sb.llm.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [529, 429, 200]);
    assert!(out.stderr.contains("retrying"));
}

#[test]
fn unauthorised_upstream_is_a_fatal_error_line_and_exit_1() {
    let sb = Sandbox::new();
    sb.llm.push(Reply::status(401));
    let out = sb.run(start("openai", "hi"));
    assert_eq!(out.code, 1);
    let err = out.lines.last().unwrap();
    assert!(
        matches!(err, AgentLine::Error { message, fatal: true } if message.contains("401")),
        "{err:?}"
    );
    assert_eq!(sb.llm.requests().len(), 1, "auth failures are not retried");
}

#[test]
fn a_bad_start_line_is_fatal() {
    let sb = Sandbox::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_claw-agent"))
        .env("CLAW_PROXY_SOCKET", sb.dir.path().join("proxy.sock"))
        .env("CLAW_WORKSPACE", sb.workspace())
        .env("CLAW_STATE_DIR", sb.state())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"start\",\"prompt\":1}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line: AgentLine = serde_json::from_slice(&out.stdout).unwrap();
    assert!(matches!(line, AgentLine::Error { fatal: true, .. }));
}

#[test]
fn compaction_archives_old_turns_and_keeps_going() {
    let sb = Sandbox::new();
    let mut s = start("anthropic", "OLD-QUESTION about the garden");
    s.model.context_window = 1000;
    // The first turn reports a context near the window, so the next turn compacts first.
    sb.llm
        .push(Reply::text("OLD-ANSWER: plant tomatoes").usage(900, 5));
    sb.llm
        .push(Reply::text("SUMMARY-XYZ garden talk").when("Summarise the conversation"));
    sb.llm
        .push(Reply::text("nothing new to keep").when(claw::agent::memory::FLUSH_MARKER));
    sb.llm.push(Reply::text("new answer"));
    let mut a = sb.spawn(s);
    a.until_idle();
    a.send(&HostLine::Message {
        text: "NEW-QUESTION".into(),
        images: vec![],
    });
    let lines = a.until_idle();
    assert!(
        lines.contains(&AgentLine::Result {
            text: "new answer".into()
        }),
        "{lines:?}"
    );
    let out = a.finish();
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);

    let reqs = sb.llm.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs[1].text().contains(claw::agent::memory::FLUSH_MARKER));
    assert!(
        reqs[2].text().contains("OLD-ANSWER"),
        "the summary request sees the old turns"
    );
    let last = reqs[3].text();
    assert!(
        last.contains("SUMMARY-XYZ") && last.contains("NEW-QUESTION"),
        "{last}"
    );
    assert!(
        !last.contains("OLD-ANSWER"),
        "old turns are replaced by the summary"
    );
    let archives: Vec<_> = std::fs::read_dir(sb.group().join("conversations"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(archives.len(), 1);
    let md = std::fs::read_to_string(archives[0].path()).unwrap();
    assert!(
        md.contains("OLD-QUESTION") && md.contains("OLD-ANSWER") && md.contains("SUMMARY-XYZ"),
        "{md}"
    );
}

#[test]
fn compaction_lets_the_model_save_memory_before_archiving() {
    let sb = Sandbox::new();
    std::fs::write(sb.group().join("AGENTS.md"), "# Memory\n").unwrap();
    let mut s = start("anthropic", "My sister Lea's birthday is on 14 May");
    s.model.context_window = 1000;
    sb.llm.push(Reply::text("Noted: Lea, 14 May").usage(900, 5));
    // The memory turn: the model edits its memory file, then closes with one line.
    sb.llm.push(
        Reply::tool(
            "edit_file",
            json!({"path": "AGENTS.md", "old_string": "# Memory\n", "new_string": "# Memory\n- Lea (sister): birthday 14 May\n"}),
        )
        .when(claw::agent::memory::FLUSH_MARKER),
    );
    sb.llm
        .push(Reply::text("saved Lea's birthday").when("\"tool_result\""));
    sb.llm
        .push(Reply::text("SUMMARY-LEA").when("Summarise the conversation"));
    sb.llm.push(Reply::text("new answer"));
    let mut a = sb.spawn(s);
    a.until_idle();
    a.send(&HostLine::Message {
        text: "what else?".into(),
        images: vec![],
    });
    let lines = a.until_idle();
    assert!(
        lines.contains(&AgentLine::Result {
            text: "new answer".into()
        }),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, AgentLine::Progress { tool, .. } if tool == "memory: edit_file")),
        "{lines:?}"
    );
    let out = a.finish();
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);

    let reqs = sb.llm.requests();
    assert_eq!(
        reqs.len(),
        5,
        "turn, memory turn (2 calls), summary, answer"
    );
    // The memory turn sees the whole old conversation and only the file tools.
    let flush = &reqs[1];
    assert!(flush.text().contains("Lea's birthday is on 14 May"));
    let tools: Vec<&str> = flush.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["read_file", "write_file", "edit_file"]);
    // The edit ran (its result went back) before the summary was asked for, and the archive is
    // written only after the summary arrives: memory is saved before anything is archived.
    assert!(reqs[2].text().contains("tool_result"));
    assert!(reqs[3].text().contains("Summarise the conversation"));
    let memory = std::fs::read_to_string(sb.group().join("AGENTS.md")).unwrap();
    assert!(memory.contains("Lea (sister): birthday 14 May"), "{memory}");
    // Nothing of the memory turn stays in the conversation or reaches the chat.
    let last = reqs[4].text();
    assert!(
        last.contains("SUMMARY-LEA") && !last.contains(claw::agent::memory::FLUSH_MARKER),
        "{last}"
    );
    assert!(
        !out.lines
            .iter()
            .any(|l| matches!(l, AgentLine::Result { text } if text.contains("saved")))
    );
    let archives: Vec<_> = std::fs::read_dir(sb.group().join("conversations"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(archives.len(), 1);
    let md = std::fs::read_to_string(archives[0].path()).unwrap();
    assert!(
        md.contains("Lea's birthday") && md.contains("SUMMARY-LEA"),
        "{md}"
    );
    let archived = archives[0].metadata().unwrap().modified().unwrap();
    let remembered = std::fs::metadata(sb.group().join("AGENTS.md"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(remembered <= archived);
}

#[test]
fn file_tools_write_edit_read_glob_and_grep() {
    let sb = Sandbox::new();
    let calls = [
        (
            "write_file",
            json!({"path": "docs/a.md", "content": "alpha beta\nbeta gamma\n"}),
        ),
        (
            "edit_file",
            json!({"path": "docs/a.md", "old_string": "beta", "new_string": "B"}),
        ),
        (
            "edit_file",
            json!({"path": "docs/a.md", "old_string": "alpha beta", "new_string": "ALPHA"}),
        ),
        ("read_file", json!({"path": "docs/a.md"})),
        ("glob", json!({"pattern": "**/*.md"})),
        ("grep", json!({"pattern": "gam+a", "include": "*.md"})),
    ];
    for (name, input) in calls.iter().cloned() {
        sb.llm.push(Reply::tool(name, input).streaming(false));
    }
    sb.llm
        .push(Reply::text("done").and(Part::Text(" twice".into())));
    let out = sb.run(start("anthropic", "files"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.results(), ["done\n twice"]);
    let reqs = sb.llm.requests();
    let result = |i: usize| {
        let msgs = reqs[i].body["messages"].as_array().unwrap();
        msgs.last().unwrap()["content"][0]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(result(2).contains("appears 2 times"), "{}", result(2));
    assert!(result(3).contains("replaced 1"), "{}", result(3));
    assert_eq!(result(4), "ALPHA\nbeta gamma\n");
    assert_eq!(result(5), "docs/a.md");
    assert!(result(6).contains("a.md:2:beta gamma"), "{}", result(6));
}

#[test]
fn egress_goes_through_the_proxy_and_bash_is_bounded_in_time() {
    let sb = Sandbox::new();
    sb.llm.push(Reply::tool(
        "web_fetch",
        json!({"url": "http://example.invalid/page"}),
    ));
    sb.llm.push(Reply::tool(
        "bash",
        json!({"command": "echo \"proxy=$HTTPS_PROXY\""}),
    ));
    sb.llm.push(Reply::tool(
        "bash",
        json!({"command": "sleep 20", "timeout_secs": 1}),
    ));
    sb.llm.push(Reply::text("ok"));
    let t0 = std::time::Instant::now();
    let out = sb.run(start("anthropic", "fetch"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the timeout killed the sleep"
    );
    let reqs = sb.llm.requests();
    // The fake server stands in for the proxy: it sees the CONNECT and refuses it.
    let connect = reqs
        .iter()
        .find(|r| r.path == "example.invalid:80")
        .expect("CONNECT via the proxy socket");
    assert_eq!(connect.status, 404);
    let result = |i: usize| {
        let r = reqs
            .iter()
            .filter(|r| r.path.starts_with("/llm/"))
            .nth(i)
            .unwrap();
        let msgs = r.body["messages"].as_array().unwrap();
        msgs.last().unwrap()["content"][0]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(result(1).contains("allowlist"), "{}", result(1));
    assert!(
        result(2).contains("proxy=http://127.0.0.1:"),
        "{}",
        result(2)
    );
    assert!(result(3).contains("timed out after 1 s"), "{}", result(3));
}

#[test]
fn the_step_limit_ends_a_runaway_turn() {
    let sb = Sandbox::new();
    for _ in 0..5 {
        sb.llm.push(Reply::tool("list_tasks", json!({})));
    }
    let mut s = start("openai", "loop");
    s.limits.max_steps = 3;
    let out = sb.run(s);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(sb.llm.requests().len(), 3);
    assert!(
        out.results()[0].contains("stopped after 3 steps"),
        "{:?}",
        out.results()
    );
}

#[test]
fn a_missing_proxy_socket_is_fatal_at_once() {
    let sb = Sandbox::new();
    std::fs::remove_file(sb.dir.path().join("proxy.sock")).unwrap();
    let out = sb.run(start("anthropic", "hi"));
    assert_eq!(out.code, 1);
    assert!(
        matches!(out.lines.last(), Some(AgentLine::Error { message, fatal: true }) if message.contains("proxy socket")),
        "{:?}",
        out.lines
    );
}
