//! The provider-neutral conversation: what is stored on disk and converted to each wire format.
//!
//! It owns the shape of messages only; it never talks to a provider or touches files.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who said it. Tool results travel in user messages, as in the Anthropic format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
    /// An image for a vision model (`crate::agent::image`): base64 data of `media_type`.
    Image {
        media_type: String,
        data: String,
    },
}

/// One message in the transcript.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

impl Message {
    /// A user message holding plain text.
    pub fn user_text(text: &str) -> Message {
        Message {
            role: Role::User,
            content: vec![Block::Text {
                text: text.to_string(),
            }],
        }
    }

    /// The concatenated text blocks.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for b in &self.content {
            if let Block::Text { text } = b {
                if !out.is_empty() && !text.is_empty() {
                    out.push('\n');
                }
                out.push_str(text);
            }
        }
        out
    }

    /// True for a user message that starts a turn (text, not tool results).
    pub fn starts_turn(&self) -> bool {
        self.role == Role::User
            && !self
                .content
                .iter()
                .any(|b| matches!(b, Block::ToolResult { .. }))
    }

    /// Rough size in characters, for context estimates.
    pub fn chars(&self) -> usize {
        self.content
            .iter()
            .map(|b| match b {
                Block::Text { text } => text.len(),
                Block::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
                Block::ToolResult { content, .. } => content.len(),
                // About what an image costs in tokens (~1,600), in characters.
                Block::Image { .. } => 6_000,
            })
            .sum()
    }
}

/// Append user text, merging into a trailing user message so roles keep alternating.
pub fn push_user_text(messages: &mut Vec<Message>, text: &str) {
    match messages.last_mut() {
        Some(m) if m.role == Role::User => m.content.push(Block::Text {
            text: text.to_string(),
        }),
        _ => messages.push(Message::user_text(text)),
    }
}

/// Render messages as Markdown, for archives and summary requests.
pub fn to_markdown(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        let who = match m.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
        };
        for b in &m.content {
            match b {
                Block::Text { text } => out.push_str(&format!("**{who}**: {text}\n\n")),
                Block::ToolUse { name, input, .. } => {
                    out.push_str(&format!("**{who}** used `{name}`: `{input}`\n\n"))
                }
                Block::ToolResult {
                    content, is_error, ..
                } => {
                    let label = if *is_error {
                        "Tool error"
                    } else {
                        "Tool result"
                    };
                    out.push_str(&format!("*{label}*:\n```\n{content}\n```\n\n"))
                }
                Block::Image { .. } => out.push_str(&format!("**{who}**: [an image]\n\n")),
            }
        }
    }
    out
}
