//! Prompt caching, with the real claw-agent against the fake LLM billing like the providers:
//! Anthropic breakpoints on the right blocks (never more than four, moving forward with the
//! transcript) for a fresh and a resumed session, every step reading what the step before wrote;
//! `CLAW_PROMPT_CACHE=0` sending none; OpenAI requests that extend the previous request byte for
//! byte, across steps and across a resumed task run; and the cache counts reaching the idle line.

mod support;

use claw::infra::protocol::{AgentLine, Usage};
use serde_json::{Value, json};
use support::fake_llm::billing::{Bill, openai_prompt, tokens};
use support::fake_llm::{Recorded, Reply};
use support::{Outcome, Sandbox, start};

/// Anthropic's smallest cacheable prefix for Sonnet models; the agent's tool list alone is over it.
const MIN_CACHEABLE: u64 = 1024;

fn marked(v: &Value) -> bool {
    v.get("cache_control") == Some(&json!({"type": "ephemeral"}))
}

/// Where a request's breakpoints are: `tools[i]`, `system[i]`, `messages[i][j]`.
fn breakpoints(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["tools", "system"] {
        for (i, b) in body[key].as_array().into_iter().flatten().enumerate() {
            if marked(b) {
                out.push(format!("{key}[{i}]"));
            }
        }
    }
    for (i, m) in body["messages"].as_array().unwrap().iter().enumerate() {
        for (j, b) in m["content"].as_array().into_iter().flatten().enumerate() {
            if marked(b) {
                out.push(format!("messages[{i}][{j}]"));
            }
        }
    }
    out
}

/// The breakpoints the agent must send: the last tool, the system prompt, and the last block
/// of the last two user messages.
fn expected_breakpoints(body: &Value) -> Vec<String> {
    let last = |key: &str| body[key].as_array().unwrap().len() - 1;
    let mut out = vec![
        format!("tools[{}]", last("tools")),
        format!("system[{}]", last("system")),
    ];
    let msgs = body["messages"].as_array().unwrap();
    let users: Vec<usize> = (0..msgs.len())
        .filter(|&i| msgs[i]["role"] == "user")
        .collect();
    for &i in users.iter().rev().take(2).rev() {
        let blocks = msgs[i]["content"].as_array().unwrap().len();
        out.push(format!("messages[{i}][{}]", blocks - 1));
    }
    out
}

/// Index of the last message carrying a breakpoint.
fn tail_anchor(body: &Value) -> usize {
    let msgs = body["messages"].as_array().unwrap();
    (0..msgs.len())
        .rev()
        .find(|&i| msgs[i]["content"].as_array().unwrap().iter().any(marked))
        .expect("a breakpoint in the messages")
}

fn idle_usage(out: &Outcome) -> Usage {
    out.lines
        .iter()
        .find_map(|l| match l {
            AgentLine::Idle { usage } => *usage,
            _ => None,
        })
        .expect("an idle line with usage")
}

fn bills(reqs: &[Recorded]) -> Vec<Bill> {
    reqs.iter()
        .map(|r| r.bill.expect("billing is on"))
        .collect()
}

/// The idle line's counts equal what the server billed for `reqs`.
fn assert_usage_matches(out: &Outcome, reqs: &[Recorded]) {
    let u = idle_usage(out);
    let b = bills(reqs);
    let sum = |f: fn(&Bill) -> u64| b.iter().map(f).sum::<u64>();
    assert_eq!(
        (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens),
        (
            sum(|b| b.input),
            sum(|b| b.cache_read),
            sum(|b| b.cache_write)
        ),
        "idle usage {u:?} vs bills {b:?}"
    );
}

#[test]
fn anthropic_breakpoints_move_forward_and_a_resumed_session_reads_the_prefix() {
    let sb = Sandbox::new();
    sb.llm.billing(MIN_CACHEABLE);
    std::fs::write(sb.group().join("a.txt"), "alpha beta\n".repeat(100)).unwrap();
    sb.llm
        .push(Reply::tool("read_file", json!({"path": "a.txt"})));
    // A plain (non-streamed) reply too, so both carry the cache counts.
    sb.llm
        .push(Reply::tool("bash", json!({"command": "echo two"})).streaming(false));
    sb.llm.push(Reply::text("done"));
    let first = sb.run(start("anthropic", "look at a.txt"));
    assert_eq!(first.code, 0, "stderr: {}", first.stderr);
    let reqs = sb.llm.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        let got = breakpoints(&r.body);
        assert!(got.len() <= 4, "{got:?}");
        assert_eq!(got, expected_breakpoints(&r.body), "{}", r.raw);
    }
    assert_eq!(breakpoints(&reqs[0].body).len(), 3, "one user message yet");
    let tails: Vec<usize> = reqs.iter().map(|r| tail_anchor(&r.body)).collect();
    assert_eq!(
        tails,
        [0, 2, 4],
        "the conversation breakpoint moves forward"
    );

    let b = bills(&reqs);
    assert_eq!(b[0].cache_read, 0);
    assert!(b[0].cache_write >= MIN_CACHEABLE, "{b:?}");
    for (i, w) in b.windows(2).enumerate() {
        assert_eq!(
            w[1].cache_read,
            w[0].cache_read + w[0].cache_write,
            "step {} reads everything step {i} wrote: {b:?}",
            i + 1
        );
    }
    assert!(
        b.iter().all(|b| b.input == 0),
        "nothing after the last breakpoint: {b:?}"
    );
    assert_usage_matches(&first, &reqs);

    // A new run resuming the session reads the last request's prefix from the cache.
    sb.llm.push(Reply::text("still done"));
    let mut s = start("anthropic", "anything else?");
    s.session_id = Some(first.session());
    let second = sb.run(s);
    assert_eq!(second.code, 0, "stderr: {}", second.stderr);
    let reqs = sb.llm.requests();
    let resumed = &reqs[3];
    assert_eq!(
        breakpoints(&resumed.body),
        expected_breakpoints(&resumed.body)
    );
    assert_eq!(
        breakpoints(&resumed.body)[2],
        "messages[4][0]",
        "the previous run's last breakpoint is kept as the bridge"
    );
    let last = resumed.bill.unwrap();
    assert_eq!(last.cache_read, b[2].cache_read + b[2].cache_write);
    assert!(last.cache_write > 0 && last.cache_write < last.cache_read / 10);
    assert_usage_matches(&second, &reqs[3..]);
}

#[test]
fn many_blocks_in_one_step_still_read_the_previous_prefix() {
    // Twelve parallel tool calls add 24 blocks, beyond the 20-block lookback of a single
    // breakpoint: the bridge on the previous user message still finds the previous entry.
    let sb = Sandbox::new();
    sb.llm.billing(MIN_CACHEABLE);
    let mut wide = Reply::tool("bash", json!({"command": "echo 0"}));
    for n in 1..12 {
        wide = wide.and(support::fake_llm::Part::Tool {
            name: "bash".into(),
            input: json!({"command": format!("echo {n}")}),
        });
    }
    sb.llm.push(Reply::tool("bash", json!({"command": "true"})));
    sb.llm.push(wide);
    sb.llm.push(Reply::text("all echoed"));
    let out = sb.run(start("anthropic", "echo a lot"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let b = bills(&sb.llm.requests());
    assert_eq!(b.len(), 3);
    assert_eq!(b[2].cache_read, b[1].cache_read + b[1].cache_write, "{b:?}");
}

#[test]
fn caching_off_sends_no_breakpoints_and_pays_full_price() {
    let sb = Sandbox::new();
    sb.llm.billing(MIN_CACHEABLE);
    sb.llm.push(Reply::tool("bash", json!({"command": "true"})));
    sb.llm.push(Reply::text("ok"));
    let out = sb.run_with_env(start("anthropic", "go"), &[("CLAW_PROMPT_CACHE", "0")]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let reqs = sb.llm.requests();
    for r in &reqs {
        assert!(!r.raw.contains("cache_control"), "{}", r.raw);
        let b = r.bill.unwrap();
        assert_eq!((b.cache_read, b.cache_write), (0, 0));
        assert!(b.input > MIN_CACHEABLE);
    }
    let u = idle_usage(&out);
    assert_eq!((u.cache_read_tokens, u.cache_write_tokens), (0, 0));
    assert_usage_matches(&out, &reqs);
}

#[test]
fn openai_requests_extend_the_previous_request_byte_for_byte() {
    let sb = Sandbox::new();
    sb.llm.billing(0);
    std::fs::write(
        sb.group().join("AGENTS.md"),
        "The user likes short answers.",
    )
    .unwrap();
    std::fs::write(sb.group().join("n.txt"), "numbers 1 2 3").unwrap();
    sb.llm
        .push(Reply::tool("read_file", json!({"path": "n.txt"})));
    sb.llm
        .push(Reply::tool("bash", json!({"command": "echo hi"})).streaming(false));
    sb.llm.push(Reply::text("read it"));
    let first = sb.run(start("openai", "read n.txt"));
    assert_eq!(first.code, 0, "stderr: {}", first.stderr);
    let in_first = sb.llm.requests().len();
    assert_usage_matches(&first, &sb.llm.requests());

    // A scheduled task resuming the same session: its note goes in the new user message, so
    // the system prompt, and with it the whole prefix, is unchanged.
    sb.llm.push(Reply::text("nothing new"));
    let mut s = start("openai", "check the numbers");
    s.session_id = Some(first.session());
    s.is_task = true;
    let task = sb.run(s);
    assert_eq!(task.code, 0, "stderr: {}", task.stderr);
    let reqs = sb.llm.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs[3].raw.contains("started by a scheduled task"));
    for (i, w) in reqs.windows(2).enumerate() {
        let stem = w[0]
            .raw
            .strip_suffix("]}")
            .unwrap_or_else(|| panic!("messages come last: {}", w[0].raw));
        assert!(
            w[1].raw.starts_with(stem),
            "request {} does not extend request {i}:\n{}\n{}",
            i + 1,
            w[0].raw,
            w[1].raw
        );
        // The provider's prompt (tools, then messages) is cached up to the new messages.
        let cached = openai_prompt(&w[0].raw).len() - "]".len();
        assert_eq!(w[1].bill.unwrap().cache_read, tokens(cached));
    }
    assert_usage_matches(&task, &reqs[in_first..]);
}

#[test]
fn sub_agents_mark_their_own_prefix() {
    let sb = Sandbox::new();
    sb.llm.billing(MIN_CACHEABLE);
    let tasks = json!({"tasks": [
        {"role": "You are SUB-A.", "prompt": "check a"},
        {"role": "You are SUB-B.", "prompt": "check b", "tools": ["read_file"]},
    ]});
    sb.llm.push(Reply::tool("delegate", tasks));
    sb.llm
        .push(Reply::tool("bash", json!({"command": "true"})).when("You are SUB-A.\\n"));
    sb.llm.push(Reply::text("A done").when("\"tool_result\""));
    sb.llm.push(Reply::text("B done").when("You are SUB-B.\\n"));
    sb.llm.push(Reply::text("both done").when("B done"));
    let out = sb.run(start("anthropic", "split the work"));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let reqs = sb.llm.requests();
    let subs: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.system().starts_with("You are SUB-"))
        .collect();
    assert_eq!(subs.len(), 3, "two calls for A, one for B");
    for r in &subs {
        assert_eq!(
            breakpoints(&r.body),
            expected_breakpoints(&r.body),
            "{}",
            r.raw
        );
    }
    // Sub-agent A's second step reads what its first wrote.
    let a: Vec<Bill> = subs
        .iter()
        .filter(|r| r.system().starts_with("You are SUB-A."))
        .map(|r| r.bill.unwrap())
        .collect();
    assert_eq!(a[1].cache_read, a[0].cache_read + a[0].cache_write, "{a:?}");
}

#[test]
fn the_fake_bills_and_refuses_like_the_api() {
    use support::fake_llm::billing::{Cache, check_breakpoints};
    let mark = json!({"type": "ephemeral"});
    let text = |t: &str, marked: bool| {
        let mut b = json!({"type": "text", "text": t});
        if marked {
            b["cache_control"] = mark.clone();
        }
        b
    };
    let big = "x".repeat(8000);
    // 30 user blocks after a 2,000-token system prompt: a breakpoint on the last block looks
    // back only 20 blocks, so it cannot see an entry written at the system prompt.
    let blocks = |upto: usize, marked_at: &[usize]| -> Vec<serde_json::Value> {
        (0..upto)
            .map(|i| text(&format!("block {i:02}"), marked_at.contains(&i)))
            .collect()
    };
    let body = |content: Vec<serde_json::Value>| json!({"system": [text(&big, true)], "messages": [{"role": "user", "content": content}]});
    let unmarked_system = |content| json!({"system": [text(&big, false)], "messages": [{"role": "user", "content": content}]});
    // The first request writes the system prompt (its only marker) and pays for the rest.
    let fresh = || {
        let mut c = Cache::new(MIN_CACHEABLE);
        let first = c.anthropic(&body(blocks(30, &[])));
        (c, first)
    };
    let (mut c, first) = fresh();
    assert_eq!(first.cache_read, 0);
    assert!(first.cache_write >= 2000 && first.input > 0, "{first:?}");
    assert_eq!(
        c.anthropic(&unmarked_system(blocks(30, &[]))),
        Bill {
            input: first.prompt(),
            ..Bill::default()
        },
        "no marker, no read"
    );
    let (mut c, _) = fresh();
    let far = c.anthropic(&unmarked_system(blocks(30, &[29])));
    assert_eq!(
        far.cache_read, 0,
        "the system entry is 30 blocks back: {far:?}"
    );
    let (mut c, _) = fresh();
    let near = c.anthropic(&unmarked_system(blocks(30, &[15])));
    assert_eq!(
        near.cache_read, first.cache_write,
        "16 blocks back is within the lookback"
    );
    // It writes its own entry (system to block 15) and pays in full for the blocks after it.
    assert!(near.cache_write > 0 && near.input > 0, "{near:?}");

    assert!(check_breakpoints(&body(blocks(3, &[0, 1, 2]))).is_ok());
    let five = check_breakpoints(&body(blocks(5, &[0, 1, 2, 3]))).unwrap_err();
    assert!(five.contains("maximum of 4"), "{five}");
    let empty = check_breakpoints(&body(vec![text("", true)])).unwrap_err();
    assert!(empty.contains("empty text"), "{empty}");
}
