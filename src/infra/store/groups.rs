//! Registered groups, their cursors and their agent sessions.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Per-group settings kept as JSON in `groups.config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Extra host folders to mount, checked against the mount allowlist at every run.
    pub extra_mounts: Vec<ExtraMount>,
    /// Overrides `limits.timeout_secs`.
    pub timeout_secs: Option<u64>,
    /// Overrides `model.provider`.
    pub provider: Option<String>,
    /// Overrides `model.name`.
    pub model: Option<String>,
    /// Hosts this group's container may reach through the proxy (`host`, `host:port`, `*.domain`).
    pub egress: Vec<String>,
    /// Other models this group's agent may ask for (beside its model and `model.allowed`).
    pub models: Vec<String>,
    /// Overrides `limits.group_disk_mb`.
    pub disk_mb: Option<u64>,
    /// Overrides `limits.runs_per_hour` (non-main groups).
    pub runs_per_hour: Option<u32>,
    /// This group's own caps on model use (beside the overall `[budget]`).
    pub budget: crate::rules::cost::budget::Caps,
    /// This group's approval policy overrides (`claw group set G --approve ACT=POLICY`).
    #[serde(skip_serializing_if = "crate::rules::approvals::Overrides::is_empty")]
    pub approve: crate::rules::approvals::Overrides,
    /// Secrets bound to hosts and a header; the container gets placeholders, the proxy swaps
    /// in the values (`crate::rules::credentials`).
    pub credentials: Vec<crate::rules::credentials::Binding>,
}

/// An extra mount request: host path, name under `/workspace/extra/`, and whether it should be ro.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtraMount {
    pub host_path: String,
    pub name: String,
    #[serde(default = "yes")]
    pub readonly: bool,
}

fn yes() -> bool {
    true
}

/// A registered chat.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub folder: String,
    pub chat_id: String,
    pub name: String,
    pub trigger: String,
    pub requires_trigger: bool,
    pub is_main: bool,
    pub config: GroupConfig,
    /// Sender ids allowed to trigger runs; `None` means everyone.
    pub allowed_senders: Option<Vec<String>>,
    pub added_at: i64,
}

const COLS: &str =
    "folder, chat_id, name, trigger, requires_trigger, is_main, config, allowed_senders, added_at";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Group> {
    let config: String = r.get(6)?;
    let senders: Option<String> = r.get(7)?;
    Ok(Group {
        folder: r.get(0)?,
        chat_id: r.get(1)?,
        name: r.get(2)?,
        trigger: r.get(3)?,
        requires_trigger: r.get(4)?,
        is_main: r.get(5)?,
        // A config written by an older or newer claw should not make the group vanish.
        config: serde_json::from_str(&config).unwrap_or_default(),
        allowed_senders: senders.and_then(|s| serde_json::from_str(&s).ok()),
        added_at: r.get(8)?,
    })
}

/// All groups, main first, then by folder.
pub fn list(conn: &Connection) -> Result<Vec<Group>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM groups ORDER BY is_main DESC, folder"
    ))?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One group by folder.
pub fn get(conn: &Connection, folder: &str) -> Result<Option<Group>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM groups WHERE folder = ?1"))?
        .query_row([folder], row)
        .optional()?)
}

/// The group registered for a chat.
pub fn by_chat(conn: &Connection, chat_id: &str) -> Result<Option<Group>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM groups WHERE chat_id = ?1"))?
        .query_row([chat_id], row)
        .optional()?)
}

/// The main group, if registered.
pub fn main(conn: &Connection) -> Result<Option<Group>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM groups WHERE is_main = 1"))?
        .query_row([], row)
        .optional()?)
}

/// Insert a group row (validation happens in `crate::rules::groups`).
pub fn insert(conn: &Connection, g: &Group) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO groups ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            g.folder,
            g.chat_id,
            g.name,
            g.trigger,
            g.requires_trigger,
            g.is_main,
            serde_json::to_string(&g.config)?,
            g.allowed_senders
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
            g.added_at
        ],
    )?;
    Ok(())
}

/// Overwrite the mutable fields of a group.
pub fn update(conn: &Connection, g: &Group) -> Result<()> {
    conn.execute(
        "UPDATE groups SET name = ?2, trigger = ?3, requires_trigger = ?4, config = ?5, allowed_senders = ?6
         WHERE folder = ?1",
        params![
            g.folder,
            g.name,
            g.trigger,
            g.requires_trigger,
            serde_json::to_string(&g.config)?,
            g.allowed_senders.as_ref().map(serde_json::to_string).transpose()?
        ],
    )?;
    Ok(())
}

/// Remove a group row (its cursor and session go with it; its files stay on disk).
pub fn delete(conn: &Connection, folder: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM groups WHERE folder = ?1", [folder])? == 1)
}

/// The highest message seq already handed to the group's agent (0 when none).
pub fn cursor(conn: &Connection, folder: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT seq FROM cursors WHERE folder = ?1")?
        .query_row([folder], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Move the cursor forward (never backward).
pub fn advance_cursor(conn: &Connection, folder: &str, seq: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO cursors (folder, seq) VALUES (?1, ?2)
         ON CONFLICT(folder) DO UPDATE SET seq = max(cursors.seq, excluded.seq)",
    )?
    .execute(params![folder, seq])?;
    Ok(())
}

/// The agent session to resume for a group.
pub fn session(conn: &Connection, folder: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT session_id FROM sessions WHERE folder = ?1")?
        .query_row([folder], |r| r.get(0))
        .optional()?)
}

/// Remember the agent session for a group.
pub fn set_session(conn: &Connection, folder: &str, session_id: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO sessions (folder, session_id, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(folder) DO UPDATE SET session_id = excluded.session_id, updated_at = excluded.updated_at",
        params![folder, session_id, crate::infra::time::now_ms()],
    )?;
    Ok(())
}
