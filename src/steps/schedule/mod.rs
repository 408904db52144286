//! When tasks run: schedule validation, next-run maths, and `claw schedule`'s atomic claim.
//!
//! Owns the rules for the three kinds (`cron`, `interval`, `once`), the host's default zone, and
//! the task-run lifecycle (queued by [`claim_due`], closed by [`finish_task_run`]). It never starts
//! a container: it only queues `runs` rows for dispatch, so a slow run can never be doubled here.

pub mod cron;

use anyhow::Result;
use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde::Serialize;

use crate::infra::store::{Store, runs, tasks as q};

/// A checked schedule: the normalised value to store and the first time it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// `cron`, `interval` or `once`.
    pub kind: &'static str,
    /// Cron text as given, interval seconds, or once time as RFC 3339 UTC.
    pub value: String,
    /// IANA zone name.
    pub timezone: String,
    /// First firing time (epoch ms).
    pub first_run: i64,
}

/// The host's IANA zone: `TZ`, then `/etc/timezone`, then the `/etc/localtime` link, else UTC.
/// Looked up once per process.
pub fn host_timezone() -> String {
    static ZONE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ZONE.get_or_init(lookup_host_timezone).clone()
}

fn lookup_host_timezone() -> String {
    let from_env = std::env::var("TZ").ok().and_then(|v| zone_from_text(&v));
    let from_file = || {
        std::fs::read_to_string("/etc/timezone")
            .ok()
            .and_then(|v| zone_from_text(&v))
    };
    let from_link = || {
        std::fs::read_link("/etc/localtime")
            .ok()
            .and_then(|p| zone_from_text(&p.to_string_lossy()))
    };
    from_env
        .or_else(from_file)
        .or_else(from_link)
        .unwrap_or_else(|| "UTC".into())
}

// Accepts `Europe/Berlin`, `:Europe/Berlin` and paths ending in `zoneinfo/Europe/Berlin`.
fn zone_from_text(s: &str) -> Option<String> {
    let s = s.trim().trim_start_matches(':');
    let s = s.rsplit_once("zoneinfo/").map_or(s, |(_, z)| z);
    s.parse::<Tz>().ok().map(|z| z.name().to_string())
}

/// Parse an IANA zone name, with an error that says what is expected.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("time zone `{name}` is unknown: use an IANA name such as `Europe/Berlin` or `UTC`")
    })
}

/// Check a schedule given as (kind, value) in zone `timezone` (default the host's) at `now`.
pub fn check(kind: &str, value: &str, timezone: Option<&str>, now: i64) -> Result<Checked, String> {
    let timezone = timezone.map_or_else(host_timezone, str::to_string);
    let tz = parse_zone(&timezone)?;
    let (kind, value, first_run) = match kind {
        "cron" => {
            let c = cron::parse(value)?;
            let first = cron::next_after(&c, tz, now)
                .ok_or_else(|| format!("cron `{value}` never fires"))?;
            ("cron", value.trim().to_string(), first)
        }
        "interval" => {
            let secs = parse_interval(value)?;
            ("interval", secs.to_string(), now + secs * 1000)
        }
        "once" => {
            let at = parse_once(value, tz)?;
            if at <= now {
                return Err(format!(
                    "once time `{value}` is in the past ({}); give a future time",
                    crate::infra::time::rfc3339(at)
                ));
            }
            ("once", crate::infra::time::rfc3339(at), at)
        }
        other => {
            return Err(format!(
                "schedule type `{other}` is unknown: use cron, interval or once"
            ));
        }
    };
    Ok(Checked {
        kind,
        value,
        timezone: tz.name().to_string(),
        first_run,
    })
}

fn parse_interval(value: &str) -> Result<i64, String> {
    match value.trim().parse::<i64>() {
        Ok(n) if n > 0 && n <= 366 * 86_400 * 10 => Ok(n),
        Ok(_) => Err(format!(
            "interval `{value}` must be a whole number of seconds greater than 0"
        )),
        Err(_) => Err(format!(
            "interval `{value}` must be a whole number of seconds, e.g. 3600"
        )),
    }
}

/// Parse a once time: RFC 3339, or local `YYYY-MM-DD HH:MM[:SS]` (or with `T`) in `tz`.
pub fn parse_once(value: &str, tz: Tz) -> Result<i64, String> {
    let v = value.trim();
    if let Some(ms) = crate::infra::time::parse_rfc3339(v) {
        return Ok(ms);
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
    .ok_or_else(|| format!("once time `{v}` must be RFC 3339 or local `YYYY-MM-DD HH:MM[:SS]`"))?;
    // In a fall-back hour the earlier instant wins; a spring-forward gap does not exist locally.
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| {
            format!(
                "once time `{v}` does not exist in {} (clocks skip it); pick another time",
                tz.name()
            )
        })
}

/// The next firing strictly after `now` for a stored task; `None` for a `once` task.
///
/// Interval tasks keep their phase: the next slot is `anchor + k·interval` where `anchor` is the
/// time the task was last due, so catching up after downtime yields one run, not one per slot.
pub fn next_after(
    kind: &str,
    value: &str,
    timezone: &str,
    anchor: Option<i64>,
    now: i64,
) -> Result<Option<i64>, String> {
    match kind {
        "cron" => {
            let tz = parse_zone(timezone)?;
            Ok(cron::next_after(&cron::parse(value)?, tz, now))
        }
        "interval" => {
            let iv = parse_interval(value)? * 1000;
            let a = anchor.unwrap_or(now);
            if a > now {
                return Ok(Some(a));
            }
            Ok(Some(a + ((now - a) / iv + 1) * iv))
        }
        "once" => Ok(None),
        other => Err(format!("schedule type `{other}` is unknown")),
    }
}

/// How long after its `runs` row ended an unclosed task run is closed by `claw schedule`.
pub const ORPHAN_GRACE_MS: i64 = 10 * 60 * 1000;

/// One task run queued by [`claim_due`].
#[derive(Debug, Clone, Serialize)]
pub struct Claimed {
    pub task_id: i64,
    pub task_run_id: i64,
    pub run_id: i64,
    pub folder: String,
    pub scheduled_for: i64,
    pub next_run: Option<i64>,
}

/// What one `claw schedule` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScheduleReport {
    pub now: i64,
    pub claimed: Vec<Claimed>,
    /// Due tasks whose previous run is still queued or running (their missed slot is skipped).
    pub skipped_busy: Vec<i64>,
    /// Tasks whose stored schedule no longer parses; they are paused with the reason.
    pub broken: Vec<(i64, String)>,
}

/// How often [`claim_due`] looks for task runs left open by a run that ended (they wait out
/// [`ORPHAN_GRACE_MS`] anyway, so looking every tick would only cost a scan of `task_runs`).
pub const ORPHAN_CHECK_MS: i64 = 5 * 60 * 1000;
const ORPHAN_MARK: &str = "schedule.orphans";

/// Claim every due task in one IMMEDIATE transaction: queue a task run and a `runs` row for each
/// task that has no unfinished run, and move its next run to the first slot after `now`.
///
/// With nothing due it reads one index entry and one mark, and writes nothing.
pub fn claim_due(store: &mut Store, now: i64) -> Result<ScheduleReport> {
    let mut report = ScheduleReport {
        now,
        ..Default::default()
    };
    // A mark in the future (`claw schedule --now` with a later time, a clock set back) is due.
    let orphans_due = crate::infra::store::marks::get(&store.conn, ORPHAN_MARK)?
        .is_none_or(|at| now - at >= ORPHAN_CHECK_MS || at > now);
    if !orphans_due && !q::any_due(&store.conn, now)? {
        return Ok(report);
    }
    let tx = store.write()?;
    // A run that ended without closing its task run would block the task forever.
    if orphans_due {
        crate::infra::store::marks::clear(&tx, ORPHAN_MARK)?;
        crate::infra::store::marks::claim(&tx, ORPHAN_MARK, now, 0)?;
        for (task_run_id, run_id, ok) in q::orphaned_runs(&tx, now - ORPHAN_GRACE_MS)? {
            let error = format!("run {run_id} ended without reporting to its task");
            finish_task_run(&tx, task_run_id, ok, None, (!ok).then_some(error.as_str()))?;
        }
    }
    let due = q::due(&tx, now)?;
    if due.is_empty() {
        tx.commit()?;
        return Ok(report);
    }
    let busy = q::busy_task_ids(&tx)?;
    for t in due {
        let anchor = t.next_run.expect("due tasks have a next run");
        let next = match next_after(&t.kind, &t.schedule, &t.timezone, Some(anchor), now) {
            Ok(n) => n,
            Err(e) => {
                // A zone removed from the tz database, say: stop retrying every tick and say why.
                q::set_status(&tx, t.id, "paused")?;
                q::set_last(&tx, t.id, now, &format!("paused: {e}"))?;
                crate::infra::store::audit::record(
                    &tx,
                    Some(&t.folder),
                    None,
                    "task.paused",
                    serde_json::json!({"task": t.id, "reason": e}),
                )?;
                report.broken.push((t.id, e));
                continue;
            }
        };
        if busy.contains(&t.id) {
            if t.kind != "once" {
                q::set_next_run(&tx, t.id, next)?;
            }
            report.skipped_busy.push(t.id);
            continue;
        }
        let task_run_id = q::insert_run(&tx, t.id, anchor, now)?;
        let run_id = runs::queue(&tx, &t.folder, "task", Some(t.id), Some(task_run_id), 1)?;
        q::set_run_id(&tx, task_run_id, run_id)?;
        q::set_next_run(&tx, t.id, next)?;
        report.claimed.push(Claimed {
            task_id: t.id,
            task_run_id,
            run_id,
            folder: t.folder,
            scheduled_for: anchor,
            next_run: next,
        });
    }
    tx.commit()?;
    Ok(report)
}

/// Mark a queued task run as started (run-group calls this when its container starts).
pub fn start_task_run(conn: &rusqlite::Connection, task_run_id: i64) -> Result<bool> {
    q::mark_run_started(conn, task_run_id, crate::infra::time::now_ms())
}

/// Queue a run of `folder`'s task `task_id` right now (`claw run-group FOLDER --task ID`): a task
/// run and its `runs` row, linked. Returns the run's id.
pub fn queue_now(conn: &rusqlite::Connection, folder: &str, task_id: i64) -> Result<i64> {
    let task = q::get(conn, task_id)?
        .ok_or_else(|| anyhow::anyhow!("task {task_id} not found; see `claw task list`"))?;
    if task.folder != folder {
        anyhow::bail!(
            "task {task_id} belongs to group `{}`, not `{folder}`",
            task.folder
        );
    }
    let now = crate::infra::time::now_ms();
    let tr = q::insert_run(conn, task_id, now, now)?;
    let run = runs::queue(conn, folder, "task", Some(task_id), Some(tr), 1)?;
    q::set_run_id(conn, tr, run)?;
    Ok(run)
}

/// Close a task run: record its history, the task's last run and result, and complete a `once`
/// task. Returns false (and changes nothing) if the run was already finished.
pub fn finish_task_run(
    conn: &rusqlite::Connection,
    task_run_id: i64,
    ok: bool,
    result: Option<&str>,
    error: Option<&str>,
) -> Result<bool> {
    let now = crate::infra::time::now_ms();
    if !q::finish_run(conn, task_run_id, ok, result, error, now)? {
        return Ok(false);
    }
    let Some(run) = q::get_run(conn, task_run_id)? else {
        return Ok(false);
    };
    let summary = if ok {
        crate::infra::output::clip(result.unwrap_or(""), 500)
    } else {
        format!(
            "error: {}",
            crate::infra::output::clip(error.unwrap_or("failed"), 500)
        )
    };
    q::set_last(conn, run.task_id, now, &summary)?;
    if let Some(t) = q::get(conn, run.task_id)?
        && t.kind == "once"
        && t.status == "active"
    {
        q::set_status(conn, t.id, "completed")?;
    }
    Ok(true)
}

/// Epoch ms for `--now`: RFC 3339, or the current time.
pub fn now_from(arg: Option<&str>) -> Result<i64, String> {
    match arg {
        None => Ok(crate::infra::time::now_ms()),
        Some(s) => crate::infra::time::parse_rfc3339(s)
            .ok_or_else(|| format!("--now `{s}` must be RFC 3339, e.g. 2026-03-30T09:00:00Z")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_from_env_file_and_link() {
        assert_eq!(
            zone_from_text("Europe/Berlin\n").as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(
            zone_from_text(":America/New_York").as_deref(),
            Some("America/New_York")
        );
        assert_eq!(
            zone_from_text("/usr/share/zoneinfo/Asia/Tokyo").as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(zone_from_text("Not/AZone"), None);
        assert_eq!(zone_from_text(""), None);
    }

    #[test]
    fn interval_keeps_its_phase_when_catching_up() {
        // Due at 1000, interval 60 s, now 1000 + 5.5 slots: next is slot 6, not now + 60 s.
        let next = next_after("interval", "60", "UTC", Some(1000), 1000 + 330_000).unwrap();
        assert_eq!(next, Some(1000 + 360_000));
        // Exactly on a slot: strictly after now.
        let next = next_after("interval", "60", "UTC", Some(1000), 1000 + 60_000).unwrap();
        assert_eq!(next, Some(1000 + 120_000));
        assert_eq!(next_after("once", "x", "UTC", Some(1), 2).unwrap(), None);
    }
}
