//! The spending limits on task requests from a group's agent (`schedule_task`, `update_task`,
//! `resume_task`): the shortest schedule it may set and how many tasks it may keep.
//!
//! Runs after `auth::authorise` (who may act) and before `apply` (the act). The decisions are
//! `crate::rules::limits`'s pure functions; this file only maps a request onto them and reads the task
//! row or count they need. Main's requests are never limited (`limits::for_group` is `None`). A
//! schedule that does not parse is let through here, so the agent gets the schedule's own
//! validation error from `apply` instead of a limit it did not hit.

use anyhow::Result;
use rusqlite::Connection;

use super::auth::Allowed;
use crate::infra::protocol::IpcRequest;
use crate::infra::store::groups::Group;
use crate::infra::store::tasks;
use crate::rules::limits::{self, GroupLimits};

/// A request the limits stop: the reason for the agent's reply and what the chat is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: String,
    /// Which limit, for the once-an-hour notice key (`task-interval` or `task-count`).
    pub limit: &'static str,
    /// The notice for the group's chat.
    pub notice: String,
}

/// Check an authorised request against the group's limits (`None` for main: nothing to check).
pub fn check(
    conn: &Connection,
    limits: Option<&GroupLimits>,
    group: &Group,
    req: &IpcRequest,
    allowed: &Allowed,
    now: i64,
) -> Result<Option<Refusal>> {
    let Some(l) = limits else {
        return Ok(None);
    };
    let name = limits::display_name(group);
    let gap_refusal = |kind: &str, value: &str, tz: &str| -> Option<Refusal> {
        let gap = limits::shortest_gap_secs(kind, value, tz, now).ok()?;
        let what = format!("{kind} `{value}`");
        let reason = limits::check_gap(gap, l.min_task_interval_secs, &what).err()?;
        Some(Refusal {
            reason,
            limit: "task-interval",
            notice: format!(
                "{name}'s assistant asked for a task that would run every {}; tasks here may run \
                 at most every {}, so it was refused. The owner can change this with \
                 `limits.min_task_interval_secs` in claw.toml.",
                limits::human_secs(gap.unwrap_or(0)),
                limits::human_secs(l.min_task_interval_secs)
            ),
        })
    };
    match (req, allowed) {
        (
            IpcRequest::ScheduleTask {
                schedule_type,
                schedule_value,
                timezone,
                ..
            },
            Allowed::Schedule { folder },
        ) => {
            let tz = timezone
                .clone()
                .unwrap_or_else(crate::steps::schedule::host_timezone);
            if let Some(r) = gap_refusal(schedule_type, schedule_value, &tz) {
                return Ok(Some(r));
            }
            let live = tasks::count_live(conn, folder)?;
            Ok(limits::check_task_count(live, l.max_tasks)
                .err()
                .map(|reason| Refusal {
                    reason,
                    limit: "task-count",
                    notice: format!(
                        "{name}'s assistant tried to keep more than {} scheduled tasks (its \
                         limit); the extra ones were refused. The owner can change this with \
                         `limits.max_tasks` in claw.toml, or cancel tasks with `claw task cancel`.",
                        l.max_tasks
                    ),
                }))
        }
        (
            IpcRequest::UpdateTask {
                schedule_type,
                schedule_value,
                timezone,
                ..
            },
            Allowed::Task { task_id },
        ) => {
            // Only a change of schedule is checked: a new prompt for a task the owner made
            // frequent does not make it run more often.
            if schedule_type.is_none() && schedule_value.is_none() && timezone.is_none() {
                return Ok(None);
            }
            let Some(t) = tasks::get(conn, *task_id)? else {
                return Ok(None);
            };
            if schedule_type.is_some() && schedule_value.is_none() {
                return Ok(None); // `tasks::update` refuses it and says why
            }
            let kind = schedule_type.as_deref().unwrap_or(&t.kind);
            let value = schedule_value.as_deref().unwrap_or(&t.schedule);
            let tz = timezone.as_deref().unwrap_or(&t.timezone);
            Ok(gap_refusal(kind, value, tz))
        }
        (IpcRequest::ResumeTask { .. }, Allowed::Task { task_id }) => {
            // A paused task may be shorter than the limit (the owner set it, or the limit was
            // raised since); the agent may not set it going again.
            let Some(t) = tasks::get(conn, *task_id)? else {
                return Ok(None);
            };
            Ok(gap_refusal(&t.kind, &t.schedule, &t.timezone))
        }
        _ => Ok(None),
    }
}

/// Tell the group's chat about a refusal, at most once an hour per kind of limit.
pub fn tell(conn: &Connection, group: &Group, r: &Refusal, now: i64) -> Result<()> {
    limits::tell_chat_once(conn, group, r.limit, &r.notice, now)?;
    Ok(())
}
