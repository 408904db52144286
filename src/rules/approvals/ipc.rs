//! The approval gate for IPC requests: which requests are governed acts, and what their policy
//! (and, for `ask`, their approval row) says.
//!
//! A request that must wait stays where the agent wrote it; ipc-apply finds it again on every
//! pass and finds its row again by the act's identity: the folder, the kind, the request file's
//! tag and its exact content. A file rewritten after the owner said yes is therefore a different
//! act with a new row and a new card; the old yes never applies to it. Expired and denied rows
//! reject the file (moved to `ipc/errors/` with the reason, like any refusal), so a crash at any
//! point leaves either a waiting file with its row or a decided one, never half of an act.

use anyhow::Result;
use rusqlite::Connection;

use super::{Kind, Policy, Request, policy};
use crate::infra::config::Config;
use crate::infra::protocol::IpcRequest;
use crate::infra::store::approvals;
use crate::infra::store::groups::Group;
use crate::steps::ipc::auth::{Allowed, Facts, Origin};

/// What the gate says about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Apply it, with this target.
    Go(Allowed),
    /// Reject it; the reason is for the agent.
    Refuse(String),
    /// Leave it in place: approval `id` is open (`asked_now`: its card was queued by this call).
    Wait {
        id: i64,
        asked_now: bool,
        expires_at: i64,
    },
}

/// The gate for `req` from `group`; `None` when the request is not a governed act (the usual
/// authorisation alone decides it).
#[allow(clippy::too_many_arguments)]
pub fn gate(
    conn: &Connection,
    config: &Config,
    group: &Group,
    origin: &Origin,
    req: &IpcRequest,
    facts: &Facts,
    tag: &str,
    now: i64,
) -> Result<Option<Verdict>> {
    match req {
        IpcRequest::SendMessage {
            chat: Some(chat),
            text,
            reason,
        } if chat != &origin.chat_id => {
            if !facts.chat_known {
                return Ok(Some(Verdict::Refuse(format!(
                    "chat `{chat}` is unknown; only chats claw has seen can be messaged"
                ))));
            }
            let detail = serde_json::json!({"request": tag, "chat": chat, "text": text});
            let go = Allowed::Send { chat: chat.clone() };
            let deny = if group.is_main {
                format!(
                    "group `{}`'s approval policy denies messages to other chats",
                    origin.folder
                )
            } else {
                format!(
                    "group `{}` may only message its own chat, not `{chat}`",
                    origin.folder
                )
            };
            act(
                conn,
                config,
                group,
                Kind::SendMessage,
                detail,
                reason.as_deref(),
                tag,
                now,
                go,
                deny,
            )
            .map(Some)
        }
        IpcRequest::ScheduleTask {
            folder,
            prompt,
            schedule_type,
            schedule_value,
            reason,
            ..
        } if !group.is_main && folder.as_ref().is_none_or(|f| f == &origin.folder) => {
            if policy::for_group(config, group, Kind::ScheduleTask) == Policy::Allow {
                return Ok(None);
            }
            let detail = serde_json::json!({"request": tag, "prompt": prompt,
                "schedule_type": schedule_type, "schedule_value": schedule_value,
                "content": serde_json::to_value(req)?});
            let go = Allowed::Schedule {
                folder: origin.folder.clone(),
            };
            let deny = format!(
                "group `{}`'s approval policy denies scheduling tasks",
                origin.folder
            );
            act(
                conn,
                config,
                group,
                Kind::ScheduleTask,
                detail,
                reason.as_deref(),
                tag,
                now,
                go,
                deny,
            )
            .map(Some)
        }
        _ => Ok(None),
    }
}

/// The gate for an `add_mcp_server` request already authorised by folder (`allowed`): the
/// group's `add_mcp_server` policy, and for `ask` an approval of exactly this server.
pub fn add_mcp_server(
    conn: &Connection,
    config: &Config,
    group: &Group,
    req: &IpcRequest,
    tag: &str,
    allowed: Allowed,
    now: i64,
) -> Result<Verdict> {
    let IpcRequest::AddMcpServer {
        name,
        folder,
        reason,
        ..
    } = req
    else {
        anyhow::bail!("not an add_mcp_server request");
    };
    let target = folder.as_deref().unwrap_or(&group.folder);
    let detail = serde_json::json!({"request": tag, "folder": target, "name": name,
        "content": serde_json::to_value(req)?});
    let deny = format!(
        "group `{}`'s approval policy denies adding MCP servers; ask the owner to run `claw mcp add {target} {name} …`",
        group.folder
    );
    act(
        conn,
        config,
        group,
        Kind::AddMcpServer,
        detail,
        reason.as_deref(),
        tag,
        now,
        allowed,
        deny,
    )
}

/// The gate for one governed act: its policy, and for `ask` its row. Public for IPC acts defined
/// elsewhere (`add_mcp_server`): `detail` must name the request file's `tag` and hold everything
/// the act will do, since an approval covers exactly that detail.
#[allow(clippy::too_many_arguments)]
pub fn act(
    conn: &Connection,
    config: &Config,
    group: &Group,
    kind: Kind,
    detail: serde_json::Value,
    reason: Option<&str>,
    tag: &str,
    now: i64,
    go: Allowed,
    deny: String,
) -> Result<Verdict> {
    match policy::for_group(config, group, kind) {
        Policy::Allow => return Ok(Verdict::Go(go)),
        Policy::Deny => return Ok(Verdict::Refuse(deny)),
        Policy::Ask => {}
    }
    debug_assert!(detail.to_string().contains(tag));
    if let Some(row) = approvals::find_act(conn, &group.folder, kind.as_str(), &detail)? {
        let refused = |how: &str| {
            Verdict::Refuse(format!(
                "{} (approval {}); the agent may ask again with a new request",
                how, row.id
            ))
        };
        return Ok(match row.status.as_str() {
            "approved" => Verdict::Go(go),
            "denied" => refused("the owner denied it"),
            "expired" => refused("the owner did not answer in time"),
            _ if row.expires_at <= now => {
                approvals::expire(conn, row.id, "timeout", now)?;
                refused("the owner did not answer in time")
            }
            _ => Verdict::Wait {
                id: row.id,
                asked_now: false,
                expires_at: row.expires_at,
            },
        });
    }
    let limit = config.approvals.max_per_run;
    if approvals::open_count(conn, &group.folder)? >= i64::from(limit) {
        // A flood of requests must not become a flood of cards in the owner's chat.
        return Ok(Verdict::Refuse(format!(
            "{deny}: {limit} acts of this group already wait for the owner (approvals.max_per_run); ask again once they are answered"
        )));
    }
    let req = Request {
        folder: &group.folder,
        group_name: &group.name,
        run_id: None,
        kind,
        detail,
        reason,
    };
    Ok(match super::ask(conn, config, &req, now)? {
        Ok(row) => Verdict::Wait {
            id: row.id,
            asked_now: true,
            expires_at: row.expires_at,
        },
        Err(why) => Verdict::Refuse(format!("{deny}: it needs the owner's approval, but {why}")),
    })
}
