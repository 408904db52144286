//! Tables for the nested content checks, applied through the whole body policy so each case
//! shows what the agent would get back.

use crate::infra::proxy::json::Part;
use crate::infra::proxy::policy::{LlmPolicy, Provider, Route, rewrite_body};
use serde_json::{Value, json};

fn policy(provider: Provider) -> LlmPolicy {
    LlmPolicy {
        provider,
        model: "group-model".into(),
        allowed_models: vec![],
        max_tokens: 4096,
        concurrency: 4,
        requests_per_run: 100,
    }
}

/// Applies the policy; Ok(body as sent) or Err((status, message)).
fn sent(route: Route, p: &LlmPolicy, body: &str) -> Result<Value, (u16, String)> {
    let rw = rewrite_body(route, p, body.as_bytes()).map_err(|r| (r.status, r.message))?;
    let mut out = Vec::new();
    for part in &rw.parts {
        match part {
            Part::Keep(r) => out.extend_from_slice(&body.as_bytes()[r.clone()]),
            Part::New(b) => out.extend_from_slice(b),
        }
    }
    Ok(serde_json::from_slice(&out).expect("rewritten body is JSON"))
}

#[test]
fn tools_must_run_in_the_sandbox() {
    let a = policy(Provider::Anthropic);
    let o = policy(Provider::OpenAi);
    // (route, policy, tools, allowed)
    let cases: &[(Route, &LlmPolicy, Value, bool)] = &[
        (
            Route::Messages,
            &a,
            json!([{"name": "bash", "input_schema": {}}]),
            true,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": "custom", "name": "b", "input_schema": {}}]),
            true,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": "web_search_20250305", "name": "web_search"}]),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": "web_fetch_20250910", "name": "web_fetch"}]),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": "code_execution_20250825", "name": "c"}]),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": "computer_20250124", "name": "computer"}]),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": "bash_20250124", "name": "bash"}]),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": "mcp_toolset", "mcp_server_name": "x"}]),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!([{"type": null, "name": "x"}]),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!([{"name": "ok", "input_schema": {}}, {"type": "web_search_20250305"}]),
            false,
        ),
        (
            Route::CountTokens,
            &a,
            json!([{"type": "web_search_20250305"}]),
            false,
        ),
        (Route::Messages, &a, json!({"name": "not-an-array"}), false),
        (Route::Messages, &a, json!([1]), false),
        (
            Route::ChatCompletions,
            &o,
            json!([{"type": "function", "function": {"name": "f"}}]),
            true,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!([{"function": {"name": "f"}}]),
            false,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!([{"type": "web_search_preview"}]),
            false,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!([{"type": "custom", "custom": {"name": "x"}}]),
            false,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!([{"type": "file_search"}]),
            false,
        ),
    ];
    for (route, p, tools, ok) in cases {
        let body = json!({"model": "group-model", "messages": [], "tools": tools}).to_string();
        let got = sent(*route, p, &body);
        assert_eq!(got.is_ok(), *ok, "{route:?} {tools}: {:?}", got.err());
    }
    // A smuggled second `type` in a tool is a duplicate, not a custom tool.
    let body = r#"{"messages":[],"tools":[{"type":"custom","type":"web_search_20250305"}]}"#;
    assert!(
        sent(Route::Messages, &a, body)
            .unwrap_err()
            .1
            .contains("duplicate key `type`")
    );
}

#[test]
fn content_may_not_reach_outside() {
    let a = policy(Provider::Anthropic);
    let o = policy(Provider::OpenAi);
    let img = |source: Value| json!({"type": "image", "source": source});
    // (route, policy, one content block, allowed)
    let cases: &[(Route, &LlmPolicy, Value, bool)] = &[
        (
            Route::Messages,
            &a,
            img(json!({"type": "base64", "media_type": "image/png", "data": "AA"})),
            true,
        ),
        (
            Route::Messages,
            &a,
            img(json!({"type": "url", "url": "https://evil.example/x?leak=1"})),
            false,
        ),
        (
            Route::Messages,
            &a,
            img(json!({"type": "file", "file_id": "file_1"})),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "document", "source": {"type": "url", "url": "https://e.example/a.pdf"}}),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}),
            true,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "document", "source": {"type": "content", "content": [img(json!({"type": "url", "url": "https://e.example"}))]}}),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "container_upload", "file_id": "file_1"}),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "tool_result", "tool_use_id": "t", "content": [img(json!({"type": "url", "url": "https://e.example"}))]}),
            false,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "tool_result", "tool_use_id": "t", "content": "plain text"}),
            true,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "tool_use", "id": "t", "name": "web_fetch", "input": {"url": "https://e.example", "file_id": "f"}}),
            true,
        ),
        (
            Route::Messages,
            &a,
            json!({"type": "search_result", "source": "https://e.example", "title": "t", "content": [{"type": "text", "text": "x"}]}),
            true,
        ),
        (
            Route::CountTokens,
            &a,
            img(json!({"type": "url", "url": "https://e.example"})),
            false,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}),
            true,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!({"type": "image_url", "image_url": {"url": "https://evil.example/p.png"}}),
            false,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!({"type": "image_url", "image_url": "https://evil.example/p.png"}),
            false,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!({"type": "file", "file": {"file_id": "file-1"}}),
            false,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"}}),
            true,
        ),
        (
            Route::ChatCompletions,
            &o,
            json!({"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}),
            true,
        ),
    ];
    for (route, p, block, ok) in cases {
        let body = json!({"model": "group-model", "messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [block]}]})
        .to_string();
        let got = sent(*route, p, &body);
        assert_eq!(got.is_ok(), *ok, "{route:?} {block}: {:?}", got.err());
        if let Err((status, msg)) = got {
            assert_eq!(status, 400);
            assert!(msg.contains("is not forwarded"), "{msg}");
        }
    }
    // Nesting past the limit is refused rather than left unchecked.
    let mut deep = json!([{"type": "text", "text": "x"}]);
    for _ in 0..6 {
        deep = json!([{"type": "tool_result", "tool_use_id": "t", "content": deep}]);
    }
    let body = json!({"messages": [{"role": "user", "content": deep}]}).to_string();
    assert!(
        sent(Route::Messages, &a, &body)
            .unwrap_err()
            .1
            .contains("nested")
    );
}
