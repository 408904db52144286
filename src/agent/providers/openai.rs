//! OpenAI-compatible chat completions (`POST /llm/openai/v1/chat/completions`), streamed.
//!
//! Works with OpenAI, OpenRouter, Ollama, llama.cpp and vLLM. It owns request building and reply
//! parsing for this wire format; it never sends an API key (the host's proxy adds it).

use super::{Reply, Request, parse_args};
use crate::agent::sse;
use crate::agent::transcript::{Block, Role};
use crate::agent::transport::{CallError, Http};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{BufReader, Read};

/// Path on the proxy.
pub const PATH: &str = "/llm/openai/v1/chat/completions";

/// The request body. These providers cache automatically by prefix, so the body is built to
/// be byte-stable: fields serialise in this order with the growing transcript last, nested
/// objects with sorted keys, and the same transcript always gives the same bytes. A request of
/// the tool loop is then the previous request with messages appended.
#[derive(Debug, Serialize)]
pub struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    stream_options: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    messages: Vec<Value>,
}

/// Build the request body: tool results become `tool` messages, tool uses `tool_calls`.
pub fn body<'a>(req: &Request<'a>) -> Body<'a> {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    for m in req.messages {
        match m.role {
            Role::Assistant => {
                let calls: Vec<Value> = m
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        Block::ToolUse { id, name, input } => Some(json!({
                            "id": id, "type": "function",
                            "function": {"name": name, "arguments": input.to_string()}
                        })),
                        _ => None,
                    })
                    .collect();
                let text = m.text();
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            Role::User => {
                // Tool results must directly follow the assistant message that asked for them.
                for b in &m.content {
                    if let Block::ToolResult {
                        tool_use_id,
                        content,
                        ..
                    } = b
                    {
                        messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                    }
                }
                let text = m.text();
                // Images (photos in the prompt, or opened with read_file) ride in a user message
                // after the tool results, as data URLs: tool messages carry text only.
                let images: Vec<Value> = m
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        Block::Image { media_type, data } => Some(json!({"type": "image_url",
                            "image_url": {"url": format!("data:{media_type};base64,{data}")}})),
                        _ => None,
                    })
                    .collect();
                if !images.is_empty() {
                    let mut parts = Vec::with_capacity(images.len() + 1);
                    if !text.is_empty() {
                        parts.push(json!({"type": "text", "text": text}));
                    }
                    parts.extend(images);
                    messages.push(json!({"role": "user", "content": parts}));
                } else if !text.is_empty() {
                    messages.push(json!({"role": "user", "content": text}));
                }
            }
        }
    }
    Body {
        model: &req.settings.model,
        max_tokens: req.settings.max_tokens,
        stream: true,
        stream_options: json!({"include_usage": true}),
        tools: req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}}))
            .collect(),
        messages,
    }
}

/// One call, no retries.
pub fn call(http: &Http, req: &Request) -> Result<Reply, CallError> {
    let resp = http.post_json(PATH, &[], &body(req))?;
    if resp.streaming {
        parse_stream(resp.body)
    } else {
        let v = super::read_json(resp.body)?;
        parse_completion(&v)
    }
}

/// Take a `usage` object when there is one. `prompt_tokens` counts every input token; the cached
/// part is reported as `prompt_tokens_details.cached_tokens` (OpenAI, OpenRouter, xAI, vLLM),
/// `prompt_cache_hit_tokens` (DeepSeek) or `cache_read_input_tokens` (gateways in front of
/// Anthropic), and cache writes, where billed, as `prompt_tokens_details.cache_write_tokens` or
/// `cache_creation_input_tokens`. What is left is uncached input.
fn usage(reply: &mut Reply, u: &Value) {
    let Some(prompt) = u["prompt_tokens"].as_u64() else {
        return;
    };
    let first = |paths: &[&[&str]]| {
        paths
            .iter()
            .find_map(|p| p.iter().fold(u, |v, k| &v[*k]).as_u64())
            .unwrap_or(0)
    };
    let read = first(&[
        &["prompt_tokens_details", "cached_tokens"],
        &["prompt_cache_hit_tokens"],
        &["cache_read_input_tokens"],
    ]);
    let write = first(&[
        &["prompt_tokens_details", "cache_write_tokens"],
        &["cache_creation_input_tokens"],
    ]);
    reply.usage.cache_read_tokens = read.min(prompt);
    reply.usage.cache_write_tokens = write.min(prompt - reply.usage.cache_read_tokens);
    reply.usage.input_tokens =
        prompt - reply.usage.cache_read_tokens - reply.usage.cache_write_tokens;
    if let Some(n) = u["completion_tokens"].as_u64() {
        reply.usage.output_tokens = n;
    }
}

/// Parse a complete (non-streamed) chat completion.
pub fn parse_completion(v: &Value) -> Result<Reply, CallError> {
    let mut reply = Reply::default();
    let msg = &v["choices"][0]["message"];
    if msg.is_null() {
        return Err(CallError::Failed(format!(
            "the model's reply has no choices[0].message: {v}"
        )));
    }
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        reply.content.push(Block::Text {
            text: t.to_string(),
        });
    }
    for c in msg["tool_calls"].as_array().into_iter().flatten() {
        let id = c["id"].as_str().unwrap_or("").to_string();
        let input = parse_args(
            &id,
            c["function"]["arguments"].as_str().unwrap_or(""),
            &mut reply.bad_args,
        );
        reply.content.push(Block::ToolUse {
            id,
            name: c["function"]["name"].as_str().unwrap_or("").to_string(),
            input,
        });
    }
    usage(&mut reply, &v["usage"]);
    Ok(reply)
}

/// A tool call being assembled from `delta.tool_calls[index]` fragments.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    args: String,
}

/// Parse a streamed reply: `data:` chunks until `[DONE]`, usage in the last chunk.
pub fn parse_stream(body: impl Read) -> Result<Reply, CallError> {
    let mut r = BufReader::new(body);
    let mut reply = Reply::default();
    let mut text = String::new();
    let mut calls: Vec<PartialCall> = Vec::new();
    let mut finished = false;
    while let Some(ev) = sse::next_event(&mut r)
        .map_err(|e| CallError::Failed(format!("model stream broke: {e}")))?
    {
        let data = ev.data.trim();
        if data == "[DONE]" {
            finished = true;
            break;
        }
        if data.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| CallError::Failed(format!("model stream sent bad JSON ({e}): {data}")))?;
        if let Some(err) = v.get("error") {
            return Err(CallError::Failed(format!("model stream error: {err}")));
        }
        usage(&mut reply, &v["usage"]);
        let choice = &v["choices"][0];
        if let Some(t) = choice["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for c in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = c["index"]
                .as_u64()
                .unwrap_or(calls.len().saturating_sub(1) as u64) as usize;
            while calls.len() <= i {
                calls.push(PartialCall::default());
            }
            let p = &mut calls[i];
            if let Some(id) = c["id"].as_str() {
                p.id = id.to_string();
            }
            if let Some(n) = c["function"]["name"].as_str() {
                p.name.push_str(n);
            }
            if let Some(a) = c["function"]["arguments"].as_str() {
                p.args.push_str(a);
            }
        }
        if !choice["finish_reason"].is_null() && choice["finish_reason"].is_string() {
            // Usage may still follow in a final chunk; keep reading until [DONE] or EOF.
            finished = true;
        }
    }
    if !finished {
        return Err(CallError::Retry {
            message: "model stream ended before finish_reason".into(),
            after: None,
        });
    }
    if !text.is_empty() {
        reply.content.push(Block::Text { text });
    }
    for (n, c) in calls.into_iter().enumerate() {
        // Some local servers omit ids; the transcript needs one to pair results.
        let id = if c.id.is_empty() {
            format!("call_{n}")
        } else {
            c.id
        };
        let input = parse_args(&id, &c.args, &mut reply.bad_args);
        reply.content.push(Block::ToolUse {
            id,
            name: c.name,
            input,
        });
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_assembles_tool_call_fragments_and_usage() {
        let raw = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi \"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"bash\",\"arguments\":\"{\\\"comm\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"and\\\":\\\"ls\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":4,\"prompt_tokens_details\":{\"cached_tokens\":24}}}\n\n",
            "data: [DONE]\n\n",
        );
        let r = parse_stream(raw.as_bytes()).unwrap();
        assert_eq!(r.content[0], Block::Text { text: "Hi ".into() });
        assert_eq!(
            r.content[1],
            Block::ToolUse {
                id: "c1".into(),
                name: "bash".into(),
                input: json!({"command":"ls"})
            }
        );
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (6, 4));
        assert_eq!(r.usage.cache_read_tokens, 24);
        assert_eq!(r.usage.prompt_tokens(), 30);
    }

    #[test]
    fn cached_tokens_in_the_shapes_providers_use() {
        let cases = [
            (
                json!({"prompt_tokens": 100, "completion_tokens": 1}),
                (100, 0, 0),
            ),
            (
                json!({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 30}}),
                (6, 64, 30),
            ),
            (
                json!({"prompt_tokens": 100, "prompt_cache_hit_tokens": 90, "prompt_cache_miss_tokens": 10}),
                (10, 90, 0),
            ),
            (
                json!({"prompt_tokens": 100, "cache_read_input_tokens": 70, "cache_creation_input_tokens": 20}),
                (10, 70, 20),
            ),
            // Nonsense from a server never underflows.
            (
                json!({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 64}}),
                (0, 10, 0),
            ),
        ];
        for (u, want) in cases {
            let mut r = Reply::default();
            usage(&mut r, &u);
            let got = (
                r.usage.input_tokens,
                r.usage.cache_read_tokens,
                r.usage.cache_write_tokens,
            );
            assert_eq!(got, want, "{u}");
        }
    }

    #[test]
    fn a_longer_transcript_only_appends_bytes() {
        use crate::agent::transcript::Message;
        let settings = crate::infra::protocol::ModelSettings {
            provider: "openai".into(),
            model: "m".into(),
            max_tokens: 10,
            context_window: 100,
        };
        let tools = crate::agent::tools::all_specs();
        let mut msgs = vec![Message::user_text("hi")];
        let text = |msgs: &[Message]| {
            serde_json::to_string(&body(&Request {
                settings: &settings,
                system: "sys",
                messages: msgs,
                tools: &tools,
                cache: true,
            }))
            .unwrap()
        };
        let before = text(&msgs);
        msgs.push(Message {
            role: Role::Assistant,
            content: vec![Block::ToolUse {
                id: "c1".into(),
                name: "bash".into(),
                input: json!({"z": 1, "a": 2}),
            }],
        });
        let after = text(&msgs);
        let stem = before.strip_suffix("]}").unwrap();
        assert!(after.starts_with(stem), "{before}\n{after}");
        assert_eq!(
            after,
            text(&msgs),
            "the same transcript gives the same bytes"
        );
    }

    #[test]
    fn tool_results_become_tool_messages_in_order() {
        let settings = crate::infra::protocol::ModelSettings {
            provider: "openai".into(),
            model: "m".into(),
            max_tokens: 10,
            context_window: 100,
        };
        let msgs = vec![
            crate::agent::transcript::Message::user_text("hi"),
            crate::agent::transcript::Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse {
                    id: "c1".into(),
                    name: "bash".into(),
                    input: json!({}),
                }],
            },
            crate::agent::transcript::Message {
                role: Role::User,
                content: vec![
                    Block::ToolResult {
                        tool_use_id: "c1".into(),
                        content: "out".into(),
                        is_error: false,
                    },
                    Block::Text {
                        text: "more".into(),
                    },
                ],
            },
        ];
        let b = body(&Request {
            settings: &settings,
            system: "sys",
            messages: &msgs,
            tools: &[],
            cache: true,
        });
        let b = serde_json::to_value(b).unwrap();
        let roles: Vec<&str> = b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
    }
}
