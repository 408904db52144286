//! The audit table: an append-only record of every security-relevant act.

use anyhow::Result;
use rusqlite::{Connection, params};
use serde::Serialize;

/// One audit row as listed by `claw audit`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: i64,
    pub at: i64,
    pub folder: Option<String>,
    pub run_id: Option<i64>,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// Record one act. `detail` is free-form JSON; it must never contain a secret.
pub fn record(
    conn: &Connection,
    folder: Option<&str>,
    run_id: Option<i64>,
    kind: &str,
    detail: serde_json::Value,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (at, folder, run_id, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            crate::infra::time::now_ms(),
            folder,
            run_id,
            kind,
            detail.to_string()
        ],
    )?;
    Ok(())
}

/// Rows newest last, optionally for one group and since a time, at most `limit`.
pub fn list(
    conn: &Connection,
    folder: Option<&str>,
    since_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare(
        "SELECT id, at, folder, run_id, kind, detail FROM audit
         WHERE (?1 IS NULL OR folder = ?1) AND at >= ?2
         ORDER BY id DESC LIMIT ?3",
    )?;
    let mut rows: Vec<Entry> = stmt
        .query_map(params![folder, since_ms.unwrap_or(0), limit as i64], |r| {
            let detail: String = r.get(5)?;
            Ok(Entry {
                id: r.get(0)?,
                at: r.get(1)?,
                folder: r.get(2)?,
                run_id: r.get(3)?,
                kind: r.get(4)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
            })
        })?
        .collect::<Result<_, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// Record one act and return its row id, for a row later given totals with [`set_detail`].
pub fn insert(
    conn: &Connection,
    folder: Option<&str>,
    run_id: Option<i64>,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<i64> {
    record(conn, folder, run_id, kind, detail.clone())?;
    Ok(conn.last_insert_rowid())
}

/// Replace one row's detail (aggregated proxy rows: counts and bytes so far).
pub fn set_detail(conn: &Connection, id: i64, detail: &serde_json::Value) -> Result<()> {
    conn.execute(
        "UPDATE audit SET detail = ?2 WHERE id = ?1",
        params![id, detail.to_string()],
    )?;
    Ok(())
}

/// Delete at most `limit` rows recorded before `before` (oldest first); returns how many went.
pub fn delete_before(conn: &Connection, before: i64, limit: usize) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
        params![before, limit as i64],
    )?)
}

/// How many rows were recorded before `before` (for a dry run of retention).
pub fn count_before(conn: &Connection, before: i64) -> Result<u64> {
    Ok(
        conn.query_row("SELECT count(*) FROM audit WHERE at < ?1", [before], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}
