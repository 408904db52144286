//! `marks`: when a once-per-window thing last happened (a limit notice to a chat, housekeeping).

use anyhow::Result;
use rusqlite::{Connection, params};

/// Claim `key` if it was not marked within the last `window_ms`: true means the caller is the one
/// that acts now (two processes racing in IMMEDIATE transactions cannot both get true).
pub fn claim(conn: &Connection, key: &str, now: i64, window_ms: i64) -> Result<bool> {
    let changed = conn.execute(
        "INSERT INTO marks (key, at) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET at = excluded.at WHERE marks.at <= ?3",
        params![key, now, now - window_ms],
    )?;
    Ok(changed == 1)
}

/// When `key` was last marked.
pub fn get(conn: &Connection, key: &str) -> Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT at FROM marks WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Forget `key`, so the next claim succeeds (e.g. a limit was lifted).
pub fn clear(conn: &Connection, key: &str) -> Result<()> {
    conn.execute("DELETE FROM marks WHERE key = ?1", [key])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_once_per_window() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE marks (key TEXT PRIMARY KEY, at INTEGER NOT NULL);")
            .unwrap();
        assert!(claim(&c, "k", 1000, 100).unwrap());
        assert!(!claim(&c, "k", 1050, 100).unwrap());
        assert!(claim(&c, "k", 1100, 100).unwrap());
        assert_eq!(get(&c, "k").unwrap(), Some(1100));
        clear(&c, "k").unwrap();
        assert!(claim(&c, "k", 1101, 100).unwrap());
    }
}
