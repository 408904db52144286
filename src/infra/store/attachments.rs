//! Attachment rows: what each stored message carried, saved or not, for the prompt builder,
//! the agent's image list, `claw status` and inbox pruning.

use anyhow::Result;
use rusqlite::{Connection, params};
use serde::Serialize;
use std::collections::HashMap;

use crate::media::{Kind, Saved};

/// One attachment as read back.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attachment {
    pub id: i64,
    pub message_seq: i64,
    pub folder: String,
    pub kind: Kind,
    pub name: String,
    pub path: Option<String>,
    pub mime: Option<String>,
    pub size: Option<i64>,
    pub caption: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    pub transcript: Option<String>,
}

/// Record one attachment of the message `seq` (inside the ingest transaction).
pub fn insert(conn: &Connection, seq: i64, folder: &str, s: &Saved) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO attachments (message_seq, folder, kind, name, path, mime, size, caption, width,
                                  height, status, error, transcript, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        seq,
        folder,
        s.kind.as_str(),
        s.name,
        s.path,
        s.mime,
        s.size.map(|n| n as i64),
        s.caption,
        s.width,
        s.height,
        s.status.as_str(),
        s.error,
        s.transcript,
        crate::infra::time::now_ms()
    ])?;
    Ok(conn.last_insert_rowid())
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<Attachment> {
    let kind: String = r.get(3)?;
    Ok(Attachment {
        id: r.get(0)?,
        message_seq: r.get(1)?,
        folder: r.get(2)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Document),
        name: r.get(4)?,
        path: r.get(5)?,
        mime: r.get(6)?,
        size: r.get(7)?,
        caption: r.get(8)?,
        width: r.get(9)?,
        height: r.get(10)?,
        status: r.get(11)?,
        error: r.get(12)?,
        transcript: r.get(13)?,
    })
}

const COLS: &str = "id, message_seq, folder, kind, name, path, mime, size, caption, width, height, status, error, transcript";

/// Attachments of the given messages, by message seq, in the order they were stored.
pub fn for_messages(conn: &Connection, seqs: &[i64]) -> Result<HashMap<i64, Vec<Attachment>>> {
    let mut out: HashMap<i64, Vec<Attachment>> = HashMap::new();
    if seqs.is_empty() {
        return Ok(out);
    }
    let (lo, hi) = (
        *seqs.iter().min().unwrap_or(&0),
        *seqs.iter().max().unwrap_or(&0),
    );
    // One range query (served by the message index) instead of one query per message.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM attachments WHERE message_seq BETWEEN ?1 AND ?2 ORDER BY id"
    ))?;
    for a in stmt.query_map(params![lo, hi], row)? {
        let a = a?;
        if seqs.contains(&a.message_seq) {
            out.entry(a.message_seq).or_default().push(a);
        }
    }
    Ok(out)
}

/// Bytes of saved inbox files per group folder (from the rows, not the disk).
pub fn inbox_bytes(conn: &Connection) -> Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT folder, coalesce(sum(size), 0) FROM attachments WHERE status = 'ok' GROUP BY folder",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Saved attachments created before `before_ms`, oldest first (for pruning), at most `limit`.
pub fn saved_before(conn: &Connection, before_ms: i64, limit: usize) -> Result<Vec<Attachment>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM attachments WHERE status = 'ok' AND created_at < ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![before_ms, limit as i64], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Mark an attachment's file as pruned (its row stays so the prompt can say so).
pub fn mark_pruned(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE attachments SET status = 'failed', path = NULL, error = 'deleted after media.inbox_max_age_days' WHERE id = ?1",
    )?
    .execute([id])?;
    Ok(())
}

/// Attach a copied-out file to an outbox row (`send_file`).
pub fn insert_outbox_file(
    conn: &Connection,
    outbox_id: i64,
    f: &crate::media::outfile::OutFile,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO outbox_files (outbox_id, path, kind, name, mime, size)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        outbox_id,
        f.path.to_string_lossy(),
        f.kind.as_str(),
        f.name,
        f.mime,
        f.size as i64
    ])?;
    Ok(())
}

/// The file of an outbox row, if it carries one.
pub fn outbox_file(
    conn: &Connection,
    outbox_id: i64,
) -> Result<Option<crate::media::outfile::OutFile>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached(
            "SELECT path, kind, name, mime, size FROM outbox_files WHERE outbox_id = ?1",
        )?
        .query_row([outbox_id], |r| {
            let path: String = r.get(0)?;
            let kind: String = r.get(1)?;
            Ok(crate::media::outfile::OutFile {
                path: path.into(),
                kind: Kind::parse(&kind).unwrap_or(Kind::Document),
                name: r.get(2)?,
                mime: r.get(3)?,
                size: r.get::<_, i64>(4)? as u64,
            })
        })
        .optional()?)
}
