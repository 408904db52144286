//! The Anthropic Messages API (`POST /llm/anthropic/v1/messages`), streamed.
//!
//! It owns request building and reply parsing for this wire format; it never sends an API key
//! (the host's proxy adds it).

use super::{Reply, Request, parse_args};
use crate::agent::sse;
use crate::agent::transcript::{Block, Role};
use crate::agent::transport::{CallError, Http, classify};
use serde_json::{Value, json};
use std::io::{BufReader, Read};

/// Path on the proxy.
pub const PATH: &str = "/llm/anthropic/v1/messages";

/// Build the request body.
pub fn body(req: &Request) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let content: Vec<Value> = m
                .content
                .iter()
                .filter(|b| !matches!(b, Block::Text { text } if text.is_empty()))
                .map(|b| match b {
                    Block::Text { text } => json!({"type": "text", "text": text}),
                    Block::ToolUse { id, name, input } => json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                    Block::ToolResult { tool_use_id, content, is_error } => {
                        json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error})
                    }
                })
                .collect();
            let role = if m.role == Role::User { "user" } else { "assistant" };
            json!({"role": role, "content": content})
        })
        .collect();
    let mut body = json!({
        "model": req.settings.model,
        "max_tokens": req.settings.max_tokens,
        "system": req.system,
        "messages": messages,
        "stream": true,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(
                |t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}),
            )
            .collect();
    }
    body
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
    reply.usage.input_tokens = input_tokens(&v["usage"]);
    reply.usage.output_tokens = v["usage"]["output_tokens"].as_u64().unwrap_or(0);
    Ok(reply)
}

/// Cached prompt tokens are still context; count them as input.
fn input_tokens(u: &Value) -> u64 {
    [
        "input_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ]
    .iter()
    .filter_map(|k| u[*k].as_u64())
    .sum()
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
            "message_start" => reply.usage.input_tokens = input_tokens(&v["message"]["usage"]),
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
            "message_delta" => {
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    reply.usage.output_tokens = n;
                }
            }
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
