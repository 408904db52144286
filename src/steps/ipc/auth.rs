//! Who may do what through IPC: every authorisation decision, as one pure function.
//!
//! Identity is the folder a request file was found in, never a field inside it. A non-main group
//! may message only its own chat and touch only its own tasks; main may act on any registered
//! group and any chat in the `chats` table. This module never reads files or writes the store;
//! [`facts`] only looks up what [`authorise`] needs, so the decision itself is testable as a table.

use anyhow::Result;
use rusqlite::Connection;

use crate::infra::protocol::IpcRequest;
use crate::infra::store::{groups, messages, tasks};

/// The group a request file came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub folder: String,
    pub is_main: bool,
    /// The group's own chat.
    pub chat_id: String,
}

/// What the store says about the things a request names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The chat named by `send_message.chat` or `register_group.chat` is in the `chats` table.
    pub chat_known: bool,
    /// The folder owning the task named by a task operation; `None` when there is no such task.
    pub task_folder: Option<String>,
    /// The folder named by `schedule_task.folder` is a registered group.
    pub folder_registered: bool,
}

/// A permitted request, with its target resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Allowed {
    /// Send to this chat.
    Send {
        chat: String,
    },
    /// Create a task in this group.
    Schedule {
        folder: String,
    },
    /// Act on this existing task.
    Task {
        task_id: i64,
    },
    Register,
    Refresh,
    /// Add an MCP server to this group.
    AddMcp {
        folder: String,
    },
}

/// Look up the facts `authorise` needs for `req`.
pub fn facts(conn: &Connection, origin: &Origin, req: &IpcRequest) -> Result<Facts> {
    let mut f = Facts::default();
    match req {
        IpcRequest::SendMessage { chat: Some(c), .. }
        | IpcRequest::SendFile { chat: Some(c), .. }
        | IpcRequest::RegisterGroup { chat: c, .. } => {
            f.chat_known = c == &origin.chat_id || messages::chat(conn, c)?.is_some();
        }
        IpcRequest::ScheduleTask {
            folder: Some(folder),
            ..
        }
        | IpcRequest::AddMcpServer {
            folder: Some(folder),
            ..
        } => f.folder_registered = groups::get(conn, folder)?.is_some(),
        IpcRequest::UpdateTask { task_id, .. }
        | IpcRequest::PauseTask { task_id }
        | IpcRequest::ResumeTask { task_id }
        | IpcRequest::CancelTask { task_id } => {
            f.task_folder = tasks::get(conn, *task_id)?.map(|t| t.folder);
        }
        _ => {}
    }
    Ok(f)
}

/// Decide whether `origin` may make `req`; the error is the reason, readable by the agent.
pub fn authorise(origin: &Origin, req: &IpcRequest, facts: &Facts) -> Result<Allowed, String> {
    match req {
        // A file goes where a message may go: the same rule, decided in one place.
        IpcRequest::SendMessage { chat, .. } | IpcRequest::SendFile { chat, .. } => {
            let chat = chat.clone().unwrap_or_else(|| origin.chat_id.clone());
            if chat == origin.chat_id {
                Ok(Allowed::Send { chat })
            } else if !origin.is_main {
                Err(format!(
                    "group `{}` may only message its own chat, not `{chat}`",
                    origin.folder
                ))
            } else if !facts.chat_known {
                Err(format!(
                    "chat `{chat}` is unknown; main may message only chats claw has seen (see available_chats.json)"
                ))
            } else {
                Ok(Allowed::Send { chat })
            }
        }
        IpcRequest::ScheduleTask { folder, .. } => {
            let folder = folder.clone().unwrap_or_else(|| origin.folder.clone());
            if folder == origin.folder {
                Ok(Allowed::Schedule { folder })
            } else if !origin.is_main {
                Err(format!(
                    "group `{}` may only schedule tasks for itself, not for `{folder}`",
                    origin.folder
                ))
            } else if !facts.folder_registered {
                Err(format!("no group `{folder}` is registered"))
            } else {
                Ok(Allowed::Schedule { folder })
            }
        }
        IpcRequest::UpdateTask { task_id, .. }
        | IpcRequest::PauseTask { task_id }
        | IpcRequest::ResumeTask { task_id }
        | IpcRequest::CancelTask { task_id } => match &facts.task_folder {
            Some(f) if origin.is_main || f == &origin.folder => {
                Ok(Allowed::Task { task_id: *task_id })
            }
            // Same words whether the task is missing or another group's: no existence oracle.
            _ => Err(format!("no task {task_id} in group `{}`", origin.folder)),
        },
        IpcRequest::RegisterGroup { chat, .. } => {
            if !origin.is_main {
                Err(format!(
                    "group `{}` may not register groups; only the main group may",
                    origin.folder
                ))
            } else if !facts.chat_known {
                Err(format!(
                    "chat `{chat}` is unknown; it must have sent a message first (see available_chats.json)"
                ))
            } else {
                Ok(Allowed::Register)
            }
        }
        IpcRequest::AddMcpServer { folder, .. } => {
            let folder = folder.clone().unwrap_or_else(|| origin.folder.clone());
            if folder != origin.folder && !origin.is_main {
                return Err(format!(
                    "group `{}` may only ask for MCP servers for itself, not for `{folder}`",
                    origin.folder
                ));
            }
            if folder != origin.folder && !facts.folder_registered {
                return Err(format!("no group `{folder}` is registered"));
            }
            // A server that could never be added is refused before anyone is asked about it.
            if let Some(entry) = mcp_entry(&folder, req) {
                crate::mcp::validate(&entry)?;
            }
            // Who may ask is decided here; whether it is added is the approval policy's
            // (`approvals::ipc::add_mcp_server`).
            Ok(Allowed::AddMcp { folder })
        }
        IpcRequest::RefreshGroups => {
            if origin.is_main {
                Ok(Allowed::Refresh)
            } else {
                Err(format!(
                    "group `{}` may not refresh groups; only the main group may",
                    origin.folder
                ))
            }
        }
    }
}

/// The `mcp.toml` entry an `add_mcp_server` request asks for, in group `folder`.
pub fn mcp_entry(folder: &str, req: &IpcRequest) -> Option<crate::mcp::Entry> {
    let IpcRequest::AddMcpServer {
        name,
        command,
        args,
        url,
        ..
    } = req
    else {
        return None;
    };
    Some(crate::mcp::Entry {
        group: folder.to_string(),
        name: name.clone(),
        command: command.clone(),
        args: args.clone(),
        env: Default::default(),
        url: url.clone(),
        timeout_secs: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_origin() -> Origin {
        Origin {
            folder: "main".into(),
            is_main: true,
            chat_id: "tg:1".into(),
        }
    }
    fn fam() -> Origin {
        Origin {
            folder: "fam".into(),
            is_main: false,
            chat_id: "tg:2".into(),
        }
    }
    fn send(chat: Option<&str>) -> IpcRequest {
        IpcRequest::SendMessage {
            text: "hi".into(),
            chat: chat.map(Into::into),
            reason: None,
        }
    }
    fn schedule(folder: Option<&str>) -> IpcRequest {
        IpcRequest::ScheduleTask {
            prompt: "p".into(),
            schedule_type: "interval".into(),
            schedule_value: "60".into(),
            context_mode: None,
            timezone: None,
            folder: folder.map(Into::into),
            check: None,
            reason: None,
        }
    }
    fn register() -> IpcRequest {
        IpcRequest::RegisterGroup {
            chat: "tg:9".into(),
            folder: "new".into(),
            name: None,
            trigger: None,
            requires_trigger: None,
        }
    }
    fn known() -> Facts {
        Facts {
            chat_known: true,
            ..Facts::default()
        }
    }
    fn task_of(f: &str) -> Facts {
        Facts {
            task_folder: Some(f.into()),
            ..Facts::default()
        }
    }
    fn registered() -> Facts {
        Facts {
            folder_registered: true,
            ..Facts::default()
        }
    }
    fn send_to(c: &str) -> Allowed {
        Allowed::Send { chat: c.into() }
    }
    fn sched_in(f: &str) -> Allowed {
        Allowed::Schedule { folder: f.into() }
    }

    #[test]
    fn matrix() {
        let none = Facts::default();
        let ops = |id| {
            vec![
                IpcRequest::UpdateTask {
                    task_id: id,
                    prompt: Some("x".into()),
                    schedule_type: None,
                    schedule_value: None,
                    timezone: None,
                    check: None,
                },
                IpcRequest::PauseTask { task_id: id },
                IpcRequest::ResumeTask { task_id: id },
                IpcRequest::CancelTask { task_id: id },
            ]
        };
        // (who, request, facts, expected: Ok(allowed) or Err(substring of the reason))
        let mut cases: Vec<(Origin, IpcRequest, Facts, Result<Allowed, &str>)> = vec![
            // send_message
            (fam(), send(None), none.clone(), Ok(send_to("tg:2"))),
            (fam(), send(Some("tg:2")), known(), Ok(send_to("tg:2"))),
            (
                fam(),
                send(Some("tg:1")),
                known(),
                Err("only message its own chat"),
            ),
            (
                fam(),
                send(Some("tg:9")),
                none.clone(),
                Err("only message its own chat"),
            ),
            (main_origin(), send(None), none.clone(), Ok(send_to("tg:1"))),
            (
                main_origin(),
                send(Some("tg:2")),
                known(),
                Ok(send_to("tg:2")),
            ),
            (
                main_origin(),
                send(Some("tg:9")),
                none.clone(),
                Err("unknown"),
            ),
            // schedule_task
            (fam(), schedule(None), none.clone(), Ok(sched_in("fam"))),
            (
                fam(),
                schedule(Some("fam")),
                registered(),
                Ok(sched_in("fam")),
            ),
            (
                fam(),
                schedule(Some("main")),
                registered(),
                Err("only schedule tasks for itself"),
            ),
            (
                fam(),
                schedule(Some("other")),
                registered(),
                Err("only schedule tasks for itself"),
            ),
            (
                main_origin(),
                schedule(None),
                none.clone(),
                Ok(sched_in("main")),
            ),
            (
                main_origin(),
                schedule(Some("fam")),
                registered(),
                Ok(sched_in("fam")),
            ),
            (
                main_origin(),
                schedule(Some("ghost")),
                none.clone(),
                Err("no group `ghost`"),
            ),
            // register_group / refresh_groups
            (fam(), register(), known(), Err("only the main group")),
            (main_origin(), register(), known(), Ok(Allowed::Register)),
            (main_origin(), register(), none.clone(), Err("unknown")),
            (
                fam(),
                IpcRequest::RefreshGroups,
                none.clone(),
                Err("only the main group"),
            ),
            (
                main_origin(),
                IpcRequest::RefreshGroups,
                none.clone(),
                Ok(Allowed::Refresh),
            ),
        ];
        // add_mcp_server: own group or (main) a registered one; then the approval policy decides.
        let mcp = |folder: Option<&str>| IpcRequest::AddMcpServer {
            name: "time".into(),
            folder: folder.map(Into::into),
            command: Some("mcp-server-time".into()),
            args: vec![],
            url: None,
            reason: None,
        };
        let mcp_in = |f: &str| Allowed::AddMcp { folder: f.into() };
        cases.extend([
            (main_origin(), mcp(None), none.clone(), Ok(mcp_in("main"))),
            (
                main_origin(),
                mcp(Some("fam")),
                registered(),
                Ok(mcp_in("fam")),
            ),
            (
                main_origin(),
                mcp(Some("ghost")),
                none.clone(),
                Err("no group `ghost`"),
            ),
            (
                fam(),
                mcp(Some("main")),
                registered(),
                Err("only ask for MCP servers for itself"),
            ),
            (fam(), mcp(None), none.clone(), Ok(mcp_in("fam"))),
        ]);
        for req in ops(7) {
            cases.push((
                fam(),
                req.clone(),
                task_of("fam"),
                Ok(Allowed::Task { task_id: 7 }),
            ));
            cases.push((
                fam(),
                req.clone(),
                task_of("main"),
                Err("no task 7 in group `fam`"),
            ));
            cases.push((
                fam(),
                req.clone(),
                none.clone(),
                Err("no task 7 in group `fam`"),
            ));
            cases.push((
                main_origin(),
                req.clone(),
                task_of("fam"),
                Ok(Allowed::Task { task_id: 7 }),
            ));
            cases.push((main_origin(), req.clone(), none.clone(), Err("no task 7")));
        }
        for (who, req, facts, want) in cases {
            let got = authorise(&who, &req, &facts);
            match (&got, &want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{} {req:?}", who.folder),
                (Err(e), Err(w)) => assert!(e.contains(w), "{} {req:?}: {e}", who.folder),
                _ => panic!("{} {req:?}: got {got:?}, want {want:?}", who.folder),
            }
        }
    }
}
