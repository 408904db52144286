//! The outbox: messages waiting to be sent, and the claim protocol senders use.
//!
//! A row moves pending → sending (claimed) → sent, or back to pending with a backoff on failure,
//! or to failed after too many attempts. A sender killed while a row is `sending` leaves it
//! claimed; the claim is released after a timeout (or at once by the next `claw deliver` holding
//! that channel's lock), so nothing is lost, at the cost of a possible duplicate in that window.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Attempts before a row is given up as failed.
pub const MAX_ATTEMPTS: i64 = 10;

/// One outbox row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: i64,
    pub chat_id: String,
    pub text: String,
    pub origin: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub claimed_by: Option<String>,
    pub claimed_at: Option<i64>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub channel_msg_id: Option<String>,
}

const COLS: &str = "id, chat_id, text, origin, status, attempts, last_error, next_attempt_at, claimed_by, claimed_at,
    created_at, sent_at, channel_msg_id";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        chat_id: r.get(1)?,
        text: r.get(2)?,
        origin: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        next_attempt_at: r.get(7)?,
        claimed_by: r.get(8)?,
        claimed_at: r.get(9)?,
        created_at: r.get(10)?,
        sent_at: r.get(11)?,
        channel_msg_id: r.get(12)?,
    })
}

/// Add a message to send; returns its id.
pub fn enqueue(conn: &Connection, chat_id: &str, text: &str, origin: &str) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO outbox (chat_id, text, origin, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![chat_id, text, origin, crate::infra::time::now_ms()])?;
    Ok(conn.last_insert_rowid())
}

/// One row by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Row>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM outbox WHERE id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// Rows for a listing, newest first, optionally filtered by status.
pub fn list(conn: &Connection, status: Option<&str>, limit: usize) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM outbox WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![status, limit as i64], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Release claims older than `timeout_ms` (or all claims on the channel when `timeout_ms` is 0).
pub fn release_stale(conn: &Connection, channel: &str, timeout_ms: i64) -> Result<usize> {
    let cutoff = crate::infra::time::now_ms() - timeout_ms;
    Ok(conn.execute(
        "UPDATE outbox SET status = 'pending', claimed_by = NULL, claimed_at = NULL
         WHERE status = 'sending' AND claimed_at <= ?2 AND substr(chat_id, 1, length(?1) + 1) = ?1 || ':'",
        params![channel, cutoff],
    )?)
}

/// Release the claims `claimer` holds (a previous process of the same sender died holding them),
/// on one channel or, with `None`, on every channel.
pub fn release_claims_of(conn: &Connection, claimer: &str, channel: Option<&str>) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE outbox SET status = 'pending', claimed_by = NULL, claimed_at = NULL
         WHERE status = 'sending' AND claimed_by = ?1
           AND (?2 IS NULL OR substr(chat_id, 1, length(?2) + 1) = ?2 || ':')",
        params![claimer, channel],
    )?)
}

/// A row shown to the owner at the terminal (`claw chat`, whose chats have no other channel):
/// sent, unless a sender already finished it.
pub fn mark_shown(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE outbox SET status = 'sent', sent_at = ?2, claimed_by = NULL
         WHERE id = ?1 AND status IN ('pending', 'sending')",
        params![id, now],
    )?;
    Ok(())
}

/// Atomically claim up to `limit` due rows of a channel for `claimer`.
pub fn claim(
    conn: &mut Connection,
    channel: &str,
    claimer: &str,
    limit: usize,
) -> Result<Vec<Row>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = crate::infra::time::now_ms();
    let rows: Vec<Row> = {
        let mut stmt = tx.prepare_cached(&format!(
            "UPDATE outbox SET status = 'sending', claimed_by = ?2, claimed_at = ?3
             WHERE id IN (SELECT id FROM outbox
                          WHERE status = 'pending' AND next_attempt_at <= ?3
                            AND substr(chat_id, 1, length(?1) + 1) = ?1 || ':'
                          ORDER BY id LIMIT ?4)
             RETURNING {COLS}"
        ))?;
        let mut v: Vec<Row> = stmt
            .query_map(params![channel, claimer, now, limit as i64], row)?
            .collect::<Result<_, _>>()?;
        v.sort_by_key(|r| r.id);
        v
    };
    tx.commit()?;
    Ok(rows)
}

/// Mark a claimed row sent. Returns false if the row was not claimed by `claimer`.
pub fn mark_sent(
    conn: &Connection,
    id: i64,
    claimer: &str,
    channel_msg_id: Option<&str>,
) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE outbox SET status = 'sent', sent_at = ?3, channel_msg_id = ?4, attempts = attempts + 1,
                claimed_by = NULL, last_error = NULL
         WHERE id = ?1 AND status = 'sending' AND claimed_by = ?2",
        params![id, claimer, crate::infra::time::now_ms(), channel_msg_id],
    )? == 1)
}

/// Record a failed attempt: back to pending after a backoff, or failed after too many attempts.
/// `retry_after_ms` overrides the backoff (e.g. Telegram's retry_after).
pub fn mark_failed(
    conn: &Connection,
    id: i64,
    claimer: &str,
    error: &str,
    retry_after_ms: Option<i64>,
) -> Result<bool> {
    let attempts: Option<i64> = conn
        .query_row(
            "SELECT attempts FROM outbox WHERE id = ?1 AND status = 'sending' AND claimed_by = ?2",
            params![id, claimer],
            |r| r.get(0),
        )
        .optional()?;
    let Some(attempts) = attempts else {
        return Ok(false);
    };
    let attempts = attempts + 1;
    let status = if attempts >= MAX_ATTEMPTS {
        "failed"
    } else {
        "pending"
    };
    let delay = retry_after_ms.unwrap_or_else(|| backoff_ms(attempts));
    conn.execute(
        "UPDATE outbox SET status = ?3, attempts = ?4, last_error = ?5, next_attempt_at = ?6, claimed_by = NULL, claimed_at = NULL
         WHERE id = ?1 AND claimed_by = ?2",
        params![id, claimer, status, attempts, error, crate::infra::time::now_ms() + delay],
    )?;
    if status == "failed" {
        tell_main_given_up(conn, id, error)?;
    }
    Ok(true)
}

/// The agent's own messages to `chat` that could not be delivered (given up, or still retrying
/// after two attempts) and that no prompt has mentioned yet; marks them mentioned. Newest first,
/// at most `limit`. Called inside the transaction that builds the prompt.
pub fn take_undelivered(conn: &Connection, chat: &str, now: i64, limit: usize) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM outbox
         WHERE chat_id = ?1 AND (origin LIKE 'run:%' OR origin LIKE 'ipc:%')
           AND (status = 'failed' OR (status = 'pending' AND attempts >= 2))
         ORDER BY id DESC LIMIT 50"
    ))?;
    let rows: Vec<Row> = stmt
        .query_map([chat], row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for r in rows {
        if out.len() >= limit {
            break;
        }
        // Forever: an agent is told about each undelivered message once.
        if crate::infra::store::marks::claim(
            conn,
            &format!("told-agent:outbox:{}", r.id),
            now,
            i64::MAX,
        )? {
            out.push(r);
        }
    }
    Ok(out)
}

/// A row was given up: tell the owner's main chat, unless the row was itself a notice (or went to
/// main, whose own channel is what failed); the outcome is in `claw status --problems` either way.
fn tell_main_given_up(conn: &Connection, id: i64, error: &str) -> Result<()> {
    let Some(r) = get(conn, id)? else {
        return Ok(());
    };
    let Some(main) = crate::infra::store::groups::main(conn)? else {
        return Ok(());
    };
    if r.origin.starts_with("notice:") || r.chat_id == main.chat_id {
        return Ok(());
    }
    let text = format!(
        "A message to {:?} could not be delivered after {MAX_ATTEMPTS} tries and was given up: {}. \
         It began: {:?}. See `claw outbox --status failed`.",
        crate::infra::output::clip(&r.chat_id, 80),
        crate::infra::output::clip(error, 200),
        crate::infra::output::clip(&r.text, 80)
    );
    enqueue(
        conn,
        &main.chat_id,
        &text,
        &format!("notice:undelivered:{id}"),
    )?;
    Ok(())
}

/// Delay before retry number `attempts`: 5 s doubling, capped at one hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = (attempts - 1).clamp(0, 20) as u32;
    (5_000i64.saturating_mul(1i64 << exp)).min(3_600_000)
}

/// Count of unsent rows per chat.
pub fn backlog(conn: &Connection) -> Result<std::collections::HashMap<String, i64>> {
    let mut stmt = conn.prepare_cached("SELECT chat_id, count(*) FROM outbox WHERE status IN ('pending', 'sending') GROUP BY chat_id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 5_000);
        assert_eq!(backoff_ms(2), 10_000);
        assert_eq!(backoff_ms(4), 40_000);
        assert_eq!(backoff_ms(30), 3_600_000);
    }
}
