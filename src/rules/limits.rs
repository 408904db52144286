//! How much a group other than main may make the host spend: the shortest task schedule its agent
//! may set, how many tasks it may keep, and how many runs it may start in an hour.
//!
//! Main is the owner's own chat and is never limited here; neither is the owner at the command
//! line (`claw task add` may set any schedule: the owner chose it). Every decision is a pure
//! function with a table of cases below; the store-backed gate for runs ([`refuse_run`]) and the
//! once-an-hour notice to the chat ([`tell_chat_once`]) are the only parts that touch the store.
//! Callers: `ipc::quota` (task requests), `dispatch` (candidate selection), `run_group`
//! (`claim_work`) and `status`. Budgets on model use are gated here too ([`budget_stop`]), for
//! every group including main; their arithmetic lives in `cost`.

use anyhow::Result;
use rusqlite::Connection;

use crate::infra::config::Limits;
use crate::infra::store::groups::Group;
use crate::infra::store::{marks, outbox, runs};
use crate::steps::schedule;

/// The window `runs_per_hour` counts in, and the window a limit notice is sent at most once in.
pub const WINDOW_MS: i64 = 3_600_000;

/// Firings of a cron schedule looked at to find its shortest gap (see `schedule::cron`).
pub const CRON_FIRINGS_CHECKED: usize = 100;

/// The limits that apply to one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Shortest interval, or shortest gap between cron firings, an agent may set (0 = any).
    pub min_task_interval_secs: u64,
    /// Active or paused tasks the group may have when its agent asks for another.
    pub max_tasks: u32,
    /// Runs the group may start in any hour (0 = no limit).
    pub runs_per_hour: u32,
}

/// The limits for `group`, or `None` for main (the owner's chat is exempt).
pub fn for_group(limits: &Limits, group: &Group) -> Option<GroupLimits> {
    if group.is_main {
        return None;
    }
    Some(GroupLimits {
        min_task_interval_secs: limits.min_task_interval_secs,
        max_tasks: limits.max_tasks,
        runs_per_hour: group.config.runs_per_hour.unwrap_or(limits.runs_per_hour),
    })
}

/// The shortest time between two firings of a schedule, in seconds: the interval itself, the
/// closest two of a cron schedule's next firings, `None` for a `once` task. A schedule that is
/// not valid is an error (the caller lets the schedule's own validation say what is wrong).
pub fn shortest_gap_secs(
    kind: &str,
    value: &str,
    timezone: &str,
    now: i64,
) -> Result<Option<u64>, String> {
    let checked = schedule::check(kind, value, Some(timezone), now)?;
    match checked.kind {
        "interval" => checked
            .value
            .parse::<u64>()
            .map(Some)
            .map_err(|e| e.to_string()),
        "cron" => {
            let tz = schedule::parse_zone(&checked.timezone)?;
            let c = schedule::cron::parse(&checked.value)?;
            Ok(
                schedule::cron::shortest_gap_secs(&c, tz, now, CRON_FIRINGS_CHECKED)
                    .map(|g| g.max(0) as u64),
            )
        }
        _ => Ok(None),
    }
}

/// Whether a schedule whose firings come `gap` seconds apart at the closest is allowed.
pub fn check_gap(gap: Option<u64>, min_secs: u64, what: &str) -> Result<(), String> {
    match gap {
        Some(g) if g < min_secs => Err(format!(
            "{what} runs every {} at the closest; tasks of this group may run at most every {} \
             (limits.min_task_interval_secs = {min_secs}); choose a longer schedule",
            human_secs(g),
            human_secs(min_secs)
        )),
        _ => Ok(()),
    }
}

/// Whether a group that has `live` active or paused tasks may create another.
pub fn check_task_count(live: i64, max: u32) -> Result<(), String> {
    if live >= i64::from(max) {
        return Err(format!(
            "this group already has {live} active or paused tasks, its limit (limits.max_tasks = \
             {max}); cancel one first"
        ));
    }
    Ok(())
}

/// What the runs limit says about starting one more run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunGate {
    Open,
    /// `started` runs began in the last hour, the limit; the next may start at `until`.
    Closed {
        started: u32,
        limit: u32,
        until: i64,
    },
}

/// Decide from the start times of the group's runs in the last hour, newest first (at most
/// `limit` of them are needed), whether another may start at `now`.
pub fn run_gate(newest_starts: &[i64], limit: u32, now: i64) -> RunGate {
    let in_window: Vec<i64> = newest_starts
        .iter()
        .copied()
        .filter(|&t| t > now - WINDOW_MS)
        .collect();
    if limit == 0 || in_window.len() < limit as usize {
        return RunGate::Open;
    }
    // The window opens again when the `limit`-th newest start leaves it.
    let oldest_counted = in_window[limit as usize - 1];
    RunGate::Closed {
        started: in_window.len() as u32,
        limit,
        until: oldest_counted + WINDOW_MS,
    }
}

/// Read the store and decide whether `group` may start a run at `now`.
pub fn runs_gate(conn: &Connection, limits: &Limits, group: &Group, now: i64) -> Result<RunGate> {
    let Some(l) = for_group(limits, group) else {
        return Ok(RunGate::Open);
    };
    if l.runs_per_hour == 0 {
        return Ok(RunGate::Open);
    }
    let starts = runs::starts_since(conn, &group.folder, now - WINDOW_MS, l.runs_per_hour)?;
    Ok(run_gate(&starts, l.runs_per_hour, now))
}

/// The reason shown where a run was not started (dispatch, status, run-group).
pub fn run_reason(group: &Group, started: u32, until: i64) -> String {
    format!(
        "runs limit: {started} runs started in the last hour (runs_per_hour); next run from {} \
         (`claw group set {} --runs-per-hour N` changes it)",
        clock(until),
        group.folder
    )
}

/// Whether a spent budget stops a run of `group` at `now`: `Some(reason)` if one does (its own
/// or the overall one, see `cost::budget`). With `notify` the group's chat and the main chat are
/// told, each once per budget per period; dispatch's dry run only asks.
pub fn budget_stop(
    conn: &Connection,
    config: &crate::infra::config::Config,
    group: &Group,
    now: i64,
    notify: bool,
) -> Result<Option<String>> {
    let budgets = crate::rules::cost::budget::applicable(&config.budget, group);
    if budgets.is_empty() {
        return Ok(None);
    }
    let prices = crate::rules::cost::pricing::Prices::new(&config.pricing);
    let Some((b, spent)) = crate::rules::cost::gate::blocking(conn, &prices, &budgets, now)? else {
        return Ok(None);
    };
    if notify {
        crate::rules::cost::gate::tell_spent(conn, &prices, &b, &spent, group, now)?;
    }
    Ok(Some(crate::rules::cost::budget::reason(
        &b, &spent, &prices, now,
    )))
}

/// Gate a run of `group` at `now`: `Some(reason)` if the runs limit stops it, after telling the
/// group's chat (once per window). Used where a run is about to start, inside its transaction.
pub fn refuse_run(
    conn: &Connection,
    limits: &Limits,
    group: &Group,
    now: i64,
) -> Result<Option<String>> {
    let RunGate::Closed { started, until, .. } = runs_gate(conn, limits, group, now)? else {
        return Ok(None);
    };
    let text = format!(
        "{} has started {started} runs in the last hour (its limit); new messages will be \
         answered from {}. The owner can change this with `claw group set {} --runs-per-hour N`.",
        display_name(group),
        clock(until),
        group.folder
    );
    tell_chat_once(conn, group, "runs", &text, now)?;
    Ok(Some(run_reason(group, started, until)))
}

/// Send `text` to the group's chat unless a notice about the same limit went there within the
/// last [`WINDOW_MS`]; returns whether it was queued.
pub fn tell_chat_once(
    conn: &Connection,
    group: &Group,
    limit: &str,
    text: &str,
    now: i64,
) -> Result<bool> {
    let key = format!("limit:{limit}:{}", group.folder);
    if !marks::claim(conn, &key, now, WINDOW_MS)? {
        return Ok(false);
    }
    outbox::enqueue(conn, &group.chat_id, text, &format!("notice:{key}"))?;
    Ok(true)
}

/// The group's name for a notice: one line, printable, at most 40 characters (it may come from a
/// chat app), or the folder when nothing is left.
pub fn display_name(group: &Group) -> String {
    let clean: String = group
        .name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut out: String = clean.chars().take(40).collect();
    if clean.chars().count() > 40 {
        out.push('…');
    }
    if out.is_empty() {
        group.folder.clone()
    } else {
        out
    }
}

/// Local wall-clock `HH:MM` (with the date when it is not today).
fn clock(ms: i64) -> String {
    use chrono::TimeZone;
    let (Some(t), now) = (
        chrono::Local.timestamp_millis_opt(ms).single(),
        chrono::Local::now(),
    ) else {
        return crate::infra::time::rfc3339(ms);
    };
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// `45 s`, `5 min`, `2 h`, `1 h 30 min`, `2 d` for people.
pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ if s.is_multiple_of(86_400) => format!("{} d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::store::groups::GroupConfig;

    fn group(is_main: bool, runs: Option<u32>) -> Group {
        Group {
            folder: "fam".into(),
            chat_id: "tg:2".into(),
            name: "Family".into(),
            trigger: "@Andy".into(),
            requires_trigger: true,
            is_main,
            config: GroupConfig {
                runs_per_hour: runs,
                ..GroupConfig::default()
            },
            allowed_senders: None,
            added_at: 0,
        }
    }

    #[test]
    fn main_is_exempt_and_groups_override_runs() {
        let l = Limits::default();
        assert_eq!(for_group(&l, &group(true, Some(1))), None);
        let g = for_group(&l, &group(false, None)).unwrap();
        assert_eq!(
            (g.min_task_interval_secs, g.max_tasks, g.runs_per_hour),
            (300, 20, 30)
        );
        assert_eq!(
            for_group(&l, &group(false, Some(0))).unwrap().runs_per_hour,
            0
        );
        assert_eq!(
            for_group(&l, &group(false, Some(99)))
                .unwrap()
                .runs_per_hour,
            99
        );
    }

    #[test]
    fn gaps_by_kind() {
        let now = 1_772_446_620_000; // 2026-03-02 10:17 UTC
        // (kind, value, zone, expected gap or Err)
        type Case<'a> = (&'a str, &'a str, &'a str, Result<Option<u64>, ()>);
        let cases: &[Case] = &[
            ("interval", "1", "UTC", Ok(Some(1))),
            ("interval", "3600", "UTC", Ok(Some(3600))),
            ("interval", " 300 ", "UTC", Ok(Some(300))),
            ("interval", "-5", "UTC", Err(())),
            ("interval", "0", "UTC", Err(())),
            ("interval", "soon", "UTC", Err(())),
            ("cron", "* * * * *", "UTC", Ok(Some(60))),
            ("cron", "*/4 * * * *", "Europe/Berlin", Ok(Some(240))),
            ("cron", "0,2 9 * * 1-5", "UTC", Ok(Some(120))),
            ("cron", "0 9 * * *", "Asia/Tokyo", Ok(Some(86_400))),
            // Daily, but the spring-forward day in the next 100 firings is 23 hours long.
            ("cron", "0 9 * * *", "America/New_York", Ok(Some(82_800))),
            ("cron", "0 0 9 * * 1", "UTC", Err(())),
            ("cron", "* * * * *", "Mars/Olympus", Err(())),
            ("once", "2030-01-01T00:00:00Z", "UTC", Ok(None)),
            ("once", "2001-01-01T00:00:00Z", "UTC", Err(())),
            ("hourly", "1", "UTC", Err(())),
        ];
        for (kind, value, tz, want) in cases {
            let got = shortest_gap_secs(kind, value, tz, now).map_err(|_| ());
            assert_eq!(&got, want, "{kind} {value} {tz}");
        }
    }

    #[test]
    fn gap_decisions() {
        // (gap, min, allowed)
        for (gap, min, ok) in [
            (Some(1), 300, false),
            (Some(299), 300, false),
            (Some(300), 300, true),
            (Some(86_400), 300, true),
            (None, 300, true),
            (Some(1), 0, true),
            (Some(0), 1, false),
        ] {
            let r = check_gap(gap, min, "interval `x`");
            assert_eq!(r.is_ok(), ok, "{gap:?} vs {min}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("limits.min_task_interval_secs"), "{e}");
            }
        }
        let e = check_gap(Some(1), 300, "interval `1`").unwrap_err();
        assert!(e.contains("every 1 s") && e.contains("every 5 min"), "{e}");
    }

    #[test]
    fn task_counts() {
        for (live, max, ok) in [
            (0, 20, true),
            (19, 20, true),
            (20, 20, false),
            (25, 20, false),
            (0, 0, false),
        ] {
            assert_eq!(check_task_count(live, max).is_ok(), ok, "{live}/{max}");
        }
        assert!(
            check_task_count(20, 20)
                .unwrap_err()
                .contains("limits.max_tasks = 20")
        );
    }

    #[test]
    fn run_gates() {
        let now = 10 * WINDOW_MS;
        let min = 60_000;
        // (newest-first starts, limit, expected)
        let cases: Vec<(Vec<i64>, u32, RunGate)> = vec![
            (vec![], 3, RunGate::Open),
            (vec![now - min, now - 2 * min], 3, RunGate::Open),
            (
                vec![now - min, now - 2 * min, now - 3 * min],
                3,
                RunGate::Closed {
                    started: 3,
                    limit: 3,
                    until: now - 3 * min + WINDOW_MS,
                },
            ),
            // Starts older than an hour do not count.
            (
                vec![now - min, now - 2 * min, now - WINDOW_MS],
                3,
                RunGate::Open,
            ),
            // 0 means no limit.
            (vec![now; 500], 0, RunGate::Open),
            (
                vec![now - 5 * min],
                1,
                RunGate::Closed {
                    started: 1,
                    limit: 1,
                    until: now - 5 * min + WINDOW_MS,
                },
            ),
        ];
        for (starts, limit, want) in cases {
            assert_eq!(run_gate(&starts, limit, now), want, "{starts:?} / {limit}");
        }
    }

    #[test]
    fn names_in_notices_are_one_clipped_line() {
        let mut g = group(false, None);
        g.name = "Fam\n\u{1b}[2Jily   ok".into();
        assert_eq!(display_name(&g), "Fam [2Jily ok");
        g.name = "x".repeat(80);
        assert_eq!(display_name(&g).chars().count(), 41);
        g.name = "\n\t".into();
        assert_eq!(display_name(&g), "fam");
    }

    #[test]
    fn durations_for_people() {
        for (s, want) in [
            (1, "1 s"),
            (59, "59 s"),
            (60, "1 min"),
            (300, "5 min"),
            (90, "1 min 30 s"),
            (3600, "1 h"),
            (5400, "1 h 30 min"),
            (86_400, "1 d"),
        ] {
            assert_eq!(human_secs(s), want);
        }
    }

    #[test]
    fn sparse_crons_are_checked_quickly() {
        let now = 1_772_446_620_000;
        for expr in ["0 0 29 2 *", "0 0 1 1 *", "59 23 31 12 *"] {
            let t = std::time::Instant::now();
            let g = shortest_gap_secs("cron", expr, "UTC", now).unwrap();
            assert!(g.unwrap() >= 365 * 86_400, "{expr}: {g:?}");
            assert!(
                t.elapsed() < std::time::Duration::from_secs(2),
                "{expr}: {:?}",
                t.elapsed()
            );
        }
    }
}
