//! Read-only snapshots for agents: `ipc/FOLDER/current_tasks.json` (the group's tasks, all tasks
//! for main) and, for main, `ipc/FOLDER/available_chats.json`.
//!
//! Each file is replaced atomically (temp file, then rename) relative to an open `ipc/FOLDER`
//! directory, so a symlink an agent planted at the snapshot's name is replaced, never written
//! through. Nothing secret is ever put in a snapshot.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::ffi::OsStr;

use crate::infra::paths::Home;
use crate::infra::protocol::{IPC_CHATS_SNAPSHOT, IPC_TASKS_SNAPSHOT};
use crate::infra::store::{Store, messages, tasks};
use crate::infra::untrusted::{Kind, Parents};

/// A task as the agent sees it.
#[derive(Debug, Serialize)]
struct TaskView<'a> {
    id: i64,
    folder: &'a str,
    prompt: &'a str,
    schedule_type: &'a str,
    schedule_value: &'a str,
    timezone: &'a str,
    context_mode: &'a str,
    status: &'a str,
    next_run: Option<String>,
    last_run: Option<String>,
    last_result: Option<&'a str>,
}

/// A chat as main's agent sees it.
#[derive(Debug, Serialize)]
struct ChatView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    channel: &'a str,
    is_group: bool,
    registered: bool,
    last_activity: String,
}

/// Rewrite the snapshots a committed change shows in, by one rule for ipc-apply and `claw task`:
/// each folder whose tasks changed, and main's whenever anything changed (main sees every task
/// and chat). Returns the folders that could not be written, with why; the change stands either
/// way and run-group rewrites a group's snapshots before its next run.
pub fn refresh<'a>(
    home: &Home,
    store: &Store,
    task_folders: impl IntoIterator<Item = &'a str>,
    chats: bool,
) -> Result<Vec<(String, anyhow::Error)>> {
    let main = crate::infra::store::groups::main(&store.conn)?;
    let mut todo: Vec<(&str, bool)> = task_folders
        .into_iter()
        .filter(|f| main.as_ref().is_none_or(|m| m.folder != *f))
        .map(|f| (f, false))
        .collect();
    if todo.is_empty() && !chats {
        return Ok(Vec::new());
    }
    if let Some(m) = &main {
        todo.push((&m.folder, true));
    }
    let mut failed = Vec::new();
    for (folder, is_main) in todo {
        if let Err(e) = write_snapshots(home, store, folder, is_main) {
            failed.push((folder.to_string(), e));
        }
    }
    Ok(failed)
}

/// Write the group's snapshots (run-group calls this before each run; ipc-apply after changes).
pub fn write_snapshots(home: &Home, store: &Store, folder: &str, is_main: bool) -> Result<()> {
    crate::rules::groups::validate_folder(folder).map_err(anyhow::Error::msg)?;
    let ipc = Parents::open(home)
        .context("cannot open claw's ipc folder")?
        .ipc;
    match ipc.kind(OsStr::new(folder))? {
        None => ipc.mkdir(folder)?,
        Some(Kind::Dir) => {}
        Some(k) => bail!(
            "ipc/{folder} is a {}, not a directory; remove it so snapshots can be written",
            k.describe()
        ),
    }
    let dir = ipc.sub(folder)?;
    let list = tasks::list(
        &store.conn,
        if is_main { None } else { Some(folder) },
        false,
    )?;
    let view: Vec<TaskView> = list
        .iter()
        .map(|t| TaskView {
            id: t.id,
            folder: &t.folder,
            prompt: &t.prompt,
            schedule_type: &t.kind,
            schedule_value: &t.schedule,
            timezone: &t.timezone,
            context_mode: &t.context_mode,
            status: &t.status,
            next_run: t.next_run.map(crate::infra::time::rfc3339),
            last_run: t.last_run.map(crate::infra::time::rfc3339),
            last_result: t.last_result.as_deref(),
        })
        .collect();
    dir.write_atomic(IPC_TASKS_SNAPSHOT, &serde_json::to_vec_pretty(&view)?)
        .with_context(|| format!("cannot write ipc/{folder}/{IPC_TASKS_SNAPSHOT}"))?;
    if is_main {
        let chats = messages::chats(&store.conn)?;
        let view: Vec<ChatView> = chats
            .iter()
            .map(|c| ChatView {
                id: &c.id,
                name: c.name.as_deref(),
                channel: &c.channel,
                is_group: c.is_group,
                registered: c.registered,
                last_activity: crate::infra::time::rfc3339(c.last_activity),
            })
            .collect();
        dir.write_atomic(IPC_CHATS_SNAPSHOT, &serde_json::to_vec_pretty(&view)?)
            .with_context(|| format!("cannot write ipc/{folder}/{IPC_CHATS_SNAPSHOT}"))?;
    }
    Ok(())
}
