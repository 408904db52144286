//! `usage`: the tokens upstreams reported to the proxy, summed per run, model and local day
//! (migration 6). Written by run-group as each model request ends; read by budgets, `claw usage`
//! and `claw status`. Money is not stored: it is computed from the price table when read.

use anyhow::Result;
use rusqlite::{Connection, params};

use crate::rules::cost::Usage;

/// Which row a count goes to: one per run, model and local day.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub run_id: i64,
    pub folder: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// Local date, `YYYY-MM-DD`.
    pub day: &'a str,
}

/// Adds `requests` model requests that used `u` in all to the row of `key`.
pub fn add(conn: &Connection, key: &Key, requests: u64, u: &Usage, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage (run_id, folder, provider, model, day, requests, input_tokens,
             output_tokens, cache_read_tokens, cache_write_tokens, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (run_id, model, day) DO UPDATE SET
             requests = requests + excluded.requests,
             input_tokens = input_tokens + excluded.input_tokens,
             output_tokens = output_tokens + excluded.output_tokens,
             cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
             cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        key.run_id,
        key.folder,
        key.provider,
        key.model,
        key.day,
        clamp(requests),
        clamp(u.input),
        clamp(u.output),
        clamp(u.cache_read),
        clamp(u.cache_write),
        now
    ])?;
    Ok(())
}

/// SQLite integers are signed; a count beyond that is not a real count and is capped.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One summed row of a usage query.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The day, folder and model the row is for (`None` where the query summed over it).
    pub day: Option<String>,
    pub folder: Option<String>,
    pub model: String,
    pub requests: u64,
    pub usage: Usage,
}

/// What to sum: days `from..=to` (`YYYY-MM-DD`), optionally one folder, optionally leaving one
/// run out (a running run counts its own usage in memory).
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub folder: Option<&'a str>,
    pub exclude_run: Option<i64>,
}

/// Sums per model (and per day and folder when asked), always split by model so each part can be
/// priced. Ordered by day, folder, model.
pub fn sum(conn: &Connection, f: &Filter, by_day: bool, by_folder: bool) -> Result<Vec<Row>> {
    let day = if by_day { "day" } else { "NULL" };
    let folder = if by_folder { "folder" } else { "NULL" };
    let sql = format!(
        "SELECT {day}, {folder}, model, sum(requests), sum(input_tokens), sum(output_tokens),
                sum(cache_read_tokens), sum(cache_write_tokens)
         FROM usage
         WHERE day >= ?1 AND day <= ?2
           AND (?3 IS NULL OR folder = ?3)
           AND (?4 IS NULL OR run_id != ?4)
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let n = |r: &rusqlite::Row, i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
    let rows = stmt.query_map(params![f.from, f.to, f.folder, f.exclude_run], |r| {
        Ok(Row {
            day: r.get(0)?,
            folder: r.get(1)?,
            model: r.get(2)?,
            requests: n(r, 3)?,
            usage: Usage {
                input: n(r, 4)?,
                output: n(r, 5)?,
                cache_read: n(r, 6)?,
                cache_write: n(r, 7)?,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// (model, usage) of a filter, for a budget's spend.
pub fn by_model(conn: &Connection, f: &Filter) -> Result<Vec<(String, Usage)>> {
    Ok(sum(conn, f, false, false)?
        .into_iter()
        .map(|r| (r.model, r.usage))
        .collect())
}

/// Whether any row names `folder` (a group removed since keeps its history).
pub fn has_folder(conn: &Connection, folder: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM usage WHERE folder = ?1)",
        [folder],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, crate::infra::store::Store) {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::infra::paths::Home::new(dir.path());
        let store = crate::infra::store::Store::create(&home).unwrap();
        (dir, store)
    }

    fn key<'a>(
        run_id: i64,
        folder: &'a str,
        provider: &'a str,
        model: &'a str,
        day: &'a str,
    ) -> Key<'a> {
        Key {
            run_id,
            folder,
            provider,
            model,
            day,
        }
    }

    #[test]
    fn requests_add_up_per_run_model_and_day() {
        let (_d, s) = db();
        let c = &s.conn;
        let u = |i, o| Usage {
            input: i,
            output: o,
            cache_read: 1,
            cache_write: 2,
        };
        add(
            c,
            &key(1, "fam", "anthropic", "m1", "2026-12-01"),
            1,
            &u(10, 5),
            0,
        )
        .unwrap();
        add(
            c,
            &key(1, "fam", "anthropic", "m1", "2026-12-01"),
            1,
            &u(20, 5),
            0,
        )
        .unwrap();
        add(
            c,
            &key(1, "fam", "anthropic", "m2", "2026-12-01"),
            1,
            &u(1, 1),
            0,
        )
        .unwrap();
        add(
            c,
            &key(2, "work", "openai", "m1", "2026-12-02"),
            1,
            &u(7, 7),
            0,
        )
        .unwrap();
        add(
            c,
            &key(3, "fam", "anthropic", "m1", "2026-11-30"),
            1,
            &u(99, 9),
            0,
        )
        .unwrap();
        let all = Filter {
            from: "2026-12-01",
            to: "2026-12-31",
            ..Filter::default()
        };
        let rows = by_model(c, &all).unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "m1".to_string(),
                    Usage {
                        input: 37,
                        output: 17,
                        cache_read: 3,
                        cache_write: 6
                    }
                ),
                ("m2".to_string(), u(1, 1)),
            ]
        );
        let fam = sum(
            c,
            &Filter {
                folder: Some("fam"),
                ..all.clone()
            },
            true,
            true,
        )
        .unwrap();
        assert_eq!(fam.len(), 2);
        assert_eq!(fam[0].requests, 2);
        assert_eq!(fam[0].day.as_deref(), Some("2026-12-01"));
        assert_eq!(fam[0].folder.as_deref(), Some("fam"));
        let others = by_model(
            c,
            &Filter {
                exclude_run: Some(1),
                ..all
            },
        )
        .unwrap();
        assert_eq!(others, vec![("m1".to_string(), u(7, 7))]);
    }
}
