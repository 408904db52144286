//! claw-agent as a process, against the fake LLM on its proxy socket: the tool loop in both wire
//! formats, sessions, IPC files, delegate, malformed model output, retries, auth failure and
//! compaction.

mod support;

use claw::protocol::{AgentLine, HostLine, IpcReply, IpcRequest};
use serde_json::json;
use std::time::Duration;
use support::fake_llm::{Part, Reply};
use support::{Sandbox, start};

fn tool_results(req: &support::fake_llm::Recorded) -> String {
    req.text().to_string()
}

#[test]
fn bash_round_trip_anthropic_with_memory_and_skills_in_the_prompt() {
    let sb = Sandbox::new();
    std::fs::write(sb.group().join("hello.txt"), "hi").unwrap();
    std::fs::write(
        sb.group().join("AGENTS.md"),
        "MEMORY-ONE: the user likes tea",
    )
    .unwrap();
    std::fs::write(sb.workspace().join("global/AGENTS.md"), "GLOBAL-TWO").unwrap();
    std::fs::create_dir_all(sb.workspace().join("skills/pdf")).unwrap();
    std::fs::write(
        sb.workspace().join("skills/pdf/SKILL.md"),
        "---\nname: pdf\ndescription: Read PDF files\n---\nBODY-SECRET\n",
    )
    .unwrap();
    sb.llm.push(Reply::tool(
        "bash",
        json!({"command": "ls; echo oops >&2; exit 3"}),
    ));
    sb.llm.push(Reply::text("I see hello.txt"));
    let out = sb.run(start(
        "anthropic",
        "<messages><message sender=\"Ana\">what is here?</message></messages>",
    ));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.results(), ["I see hello.txt"]);
    assert!(
        out.lines
            .iter()
            .any(|l| matches!(l, AgentLine::Progress { tool, .. } if tool == "bash"))
    );
    let idle = out.lines.last().unwrap();
    assert!(
        matches!(idle, AgentLine::Idle { usage: Some(u) } if u.input_tokens == 20 && u.output_tokens == 10),
        "{idle:?}"
    );

    let reqs = sb.llm.requests();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0];
    assert_eq!(first.path, "/llm/anthropic/v1/messages");
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        first.header("x-api-key"),
        None,
        "the agent must never send a key"
    );
    assert_eq!(first.body["stream"], true);
    let system = first.body["system"].as_str().unwrap();
    for needle in [
        "Andy",
        "MEMORY-ONE",
        "GLOBAL-TWO",
        "pdf: Read PDF files",
        "Telegram",
    ] {
        assert!(
            system.contains(needle),
            "system prompt lacks {needle}: {system}"
        );
    }
    assert!(
        !system.contains("BODY-SECRET"),
        "skill bodies are read on demand, not up front"
    );
    let result = &reqs[1].body["messages"][2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    let content = result["content"].as_str().unwrap();
    assert!(
        content.contains("hello.txt")
            && content.contains("oops")
            && content.contains("[exit code 3]"),
        "{content}"
    );
    assert_eq!(result["is_error"], true);
}

#[test]
fn bash_round_trip_openai_streamed_and_not() {
    let sb = Sandbox::new();
    std::fs::write(sb.group().join("notes.md"), "x").unwrap();
    sb.llm.push(Reply::tool("bash", json!({"command": "ls"})));
    sb.llm.push(Reply::text("found notes.md").streaming(false));
    let out = sb.run(start("openai", "list files"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.results(), ["found notes.md"]);
    let reqs = sb.llm.requests();
    assert_eq!(reqs[0].path, "/llm/openai/v1/chat/completions");
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[0].body["stream_options"]["include_usage"], true);
    let msgs = reqs[1].body["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(msgs[3]["tool_call_id"], msgs[2]["tool_calls"][0]["id"]);
    assert!(msgs[3]["content"].as_str().unwrap().contains("notes.md"));
}

#[test]
fn a_second_run_resumes_the_session() {
    let sb = Sandbox::new();
    sb.llm.push(Reply::text("noted the PINEAPPLE"));
    let first = sb.run(start("anthropic", "remember PINEAPPLE"));
    assert_eq!(first.code, 0, "stderr: {}", first.stderr);
    let id = first.session();
    assert!(
        sb.state()
            .join("sessions")
            .join(format!("{id}.json"))
            .is_file()
    );

    sb.llm.push(Reply::text("it was PINEAPPLE"));
    let mut s = start("anthropic", "what word?");
    s.session_id = Some(id.clone());
    let second = sb.run(s);
    assert_eq!(second.session(), id);
    let msgs = &sb.llm.requests()[1].body["messages"];
    assert_eq!(msgs.as_array().unwrap().len(), 3, "{msgs}");
    assert!(msgs[0].to_string().contains("remember PINEAPPLE"));
    assert!(msgs[1].to_string().contains("noted the PINEAPPLE"));
    assert!(msgs[2].to_string().contains("what word?"));

    // An unknown session id starts fresh rather than failing.
    sb.llm.push(Reply::text("fresh"));
    let mut s = start("anthropic", "hi");
    s.session_id = Some("gone".into());
    let third = sb.run(s);
    assert_eq!(third.results(), ["fresh"]);
    assert_eq!(
        sb.llm.requests()[2].body["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn follow_up_messages_join_the_running_turn_and_close_ends_cleanly() {
    let sb = Sandbox::new();
    sb.llm
        .push(Reply::tool("bash", json!({"command": "sleep 0.3"})));
    sb.llm.push(Reply::text("both handled"));
    sb.llm.push(Reply::text("third"));
    let mut a = sb.spawn(start("anthropic", "first"));
    assert!(matches!(a.next(), AgentLine::Session { .. }));
    assert!(matches!(a.next(), AgentLine::Progress { .. }));
    a.send(&HostLine::Message {
        text: "FOLLOW-UP".into(),
    });
    let lines = a.until_idle();
    assert!(
        lines.contains(&AgentLine::Result {
            text: "both handled".into()
        }),
        "{lines:?}"
    );
    let second = &sb.llm.requests()[1];
    assert!(
        second.text().contains("FOLLOW-UP"),
        "the follow-up joins the next model call"
    );
    a.send(&HostLine::Message {
        text: "next".into(),
    });
    let lines = a.until_idle();
    assert!(lines.contains(&AgentLine::Result {
        text: "third".into()
    }));
    a.send(&HostLine::Close);
    let out = a.finish();
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
}

#[test]
fn ipc_tools_write_atomic_request_files() {
    let sb = Sandbox::new();
    sb.llm.push(Reply::tool(
        "send_message",
        json!({"text": "working on it"}),
    ));
    sb.llm.push(Reply::tool(
        "schedule_task",
        json!({"prompt": "water the plants", "schedule_type": "cron", "schedule_value": "0 9 * * *"}),
    ));
    sb.llm.push(Reply::text("scheduled"));
    // Play the host: answer the task request as soon as it appears.
    let tasks = sb.ipc().join("tasks");
    let replies = sb.ipc().join("replies");
    let host = std::thread::spawn(move || {
        for _ in 0..200 {
            if let Some(f) = std::fs::read_dir(&tasks)
                .into_iter()
                .flatten()
                .flatten()
                .next()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".json") {
                    std::fs::create_dir_all(&replies).unwrap();
                    let reply = IpcReply {
                        ok: true,
                        task_id: Some(42),
                        error: None,
                    };
                    std::fs::write(
                        replies.join(name.clone()),
                        serde_json::to_vec(&reply).unwrap(),
                    )
                    .unwrap();
                    return stem.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no task request appeared");
    });
    let out = sb.run(start("openai", "remind me"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    host.join().unwrap();

    let read_one = |dir: &str| {
        let files: Vec<_> = std::fs::read_dir(sb.ipc().join(dir))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1, "one file in {dir}, no temp files left");
        let text = std::fs::read_to_string(files[0].path()).unwrap();
        serde_json::from_str::<IpcRequest>(&text).unwrap()
    };
    assert_eq!(
        read_one("messages"),
        IpcRequest::SendMessage {
            text: "working on it".into(),
            chat: None
        }
    );
    match read_one("tasks") {
        IpcRequest::ScheduleTask {
            prompt,
            schedule_type,
            schedule_value,
            ..
        } => {
            assert_eq!(
                (
                    prompt.as_str(),
                    schedule_type.as_str(),
                    schedule_value.as_str()
                ),
                ("water the plants", "cron", "0 9 * * *")
            )
        }
        other => panic!("unexpected request {other:?}"),
    }
    let last = sb.llm.requests()[2].text().to_string();
    assert!(last.contains("schedule_task done (task 42)"), "{last}");
}

#[test]
fn register_group_is_refused_outside_main() {
    let sb = Sandbox::new();
    sb.llm.push(Reply::tool(
        "register_group",
        json!({"chat": "tg:-5", "folder": "other"}),
    ));
    sb.llm.push(Reply::text("cannot"));
    let out = sb.run(start("anthropic", "register that chat"));
    assert_eq!(out.code, 0);
    let result = &sb.llm.requests()[1].body["messages"][2]["content"][0];
    assert_eq!(result["is_error"], true);
    assert!(
        result["content"]
            .as_str()
            .unwrap()
            .contains("only available to the main group")
    );
    assert!(
        !sb.ipc().join("tasks").exists(),
        "no request file may be written"
    );

    // The same call from main becomes a request (the host re-checks it in ipc-apply).
    sb.llm.push(Reply::tool(
        "register_group",
        json!({"chat": "tg:-5", "folder": "other"}),
    ));
    sb.llm.push(Reply::text("queued"));
    let mut s = start("anthropic", "register that chat");
    s.is_main = true;
    assert_eq!(sb.run(s).code, 0);
    let files: Vec<_> = std::fs::read_dir(sb.ipc().join("tasks"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let req: IpcRequest = serde_json::from_slice(&std::fs::read(files[0].path()).unwrap()).unwrap();
    assert!(
        matches!(req, IpcRequest::RegisterGroup { ref folder, .. } if folder == "other"),
        "{req:?}"
    );
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
            .find(|r| r.body["system"].as_str().unwrap().starts_with(who))
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
    sb.llm.push(Reply::text("new answer"));
    let mut a = sb.spawn(s);
    a.until_idle();
    a.send(&HostLine::Message {
        text: "NEW-QUESTION".into(),
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
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs[1].text().contains("OLD-ANSWER"),
        "the summary request sees the old turns"
    );
    let last = reqs[2].text();
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
