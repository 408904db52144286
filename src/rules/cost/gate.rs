//! Budgets against the store: how much of each budget is used (summed from the `usage` table),
//! and the notices a budget sends, each at most once per budget per period (`store::marks`):
//! the group's chat when its run is stopped, the owner's main chat when a budget is spent, and
//! a warning to the main chat when one passes [`budget::WARN_AT`].
//!
//! Callers: `limits::budget_stop` (dispatch and run-group do not start a run whose budget is
//! spent), run-group's usage recorder (spend for the proxy's meter, notices while a run goes on)
//! and `status`.

use anyhow::Result;
use rusqlite::Connection;

use super::budget::{self, Budget, Spent};
use super::pricing::Prices;
use crate::infra::store::groups::{self, Group};
use crate::infra::store::{audit, marks, outbox, usage};

/// What `b` has used so far in its current period, from the store (leaving out `exclude_run`).
pub fn spent(
    conn: &Connection,
    prices: &Prices,
    b: &Budget,
    now: i64,
    exclude_run: Option<i64>,
) -> Result<Spent> {
    let (from, to) = b.period.days(now);
    let rows = usage::by_model(
        conn,
        &usage::Filter {
            from: &from,
            to: &to,
            folder: b.folder.as_deref(),
            exclude_run,
        },
    )?;
    Ok(Spent::of(&rows, prices))
}

/// The spent budget of `budgets` that stops a run (see [`budget::blocking`]), with what it used.
pub fn blocking(
    conn: &Connection,
    prices: &Prices,
    budgets: &[Budget],
    now: i64,
) -> Result<Option<(Budget, Spent)>> {
    let mut states = Vec::with_capacity(budgets.len());
    for b in budgets {
        states.push((b.clone(), spent(conn, prices, b, now, None)?));
    }
    Ok(budget::blocking(&states).cloned())
}

/// Marks that send once per period: claimed only if not claimed since the period began.
fn claim_once(conn: &Connection, key: &str, b: &Budget, now: i64) -> Result<bool> {
    let window = (now - b.period.start_ms(now)).max(1);
    marks::claim(conn, key, now, window)
}

/// Runs `f` in a savepoint, so a mark and the message it stands for are written together (this
/// works inside the caller's transaction and outside one).
fn atomically<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT budget_notice")?;
    match f() {
        Ok(v) => {
            conn.execute_batch("RELEASE budget_notice")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO budget_notice; RELEASE budget_notice");
            Err(e)
        }
    }
}

/// `b` is spent while `group` wants to run: tell the group's chat and the main chat, each once
/// per period. Returns how many notices were queued now.
pub fn tell_spent(
    conn: &Connection,
    prices: &Prices,
    b: &Budget,
    s: &Spent,
    group: &Group,
    now: i64,
) -> Result<usize> {
    atomically(conn, || {
        let mut sent = 0;
        let main = groups::main(conn)?;
        let id = b.id();
        if let Some(m) = &main
            && claim_once(conn, &format!("budget:spent:{id}:main"), b, now)?
        {
            outbox::enqueue(
                conn,
                &m.chat_id,
                &budget::main_notice(b, s, prices, now),
                &format!("notice:budget:{id}:main"),
            )?;
            audit::record(
                conn,
                b.folder.as_deref(),
                None,
                "budget.spent",
                serde_json::json!({"budget": id, "tokens": s.tokens, "money": s.money, "currency": prices.currency()}),
            )?;
            sent += 1;
        }
        // Main's own chat already got the owner's notice.
        let is_main_chat = main.as_ref().is_some_and(|m| m.chat_id == group.chat_id);
        if !is_main_chat
            && claim_once(
                conn,
                &format!("budget:spent:{id}:chat:{}", group.folder),
                b,
                now,
            )?
        {
            outbox::enqueue(
                conn,
                &group.chat_id,
                &budget::chat_notice(b, prices, now),
                &format!("notice:budget:{id}:chat:{}", group.folder),
            )?;
            sent += 1;
        }
        Ok(sent)
    })
}

/// `b` passed [`budget::WARN_AT`] of its cap: warn the main chat once per period. Returns whether
/// the warning was queued now.
pub fn warn(conn: &Connection, prices: &Prices, b: &Budget, s: &Spent, now: i64) -> Result<bool> {
    atomically(conn, || {
        let Some(main) = groups::main(conn)? else {
            return Ok(false);
        };
        let id = b.id();
        if !claim_once(conn, &format!("budget:warn:{id}"), b, now)? {
            return Ok(false);
        }
        outbox::enqueue(
            conn,
            &main.chat_id,
            &budget::warning(b, s, prices),
            &format!("notice:budget:{id}:warn"),
        )?;
        audit::record(
            conn,
            b.folder.as_deref(),
            None,
            "budget.warning",
            serde_json::json!({"budget": id, "tokens": s.tokens, "money": s.money, "currency": prices.currency()}),
        )?;
        Ok(true)
    })
}

/// Sends what `states` call for: spent budgets tell (once), budgets past the warning share warn
/// (once). Returns how many notices were queued.
pub fn notify(
    conn: &Connection,
    prices: &Prices,
    group: &Group,
    states: &[(Budget, Spent)],
    now: i64,
) -> Result<usize> {
    let mut sent = 0;
    for (b, s) in states {
        if b.is_spent(s) {
            sent += tell_spent(conn, prices, b, s, group, now)?;
        } else if b.fraction(s) >= budget::WARN_AT && warn(conn, prices, b, s, now)? {
            sent += 1;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::store::groups::GroupConfig;
    use crate::rules::cost::Usage;
    use crate::rules::cost::budget::{Caps, Limit, Period};

    fn setup() -> (tempfile::TempDir, crate::infra::store::Store, Group) {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::infra::paths::Home::new(dir.path());
        let store = crate::infra::store::Store::create(&home).unwrap();
        let g = |folder: &str, chat: &str, is_main: bool| Group {
            folder: folder.into(),
            chat_id: chat.into(),
            name: folder.to_uppercase(),
            trigger: "@Andy".into(),
            requires_trigger: !is_main,
            is_main,
            config: GroupConfig {
                budget: Caps {
                    daily_tokens: Some(100),
                    ..Caps::default()
                },
                ..GroupConfig::default()
            },
            allowed_senders: None,
            added_at: 0,
        };
        for (gr, chat) in [
            (g("main", "cli:local", true), "cli:local"),
            (g("fam", "tg:-5", false), "tg:-5"),
        ] {
            crate::infra::store::messages::upsert_chat(&store.conn, chat, None, None, 0, None)
                .unwrap();
            groups::insert(&store.conn, &gr).unwrap();
        }
        let fam = groups::get(&store.conn, "fam").unwrap().unwrap();
        (dir, store, fam)
    }

    fn key<'a>(run_id: i64, folder: &'a str, day: &'a str) -> usage::Key<'a> {
        usage::Key {
            run_id,
            folder,
            provider: "anthropic",
            model: "m",
            day,
        }
    }

    fn texts(c: &Connection) -> Vec<(String, String)> {
        let mut st = c
            .prepare("SELECT chat_id, text FROM outbox ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn spent_budgets_tell_chat_and_main_once_and_warnings_go_to_main_once() {
        let (_d, store, fam) = setup();
        let c = &store.conn;
        let prices = Prices::default();
        let now = crate::infra::time::now_ms();
        let day = crate::rules::cost::local_day(now);
        let budgets = budget::applicable(&Caps::default(), &fam);
        assert_eq!(budgets.len(), 1);
        let b = &budgets[0];
        usage::add(
            c,
            &key(1, "fam", &day),
            1,
            &Usage {
                input: 85,
                ..Usage::default()
            },
            now,
        )
        .unwrap();
        // Another group's use does not count against fam's budget.
        usage::add(
            c,
            &key(2, "main", &day),
            1,
            &Usage {
                input: 900,
                ..Usage::default()
            },
            now,
        )
        .unwrap();
        let s = spent(c, &prices, b, now, None).unwrap();
        assert_eq!(s.tokens, 85);
        assert_eq!(blocking(c, &prices, &budgets, now).unwrap(), None);
        assert_eq!(notify(c, &prices, &fam, &[(b.clone(), s)], now).unwrap(), 1);
        assert_eq!(
            notify(c, &prices, &fam, &[(b.clone(), s)], now + 1).unwrap(),
            0
        );
        usage::add(
            c,
            &key(1, "fam", &day),
            1,
            &Usage {
                output: 15,
                ..Usage::default()
            },
            now,
        )
        .unwrap();
        let (hit, s) = blocking(c, &prices, &budgets, now).unwrap().unwrap();
        assert_eq!(
            (hit.id(), s.tokens),
            ("group:fam:daily:tokens".to_string(), 100)
        );
        assert_eq!(
            notify(c, &prices, &fam, &[(hit.clone(), s)], now + 2).unwrap(),
            2
        );
        assert_eq!(
            notify(c, &prices, &fam, &[(hit.clone(), s)], now + 3).unwrap(),
            0
        );
        let out = texts(c);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(
            out[0].0 == "cli:local" && out[0].1.contains("85%"),
            "{out:?}"
        );
        assert!(out[1].0 == "cli:local" && out[1].1.contains("FAM has used its 100 tokens"));
        assert_eq!(
            out[2],
            (
                "tg:-5".to_string(),
                "FAM has used its 100 tokens for today; it resumes at 00:00 or when the owner raises it.".to_string()
            )
        );
        // The next period is news again.
        let tomorrow = Period::Day.start_ms(now) + 36 * 3_600_000;
        let b2 = Budget {
            limit: Limit::Tokens(1),
            ..hit
        };
        assert_eq!(notify(c, &prices, &fam, &[(b2, s)], tomorrow).unwrap(), 2);
    }
}
