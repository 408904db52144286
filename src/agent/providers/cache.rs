//! Prompt caching: where the Anthropic cache breakpoints go, and the switch that turns them off.
//!
//! Anthropic caches a request's prefix (rendered in the order tools → system → messages) up to
//! each block marked `cache_control`, and a later request whose prefix up to one of its own
//! breakpoints is byte-identical reads it at a tenth of the price. The API allows four
//! breakpoints; a breakpoint finds earlier entries at most 20 blocks back. So every request gets:
//!
//! 1. the last tool definition: the tool list alone, shared by every group and every sub-agent
//!    with the same tools, survives a changed system prompt (a memory file edited);
//! 2. the last system block: tools and system prompt;
//! 3. the last block of the last user message: the whole conversation so far, written so the
//!    next step of the loop (or the next run, on resume) can read it;
//! 4. the last block of the user message before that: exactly where the previous request put its
//!    breakpoint 3, so that entry is read even when one step added more than 20 blocks (many
//!    parallel tool calls) and the lookback from breakpoint 3 alone would miss it.
//!
//! Every request of the tool loop ends with a user message (the prompt or tool results), so the
//! previous request's tail is always the previous user message. Providers with automatic prefix
//! caching (OpenAI-compatible ones) need no markers, only a byte-stable prefix: see
//! `openai.rs` and `prompt.rs`.
//!
//! It decides placement only; it never reorders or edits content, which would break the prefix.

use crate::agent::transcript::{Message, Role};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// Most `cache_control` markers one Anthropic request may carry.
pub const MAX_BREAKPOINTS: usize = 4;

/// Environment variable that turns breakpoints off (`0`, `off`, `false` or `no`), for cost
/// comparisons and for debugging a provider that refuses them. Unset means on.
pub const ENV: &str = "CLAW_PROMPT_CACHE";

/// Whether this process asks for prompt caching (read once from [`ENV`]).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| parse_switch(std::env::var(ENV).ok().as_deref()))
}

fn parse_switch(v: Option<&str>) -> bool {
    !matches!(
        v.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("0" | "off" | "false" | "no")
    )
}

/// The marker itself: the default five-minute cache.
pub fn marker() -> Value {
    json!({"type": "ephemeral"})
}

/// Indices of the messages whose last block gets a breakpoint: the last two user messages that
/// have a block able to carry one (`has_block` says whether the wire form kept any block; empty
/// text blocks are dropped and may not be marked).
pub fn message_anchors(messages: &[Message], has_block: impl Fn(&Message) -> bool) -> Vec<usize> {
    let mut out: Vec<usize> = messages
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, m)| m.role == Role::User && has_block(m))
        .map(|(i, _)| i)
        .take(MAX_BREAKPOINTS - 2)
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::transcript::Block;

    fn asst() -> Message {
        Message {
            role: Role::Assistant,
            content: vec![Block::Text { text: "a".into() }],
        }
    }

    #[test]
    fn anchors_are_the_last_two_user_messages_with_a_block() {
        let empty = Message::user_text("");
        let msgs = vec![
            Message::user_text("1"),
            asst(),
            Message::user_text("2"),
            asst(),
            empty,
            asst(),
            Message::user_text("3"),
        ];
        let kept = |m: &Message| m.chars() > 0;
        assert_eq!(message_anchors(&msgs, kept), [2, 6]);
        assert_eq!(message_anchors(&msgs[..1], kept), [0]);
        assert!(message_anchors(&[], kept).is_empty());
    }

    #[test]
    fn the_switch_is_on_unless_clearly_off() {
        for on in [None, Some(""), Some("1"), Some("on"), Some("yes")] {
            assert!(parse_switch(on), "{on:?}");
        }
        for off in ["0", "off", "FALSE", " no "] {
            assert!(!parse_switch(Some(off)), "{off}");
        }
    }
}
