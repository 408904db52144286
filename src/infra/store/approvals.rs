//! The approvals table: one row per act the owner is asked about.
//!
//! A row goes `requested` → `approved` | `denied` | `expired`, exactly once: every transition is
//! one `UPDATE … WHERE status = 'requested'`, so two answers (a button and a typed `yes 42`, or an
//! answer racing the timeout) cannot both win, and an answer after the deadline cannot approve.
//! Every transition writes its audit row in the same statement batch. Acts wait on their own row
//! only (by id), so an approval can never unlock a different act.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::audit;

/// One approval row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Approval {
    pub id: i64,
    pub folder: String,
    pub run_id: Option<i64>,
    /// `egress`, `credential`, `send_message`, `add_mcp_server`, `schedule_task`.
    pub kind: String,
    /// What exactly (host and port, credential name, chat, the request itself).
    pub detail: serde_json::Value,
    pub reason: Option<String>,
    pub status: String,
    #[serde(skip)]
    pub nonce: String,
    pub requested_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub card_outbox_id: Option<i64>,
}

/// What to ask about.
pub struct NewApproval<'a> {
    pub folder: &'a str,
    pub run_id: Option<i64>,
    pub kind: &'a str,
    pub detail: &'a serde_json::Value,
    pub reason: Option<&'a str>,
    pub nonce: &'a str,
    pub expires_at: i64,
}

/// The result of trying to decide a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This call decided it.
    Now(Approval),
    /// It was already decided (or expired) before; the row as it is.
    Already(Approval),
    /// No such row (or, for a button, the nonce did not match).
    Missing,
}

const COLS: &str =
    "id, folder, run_id, kind, detail, reason, status, nonce, requested_at, expires_at,
    decided_at, decided_by, card_outbox_id";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Approval> {
    let detail: String = r.get(4)?;
    Ok(Approval {
        id: r.get(0)?,
        folder: r.get(1)?,
        run_id: r.get(2)?,
        kind: r.get(3)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        reason: r.get(5)?,
        status: r.get(6)?,
        nonce: r.get(7)?,
        requested_at: r.get(8)?,
        expires_at: r.get(9)?,
        decided_at: r.get(10)?,
        decided_by: r.get(11)?,
        card_outbox_id: r.get(12)?,
    })
}

/// Insert a `requested` row and its audit record; returns the row.
pub fn create(conn: &Connection, a: &NewApproval, now: i64) -> Result<Approval> {
    conn.execute(
        "INSERT INTO approvals (folder, run_id, kind, detail, reason, nonce, requested_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            a.folder,
            a.run_id,
            a.kind,
            a.detail.to_string(),
            a.reason,
            a.nonce,
            now,
            a.expires_at
        ],
    )?;
    let id = conn.last_insert_rowid();
    audit::record(
        conn,
        Some(a.folder),
        a.run_id,
        "approval.requested",
        serde_json::json!({"approval": id, "act": a.kind, "detail": a.detail, "reason": a.reason}),
    )?;
    get(conn, id)?.ok_or_else(|| anyhow::anyhow!("approval {id} vanished after insert"))
}

/// Remember which outbox row carries the card (Telegram adds buttons to it).
pub fn set_card(conn: &Connection, id: i64, outbox_id: i64) -> Result<()> {
    conn.execute(
        "UPDATE approvals SET card_outbox_id = ?2 WHERE id = ?1",
        params![id, outbox_id],
    )?;
    Ok(())
}

/// One row by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Approval>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM approvals WHERE id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// Only the status, for the waiting loop (cheap, by primary key).
pub fn status(conn: &Connection, id: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT status FROM approvals WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// The approval whose card is outbox row `outbox_id`, if it is still open (for buttons).
pub fn by_card(conn: &Connection, outbox_id: i64) -> Result<Option<Approval>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM approvals WHERE card_outbox_id = ?1 AND status = 'requested'"
        ))?
        .query_row([outbox_id], row)
        .optional()?)
}

/// The newest row of `folder` for exactly this act (`kind` and `detail` equal), if any: an IPC
/// request that waits finds its own row again on every pass, and a request whose content
/// changed is a different act with a row of its own.
pub fn find_act(
    conn: &Connection,
    folder: &str,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<Option<Approval>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM approvals WHERE folder = ?1 AND kind = ?2 AND detail = ?3
             ORDER BY id DESC LIMIT 1"
        ))?
        .query_row(params![folder, kind, detail.to_string()], row)
        .optional()?)
}

/// Open rows (`all`: every row), newest first, at most `limit`.
pub fn list(conn: &Connection, all: bool, limit: usize) -> Result<Vec<Approval>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLS} FROM approvals WHERE ?1 OR status = 'requested' ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![all, limit as i64], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Approve or deny row `id` if it is still open and not past its deadline. `nonce`, when given
/// (a button), must match the row's. `by` names who answered (`cli`, `chat:<sender>`, …).
pub fn decide(
    conn: &Connection,
    id: i64,
    approve: bool,
    nonce: Option<&str>,
    by: &str,
    now: i64,
) -> Result<Decided> {
    let Some(before) = get(conn, id)? else {
        return Ok(Decided::Missing);
    };
    if nonce.is_some_and(|n| n != before.nonce) {
        return Ok(Decided::Missing);
    }
    if before.status == "requested" && before.expires_at <= now {
        expire(conn, id, "timeout", now)?;
        return Ok(Decided::Already(get(conn, id)?.unwrap_or(before)));
    }
    let status = if approve { "approved" } else { "denied" };
    let n = conn.execute(
        "UPDATE approvals SET status = ?2, decided_at = ?3, decided_by = ?4
         WHERE id = ?1 AND status = 'requested' AND expires_at > ?3",
        params![id, status, now, by],
    )?;
    let after = get(conn, id)?.unwrap_or(before);
    if n == 0 {
        return Ok(Decided::Already(after));
    }
    audit::record(
        conn,
        Some(&after.folder),
        after.run_id,
        &format!("approval.{status}"),
        serde_json::json!({"approval": id, "act": after.kind, "detail": after.detail, "by": by}),
    )?;
    Ok(Decided::Now(after))
}

/// Mark row `id` expired if it is still open; `why` is recorded as who decided (`timeout`,
/// `run ended`). Returns whether this call expired it.
pub fn expire(conn: &Connection, id: i64, why: &str, now: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE approvals SET status = 'expired', decided_at = ?2, decided_by = ?3
         WHERE id = ?1 AND status = 'requested'",
        params![id, now, why],
    )?;
    if n > 0
        && let Some(a) = get(conn, id)?
    {
        audit::record(
            conn,
            Some(&a.folder),
            a.run_id,
            "approval.expired",
            serde_json::json!({"approval": id, "act": a.kind, "detail": a.detail, "by": why}),
        )?;
    }
    Ok(n > 0)
}

/// Expire every open row past its deadline; returns how many.
pub fn expire_due(conn: &Connection, now: i64) -> Result<usize> {
    let ids: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM approvals WHERE status = 'requested' AND expires_at <= ?1 LIMIT 1000",
        )?
        .query_map([now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut n = 0;
    for id in ids {
        n += expire(conn, id, "timeout", now)? as usize;
    }
    Ok(n)
}

/// Expire the open rows a run asked about (its proxy is gone, so nothing waits for them).
pub fn expire_run(conn: &Connection, run_id: i64, why: &str, now: i64) -> Result<usize> {
    let ids: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM approvals WHERE status = 'requested' AND run_id = ?1
               AND kind IN ('egress', 'credential')",
        )?
        .query_map([run_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut n = 0;
    for id in ids {
        n += expire(conn, id, why, now)? as usize;
    }
    Ok(n)
}

/// Open rows of `run_id` for exactly this act: concurrent connections for the same act wait on
/// one row instead of sending the owner one card each.
pub fn open_for_run(
    conn: &Connection,
    run_id: i64,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<Option<Approval>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM approvals WHERE run_id = ?1 AND kind = ?2 AND detail = ?3
               AND status = 'requested' ORDER BY id DESC LIMIT 1"
        ))?
        .query_row(params![run_id, kind, detail.to_string()], row)
        .optional()?)
}

/// How many rows a run has asked (caps the cards one run can send).
pub fn count_for_run(conn: &Connection, run_id: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM approvals WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get(0))?)
}

/// How many rows of `folder` are open (caps the cards one group's IPC requests can send).
pub fn open_count(conn: &Connection, folder: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM approvals WHERE folder = ?1 AND status = 'requested'",
        )?
        .query_row([folder], |r| r.get(0))?)
}
