//! Applying an authorised `send_file`: the file is copied out of the group folder now (through
//! `crate::media::outfile`, which follows no link and reads only a regular file, capped), into
//! the host-owned `media-out/`, and an outbox row carries the copy. Deliver sends the copy, so
//! the agent cannot swap the file after asking.

use anyhow::Result;
use rusqlite::Connection;

use super::apply::Effect;
use super::auth::{Allowed, Origin};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::protocol::IpcRequest;
use crate::infra::store::{attachments, outbox};

/// Where copied-out files wait for delivery.
pub fn out_dir(home: &Home) -> std::path::PathBuf {
    home.root.join("media-out")
}

/// Copy the file and queue it; a refusal (link, FIFO, too large, outside) is the reason.
pub fn apply(
    conn: &Connection,
    home: &Home,
    config: &Config,
    origin: &Origin,
    tag: &str,
    req: &IpcRequest,
    allowed: Allowed,
) -> Result<Result<Effect, String>> {
    let (IpcRequest::SendFile { path, caption, .. }, Allowed::Send { chat }) = (req, allowed)
    else {
        return Ok(Err("send_file was not authorised as a send".into()));
    };
    // Re-applied after a crash between commit and delete: the first application's row stands.
    let existing: Option<i64> = {
        use rusqlite::OptionalExtension;
        conn.prepare_cached("SELECT id FROM outbox WHERE origin = ?1")?
            .query_row([tag], |r| r.get(0))
            .optional()?
    };
    if let Some(id) = existing {
        return Ok(Ok(Effect {
            outbox_id: Some(id),
            ..Effect::default()
        }));
    }
    let file = match crate::media::outfile::copy_out(
        &home.group_dir(&origin.folder),
        path,
        &out_dir(home),
        &tag.replace(['/', ':'], "-"),
        &config.media,
    ) {
        Ok(f) => f,
        Err(why) => return Ok(Err(why)),
    };
    let id = outbox::enqueue(conn, &chat, caption.as_deref().unwrap_or(""), tag)?;
    attachments::insert_outbox_file(conn, id, &file)?;
    crate::infra::store::audit::record(
        conn,
        Some(&origin.folder),
        None,
        "file.queued",
        serde_json::json!({"outbox": id, "chat": chat, "path": path, "bytes": file.size, "mime": file.mime}),
    )?;
    Ok(Ok(Effect {
        outbox_id: Some(id),
        ..Effect::default()
    }))
}
