//! One turn of the tool loop: call the model, run the tools it asks for, repeat until it answers.
//!
//! Shared by the lead agent and `delegate` sub-agents. It never writes the transcript file and
//! never lets a tool failure end the turn; only model-call failures do.

use super::ctx::Ctx;
use super::emit;
use super::providers::{self, Request, ToolSpec};
use super::session::{self, Session};
use super::tools::{self, Output};
use super::transcript::{Block, Message, Role, push_user_text};
use super::transport::CallError;
use crate::infra::protocol::AgentLine;
use serde_json::Value;

/// Who is running the loop, for progress lines and whether compaction applies.
pub struct Runner<'a> {
    /// Prefix for progress lines (`""` for the lead, the role for sub-agents).
    pub label: &'a str,
    pub system: &'a str,
    pub tools: &'a [ToolSpec],
    /// The lead compacts its long-lived transcript; sub-agents do not.
    pub compact: bool,
}

/// Run until the model stops calling tools (or the step limit); returns the final text.
///
/// `inbox` is polled before every model call; what it returns (text and the photos the host
/// listed with it) is added as user input.
pub fn run(
    ctx: &Ctx,
    r: &Runner,
    s: &mut Session,
    inbox: &mut dyn FnMut() -> Vec<(String, Vec<String>)>,
) -> Result<String, CallError> {
    let max_steps = ctx.start.limits.max_steps.max(1);
    let mut steps = 0;
    loop {
        for (text, images) in inbox() {
            push_user_text(&mut s.messages, &text);
            super::image::attach(&ctx.paths.group(), &mut s.messages, &images);
        }
        if r.compact {
            match session::maybe_compact(ctx, r.system, s) {
                Ok(Some(path)) => super::log(&format!(
                    "compacted the transcript; older turns archived at {}",
                    path.display()
                )),
                Ok(None) => {}
                Err(CallError::Fatal(m)) => return Err(CallError::Fatal(m)),
                Err(e) => super::log(&format!(
                    "compaction failed, continuing with the full transcript: {e}"
                )),
            }
        }
        if steps >= max_steps {
            super::log(&format!(
                "{}step limit of {max_steps} reached; ending the turn",
                r.label
            ));
            return Ok(format!(
                "(I stopped after {max_steps} steps, the step limit for one request. Ask me to continue if needed.)"
            ));
        }
        steps += 1;
        let reply = providers::complete(
            &ctx.http,
            &Request {
                settings: &ctx.start.model,
                system: r.system,
                messages: &s.messages,
                tools: r.tools,
                cache: providers::cache::enabled(),
            },
        )?;
        ctx.add_usage(reply.usage);
        // The whole context counts toward the window, whether it came from the cache or not.
        s.last_input_tokens = reply.usage.prompt_tokens();
        let uses: Vec<(String, String, Value)> = reply
            .content
            .iter()
            .filter_map(|b| match b {
                Block::ToolUse { id, name, input } => {
                    Some((id.clone(), name.clone(), input.clone()))
                }
                _ => None,
            })
            .collect();
        let msg = Message {
            role: Role::Assistant,
            content: reply.content,
        };
        let text = msg.text();
        if !msg.content.is_empty() {
            s.messages.push(msg);
        }
        if uses.is_empty() {
            return Ok(text);
        }
        let mut results = Vec::with_capacity(uses.len());
        let mut images = Vec::new();
        for (id, name, input) in uses {
            emit(&AgentLine::Progress {
                tool: format!("{}{name}", r.label),
                detail: detail(&input),
            });
            let out = match reply.bad_args.iter().find(|(bad, _)| *bad == id) {
                Some((_, why)) => Output::err(format!(
                    "tool `{name}` was not run: its {why}. Send the call again with valid JSON arguments."
                )),
                None => tools::run(ctx, r.tools, &name, &input),
            };
            results.push(Block::ToolResult {
                tool_use_id: id,
                content: out.content,
                is_error: out.is_error,
            });
            images.extend(out.image);
        }
        // Anthropic wants tool results first in the message; images follow them.
        results.extend(images);
        s.messages.push(Message {
            role: Role::User,
            content: results,
        });
    }
}

/// A short description of a tool call for logs and typing indicators.
fn detail(input: &Value) -> String {
    let key = ["command", "path", "url", "pattern", "text", "prompt"]
        .into_iter()
        .find_map(|k| input[k].as_str());
    let s = key.map_or_else(|| input.to_string(), str::to_string);
    s.chars().take(200).collect()
}
