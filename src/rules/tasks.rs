//! Task operations shared by `claw task` and IPC requests: create, update, pause, resume, cancel.
//!
//! Owns the rules for a task's fields (prompt, context mode, per-group cap) and its status
//! changes; schedules are checked by `crate::steps::schedule`. It never decides who may act on a task:
//! the CLI is the owner, and IPC authorises in `crate::steps::ipc::auth` before calling in here.

use anyhow::Result;
use rusqlite::Connection;

use crate::infra::error::{Code, Coded};
use crate::infra::store::tasks::{self as q, Task};
use crate::infra::store::{audit, groups};
use crate::steps::schedule;

/// Run one task operation in a write transaction, then refresh the snapshots the change shows
/// in (`crate::rules::snapshot::refresh`); returns the task.
pub fn change(
    home: &crate::infra::paths::Home,
    store: &mut crate::infra::store::Store,
    f: impl FnOnce(&Connection) -> Result<Task>,
) -> Result<Task> {
    let tx = store.write()?;
    let t = f(&tx)?;
    tx.commit()?;
    if let Some((folder, e)) =
        crate::rules::snapshot::refresh(home, store, [t.folder.as_str()], false)?
            .into_iter()
            .next()
    {
        return Err(e.context(format!(
            "task {} saved, but the snapshot of `{folder}` was not written",
            t.id
        )));
    }
    Ok(t)
}

/// Longest prompt a task may carry.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Most active or paused tasks one group may have, so a runaway agent cannot flood the scheduler.
pub const MAX_TASKS_PER_GROUP: i64 = 1000;
/// Longest check command a task may carry.
pub const MAX_CHECK_BYTES: usize = 4096;
/// A check's time limit when none is given, and the most it may be: a check is a quick look
/// ("new mail?"), not a job; the job is the model's.
pub const DEFAULT_CHECK_TIMEOUT_SECS: u64 = 60;
pub const MAX_CHECK_TIMEOUT_SECS: u64 = 600;

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
    /// A shell command run in the group's container first; the model is woken only when it
    /// exits 0 and prints something (see `crate::steps::run_group`'s check).
    pub check: Option<String>,
    /// The check's time limit in seconds (default [`DEFAULT_CHECK_TIMEOUT_SECS`]).
    pub check_timeout: Option<u64>,
}

/// Fields `update` may change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub prompt: Option<String>,
    pub kind: Option<String>,
    pub value: Option<String>,
    pub timezone: Option<String>,
    pub context_mode: Option<String>,
    /// `Some(Some(cmd))` sets the check command, `Some(None)` removes it.
    pub check: Option<Option<String>>,
    /// A new time limit for the check (the task must have one, or get one in this change).
    pub check_timeout: Option<u64>,
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

/// Turn a check command and time limit into the row to store, or say what is wrong.
fn make_check(command: String, timeout: Option<u64>) -> Result<q::Check> {
    if command.trim().is_empty() {
        return Err(usage(
            "the check command is empty; give a shell command, or remove the check",
        ));
    }
    if command.len() > MAX_CHECK_BYTES || command.contains('\0') {
        return Err(usage(format!(
            "the check command must be at most {MAX_CHECK_BYTES} bytes of text; put a longer one in a script in the group folder and run that"
        )));
    }
    let timeout_secs = timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT_SECS);
    if !(1..=MAX_CHECK_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(usage(format!(
            "check timeout {timeout_secs}s is out of range: use 1 to {MAX_CHECK_TIMEOUT_SECS} seconds"
        )));
    }
    Ok(q::Check {
        command,
        timeout_secs,
    })
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
    let check = match (n.check, n.check_timeout) {
        (Some(cmd), t) => Some(make_check(cmd, t)?),
        (None, Some(_)) => {
            return Err(usage(
                "--check-timeout needs a check command: add --check 'COMMAND'",
            ));
        }
        (None, None) => None,
    };
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
    q::set_check(conn, t.id, check.as_ref())?;
    audit::record(
        conn,
        Some(&t.folder),
        None,
        "task.created",
        serde_json::json!({"task": t.id, "kind": t.kind, "schedule": t.schedule,
                           "timezone": t.timezone, "by": t.created_by,
                           "check": check.map(|c| c.command)}),
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
    let old_check = q::check(conn, id)?;
    let check = match (c.check, c.check_timeout) {
        (None, None) => old_check.clone(),
        (Some(None), None) => None,
        (Some(None), Some(_)) => {
            return Err(usage(
                "a check timeout without a check makes no sense; drop one of them",
            ));
        }
        (Some(Some(cmd)), t) => Some(make_check(
            cmd,
            t.or(old_check.as_ref().map(|o| o.timeout_secs)),
        )?),
        (None, Some(t)) => match &old_check {
            Some(o) => Some(make_check(o.command.clone(), Some(t))?),
            None => {
                return Err(usage(format!(
                    "task {id} has no check command; add one with --check 'COMMAND'"
                )));
            }
        },
    };
    q::update(conn, &t)?;
    if check != old_check {
        q::set_check(conn, id, check.as_ref())?;
    }
    audit::record(
        conn,
        Some(&t.folder),
        None,
        "task.updated",
        serde_json::json!({"task": id, "kind": t.kind, "schedule": t.schedule,
                           "timezone": t.timezone, "by": by,
                           "check": check.map(|c| c.command)}),
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
