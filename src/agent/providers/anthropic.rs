//! The Anthropic Messages API (`POST /llm/anthropic/v1/messages`), streamed.
//!
//! It owns request building and reply parsing for this wire format; it never sends an API key
//! (the host's proxy adds it).

use super::{Reply, Request, cache, parse_args};
use crate::agent::sse;
use crate::agent::transcript::{Block, Role};
use crate::agent::transport::{CallError, Http, classify};
use crate::infra::protocol::Usage;
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{BufReader, Read};

/// Path on the proxy.
pub const PATH: &str = "/llm/anthropic/v1/messages";

/// The request body. Fields serialise in this order, so the stable parts (tools, system) come
/// first and the growing transcript last; nested objects serialise with sorted keys.
#[derive(Debug, Serialize)]
pub struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    /// A list of text blocks, so the last one can carry a cache breakpoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Value>,
    messages: Vec<Value>,
}

/// The wire form of one block; `None` for empty text, which the API refuses.
fn block(b: &Block) -> Option<Value> {
    Some(match b {
        Block::Text { text } if text.is_empty() => return None,
        Block::Text { text } => json!({"type": "text", "text": text}),
        Block::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        Block::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error})
        }
        Block::Image { media_type, data } => json!({"type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data}}),
    })
}

/// Mark the last element of `list` (an object) as a cache breakpoint.
fn mark_last(list: &mut [Value]) {
    if let Some(Value::Object(last)) = list.last_mut() {
        last.insert("cache_control".into(), cache::marker());
    }
}

/// Build the request body, with cache breakpoints when `req.cache` (see `cache.rs`).
pub fn body<'a>(req: &Request<'a>) -> Body<'a> {
    let anchors = if req.cache {
        cache::message_anchors(req.messages, |m| {
            m.content.iter().any(|b| block(b).is_some())
        })
    } else {
        Vec::new()
    };
    let messages: Vec<Value> = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut content: Vec<Value> = m.content.iter().filter_map(block).collect();
            if anchors.contains(&i) {
                mark_last(&mut content);
            }
            let role = if m.role == Role::User {
                "user"
            } else {
                "assistant"
            };
            json!({"role": role, "content": content})
        })
        .collect();
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}))
        .collect();
    let mut system: Vec<Value> = if req.system.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": req.system})]
    };
    if req.cache {
        mark_last(&mut tools);
        mark_last(&mut system);
    }
    Body {
        model: &req.settings.model,
        max_tokens: req.settings.max_tokens,
        stream: true,
        tools,
        system,
        messages,
    }
}

/// One call, no retries.
pub fn call(http: &Http, req: &Request) -> Result<Reply, CallError> {
    let resp = http.post_json(PATH, &[("anthropic-version", "2023-06-01")], &body(req))?;
    if resp.streaming {
        parse_stream(resp.body)
    } else {
        let v = super::read_json(resp.body)?;
        parse_message(&v)
    }
}

/// Parse a complete (non-streamed) message object.
pub fn parse_message(v: &Value) -> Result<Reply, CallError> {
    let mut reply = Reply::default();
    for b in v["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => reply.content.push(Block::Text {
                text: b["text"].as_str().unwrap_or("").to_string(),
            }),
            Some("tool_use") => {
                let id = b["id"].as_str().unwrap_or("").to_string();
                let input = match &b["input"] {
                    Value::Object(_) => b["input"].clone(),
                    other => parse_args(&id, &other.to_string(), &mut reply.bad_args),
                };
                reply.content.push(Block::ToolUse {
                    id,
                    name: b["name"].as_str().unwrap_or("").to_string(),
                    input,
                });
            }
            _ => {}
        }
    }
    read_usage(&v["usage"], &mut reply.usage);
    Ok(reply)
}

/// Take the counts present in an Anthropic `usage` object. `message_start` carries the input
/// side and `message_delta` cumulative totals, so a later value replaces an earlier one.
fn read_usage(u: &Value, into: &mut Usage) {
    for (key, field) in [
        ("input_tokens", &mut into.input_tokens),
        ("output_tokens", &mut into.output_tokens),
        ("cache_read_input_tokens", &mut into.cache_read_tokens),
        ("cache_creation_input_tokens", &mut into.cache_write_tokens),
    ] {
        if let Some(n) = u[key].as_u64() {
            *field = n;
        }
    }
}

/// A block being assembled from deltas.
enum Partial {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
    },
    Other,
}

/// Parse a streamed reply: message_start, content_block_*, message_delta, message_stop, ping, error.
pub fn parse_stream(body: impl Read) -> Result<Reply, CallError> {
    let mut r = BufReader::new(body);
    let mut reply = Reply::default();
    let mut blocks: Vec<Partial> = Vec::new();
    let mut finished = false;
    while let Some(ev) = sse::next_event(&mut r)
        .map_err(|e| CallError::Failed(format!("model stream broke: {e}")))?
    {
        if ev.data.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            CallError::Failed(format!("model stream sent bad JSON ({e}): {}", ev.data))
        })?;
        let idx = v["index"].as_u64().unwrap_or(0) as usize;
        match v["type"].as_str().unwrap_or(&ev.event) {
            "message_start" => read_usage(&v["message"]["usage"], &mut reply.usage),
            "content_block_start" => {
                let b = &v["content_block"];
                let p = match b["type"].as_str() {
                    Some("text") => Partial::Text(b["text"].as_str().unwrap_or("").to_string()),
                    Some("tool_use") => Partial::Tool {
                        id: b["id"].as_str().unwrap_or("").to_string(),
                        name: b["name"].as_str().unwrap_or("").to_string(),
                        json: String::new(),
                    },
                    _ => Partial::Other,
                };
                while blocks.len() <= idx {
                    blocks.push(Partial::Other);
                }
                blocks[idx] = p;
            }
            "content_block_delta" => match (blocks.get_mut(idx), v["delta"]["type"].as_str()) {
                (Some(Partial::Text(t)), Some("text_delta")) => {
                    t.push_str(v["delta"]["text"].as_str().unwrap_or(""))
                }
                (Some(Partial::Tool { json, .. }), Some("input_json_delta")) => {
                    json.push_str(v["delta"]["partial_json"].as_str().unwrap_or(""))
                }
                _ => {}
            },
            "message_delta" => read_usage(&v["usage"], &mut reply.usage),
            "message_stop" => {
                finished = true;
                break;
            }
            "error" => {
                let kind = v["error"]["type"].as_str().unwrap_or("error");
                let msg = format!(
                    "model stream error {kind}: {}",
                    v["error"]["message"].as_str().unwrap_or("")
                );
                return Err(match kind {
                    "overloaded_error" | "rate_limit_error" | "api_error" => CallError::Retry {
                        message: msg,
                        after: None,
                    },
                    "authentication_error" | "permission_error" => classify(401, msg, None),
                    _ => CallError::Failed(msg),
                });
            }
            _ => {} // ping, content_block_stop, unknown future events
        }
    }
    if !finished {
        return Err(CallError::Retry {
            message: "model stream ended before message_stop".into(),
            after: None,
        });
    }
    for p in blocks {
        match p {
            Partial::Text(text) => reply.content.push(Block::Text { text }),
            Partial::Tool { id, name, json } => {
                let input = parse_args(&id, &json, &mut reply.bad_args);
                reply.content.push(Block::ToolUse { id, name, input });
            }
            Partial::Other => {}
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_assembles_text_and_tool_input() {
        let raw = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"bash\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"command\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"ls\\\"}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let r = parse_stream(raw.as_bytes()).unwrap();
        assert_eq!(
            r.content[0],
            Block::Text {
                text: "Hello".into()
            }
        );
        assert_eq!(
            r.content[1],
            Block::ToolUse {
                id: "t1".into(),
                name: "bash".into(),
                input: json!({"command":"ls"})
            }
        );
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (12, 7));
    }

    #[test]
    fn cache_fields_come_from_message_start_and_cumulative_message_delta() {
        let raw = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":3000,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"ok\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":5,\"cache_creation_input_tokens\":200,\"cache_read_input_tokens\":3000,\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let u = parse_stream(raw.as_bytes()).unwrap().usage;
        assert_eq!(
            (
                u.input_tokens,
                u.cache_write_tokens,
                u.cache_read_tokens,
                u.output_tokens
            ),
            (5, 200, 3000, 9)
        );
        let plain = json!({"content": [], "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 40}});
        let u = parse_message(&plain).unwrap().usage;
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.prompt_tokens()),
            (1, 40, 41)
        );
    }

    fn settings() -> crate::infra::protocol::ModelSettings {
        crate::infra::protocol::ModelSettings {
            provider: "anthropic".into(),
            model: "m".into(),
            max_tokens: 10,
            context_window: 100,
        }
    }

    fn marked(v: &Value) -> bool {
        v.get("cache_control") == Some(&json!({"type": "ephemeral"}))
    }

    #[test]
    fn breakpoints_sit_on_tools_system_and_the_last_two_user_messages() {
        use crate::agent::transcript::Message;
        let tools = vec![
            super::super::ToolSpec {
                name: "a",
                description: "A",
                schema: json!({"type": "object"}),
            },
            super::super::ToolSpec {
                name: "b",
                description: "B",
                schema: json!({"type": "object"}),
            },
        ];
        let tool_turn = |id: &str| {
            [
                Message {
                    role: Role::Assistant,
                    content: vec![Block::ToolUse {
                        id: id.into(),
                        name: "a".into(),
                        input: json!({}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![
                        Block::ToolResult {
                            tool_use_id: id.into(),
                            content: "out".into(),
                            is_error: false,
                        },
                        Block::Text {
                            text: String::new(),
                        },
                    ],
                },
            ]
        };
        let mut msgs = vec![Message::user_text("hi")];
        msgs.extend(tool_turn("t1"));
        msgs.extend(tool_turn("t2"));
        let settings = settings();
        let req = |cache| Request {
            settings: &settings,
            system: "sys",
            messages: &msgs,
            tools: &tools,
            cache,
        };
        let b = serde_json::to_value(body(&req(true))).unwrap();
        let count = serde_json::to_string(&b)
            .unwrap()
            .matches("cache_control")
            .count();
        assert_eq!(count, cache::MAX_BREAKPOINTS, "{b}");
        assert!(!marked(&b["tools"][0]) && marked(&b["tools"][1]));
        assert!(marked(&b["system"][0]) && b["system"][0]["text"] == "sys");
        // The empty text block is dropped, so the tool result carries the breakpoint.
        for (i, want) in [(0, false), (2, true), (4, true)] {
            let content = b["messages"][i]["content"].as_array().unwrap();
            assert_eq!(content.len(), 1);
            assert_eq!(marked(content.last().unwrap()), want, "message {i}: {b}");
        }
        let off = serde_json::to_string(&body(&req(false))).unwrap();
        assert!(!off.contains("cache_control"), "{off}");
        // The stable parts come first on the wire, the transcript last.
        let (t, s, m) = (
            off.find("\"tools\"").unwrap(),
            off.find("\"system\"").unwrap(),
            off.find("\"messages\"").unwrap(),
        );
        assert!(t < s && s < m, "{off}");
    }

    #[test]
    fn overloaded_stream_error_is_retryable_and_truncation_too() {
        let raw = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert!(matches!(
            parse_stream(raw.as_bytes()),
            Err(CallError::Retry { .. })
        ));
        let cut = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{}}}\n\n";
        assert!(matches!(
            parse_stream(cut.as_bytes()),
            Err(CallError::Retry { .. })
        ));
    }
}
