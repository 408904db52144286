//! The fake LLM's replies on the wire: Anthropic Messages and OpenAI chat completions, streamed
//! (server-sent events, text and tool arguments split in pieces to exercise delta assembly) or as
//! one JSON body, and error statuses with the providers' error bodies.

use super::billing::{self, Bill};
use super::{Part, Reply};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Write a whole JSON response with `status` and any extra headers.
pub fn respond(out: &mut impl Write, status: u16, extra: &[(&str, String)], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body.as_bytes());
    let _ = out.flush();
}

/// Write `reply` in the route's format, reporting `input` as the input counts; tool-use ids come
/// from `ids`.
pub fn answer(out: &mut impl Write, ids: &AtomicU64, reply: &Reply, input: Bill, openai: bool) {
    if reply.status != 200 {
        let kind = match reply.status {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            529 | 503 => "overloaded_error",
            _ => "api_error",
        };
        let extra: Vec<(&str, String)> = reply
            .retry_after
            .iter()
            .map(|v| ("retry-after", v.clone()))
            .collect();
        let body = json!({"type": "error", "error": {"type": kind, "message": format!("fake llm status {}", reply.status)}});
        respond(out, reply.status, &extra, &body.to_string());
        return;
    }
    let id = |p: &str| format!("{p}_{}", ids.fetch_add(1, Ordering::Relaxed));
    let prefix = if openai { "call" } else { "toolu" };
    let parts: Vec<(Part, String)> = reply
        .parts
        .iter()
        .map(|p| (p.clone(), id(prefix)))
        .collect();
    if openai {
        openai_answer(out, reply, input, &parts)
    } else {
        anthropic_answer(out, reply, input, &parts, &id("msg"))
    }
}

fn args_text(p: &Part) -> String {
    match p {
        Part::Tool { input, .. } => input.to_string(),
        Part::RawTool { args, .. } => args.clone(),
        Part::Text(_) => String::new(),
    }
}

/// Split text in a few pieces on char boundaries, to exercise delta assembly.
fn pieces(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len().div_ceil(3).max(1);
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

fn stream_head(out: &mut impl Write) {
    let _ = out.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    );
}

fn anthropic_answer(
    out: &mut impl Write,
    reply: &Reply,
    input: Bill,
    parts: &[(Part, String)],
    msg_id: &str,
) {
    let has_tool = parts.iter().any(|(p, _)| !matches!(p, Part::Text(_)));
    let stop = if has_tool { "tool_use" } else { "end_turn" };
    let output = reply.usage.1;
    if !reply.stream {
        let content: Vec<Value> = parts
            .iter()
            .map(|(p, id)| match p {
                Part::Text(t) => json!({"type": "text", "text": t}),
                Part::Tool { name, input } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": input})
                }
                Part::RawTool { name, args } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": args})
                }
            })
            .collect();
        let body = json!({"id": msg_id, "type": "message", "role": "assistant", "model": "fake",
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": billing::anthropic_usage(input, output)});
        respond(out, 200, &[], &body.to_string());
        return;
    }
    stream_head(out);
    let mut ev = |name: &str, data: Value| {
        let _ = write!(out, "event: {name}\ndata: {data}\n\n");
        let _ = out.flush();
    };
    ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": msg_id, "type": "message", "role": "assistant",
            "content": [], "model": "fake", "stop_reason": null,
            "usage": billing::anthropic_usage(input, 1)}}),
    );
    ev("ping", json!({"type": "ping"}));
    for (i, (p, id)) in parts.iter().enumerate() {
        match p {
            Part::Text(t) => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                );
                for piece in pieces(t) {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                            "delta": {"type": "text_delta", "text": piece}}),
                    );
                }
            }
            Part::Tool { name, .. } | Part::RawTool { name, .. } => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                );
                for piece in pieces(&args_text(p)) {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    );
                }
            }
        }
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        );
    }
    ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": billing::anthropic_usage(input, output)}),
    );
    ev("message_stop", json!({"type": "message_stop"}));
}

fn openai_answer(out: &mut impl Write, reply: &Reply, input: Bill, parts: &[(Part, String)]) {
    let has_tool = parts.iter().any(|(p, _)| !matches!(p, Part::Text(_)));
    let finish = if has_tool { "tool_calls" } else { "stop" };
    let usage = billing::openai_usage(input, reply.usage.1);
    let text: String = parts
        .iter()
        .filter_map(|(p, _)| {
            if let Part::Text(t) = p {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    let calls: Vec<(&String, &str, String)> = parts
        .iter()
        .filter_map(|(p, id)| match p {
            Part::Tool { name, .. } | Part::RawTool { name, .. } => {
                Some((id, name.as_str(), args_text(p)))
            }
            Part::Text(_) => None,
        })
        .collect();
    if !reply.stream {
        let content = if text.is_empty() {
            Value::Null
        } else {
            json!(text)
        };
        let mut message = json!({"role": "assistant", "content": content});
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
        }
        let body = json!({"id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage});
        respond(out, 200, &[], &body.to_string());
        return;
    }
    stream_head(out);
    let mut chunk = |delta: Value, finish: Value, usage: Option<&Value>| {
        let mut c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(u) = usage {
            c["choices"] = json!([]);
            c["usage"] = u.clone();
        }
        let _ = write!(out, "data: {c}\n\n");
        let _ = out.flush();
    };
    chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        None,
    );
    if !text.is_empty() {
        for piece in pieces(&text) {
            chunk(json!({"content": piece}), Value::Null, None);
        }
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        let first = json!({"tool_calls": [{"index": i, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""}}]});
        chunk(first, Value::Null, None);
        for piece in pieces(args) {
            chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
                None,
            );
        }
    }
    chunk(json!({}), json!(finish), None);
    chunk(json!({}), Value::Null, Some(&usage));
    let _ = out.write_all(b"data: [DONE]\n\n");
    let _ = out.flush();
}
