//! Task operations shared by `claw task` and IPC requests: create, update, pause, resume, cancel.
//!
//! Owns the rules for a task's fields (prompt, context mode, per-group cap) and its status
//! changes; schedules are checked by `crate::schedule`. It never decides who may act on a task:
//! the CLI is the owner, and IPC authorises in `crate::ipc::auth` before calling in here.

use anyhow::Result;
use rusqlite::Connection;

use crate::error::{Code, Coded};
use crate::schedule;
use crate::store::tasks::{self as q, Task};
use crate::store::{audit, groups};

/// Longest prompt a task may carry.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Most active or paused tasks one group may have, so a runaway agent cannot flood the scheduler.
pub const MAX_TASKS_PER_GROUP: i64 = 1000;

/// What creating a task needs.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub folder: String,
    pub prompt: String,
    pub kind: String,
    pub value: String,
    pub timezone: Option<String>,
    pub context_mode: Option<String>,
    /// Who asked: `cli` or `ipc:FOLDER/<stem>`.
    pub created_by: String,
}

/// Fields `update` may change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub prompt: Option<String>,
    pub kind: Option<String>,
    pub value: Option<String>,
    pub timezone: Option<String>,
    pub context_mode: Option<String>,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    Coded::err(Code::Usage, msg)
}

fn check_prompt(p: &str) -> Result<()> {
    if p.trim().is_empty() {
        return Err(usage("task prompt is empty; say what the task should do"));
    }
    if p.len() > MAX_PROMPT_BYTES {
        return Err(usage(format!(
            "task prompt is {} bytes; the limit is {MAX_PROMPT_BYTES}",
            p.len()
        )));
    }
    Ok(())
}

fn check_mode(m: &str) -> Result<()> {
    if !matches!(m, "group" | "isolated") {
        return Err(usage(format!(
            "context mode `{m}` is unknown: use `group` (resume the chat's session) or `isolated` (fresh)"
        )));
    }
    Ok(())
}

/// Load a task or say how to find one.
pub fn get(conn: &Connection, id: i64) -> Result<Task> {
    q::get(conn, id)?.ok_or_else(|| usage(format!("no task {id}; see `claw task list`")))
}

/// Create a task for a registered group; its output goes to the group's chat.
pub fn create(conn: &Connection, n: NewTask, now: i64) -> Result<Task> {
    let group = groups::get(conn, &n.folder)?
        .ok_or_else(|| usage(format!("no group `{}`; see `claw group list`", n.folder)))?;
    check_prompt(&n.prompt)?;
    let mode = n.context_mode.unwrap_or_else(|| "isolated".into());
    check_mode(&mode)?;
    let checked = schedule::check(&n.kind, &n.value, n.timezone.as_deref(), now).map_err(usage)?;
    if q::count_live(conn, &n.folder)? >= MAX_TASKS_PER_GROUP {
        return Err(usage(format!(
            "group `{}` already has {MAX_TASKS_PER_GROUP} tasks; cancel some first",
            n.folder
        )));
    }
    let mut t = Task {
        id: 0,
        folder: group.folder,
        chat_id: group.chat_id,
        prompt: n.prompt,
        kind: checked.kind.into(),
        schedule: checked.value,
        timezone: checked.timezone,
        context_mode: mode,
        status: "active".into(),
        next_run: Some(checked.first_run),
        last_run: None,
        last_result: None,
        created_at: now,
        created_by: n.created_by,
    };
    t.id = q::insert(conn, &t)?;
    audit::record(
        conn,
        Some(&t.folder),
        None,
        "task.created",
        serde_json::json!({"task": t.id, "kind": t.kind, "schedule": t.schedule,
                           "timezone": t.timezone, "by": t.created_by}),
    )?;
    Ok(t)
}

/// Change a task's prompt, schedule, zone or mode; a new schedule restarts from `now`.
pub fn update(conn: &Connection, id: i64, c: Changes, by: &str, now: i64) -> Result<Task> {
    let mut t = get(conn, id)?;
    if matches!(t.status.as_str(), "completed" | "cancelled") {
        return Err(usage(format!(
            "task {id} is {}; create a new task instead",
            t.status
        )));
    }
    if let Some(p) = c.prompt {
        check_prompt(&p)?;
        t.prompt = p;
    }
    if let Some(m) = c.context_mode {
        check_mode(&m)?;
        t.context_mode = m;
    }
    if c.kind.is_some() && c.value.is_none() {
        return Err(usage(format!(
            "changing task {id}'s schedule type needs a schedule value too"
        )));
    }
    if c.kind.is_some() || c.value.is_some() || c.timezone.is_some() {
        let kind = c.kind.unwrap_or_else(|| t.kind.clone());
        // A once time is stored as RFC 3339 UTC, so re-checking it keeps the same instant.
        let value = c.value.unwrap_or_else(|| t.schedule.clone());
        let tz = c.timezone.unwrap_or_else(|| t.timezone.clone());
        let checked = schedule::check(&kind, &value, Some(&tz), now).map_err(usage)?;
        t.kind = checked.kind.into();
        t.schedule = checked.value;
        t.timezone = checked.timezone;
        t.next_run = Some(checked.first_run);
    }
    q::update(conn, &t)?;
    audit::record(
        conn,
        Some(&t.folder),
        None,
        "task.updated",
        serde_json::json!({"task": id, "kind": t.kind, "schedule": t.schedule,
                           "timezone": t.timezone, "by": by}),
    )?;
    Ok(t)
}

/// Stop an active task from running until resumed.
pub fn pause(conn: &Connection, id: i64, by: &str) -> Result<Task> {
    set_status(conn, id, "paused", &["active"], by)
}

/// Let a paused task run again from its next slot after `now` (a missed once time runs now).
pub fn resume(conn: &Connection, id: i64, by: &str, now: i64) -> Result<Task> {
    let t = get(conn, id)?;
    if t.status != "paused" {
        return Err(usage(format!(
            "task {id} is {}; only a paused task can be resumed",
            t.status
        )));
    }
    let next = match t.kind.as_str() {
        "once" => Some(t.next_run.unwrap_or(now).max(now)),
        _ => schedule::next_after(&t.kind, &t.schedule, &t.timezone, t.next_run, now)
            .map_err(usage)?,
    };
    q::set_next_run(conn, id, next)?;
    set_status(conn, id, "active", &["paused"], by)
}

/// Stop a task for good (its history stays).
pub fn cancel(conn: &Connection, id: i64, by: &str) -> Result<Task> {
    set_status(conn, id, "cancelled", &["active", "paused"], by)
}

fn set_status(conn: &Connection, id: i64, to: &str, from: &[&str], by: &str) -> Result<Task> {
    let mut t = get(conn, id)?;
    if !from.contains(&t.status.as_str()) {
        return Err(usage(format!(
            "task {id} is {}; it cannot become {to}",
            t.status
        )));
    }
    q::set_status(conn, id, to)?;
    t.status = to.into();
    audit::record(
        conn,
        Some(&t.folder),
        None,
        &format!("task.{to}"),
        serde_json::json!({"task": id, "by": by}),
    )?;
    Ok(t)
}
