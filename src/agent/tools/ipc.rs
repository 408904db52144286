//! IPC tools: requests written as atomic JSON files for `claw ipc-apply` to check and apply.
//!
//! The directory a file sits in is its only identity; the host re-checks every request. This
//! module refuses main-only requests early for a clearer message, but that is a courtesy, not the
//! boundary.

use super::{Ctx, Output};
use crate::infra::protocol::{
    IPC_MESSAGES_DIR, IPC_REPLIES_DIR, IPC_TASKS_DIR, IPC_TASKS_SNAPSHOT, IpcReply, IpcRequest,
};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long task tools wait for the host's reply before saying "queued".
const REPLY_WAIT: Duration = Duration::from_secs(3);
/// Longest a tool waits for an owner's approval, whatever the host says (seconds).
const MAX_APPROVAL_WAIT: u64 = 3600;

/// Run the IPC tool `name`.
pub fn run(ctx: &Ctx, name: &str, input: &Value) -> Output {
    if name == "list_tasks" {
        return list_tasks(ctx);
    }
    if (name == "register_group" || name == "refresh_groups") && !ctx.start.is_main {
        return Output::err(format!(
            "{name} is only available to the main group; ask the owner in the main chat"
        ));
    }
    // The tool name is the request type; serde checks fields and rejects unknown ones.
    let mut obj = match input {
        Value::Object(m) => m.clone(),
        _ => return Output::err("arguments must be a JSON object"),
    };
    obj.insert("type".into(), Value::String(name.to_string()));
    let req: IpcRequest = match serde_json::from_value(Value::Object(obj)) {
        Ok(r) => r,
        Err(e) => return Output::err(format!("bad arguments for {name}: {e}")),
    };
    let dir = if matches!(
        req,
        IpcRequest::SendMessage { .. } | IpcRequest::SendFile { .. }
    ) {
        IPC_MESSAGES_DIR
    } else {
        IPC_TASKS_DIR
    };
    let id = match write_request(&ctx.paths.ipc().join(dir), &req) {
        Ok(id) => id,
        Err(e) => return Output::err(e),
    };
    // Only a message to another chat can need the owner's approval, and only then does the
    // host answer a message request.
    if matches!(req, IpcRequest::SendMessage { chat: None, .. }) {
        return Output::ok(format!("message queued for delivery (request {id})"));
    }
    let reply_path = ctx
        .paths
        .ipc()
        .join(IPC_REPLIES_DIR)
        .join(format!("{id}.json"));
    let mut reply = wait_reply(&reply_path, REPLY_WAIT, false);
    if let Some(IpcReply {
        pending: true,
        approval_id,
        expires_in_secs,
        ..
    }) = reply
    {
        // The act holds until the owner answers or the approval expires (which denies it).
        let wait = Duration::from_secs(expires_in_secs.unwrap_or(600).min(MAX_APPROVAL_WAIT) + 30);
        reply = wait_reply(&reply_path, wait, true);
        if reply.is_none() {
            return Output::ok(format!(
                "{name} is still waiting for the owner's approval {}; the host applies or refuses it when they answer",
                approval_id.unwrap_or(0)
            ));
        }
    }
    if dir == IPC_MESSAGES_DIR && reply.is_none() {
        return Output::ok(format!("message queued for delivery (request {id})"));
    }
    match reply {
        Some(IpcReply { ok: true, .. }) if dir == IPC_MESSAGES_DIR => {
            Output::ok(format!("message queued for delivery (request {id})"))
        }
        Some(IpcReply {
            ok: true, task_id, ..
        }) => Output::ok(format!(
            "{name} done{}",
            task_id.map(|t| format!(" (task {t})")).unwrap_or_default()
        )),
        Some(IpcReply {
            ok: false, error, ..
        }) => Output::err(format!(
            "{name} refused by the host: {}",
            error.unwrap_or_else(|| "no reason given".into())
        )),
        None => Output::ok(format!(
            "{name} queued as {id}; the host applies it shortly"
        )),
    }
}

/// Write `<dir>/.tmp-<id>` then rename to `<dir>/<id>.json`; returns the id.
pub fn write_request(dir: &Path, req: &IpcRequest) -> Result<String, String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create IPC folder {}: {e}", dir.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!(
        "{}-{}-{}",
        now.as_millis(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join(format!(".tmp-{id}"));
    let body = serde_json::to_vec(req).map_err(|e| format!("cannot encode IPC request: {e}"))?;
    std::fs::write(&tmp, body).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(format!("{id}.json")))
        .map_err(|e| format!("cannot publish IPC request {id}: {e}"))?;
    Ok(id)
}

/// Poll for the host's reply file (`final_only`: skip replies that say the request waits).
fn wait_reply(path: &Path, wait: Duration, final_only: bool) -> Option<IpcReply> {
    let until = Instant::now() + wait;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(r) = serde_json::from_str::<IpcReply>(&text)
            && !(final_only && r.pending)
        {
            return Some(r);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn list_tasks(ctx: &Ctx) -> Output {
    let path = ctx.paths.ipc().join(IPC_TASKS_SNAPSHOT);
    match std::fs::read_to_string(&path) {
        Ok(t) => Output::ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Output::ok("no scheduled tasks"),
        Err(e) => Output::err(format!("cannot read the task list {}: {e}", path.display())),
    }
}
