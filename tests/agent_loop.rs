//! claw-agent as a process, against the fake LLM on its proxy socket: the tool loop in both wire
//! formats, memory and skills in the prompt, sessions, follow-up messages, and IPC files.
//! Failure handling and the other tools are in agent_tools.rs.

mod support;

use claw::infra::protocol::{AgentLine, HostLine, IpcReply, IpcRequest};
use serde_json::json;
use std::time::Duration;
use support::fake_llm::Reply;
use support::{Sandbox, start};

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
    let system = &first.system();
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
        images: vec![],
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
        images: vec![],
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
                        ..Default::default()
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
            chat: None,
            reason: None,
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
