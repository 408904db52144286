//! `containers`: every container run-group started and has not yet seen gone. A row outliving
//! its run-group marks a container that may still be alive: the next run of the group removes it
//! before starting another, and only then asks the runtime anything.

use anyhow::Result;
use rusqlite::{Connection, params};
use serde::Serialize;

/// One started container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub name: String,
    pub folder: String,
    pub run_id: Option<i64>,
    /// `podman`, `docker` or `container`: the program that removes it.
    pub runtime: String,
    pub started_at: i64,
}

/// Record a container about to be started (before the runtime is asked to create it).
pub fn insert(
    conn: &Connection,
    name: &str,
    folder: &str,
    run_id: Option<i64>,
    runtime: &str,
) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO containers (name, folder, run_id, runtime, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, folder, run_id, runtime, crate::infra::time::now_ms()],
    )?;
    Ok(())
}

/// Forget a container that is gone.
pub fn delete(conn: &Connection, name: &str) -> Result<()> {
    conn.execute("DELETE FROM containers WHERE name = ?1", [name])?;
    Ok(())
}

/// The recorded containers of a group, oldest first.
pub fn of_folder(conn: &Connection, folder: &str) -> Result<Vec<Container>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, folder, run_id, runtime, started_at FROM containers
         WHERE folder = ?1 ORDER BY started_at, name",
    )?;
    let rows = stmt.query_map([folder], |r| {
        Ok(Container {
            name: r.get(0)?,
            folder: r.get(1)?,
            run_id: r.get(2)?,
            runtime: r.get(3)?,
            started_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_list_delete() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE containers (name TEXT PRIMARY KEY, folder TEXT NOT NULL, run_id INTEGER,
             runtime TEXT NOT NULL, started_at INTEGER NOT NULL);",
        )
        .unwrap();
        insert(&c, "claw-a-1x1", "a", Some(1), "podman").unwrap();
        insert(&c, "claw-b-2x1", "b", Some(2), "podman").unwrap();
        let a = of_folder(&c, "a").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].name.as_str(), a[0].run_id), ("claw-a-1x1", Some(1)));
        delete(&c, "claw-a-1x1").unwrap();
        assert!(of_folder(&c, "a").unwrap().is_empty());
        assert_eq!(of_folder(&c, "b").unwrap().len(), 1);
    }
}
