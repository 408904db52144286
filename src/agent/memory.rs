//! Memory that survives compaction. Before older turns are summarised and archived, the model
//! gets one short, bounded turn with only the file tools to write what matters into its memory
//! file (`AGENTS.md` in the group folder, which every later run reads into its system prompt).
//! The turn works on a copy of the transcript: nothing of it is kept in the conversation, and
//! nothing of it reaches the chat. A failure here never stops compaction (the archive keeps the
//! whole history, and stays searchable); only a fatal error (auth) ends the run as usual.

use super::ctx::Ctx;
use super::emit;
use super::providers::{self, Request, ToolSpec};
use super::tools::{self, Output};
use super::transcript::{Block, Message, Role, push_user_text};
use super::transport::CallError;
use crate::infra::protocol::AgentLine;

/// The words that open the memory turn (tests look for them).
pub const FLUSH_MARKER: &str = "Your context is nearly full";
/// Model calls the memory turn may make.
pub const MAX_FLUSH_STEPS: usize = 6;
/// The tools the memory turn may use: reading and writing files, nothing that leaves the folder.
const MEMORY_TOOLS: [&str; 3] = ["read_file", "write_file", "edit_file"];

/// The instruction for the memory turn.
pub fn flush_prompt(ctx: &Ctx) -> String {
    let memory = ctx.paths.group().join(crate::infra::untrusted::MEMORY_FILE);
    format!(
        "[claw] {FLUSH_MARKER}: the older turns of this conversation are about to be archived to \
         conversations/ and replaced by a short summary. Before that, save what you will need later \
         (facts about people, their preferences, decisions, promises, open tasks) into your memory file \
         {} with read_file and then edit_file or write_file. Keep that file organised and concise; do not \
         repeat what it already says. If nothing new is worth keeping, change nothing. Then reply with one \
         short line; this reply is not sent to the chat.",
        memory.display()
    )
}

/// Run the memory turn over a copy of the conversation; returns the model's closing line.
pub fn flush(ctx: &Ctx, system: &str, conversation: &[Message]) -> Result<String, CallError> {
    let specs: Vec<ToolSpec> = tools::all_specs()
        .into_iter()
        .filter(|t| MEMORY_TOOLS.contains(&t.name))
        .collect();
    let mut messages = conversation.to_vec();
    push_user_text(&mut messages, &flush_prompt(ctx));
    for _ in 0..MAX_FLUSH_STEPS {
        let reply = providers::complete(
            &ctx.http,
            &Request {
                settings: &ctx.start.model,
                system,
                messages: &messages,
                tools: &specs,
                // The prefix is the conversation's own, already cached when caching is on.
                cache: providers::cache::enabled(),
            },
        )?;
        ctx.add_usage(reply.usage);
        let uses: Vec<_> = reply
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
        if uses.is_empty() {
            return Ok(msg.text());
        }
        messages.push(msg);
        let mut results = Vec::with_capacity(uses.len());
        for (id, name, input) in uses {
            emit(&AgentLine::Progress {
                tool: format!("memory: {name}"),
                detail: input["path"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            });
            let out = match reply.bad_args.iter().find(|(bad, _)| *bad == id) {
                Some((_, why)) => Output::err(format!("tool `{name}` was not run: its {why}.")),
                None => tools::run(ctx, &specs, &name, &input),
            };
            results.push(Block::ToolResult {
                tool_use_id: id,
                content: out.content,
                is_error: out.is_error,
            });
        }
        messages.push(Message {
            role: Role::User,
            content: results,
        });
    }
    Ok(format!(
        "(the memory turn stopped after {MAX_FLUSH_STEPS} model calls)"
    ))
}
