//! Carrying out an authorised request: the outbox, the task operations, group registration.
//!
//! Called only with an [`Allowed`] from `auth::authorise`; it never decides who may do what.
//! Validation errors come back as `Ok(Err(reason))` so the file is rejected with that reason;
//! store failures come back as `Err` and stop the batch (nothing half-applied is committed).

use anyhow::{Context, Result};
use rusqlite::Connection;

use super::auth::{Allowed, Origin};
use crate::infra::config::Config;
use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::protocol::IpcRequest;
use crate::infra::store::{Store, outbox};
use crate::rules::groups::NewGroup;
use crate::rules::tasks::{self, Changes, NewTask};

/// What applying a request changed.
#[derive(Debug, Clone, Default)]
pub struct Effect {
    pub task_id: Option<i64>,
    pub outbox_id: Option<i64>,
    /// The group whose task list changed.
    pub task_folder: Option<String>,
    /// Main's chat list changed or was asked for.
    pub chats_changed: bool,
}

/// A validation failure becomes the rejection reason; anything else is a real failure.
fn reason(e: anyhow::Error) -> Result<String> {
    match e.downcast_ref::<Coded>() {
        Some(c) if c.code == Code::Usage => Ok(c.message.clone()),
        _ => Err(e),
    }
}

/// The outbox row an earlier application of this request file created, if any.
fn already_sent(conn: &Connection, tag: &str) -> Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached("SELECT id FROM outbox WHERE origin = ?1")?
        .query_row([tag], |r| r.get(0))
        .optional()?)
}

/// The task an earlier application of this request file created, if any.
fn already_scheduled(
    conn: &Connection,
    tag: &str,
) -> Result<Option<crate::infra::store::tasks::Task>> {
    use rusqlite::OptionalExtension;
    let id: Option<i64> = conn
        .prepare_cached("SELECT id FROM tasks WHERE created_by = ?1")?
        .query_row([tag], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => crate::infra::store::tasks::get(conn, id),
        None => Ok(None),
    }
}

/// Apply everything except `register_group` (which needs its own transaction) on `conn`.
pub fn apply(
    conn: &Connection,
    origin: &Origin,
    tag: &str,
    req: &IpcRequest,
    allowed: Allowed,
    now: i64,
) -> Result<Result<Effect, String>> {
    let task_effect =
        |r: Result<crate::infra::store::tasks::Task>| -> Result<Result<Effect, String>> {
            match r {
                Ok(t) => Ok(Ok(Effect {
                    task_id: Some(t.id),
                    task_folder: Some(t.folder),
                    ..Effect::default()
                })),
                Err(e) => Ok(Err(reason(e)?)),
            }
        };
    match (req, allowed) {
        (IpcRequest::SendMessage { text, .. }, Allowed::Send { chat }) => {
            if text.trim().is_empty() {
                return Ok(Err("message text is empty".into()));
            }
            // A crash between committing and deleting the file re-applies it: the origin tag
            // (folder and file stem) makes that a no-op instead of a second message.
            let id = match already_sent(conn, tag)? {
                Some(id) => id,
                None => outbox::enqueue(conn, &chat, text, tag)?,
            };
            Ok(Ok(Effect {
                outbox_id: Some(id),
                ..Effect::default()
            }))
        }
        (
            IpcRequest::ScheduleTask {
                prompt,
                schedule_type,
                schedule_value,
                context_mode,
                timezone,
                check,
                ..
            },
            Allowed::Schedule { folder },
        ) => match already_scheduled(conn, tag)? {
            // Re-applied after a crash: answer with the task the first application created.
            Some(t) => task_effect(Ok(t)),
            None => task_effect(tasks::create(
                conn,
                NewTask {
                    folder,
                    prompt: prompt.clone(),
                    kind: schedule_type.clone(),
                    value: schedule_value.clone(),
                    timezone: timezone.clone(),
                    context_mode: context_mode.clone(),
                    created_by: tag.to_string(),
                    check: check.clone().filter(|c| !c.is_empty()),
                    check_timeout: None,
                },
                now,
            )),
        },
        (
            IpcRequest::UpdateTask {
                prompt,
                schedule_type,
                schedule_value,
                timezone,
                check,
                ..
            },
            Allowed::Task { task_id },
        ) => task_effect(tasks::update(
            conn,
            task_id,
            Changes {
                prompt: prompt.clone(),
                kind: schedule_type.clone(),
                value: schedule_value.clone(),
                timezone: timezone.clone(),
                context_mode: None,
                // An empty check removes it; absent keeps it.
                check: check.clone().map(|c| Some(c).filter(|c| !c.is_empty())),
                check_timeout: None,
            },
            tag,
            now,
        )),
        (IpcRequest::PauseTask { .. }, Allowed::Task { task_id }) => {
            task_effect(tasks::pause(conn, task_id, tag))
        }
        (IpcRequest::ResumeTask { .. }, Allowed::Task { task_id }) => {
            task_effect(tasks::resume(conn, task_id, tag, now))
        }
        (IpcRequest::CancelTask { .. }, Allowed::Task { task_id }) => {
            task_effect(tasks::cancel(conn, task_id, tag))
        }
        (IpcRequest::RefreshGroups, Allowed::Refresh) => Ok(Ok(Effect {
            chats_changed: true,
            ..Effect::default()
        })),
        (req, allowed) => Err(anyhow::anyhow!(
            "internal: request {req:?} does not match its authorisation {allowed:?} from {}",
            origin.folder
        )),
    }
}

/// Add an MCP server to `mcp.toml` (a file, not the store, so like `register` it is applied
/// outside the batch's transaction). Re-applying after a crash finds the same entry and succeeds.
pub fn add_mcp(
    store: &Store,
    home: &Home,
    origin: &Origin,
    tag: &str,
    req: &IpcRequest,
    allowed: Allowed,
) -> Result<Result<Effect, String>> {
    let (IpcRequest::AddMcpServer { reason: why, .. }, Allowed::AddMcp { folder }) = (req, allowed)
    else {
        anyhow::bail!("internal: add_mcp called with {req:?}");
    };
    let entry = super::auth::mcp_entry(&folder, req).context("internal: not add_mcp_server")?;
    let (name, remote) = (entry.name.clone(), entry.url.is_some());
    if crate::mcp::list(home)?.contains(&entry) {
        return Ok(Ok(Effect::default()));
    }
    if let Err(e) = crate::mcp::add(home, entry, false) {
        return Ok(Err(reason(e)?));
    }
    crate::infra::store::audit::record(
        &store.conn,
        Some(&folder),
        None,
        "mcp.added",
        serde_json::json!({"name": name, "remote": remote, "by": tag, "from": origin.folder, "reason": why.as_deref().map(|r| crate::infra::output::clip(r, 300))}),
    )?;
    Ok(Ok(Effect::default()))
}

/// Register a chat as a group for main (uses `crate::rules::groups::add`, its own transaction).
pub fn register(
    store: &mut Store,
    home: &Home,
    config: &Config,
    tag: &str,
    req: &IpcRequest,
) -> Result<Result<Effect, String>> {
    let IpcRequest::RegisterGroup {
        chat,
        folder,
        name,
        trigger,
        requires_trigger,
    } = req
    else {
        anyhow::bail!("internal: register called with {req:?}");
    };
    let g = NewGroup {
        chat_id: chat.clone(),
        folder: folder.clone(),
        name: name.clone(),
        trigger: trigger.clone(),
        requires_trigger: requires_trigger.unwrap_or(true),
        is_main: false,
        allowed_senders: None,
    };
    match crate::rules::groups::add(store, home, &config.default_trigger(), g, tag) {
        Ok(_) => Ok(Ok(Effect {
            chats_changed: true,
            ..Effect::default()
        })),
        Err(e) => Ok(Err(reason(e)?)),
    }
}
