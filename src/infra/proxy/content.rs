//! Checks inside an LLM request body, below the top level: the tools a request offers, and
//! content blocks that would make the provider reach outside the sandbox on the agent's behalf.
//!
//! - Tools: only ones the sandboxed agent runs itself. Anthropic tools without a `type` (or
//!   `custom`); OpenAI tools of type `function`. Server tools (web search, web fetch, code
//!   execution, computer use, MCP, …) run at the provider, outside the group's egress list.
//! - Content: an image or document whose source is a `url` makes the provider fetch that URL
//!   (an egress route around the allowlist); a `file` source, a `file_id` or a
//!   `container_upload` reads files stored in the owner's provider account. Inline data
//!   (`base64`, `text`, `data:` URLs) is fine.
//!
//! Arrays are walked one element at a time over borrowed slices of the body (see `json.rs`).

use serde_json::value::RawValue;

use super::http::Reject;
use super::json::{self, Object, each_object};
use super::policy::Route;

/// Content nests at most this deep (tool result → document → its content blocks); deeper is
/// refused rather than left unchecked.
const MAX_DEPTH: usize = 4;

fn bad(message: impl Into<String>) -> Reject {
    Reject::new(400, message.into())
}

fn parse_error(what: &'static str) -> impl Fn(String) -> Reject {
    move |e| {
        bad(format!(
            "claw: `{what}` must be an array of JSON objects ({})",
            json::clip(&e, 200)
        ))
    }
}

/// Refuses tools that would run at the provider instead of in the sandbox.
pub fn check_tools(route: Route, tools: &RawValue) -> Result<(), Reject> {
    each_object(
        tools,
        |tool| {
            let kind = tool.get("type").map(|t| json::string(t, 200));
            let ok = match (route, &kind) {
                (Route::ChatCompletions, Some(Some(k))) => k == "function",
                (Route::ChatCompletions, _) => false,
                (_, None) => true,
                (_, Some(Some(k))) => k == "custom",
                (_, Some(None)) => false,
            };
            if ok {
                return Ok(());
            }
            let shown = tool
                .get("type")
                .map_or("(none)".to_string(), |t| json::clip(t.get(), 60));
            let allowed = match route {
                Route::ChatCompletions => "only tools of type `function`",
                _ => "only custom tools (no `type`, or `custom`)",
            };
            Err(bad(format!(
                "claw: tool type {shown} is not forwarded: tools run in the sandbox, so {allowed} \
                 are allowed"
            )))
        },
        parse_error("tools"),
    )
}

/// Refuses message content that makes the provider fetch a URL or read a stored file.
pub fn check_messages(route: Route, messages: &RawValue) -> Result<(), Reject> {
    each_object(
        messages,
        |msg| match msg.get("content") {
            Some(c) if c.get().starts_with('[') => blocks(route, c, 1),
            _ => Ok(()),
        },
        parse_error("messages"),
    )
}

fn blocks(route: Route, list: &RawValue, depth: usize) -> Result<(), Reject> {
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "claw: message content is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    each_object(
        list,
        |block| match route {
            Route::ChatCompletions => openai_part(block),
            _ => anthropic_block(route, block, depth),
        },
        parse_error("content"),
    )
}

fn outside(what: &str) -> Reject {
    bad(format!(
        "claw: {what} is not forwarded: it makes the provider fetch a URL or read a file stored \
         in the owner's account; send the data inline (base64) instead"
    ))
}

fn anthropic_block(route: Route, block: &Object<'_>, depth: usize) -> Result<(), Reject> {
    let kind = block.str("type", 200).unwrap_or_default();
    if kind == "container_upload" || block.get("file_id").is_some() {
        return Err(outside("a `container_upload` block or `file_id`"));
    }
    if let Some(source) = block.get("source").filter(|s| s.get().starts_with('{')) {
        let source = Object::parse(source.get()).map_err(|e| bad(format!("claw: {e}")))?;
        let stype = source.str("type", 200).unwrap_or_default();
        match stype.as_str() {
            "base64" | "text" => {}
            "content" => {
                if let Some(inner) = source.get("content").filter(|c| c.get().starts_with('[')) {
                    blocks(route, inner, depth + 1)?;
                }
            }
            other => {
                return Err(outside(&format!("a `{}` source", json::clip(other, 40))));
            }
        }
    }
    if let Some(inner) = block.get("content").filter(|c| c.get().starts_with('[')) {
        blocks(route, inner, depth + 1)?;
    }
    Ok(())
}

fn openai_part(part: &Object<'_>) -> Result<(), Reject> {
    if let Some(image) = part.get("image_url") {
        // Checked as written: an escaped `data:` is refused too, which only errs on the safe side,
        // and a large inline image is never copied.
        let url = if image.get().starts_with('{') {
            Object::parse(image.get())
                .map_err(|e| bad(format!("claw: {e}")))?
                .get("url")
        } else {
            Some(image)
        };
        if !url.is_some_and(|u| u.get().starts_with("\"data:")) {
            return Err(outside("an `image_url` that is not a `data:` URL"));
        }
    }
    if let Some(file) = part.get("file").filter(|f| f.get().starts_with('{')) {
        let file = Object::parse(file.get()).map_err(|e| bad(format!("claw: {e}")))?;
        if file.get("file_id").is_some() {
            return Err(outside("a `file_id`"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "content_tests.rs"]
mod tests;
