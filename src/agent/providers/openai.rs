//! OpenAI-compatible chat completions (`POST /llm/openai/v1/chat/completions`), streamed.
//!
//! Works with OpenAI, OpenRouter, Ollama, llama.cpp and vLLM. It owns request building and reply
//! parsing for this wire format; it never sends an API key (the host's proxy adds it).

use super::{Reply, Request, parse_args};
use crate::agent::sse;
use crate::agent::transcript::{Block, Role};
use crate::agent::transport::{CallError, Http};
use serde_json::{Value, json};
use std::io::{BufReader, Read};

/// Path on the proxy.
pub const PATH: &str = "/llm/openai/v1/chat/completions";

/// Build the request body: tool results become `tool` messages, tool uses `tool_calls`.
pub fn body(req: &Request) -> Value {
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
                if !text.is_empty() {
                    messages.push(json!({"role": "user", "content": text}));
                }
            }
        }
    }
    let mut body = json!({
        "model": req.settings.model,
        "max_tokens": req.settings.max_tokens,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}}))
            .collect();
    }
    body
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

fn usage(reply: &mut Reply, u: &Value) {
    if let Some(n) = u["prompt_tokens"].as_u64() {
        reply.usage.input_tokens = n;
    }
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
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":4}}\n\n",
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
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (30, 4));
    }

    #[test]
    fn tool_results_become_tool_messages_in_order() {
        let settings = crate::protocol::ModelSettings {
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
        });
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
