//! `delegate`: claw's swarm. Several sub-agents run in parallel threads, each with its own role
//! prompt, its own transcript and optionally a narrower tool set, and report back to the lead.
//!
//! Sub-agents never get `delegate` themselves (no recursion), and their transcripts are not stored.

use super::ctx::Ctx;
use super::providers::ToolSpec;
use super::session::Session;
use super::tools::{Output, all_specs};
use super::transcript::Message;
use super::turn::{self, Runner};
use serde_json::Value;

/// Most sub-agents one call may start.
const MAX_TASKS: usize = 8;

/// Run every task in `input.tasks` at once and return all their answers.
pub fn run(ctx: &Ctx, input: &Value) -> Output {
    let Some(tasks) = input["tasks"].as_array().filter(|t| !t.is_empty()) else {
        return Output::err("delegate needs `tasks`: a non-empty array of {role, prompt, tools?}");
    };
    if tasks.len() > MAX_TASKS {
        return Output::err(format!(
            "delegate takes at most {MAX_TASKS} tasks, got {}",
            tasks.len()
        ));
    }
    let base: Vec<ToolSpec> = all_specs()
        .into_iter()
        .filter(|t| t.name != "delegate")
        .chain(ctx.mcp.specs().iter().cloned())
        .collect();
    let results: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let base = &base;
                scope.spawn(move || one(ctx, base, i + 1, t))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| "sub-agent crashed".into()))
            .collect()
    });
    let failed = results.iter().filter(|r| r.starts_with("ERROR")).count();
    let mut out = String::new();
    for (i, (t, r)) in tasks.iter().zip(&results).enumerate() {
        out.push_str(&format!(
            "## Sub-agent {} ({})\n{}\n\n",
            i + 1,
            t["role"].as_str().unwrap_or("?"),
            r.trim()
        ));
    }
    if failed == results.len() {
        Output::err(out)
    } else {
        Output::ok(out)
    }
}

/// One sub-agent from start to answer.
fn one(ctx: &Ctx, base: &[ToolSpec], n: usize, task: &Value) -> String {
    let (Some(role), Some(prompt)) = (task["role"].as_str(), task["prompt"].as_str()) else {
        return "ERROR: each task needs string fields `role` and `prompt`".into();
    };
    let tools: Vec<ToolSpec> = match task["tools"].as_array() {
        None => base.to_vec(),
        Some(names) => {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            if let Some(bad) = names.iter().find(|n| !base.iter().any(|t| t.name == **n)) {
                return format!("ERROR: unknown or unavailable tool `{bad}` for a sub-agent");
            }
            base.iter()
                .filter(|t| names.contains(&t.name))
                .cloned()
                .collect()
        }
    };
    let system = format!(
        "{role}\n\nYou are sub-agent {n} working for {name}, the lead assistant of the chat group `{folder}`. \
         Do the task you are given and answer with your findings; your answer goes to the lead, not to the chat. \
         Your working folder is {group}.",
        name = ctx.start.assistant_name,
        folder = ctx.start.group_folder,
        group = ctx.paths.group().display(),
    );
    let label = format!("sub{n}:");
    let mut s = Session {
        id: format!("sub{n}"),
        messages: vec![Message::user_text(prompt)],
        last_input_tokens: 0,
    };
    let runner = Runner {
        label: &label,
        system: &system,
        tools: &tools,
        compact: false,
    };
    match turn::run(ctx, &runner, &mut s, &mut Vec::<(String, Vec<String>)>::new) {
        Ok(text) if text.trim().is_empty() => "(no answer)".into(),
        Ok(text) => text,
        Err(e) => format!("ERROR: {e}"),
    }
}
