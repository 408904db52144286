//! The tools offered to the model: their specs and one dispatcher.
//!
//! It owns the tool catalogue and the rule that a tool failure is a tool result, never a crash of
//! the loop. It never decides authorisation for the host: IPC requests are only requests, which
//! `claw ipc-apply` checks again.

pub mod bash;
pub mod files;
pub mod history;
pub mod ipc;
pub mod output;
pub mod web;

pub use super::ctx::Ctx;
pub use output::Output;

use super::providers::ToolSpec;
use serde_json::{Value, json};

/// Every tool, in the order offered.
pub fn all_specs() -> Vec<ToolSpec> {
    let s = |name, description, schema| ToolSpec {
        name,
        description,
        schema,
    };
    let task_id =
        json!({"type":"object","properties":{"task_id":{"type":"integer"}},"required":["task_id"]});
    vec![
        s(
            "bash",
            "Run a bash command in the group folder (/workspace/group). Returns stdout, stderr and the exit code. HTTP(S) goes through the egress proxy; only allowlisted hosts are reachable.",
            json!({"type":"object","properties":{"command":{"type":"string"},"timeout_secs":{"type":"integer","description":"optional, at most the configured limit"}},"required":["command"]}),
        ),
        s(
            "read_file",
            "Read a text file. Relative paths are inside the group folder. Optional 1-based line offset and line limit.",
            json!({"type":"object","properties":{"path":{"type":"string"},"offset":{"type":"integer"},"limit":{"type":"integer"}},"required":["path"]}),
        ),
        s(
            "write_file",
            "Create or overwrite a file (parent folders are created).",
            json!({"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}),
        ),
        s(
            "edit_file",
            "Replace an exact string in a file. Fails if old_string is missing, or appears more than once unless replace_all is true.",
            json!({"type":"object","properties":{"path":{"type":"string"},"old_string":{"type":"string"},"new_string":{"type":"string"},"replace_all":{"type":"boolean"}},"required":["path","old_string","new_string"]}),
        ),
        s(
            "glob",
            "List files matching a glob pattern (*, ?, ** for any depth), relative to path (default the group folder).",
            json!({"type":"object","properties":{"pattern":{"type":"string"},"path":{"type":"string"}},"required":["pattern"]}),
        ),
        s(
            "grep",
            "Search file contents with an extended regular expression; returns file:line:text.",
            json!({"type":"object","properties":{"pattern":{"type":"string"},"path":{"type":"string"},"include":{"type":"string","description":"file name glob, e.g. *.md"},"ignore_case":{"type":"boolean"}},"required":["pattern"]}),
        ),
        s(
            "web_fetch",
            "Fetch a URL through the egress proxy and return the text. Hosts not on the group's list are refused, or wait for the owner's approval if the group asks; give a reason for the owner.",
            json!({"type":"object","properties":{"url":{"type":"string"},"reason":{"type":"string","description":"why you need this URL, shown to the owner if the host needs approval"}},"required":["url"]}),
        ),
        s(
            "search_history",
            "Search this group's past chat messages, your own earlier replies and archived (compacted) conversations by words; use it when asked about something said before that is not in your context. Every word must match (else any word); a trailing * matches a prefix. Returns ranked snippets with date, sender and message id.",
            json!({"type":"object","properties":{"query":{"type":"string","description":"a few distinctive words"},"since":{"type":"string","description":"YYYY-MM-DD, RFC 3339, or a duration back from now like 30d"},"until":{"type":"string","description":"same forms; a date includes that day"},"sender":{"type":"string","description":"sender id or name; assistant for your replies"},"limit":{"type":"integer","description":"at most 50, default 10"},"group":{"type":"string","description":"main only: search one group's history (default: all groups)"}},"required":["query"]}),
        ),
        s(
            "send_message",
            "Send a message to the chat now (before your final answer). chat defaults to this group's chat; another chat may need the owner's approval (then this waits for their answer; give a reason).",
            json!({"type":"object","properties":{"text":{"type":"string"},"chat":{"type":"string"},"reason":{"type":"string","description":"why, shown to the owner if the act needs approval"}},"required":["text"]}),
        ),
        s(
            "send_file",
            "Send a file from the group folder to the chat (a chart, a PDF, an audio note): path relative to /workspace/group, optional caption. Photos go as photos, OGG audio as a voice note, the rest as documents. chat as for send_message.",
            json!({"type":"object","properties":{"path":{"type":"string"},"caption":{"type":"string"},"chat":{"type":"string"}},"required":["path"]}),
        ),
        s(
            "schedule_task",
            "Schedule a task: schedule_type cron (5-field), interval (seconds) or once (local or RFC 3339 time). context_mode group (sees this chat's history) or isolated.",
            json!({"type":"object","properties":{"prompt":{"type":"string"},"schedule_type":{"type":"string","enum":["cron","interval","once"]},"schedule_value":{"type":"string"},"context_mode":{"type":"string","enum":["group","isolated"]},"timezone":{"type":"string"},"folder":{"type":"string","description":"main only: target group"},"check":{"type":"string","description":"optional shell command run first in this container without network (60 s limit); the task wakes you only when it exits 0 and prints something, and you get what it printed, e.g. a script that prints new mail"},"reason":{"type":"string","description":"why, shown to the owner if the act needs approval"}},"required":["prompt","schedule_type","schedule_value"]}),
        ),
        s(
            "list_tasks",
            "List the scheduled tasks this group can see.",
            json!({"type":"object","properties":{}}),
        ),
        s(
            "update_task",
            "Change a task's prompt or schedule.",
            json!({"type":"object","properties":{"task_id":{"type":"integer"},"prompt":{"type":"string"},"schedule_type":{"type":"string"},"schedule_value":{"type":"string"},"timezone":{"type":"string"}},"required":["task_id"]}),
        ),
        s("pause_task", "Pause a scheduled task.", task_id.clone()),
        s("resume_task", "Resume a paused task.", task_id.clone()),
        s("cancel_task", "Cancel (delete) a scheduled task.", task_id),
        s(
            "register_group",
            "Main group only: register a known chat as a group with its own folder.",
            json!({"type":"object","properties":{"chat":{"type":"string"},"folder":{"type":"string"},"name":{"type":"string"},"trigger":{"type":"string"},"requires_trigger":{"type":"boolean"}},"required":["chat","folder"]}),
        ),
        s(
            "refresh_groups",
            "Main group only: ask the host to rewrite /workspace/ipc/available_chats.json (the chats you can register).",
            json!({"type":"object","properties":{}}),
        ),
        s(
            "add_mcp_server",
            "Ask the host to add an MCP server to a group (its tools appear as NAME__tool from the group's next run): a stdio `command` (with `args`) that exists in the image or the group folder, or a remote `url`. Needs the owner's approval; say why in `reason`. folder: main only, another group.",
            json!({"type":"object","properties":{"name":{"type":"string","description":"1-32 lowercase letters, digits or -"},"command":{"type":"string"},"args":{"type":"array","items":{"type":"string"}},"url":{"type":"string"},"folder":{"type":"string"},"reason":{"type":"string"}},"required":["name"]}),
        ),
        s(
            "delegate",
            "Run several sub-agents in parallel, each with its own role and prompt (and optionally a narrower list of tool names); returns all their answers.",
            json!({"type":"object","properties":{"tasks":{"type":"array","items":{"type":"object","properties":{"role":{"type":"string"},"prompt":{"type":"string"},"tools":{"type":"array","items":{"type":"string"}}},"required":["role","prompt"]}}},"required":["tasks"]}),
        ),
    ]
}

/// Run one tool call; every failure comes back as an error result.
pub fn run(ctx: &Ctx, allowed: &[ToolSpec], name: &str, input: &Value) -> Output {
    if !allowed.iter().any(|t| t.name == name) {
        // A tool of a server that failed to start was never offered; say why, not "unknown".
        if let Some(out) = ctx.mcp.unavailable(name) {
            return out;
        }
        let names: Vec<&str> = allowed.iter().map(|t| t.name).collect();
        return Output::err(format!(
            "unknown tool `{name}`; available tools: {}",
            names.join(", ")
        ));
    }
    let out = match name {
        "bash" => bash::run(ctx, input),
        "read_file" => files::read(ctx, input),
        "write_file" => files::write(ctx, input),
        "edit_file" => files::edit(ctx, input),
        "glob" => files::glob(ctx, input),
        "grep" => files::grep(ctx, input),
        "web_fetch" => web::fetch(ctx, input),
        "search_history" => history::search(ctx, input),
        "delegate" => super::delegate::run(ctx, input),
        _ if ctx.mcp.owns(name) => ctx.mcp.call(name, input, &ctx.paths.group()),
        _ => ipc::run(ctx, name, input),
    };
    cap(out, ctx.start.limits.tool_output_cap)
}

/// Truncate a result over the cap, keeping its head and tail and saying so.
pub fn cap(mut out: Output, cap: usize) -> Output {
    let len = out.content.len();
    if len <= cap {
        return out;
    }
    let head = floor_char(&out.content, cap * 3 / 4);
    let tail_start = ceil_char(&out.content, len - cap / 4);
    out.content = format!(
        "{}\n\n[output truncated: {len} bytes total, over the {cap}-byte cap; showing the first {head} and last {} bytes]\n\n{}",
        &out.content[..head],
        len - tail_start,
        &out.content[tail_start..]
    );
    out
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A required string argument, or an error naming it.
pub fn arg_str<'a>(input: &'a Value, key: &str) -> Result<&'a str, Output> {
    input[key]
        .as_str()
        .ok_or_else(|| Output::err(format!("missing string argument `{key}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_head_and_tail_on_char_boundaries() {
        let s = "é".repeat(100); // 200 bytes
        let out = cap(Output::ok(s), 41);
        assert!(out.content.contains("output truncated: 200 bytes"));
        assert!(out.content.starts_with('é'));
        assert!(out.content.ends_with('é'));
        assert_eq!(cap(Output::ok("short"), 41).content, "short");
    }

    #[test]
    fn tool_names_are_unique() {
        let mut names: Vec<_> = all_specs().iter().map(|t| t.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
