//! The doctor's look at the work itself: messages stuck waiting, runs that failed, replies not
//! delivered, requests rejected (the rows `claw status --problems` lists).

use super::{Level, Report};
use crate::infra::config::Config;
use crate::infra::paths::Home;

/// Work that is stuck or was dropped: messages waiting with nothing running, undelivered replies,
/// failed runs (the rows `claw status --problems` lists).
pub(super) fn check_work(home: &Home, cfg: &Config, r: &mut Report) {
    // Opening the store migrates an older schema; the doctor only looks, so it skips this check
    // until the database is current (the database check says so).
    let current = rusqlite::Connection::open_with_flags(
        home.db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .and_then(|c| c.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0)))
    .is_ok_and(|v| v == crate::infra::store::SCHEMA_VERSION);
    if !current {
        return;
    }
    let Ok(store) = crate::infra::store::Store::open(home) else {
        return;
    };
    let now = crate::infra::time::now_ms();
    let problems = crate::ops::status::status(home, &store, cfg)
        .and_then(|report| crate::ops::problems::list(&store.conn, cfg, &report, now));
    match problems {
        Ok(p) if p.is_empty() => {
            r.push("work", Level::Ok, "no waiting or dropped work".into(), None)
        }
        Ok(p) => {
            for w in p.iter().filter(|p| p.kind == "waiting") {
                r.push(
                    "work",
                    Level::Warn,
                    format!("{}: {}", w.group.as_deref().unwrap_or("?"), w.detail),
                    Some(w.fix.clone()),
                );
            }
            let others = p.iter().filter(|p| p.kind != "waiting").count();
            if others > 0 {
                r.push(
                    "work",
                    Level::Warn,
                    format!(
                        "{others} failed run(s), undelivered message(s) or rejected request(s)"
                    ),
                    Some("claw status --problems".into()),
                );
            }
        }
        Err(e) => r.push(
            "work",
            Level::Warn,
            format!("cannot list problems: {e:#}"),
            None,
        ),
    }
}
