//! Tables for the model policy: routes, headers, body rewriting and the nested content checks.

use super::*;
use crate::infra::proxy::http::read_head;
use serde_json::{Value, json};

fn policy(provider: Provider) -> LlmPolicy {
    LlmPolicy {
        provider,
        model: "group-model".into(),
        allowed_models: vec!["also-ok".into()],
        max_tokens: 4096,
        concurrency: 4,
        requests_per_run: 100,
    }
}

/// (configured, requested, method, rest, the route or the refusal's status)
type RouteCase = (
    Provider,
    Provider,
    &'static str,
    &'static str,
    Result<Route, u16>,
);
/// (body, model sent, model_from, max_tokens sent, clamped)
type ModelCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<u64>,
    bool,
);

#[test]
fn route_table() {
    use Provider::{Anthropic as A, OpenAi as O};
    let cases: &[RouteCase] = &[
        (A, A, "POST", "/v1/messages", Ok(Route::Messages)),
        (
            A,
            A,
            "POST",
            "/v1/messages/count_tokens",
            Ok(Route::CountTokens),
        ),
        (
            O,
            O,
            "POST",
            "/v1/chat/completions",
            Ok(Route::ChatCompletions),
        ),
        (A, O, "POST", "/v1/chat/completions", Err(403)),
        (O, A, "POST", "/v1/messages", Err(403)),
        (A, A, "GET", "/v1/messages", Err(405)),
        (A, A, "DELETE", "/v1/messages", Err(405)),
        (A, A, "GET", "/v1/files", Err(404)),
        (A, A, "DELETE", "/v1/files/file_1", Err(404)),
        (A, A, "POST", "/v1/messages/batches", Err(404)),
        (A, A, "GET", "/v1/models", Err(404)),
        (A, A, "POST", "/v1/messages?beta=true", Err(404)),
        (A, A, "POST", "/v1/messages/", Err(404)),
        (A, A, "POST", "/v1/../v1/messages", Err(404)),
        (A, A, "POST", "/v1/Messages", Err(404)),
        (A, A, "POST", "", Err(404)),
        (O, O, "POST", "/v1/files", Err(404)),
        (O, O, "POST", "/v1/responses", Err(404)),
        (O, O, "POST", "/v1/chat/completions?x=1", Err(404)),
        (O, O, "GET", "/v1/models", Err(404)),
        (O, O, "post", "/v1/chat/completions", Err(405)),
    ];
    for (conf, req, method, rest, want) in cases {
        let got = route(*conf, *req, method, rest).map_err(|r| r.status);
        assert_eq!(&got, want, "{conf:?} {req:?} {method} {rest}");
    }
    let msg = route(A, O, "POST", "/v1/chat/completions")
        .unwrap_err()
        .message;
    assert!(msg.contains("provider is anthropic"), "{msg}");
    let msg = route(A, A, "GET", "/v1/files").unwrap_err().message;
    assert!(
        msg.contains(
            "POST /llm/anthropic/v1/messages and POST /llm/anthropic/v1/messages/count_tokens"
        ),
        "{msg}"
    );
}

fn head(extra: &str) -> Head {
    let raw = format!("POST /llm/x HTTP/1.1\r\n{extra}\r\n");
    read_head(&mut raw.as_bytes()).ok().flatten().unwrap().0
}

#[test]
fn header_allowlist() {
    let h = head(
        "Accept: text/event-stream\r\nAnthropic-Version: 2023-06-01\r\n\
         anthropic-beta: prompt-caching-2024-07-31, interleaved-thinking-2025-05-14\r\n\
         OpenAI-Organization: org-other\r\nx-api-key: guess\r\nAuthorization: Bearer g\r\n\
         Accept-Encoding: gzip\r\nContent-Type: text/plain\r\nx-stainless-os: Linux\r\n",
    );
    let names = |p| -> Vec<&'static str> {
        upstream_headers(p, &h)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    assert_eq!(
        names(Provider::Anthropic),
        ["accept", "anthropic-version", "anthropic-beta"]
    );
    assert_eq!(names(Provider::OpenAi), ["accept"]);
    for beta in [
        "mcp-client-2025-04-04",
        "files-api-2025-04-14",
        "code-execution-2025-05-22",
        "prompt-caching-2024-07-31,computer-use-2025-01-24",
        "context-1m-2025-08-07",
    ] {
        let err = upstream_headers(
            Provider::Anthropic,
            &head(&format!("anthropic-beta: {beta}\r\n")),
        )
        .unwrap_err();
        assert_eq!(err.status, 400, "{beta}");
        assert!(err.message.contains("anthropic-beta `"), "{}", err.message);
    }
}

/// Applies the policy and returns the body as sent upstream, parsed, with the rewrite facts.
fn sent(route: Route, p: &LlmPolicy, body: &str) -> Result<(Value, Rewrite), (u16, String)> {
    let rw = rewrite_body(route, p, body.as_bytes()).map_err(|r| (r.status, r.message))?;
    let mut out = Vec::new();
    for part in &rw.parts {
        match part {
            Part::Keep(r) => out.extend_from_slice(&body.as_bytes()[r.clone()]),
            Part::New(b) => out.extend_from_slice(b),
        }
    }
    let v: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "rewritten body is not JSON ({e}): {}",
            String::from_utf8_lossy(&out)
        )
    });
    Ok((v, rw))
}

#[test]
fn model_is_forced_and_tokens_clamped() {
    let a = policy(Provider::Anthropic);
    let cases: &[ModelCase] = &[
        (
            r#"{"model":"group-model","max_tokens":100,"messages":[]}"#,
            "group-model",
            None,
            Some(100),
            false,
        ),
        (
            r#"{"model":"also-ok","max_tokens":4096,"messages":[]}"#,
            "also-ok",
            None,
            Some(4096),
            false,
        ),
        (
            r#"{"model":"claude-opus-4","max_tokens":64000,"messages":[]}"#,
            "group-model",
            Some("claude-opus-4"),
            Some(4096),
            true,
        ),
        (
            r#"{"messages":[]}"#,
            "group-model",
            Some("(none)"),
            Some(4096),
            true,
        ),
        (
            r#"{"model":7,"max_tokens":"9","messages":[]}"#,
            "group-model",
            Some("7"),
            Some(4096),
            true,
        ),
        (
            r#"{"model":"group-model","max_tokens":-1,"messages":[]}"#,
            "group-model",
            None,
            Some(4096),
            true,
        ),
        (
            r#"{"model":"group-model","max_tokens":1e9,"messages":[]}"#,
            "group-model",
            None,
            Some(4096),
            true,
        ),
        (
            r#"{"model":"group-model","max_tokens":99999999999999999999999,"messages":[]}"#,
            "group-model",
            None,
            Some(4096),
            true,
        ),
        (
            r#"{"m\u006fdel":"claude-opus-4","max_tok\u0065ns":64000}"#,
            "group-model",
            Some("claude-opus-4"),
            Some(4096),
            true,
        ),
    ];
    for (body, model, from, max, clamped) in cases {
        let (v, rw) = sent(Route::Messages, &a, body).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(v["model"], *model, "{body}");
        assert_eq!(rw.model, *model, "{body}");
        assert_eq!(rw.model_from.as_deref(), *from, "{body}");
        assert_eq!(v["max_tokens"].as_u64(), *max, "{body}");
        assert_eq!(rw.clamped, *clamped, "{body}");
    }
    // Count tokens: the model is forced, and no max_tokens is added (its API refuses one).
    let (v, rw) = sent(Route::CountTokens, &a, r#"{"model":"x","messages":[]}"#).unwrap();
    assert_eq!(v, json!({"model": "group-model", "messages": []}));
    assert!(!rw.clamped);
    // A model name too long to be real is replaced and shown clipped.
    let long = format!(r#"{{"model":"{}","max_tokens":1}}"#, "m".repeat(10_000));
    let (v, rw) = sent(Route::Messages, &a, &long).unwrap();
    assert_eq!(v["model"], "group-model");
    assert!(rw.model_from.unwrap().chars().count() <= 101);
}

#[test]
fn openai_token_limits() {
    let o = policy(Provider::OpenAi);
    let r = Route::ChatCompletions;
    let (v, rw) = sent(r, &o, r#"{"model":"group-model","messages":[]}"#).unwrap();
    assert_eq!(v["max_completion_tokens"], 4096);
    assert!(v.get("max_tokens").is_none());
    assert!(rw.clamped);
    let (v, rw) = sent(
        r,
        &o,
        r#"{"model":"group-model","max_tokens":100,"messages":[]}"#,
    )
    .unwrap();
    assert_eq!(
        (v["max_tokens"].as_u64(), v.get("max_completion_tokens")),
        (Some(100), None)
    );
    assert!(!rw.clamped);
    let (v, rw) = sent(
        r,
        &o,
        r#"{"model":"gpt-5","max_tokens":50,"max_completion_tokens":100000,"messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .unwrap();
    assert_eq!(v["model"], "group-model");
    assert_eq!(v["max_tokens"], 50);
    assert_eq!(v["max_completion_tokens"], 4096);
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert!(rw.clamped);
    // A streamed request that does not ask for usage (or asks not to get it) gets it anyway;
    // a plain one is left alone (its reply always carries usage).
    for asked in [
        r#""stream":true"#,
        r#""stream":true,"stream_options":{"include_usage":false}"#,
        r#""stream_options":null,"stream": true"#,
    ] {
        let (v, _) = sent(r, &o, &format!(r#"{{"messages":[],{asked}}}"#)).unwrap();
        assert_eq!(
            v["stream_options"],
            json!({"include_usage": true}),
            "{asked}"
        );
    }
    let (v, _) = sent(
        r,
        &o,
        r#"{"messages":[],"stream":false,"stream_options":{"x":1}}"#,
    )
    .unwrap();
    assert_eq!(v["stream_options"], json!({"x": 1}));
    let (v, _) = sent(
        Route::Messages,
        &policy(Provider::Anthropic),
        r#"{"messages":[],"stream":true}"#,
    )
    .unwrap();
    assert_eq!(v.get("stream_options"), None);
}

#[test]
fn body_shape_and_duplicate_keys() {
    let a = policy(Provider::Anthropic);
    for (body, status, needle) in [
        ("[1,2]", 400, "one JSON object"),
        ("\"text\"", 400, "one JSON object"),
        ("{\"model\":\"x\"} trailing", 400, "one JSON object"),
        (
            "{\"model\":\"group-model\",\"model\":\"claude-opus-4\"}",
            400,
            "duplicate key `model`",
        ),
        (
            "{\"model\":\"group-model\",\"m\\u006fdel\":\"claude-opus-4\"}",
            400,
            "duplicate key `model`",
        ),
        (
            "{\"max_tokens\":1,\"max_tokens\":99999}",
            400,
            "duplicate key `max_tokens`",
        ),
        ("\u{feff}{}", 400, "one JSON object"),
    ] {
        let err = sent(Route::Messages, &a, body).unwrap_err();
        assert_eq!(err.0, status, "{body}");
        assert!(err.1.contains(needle), "{body}: {}", err.1);
    }
    let err = rewrite_body(Route::Messages, &a, b"{\"a\":\"\xff\"}").unwrap_err();
    assert!(err.message.contains("UTF-8"), "{}", err.message);
}

#[test]
fn top_level_key_allowlist() {
    let a = policy(Provider::Anthropic);
    let o = policy(Provider::OpenAi);
    let refused: &[(Route, &LlmPolicy, &str)] = &[
        (Route::Messages, &a, "mcp_servers"),
        (Route::Messages, &a, "container"),
        (Route::Messages, &a, "service_tier"),
        (Route::Messages, &a, "context_management"),
        (Route::Messages, &a, "stream_options"),
        (Route::CountTokens, &a, "max_tokens"),
        (Route::CountTokens, &a, "mcp_servers"),
        (Route::ChatCompletions, &o, "web_search_options"),
        (Route::ChatCompletions, &o, "audio"),
        (Route::ChatCompletions, &o, "modalities"),
        (Route::ChatCompletions, &o, "store"),
        (Route::ChatCompletions, &o, "n"),
        (Route::ChatCompletions, &o, "functions"),
        (Route::ChatCompletions, &o, "prediction"),
        (Route::ChatCompletions, &o, "system"),
    ];
    for (route, p, key) in refused {
        let body = format!(r#"{{"model":"group-model","messages":[],"{key}":{{}}}}"#);
        let err = sent(*route, p, &body).unwrap_err();
        assert_eq!(err.0, 400, "{key}");
        assert!(
            err.1.contains(&format!("top-level key `{key}`")),
            "{}",
            err.1
        );
    }
    // What claw-agent sends passes, with cache_control inside system, messages and tools
    // untouched.
    let body = json!({
        "model": "group-model", "max_tokens": 100, "stream": true, "temperature": 0.2,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"}]},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
        ]}],
        "tools": [{"name": "bash", "description": "d", "input_schema": {"type": "object",
            "properties": {"url": {"type": "string"}, "file_id": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "u"}, "stop_sequences": ["x"], "top_k": 5, "top_p": 0.9,
    });
    let (v, rw) = sent(Route::Messages, &a, &body.to_string()).unwrap();
    assert_eq!(v, body);
    assert!(!rw.clamped && rw.model_from.is_none());
    let body = json!({
        "model": "group-model", "max_tokens": 100, "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        "tools": [{"type": "function", "function": {"name": "bash", "parameters": {}}}],
        "tool_choice": "auto", "parallel_tool_calls": false, "seed": 1, "stop": ["x"],
        "response_format": {"type": "text"}, "reasoning_effort": "low", "user": "u",
    });
    let (v, _) = sent(Route::ChatCompletions, &o, &body.to_string()).unwrap();
    assert_eq!(v, body);
}

#[test]
fn the_rewrite_keeps_big_values_as_ranges() {
    let a = policy(Provider::Anthropic);
    let big = "x".repeat(1 << 20);
    let body = json!({"model": "claude-opus-4", "max_tokens": 64000,
        "messages": [{"role": "user", "content": big}]})
    .to_string();
    let rw = rewrite_body(Route::Messages, &a, body.as_bytes()).unwrap();
    let new_bytes: usize = rw
        .parts
        .iter()
        .map(|p| match p {
            Part::New(b) => b.len(),
            Part::Keep(_) => 0,
        })
        .sum();
    assert!(new_bytes < 200, "{new_bytes} bytes copied");
    assert_eq!(
        json::spliced_len(&rw.parts),
        body.len() - "claude-opus-4".len() + "group-model".len() - 1
    );
}
