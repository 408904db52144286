//! Red team, end to end: a probe in a non-main group's real container tries to spend past its
//! budget the way a runaway or prompt-injected agent would: it asks the OpenAI-compatible route
//! not to report usage (`stream_options.include_usage: false`), then keeps sending requests, one
//! after another and then ten at once. The host is checked afterwards: the upstream received only
//! the requests that fit the budget, each asked for its usage, the usage table holds what the
//! upstream reported, and the chat and the main chat were told once.

#[path = "support/e2e.rs"]
mod e2e;

use e2e::{Env, PROBE_HEAD};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A fake OpenAI-compatible upstream that, like the real one, reports usage in a streamed reply
/// only when the request asked for it: 100 prompt tokens (40 of them cached) and 50 completion
/// tokens per request. Keeps every request body.
fn upstream() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let keep = Arc::clone(&keep);
            std::thread::spawn(move || serve(s, &keep));
        }
    });
    (url, seen)
}

fn serve(s: TcpStream, seen: &Mutex<Vec<serde_json::Value>>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let wants_usage = req["stream_options"]["include_usage"] == true;
    seen.lock().unwrap().push(req);
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
    );
    out.push_str(r#"data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}"#);
    out.push_str("\n\n");
    out.push_str(r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#);
    out.push_str("\n\n");
    if wants_usage {
        out.push_str(r#"data: {"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":40}}}"#);
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    let _ = w.write_all(out.as_bytes());
}

const SPEND: &str = r#"
S=/run/claw/proxy.sock
M=http://claw/llm/openai/v1/chat/completions
B='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"spend"}]}'
ask() { curl -s -o /tmp/out -w '%{http_code}\n' -m 60 --unix-socket "$S" -X POST -H 'content-type: application/json' -d "$B" $M; }
for i in $(seq 10); do ask >> /tmp/seq; done
report seq "$(tr '\n' ' ' < /tmp/seq)"
report refusal "$(cat /tmp/out)"
seq 10 | xargs -P 10 -I{} curl -s -o /dev/null -w '%{http_code}\n' -m 60 --unix-socket "$S" -X POST \
  -H 'content-type: application/json' -d "$B" $M > /tmp/par
report par "$(sort /tmp/par | uniq -c | tr -s ' ' | tr '\n' ';')"
"#;

#[test]
fn an_agent_that_hides_its_usage_and_loops_is_stopped_at_its_budget() {
    let (url, seen) = upstream();
    let mut env = Env::new();
    env.openai_base = url;
    env.timeout_secs = 300;
    env.extra_config = "[model]\nprovider = \"openai\"\nname = \"gpt-4o-mini\"\n".into();
    env.write_config();
    env.set_secret("OPENAI_API_KEY", "sk-oai-REDTEAM-budget");
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    // 150 tokens a request: the third request spends the budget.
    env.claw()
        .args(["group", "set", "alpha", "--budget-daily-tokens", "400"])
        .assert()
        .success();
    env.install_probe("alpha", &format!("{PROBE_HEAD}{SPEND}\nfinish\n"));
    env.say("tg:1", "probe");
    env.claw().args(["run-group", "alpha"]).assert().success();

    let texts = env.outbox("tg:1");
    let report: serde_json::Value = texts
        .iter()
        .find_map(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| panic!("no probe report in {texts:?}; logs:\n{}", env.all_logs()));
    assert_eq!(
        report["seq"], "200 200 200 402 402 402 402 402 402 402 ",
        "{report}"
    );
    assert_eq!(report["par"], " 10 402;", "{report}");
    assert!(
        report["refusal"]
            .as_str()
            .unwrap()
            .starts_with("claw: group alpha has used its 400 tokens for today"),
        "{report}"
    );
    // Only what fit reached the upstream, and each asked for its usage whatever the agent said.
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    for r in &reqs {
        assert_eq!(r["stream_options"]["include_usage"], true, "{r}");
    }
    let (requests, input, output, cache_read): (i64, i64, i64, i64) = env
        .db()
        .query_row(
            "SELECT sum(requests), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens)
             FROM usage WHERE folder = 'alpha'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((requests, input, output, cache_read), (3, 180, 150, 120));
    let refused: i64 = env
        .audit("llm.request")
        .iter()
        .filter(|d| d["status"] == 402)
        .map(|d| d["count"].as_i64().unwrap_or(1))
        .sum();
    assert_eq!(refused, 17);
    let notices: Vec<&String> = texts
        .iter()
        .filter(|t| t.starts_with("alpha has used"))
        .collect();
    assert_eq!(
        notices,
        [
            "alpha has used its 400 tokens for today; it resumes at 00:00 or when the owner raises it."
        ],
        "{texts:?}"
    );
    let main = env.outbox("cli:local");
    assert_eq!(main.len(), 1, "{main:?}");
    assert!(
        main[0].starts_with("Budget: alpha has used its 400 tokens for today (450 tokens so far)")
    );
    // The next message starts no container.
    env.say("tg:1", "again");
    env.claw().args(["run-group", "alpha"]).assert().code(5);
    assert_eq!(env.outbox("tg:1").len(), texts.len(), "told once");
}
