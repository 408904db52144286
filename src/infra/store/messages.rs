//! Chats and messages: what ingest writes and what run-group reads back as prompts.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// A stored message as the prompt builder and listings see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub seq: i64,
    pub chat_id: String,
    pub msg_id: String,
    pub sender: String,
    pub sender_name: String,
    pub text: String,
    pub sent_at: i64,
    pub from_me: bool,
    pub is_bot: bool,
    pub reply_to_sender: Option<String>,
    pub reply_to_text: Option<String>,
}

/// A known chat.
#[derive(Debug, Clone, Serialize)]
pub struct Chat {
    pub id: String,
    pub channel: String,
    pub name: Option<String>,
    pub is_group: bool,
    pub last_activity: i64,
    pub registered: bool,
}

/// The channel part of a chat id (`tg:-100` → `tg`); ids without a prefix belong to `unknown`.
pub fn channel_of(chat_id: &str) -> &str {
    chat_id
        .split_once(':')
        .map(|(c, _)| c)
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown")
}

/// The configuration name of a chat-id prefix (`tg` → `telegram`).
pub fn channel_name(prefix: &str) -> &str {
    match prefix {
        "tg" => "telegram",
        "wa" => "whatsapp",
        "sig" => "signal",
        other => other,
    }
}

/// Insert or refresh a chat row; the name is only replaced by a non-empty one.
pub fn upsert_chat(
    conn: &Connection,
    id: &str,
    name: Option<&str>,
    is_group: Option<bool>,
    at: i64,
    sender: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO chats (id, channel, name, is_group, first_seen, last_activity, last_sender)
         VALUES (?1, ?2, ?3, coalesce(?4, 0), ?5, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET
           name = coalesce(nullif(excluded.name, ''), chats.name),
           is_group = coalesce(?4, chats.is_group),
           last_activity = max(chats.last_activity, excluded.last_activity),
           last_sender = coalesce(excluded.last_sender, chats.last_sender)",
    )?
    .execute(params![id, channel_of(id), name, is_group, at, sender])?;
    Ok(())
}

/// Fields of a message to store.
pub struct NewMessage<'a> {
    pub chat_id: &'a str,
    pub msg_id: &'a str,
    pub sender: &'a str,
    pub sender_name: &'a str,
    pub text: &'a str,
    pub sent_at: i64,
    pub from_me: bool,
    pub is_bot: bool,
    pub reply_to_id: Option<&'a str>,
    pub reply_to_sender: Option<&'a str>,
    pub reply_to_text: Option<&'a str>,
}

/// Store a message and index its words for search; returns false if `(chat, msg id)` was
/// already stored.
pub fn insert(conn: &Connection, m: &NewMessage) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO messages (chat_id, msg_id, sender, sender_name, text, sent_at, from_me, is_bot,
                                   reply_to_id, reply_to_sender, reply_to_text, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(chat_id, msg_id) DO NOTHING",
        )?
        .execute(params![
            m.chat_id,
            m.msg_id,
            m.sender,
            m.sender_name,
            m.text,
            m.sent_at,
            m.from_me,
            m.is_bot,
            m.reply_to_id,
            m.reply_to_sender,
            m.reply_to_text,
            crate::infra::time::now_ms()
        ])?;
    if n == 1 {
        // The search index, in the same transaction (see migration 8 for why not a trigger).
        conn.prepare_cached("INSERT INTO messages_fts (rowid, text) VALUES (?1, ?2)")?
            .execute(params![conn.last_insert_rowid(), m.text])?;
    }
    Ok(n == 1)
}

fn row_to_message(r: &rusqlite::Row) -> rusqlite::Result<Message> {
    Ok(Message {
        seq: r.get(0)?,
        chat_id: r.get(1)?,
        msg_id: r.get(2)?,
        sender: r.get(3)?,
        sender_name: r.get(4)?,
        text: r.get(5)?,
        sent_at: r.get(6)?,
        from_me: r.get(7)?,
        is_bot: r.get(8)?,
        reply_to_sender: r.get(9)?,
        reply_to_text: r.get(10)?,
    })
}

const COLS: &str = "seq, chat_id, msg_id, sender, sender_name, text, sent_at, from_me, is_bot, reply_to_sender, reply_to_text";

/// Messages of a chat after `after_seq`, oldest first, excluding the assistant's own.
pub fn since(
    conn: &Connection,
    chat_id: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<Message>> {
    let sql = format!(
        "SELECT {COLS} FROM messages WHERE chat_id = ?1 AND seq > ?2 AND is_bot = 0 ORDER BY seq LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![chat_id, after_seq, limit as i64], row_to_message)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest `limit` non-bot messages of a chat after `after_seq`, oldest first.
pub fn latest_since(
    conn: &Connection,
    chat_id: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<Message>> {
    let sql = format!(
        "SELECT {COLS} FROM messages WHERE chat_id = ?1 AND seq > ?2 AND is_bot = 0 ORDER BY seq DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows: Vec<Message> = stmt
        .query_map(params![chat_id, after_seq, limit as i64], row_to_message)?
        .collect::<Result<_, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// Call `f(sender, from_me, text)` on the newest non-bot messages of a chat after `after_seq`,
/// newest first, at most `limit`, until it returns false. Lets a caller stop reading once it knows
/// its answer, and borrows the text instead of copying whole rows (`claw status` over many groups).
pub fn scan_latest_since(
    conn: &Connection,
    chat_id: &str,
    after_seq: i64,
    limit: usize,
    mut f: impl FnMut(&str, bool, &str) -> bool,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT sender, from_me, text FROM messages
         WHERE chat_id = ?1 AND seq > ?2 AND is_bot = 0 ORDER BY seq DESC LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![chat_id, after_seq, limit as i64])?;
    while let Some(r) = rows.next()? {
        let sender = r.get_ref(0)?.as_str()?;
        let from_me: bool = r.get(1)?;
        let text = r.get_ref(2)?.as_str()?;
        if !f(sender, from_me, text) {
            break;
        }
    }
    Ok(())
}

/// Texts among the newest `limit` non-bot messages after `after_seq` that may start with
/// `trigger`: after trimming exactly the characters Rust's `trim_start` trims (Unicode
/// White_Space), the first `length(trigger)` characters equal the trigger with ASCII case folded,
/// as `eq_ignore_ascii_case` does. Callers confirm with `pending::has_trigger` (the word
/// boundary); the filter only saves reading every pending text.
pub fn trigger_candidates(
    conn: &Connection,
    chat_id: &str,
    after_seq: i64,
    limit: usize,
    trigger: &str,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT text FROM (SELECT text FROM messages
                           WHERE chat_id = ?1 AND seq > ?2 AND is_bot = 0 ORDER BY seq DESC LIMIT ?3)
         WHERE lower(substr(ltrim(text, ?5), 1, length(?4))) = lower(?4)",
    )?;
    let rows = stmt.query_map(
        params![chat_id, after_seq, limit as i64, trigger, WHITE_SPACE],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The Unicode White_Space characters (what `str::trim_start` removes).
const WHITE_SPACE: &str = "\u{9}\u{a}\u{b}\u{c}\u{d}\u{20}\u{85}\u{a0}\u{1680}\u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}";

/// How many non-bot messages a chat has after `after_seq`.
pub fn count_since(conn: &Connection, chat_id: &str, after_seq: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM messages WHERE chat_id = ?1 AND seq > ?2 AND is_bot = 0",
        )?
        .query_row(params![chat_id, after_seq], |r| r.get(0))?)
}

/// The highest message seq of a chat (0 when none).
pub fn max_seq(conn: &Connection, chat_id: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM messages WHERE chat_id = ?1")?
        .query_row(params![chat_id], |r| r.get(0))?)
}

/// All chats, newest activity first, marking which are registered as groups.
pub fn chats(conn: &Connection) -> Result<Vec<Chat>> {
    let mut stmt = conn.prepare(
        "SELECT c.id, c.channel, c.name, c.is_group, c.last_activity, g.folder IS NOT NULL
         FROM chats c LEFT JOIN groups g ON g.chat_id = c.id ORDER BY c.last_activity DESC",
    )?;
    let rows = stmt.query_map([], chat_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn chat_row(r: &rusqlite::Row) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: r.get(0)?,
        channel: r.get(1)?,
        name: r.get(2)?,
        is_group: r.get(3)?,
        last_activity: r.get(4)?,
        registered: r.get(5)?,
    })
}

/// One chat by id.
pub fn chat(conn: &Connection, id: &str) -> Result<Option<Chat>> {
    Ok(conn
        .query_row(
            "SELECT c.id, c.channel, c.name, c.is_group, c.last_activity, g.folder IS NOT NULL
             FROM chats c LEFT JOIN groups g ON g.chat_id = c.id WHERE c.id = ?1",
            params![id],
            chat_row,
        )
        .optional()?)
}
