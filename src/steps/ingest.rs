//! Storing inbound messages. Every channel ends here, so the rules for what is kept live here:
//! registered chats get their messages stored once; unknown chats get a `chats` row only.

use anyhow::Result;
use rusqlite::Transaction;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use crate::infra::store::{Store, messages};

/// One inbound message line (docs/ARCHITECTURE.md, "A message line"). Unknown fields are ignored so bridges can add their own.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Inbound {
    pub chat: String,
    pub id: String,
    pub sender: String,
    #[serde(default)]
    pub sender_name: Option<String>,
    pub text: String,
    /// RFC 3339; missing means now.
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub from_me: bool,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub chat_name: Option<String>,
    #[serde(default)]
    pub is_group: Option<bool>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub reply_to_sender: Option<String>,
    #[serde(default)]
    pub reply_to_text: Option<String>,
    /// Files the message carried (`crate::media::AttachmentIn`): a path under
    /// `media.ingest_roots` or a URL from bridges; channels' own handles from built-in pollers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::media::AttachmentIn>,
}

/// Most attachments one message may carry.
pub const MAX_ATTACHMENTS: usize = 16;

/// Counts printed after a batch, plus the reasons for each rejected line.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub stored: u64,
    pub duplicates: u64,
    pub unregistered: u64,
    pub rejected: u64,
    /// Messages in the main chat that answered an approval (`yes 42`, or a button), not stored.
    #[serde(skip_serializing_if = "is_zero")]
    pub answers: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Rejection>,
    /// Unknown chats seen in this batch (for the owner's notice).
    #[serde(skip)]
    pub unknown_chats: Vec<String>,
    /// The latest sender's display name in each unknown chat, for the notice.
    #[serde(skip)]
    pub unknown_names: HashMap<String, String>,
    /// Notices queued to main about unknown chats (at most one per chat a day).
    #[serde(skip)]
    pub notices: usize,
    /// Registered chats that got at least one new message (for chaining: `crate::steps::chain`).
    #[serde(skip)]
    pub stored_chats: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why one line was set aside.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    pub line: u64,
    pub reason: String,
}

impl Summary {
    /// One human line: `stored 3, duplicates 1, unregistered 1, rejected 0`.
    pub fn line(&self) -> String {
        let answers = match self.answers {
            0 => String::new(),
            n => format!(", approval answers {n}"),
        };
        format!(
            "stored {}, duplicates {}, unregistered {}, rejected {}{answers}",
            self.stored, self.duplicates, self.unregistered, self.rejected
        )
    }

    fn reject(&mut self, line: u64, reason: String) {
        self.rejected += 1;
        self.errors.push(Rejection { line, reason });
    }
}

/// Check one message before storing; the reason says what to fix.
pub fn validate(m: &Inbound, max_bytes: usize) -> Result<i64, String> {
    crate::rules::groups::validate_chat_id(&m.chat)?;
    if m.id.is_empty() || m.id.len() > 256 {
        return Err("`id` must be 1–256 characters".into());
    }
    if m.sender.is_empty() {
        return Err("`sender` must not be empty".into());
    }
    if m.attachments.len() > MAX_ATTACHMENTS {
        return Err(format!(
            "{} attachments; at most {MAX_ATTACHMENTS} per message",
            m.attachments.len()
        ));
    }
    if m.text.len() > max_bytes {
        return Err(format!(
            "text is {} bytes, over the {max_bytes}-byte cap (limits.max_message_bytes)",
            m.text.len()
        ));
    }
    match &m.time {
        None => Ok(crate::infra::time::now_ms()),
        Some(t) => crate::infra::time::parse_rfc3339(t)
            .ok_or_else(|| format!("`time` {t:?} is not an RFC 3339 timestamp")),
    }
}

/// Store already-validated messages inside the caller's transaction (so a poller can commit its
/// offset atomically with them). `registered` is the set of registered chat ids.
pub fn store_in_tx(
    tx: &Transaction,
    items: &[(Inbound, i64)],
    registered: &HashSet<String>,
    summary: &mut Summary,
) -> Result<()> {
    // One chat upsert per chat per batch keeps ingest fast on busy chats.
    let mut chats: HashMap<&str, (&Inbound, i64)> = HashMap::new();
    for (m, at) in items {
        let e = chats.entry(m.chat.as_str()).or_insert((m, *at));
        if *at >= e.1 {
            *e = (m, *at);
        }
    }
    for (chat, (m, at)) in &chats {
        messages::upsert_chat(
            tx,
            chat,
            m.chat_name.as_deref(),
            m.is_group,
            *at,
            Some(&m.sender),
        )?;
        if !registered.contains(*chat) {
            if !summary.unknown_chats.iter().any(|c| c == chat) {
                summary.unknown_chats.push(chat.to_string());
            }
            if let Some(name) = &m.sender_name {
                summary.unknown_names.insert(chat.to_string(), name.clone());
            }
        }
    }
    for (m, at) in items {
        if !registered.contains(&m.chat) {
            summary.unregistered += 1;
            continue;
        }
        // The owner's `yes 42` / `no 42` in the main chat answers an approval; it is taken out
        // here so the main agent never sees (or could fake) an answer.
        if !m.is_bot
            && crate::rules::approvals::answer::from_chat(
                tx,
                &m.chat,
                &m.id,
                &m.sender,
                &m.text,
                crate::infra::time::now_ms(),
            )?
        {
            summary.answers += 1;
            continue;
        }
        let new = messages::NewMessage {
            chat_id: &m.chat,
            msg_id: &m.id,
            sender: &m.sender,
            sender_name: m.sender_name.as_deref().unwrap_or(""),
            text: &m.text,
            sent_at: *at,
            from_me: m.from_me,
            is_bot: m.is_bot,
            reply_to_id: m.reply_to.as_deref(),
            reply_to_sender: m.reply_to_sender.as_deref(),
            reply_to_text: m.reply_to_text.as_deref(),
        };
        if messages::insert(tx, &new)? {
            if !m.attachments.is_empty() {
                store_attachments(tx, tx.last_insert_rowid(), m)?;
            }
            summary.stored += 1;
            if !summary.stored_chats.iter().any(|c| c == &m.chat) {
                summary.stored_chats.push(m.chat.clone());
            }
        } else {
            summary.duplicates += 1;
        }
    }
    Ok(())
}

/// Record what became of each attachment of the message just stored as `seq`. An attachment
/// nobody tried to fetch (a path that takes no media, like `claw ingest --chat`) is recorded
/// as failed, so the prompt still says a file was there.
fn store_attachments(tx: &Transaction, seq: i64, m: &Inbound) -> Result<()> {
    let folder: String = tx
        .prepare_cached("SELECT folder FROM groups WHERE chat_id = ?1")?
        .query_row([&m.chat], |r| r.get(0))?;
    for a in &m.attachments {
        let saved = a.outcome.clone().unwrap_or_else(|| crate::media::Saved {
            kind: a.kind.unwrap_or(crate::media::Kind::Document),
            name: crate::media::name::sanitise(a.name.as_deref().unwrap_or(""), "file"),
            path: None,
            mime: None,
            size: a.size,
            caption: a.caption.clone(),
            width: a.width,
            height: a.height,
            status: crate::media::Status::Failed,
            error: Some("not downloaded: this ingest path does not fetch attachments".into()),
            transcript: None,
        });
        crate::infra::store::attachments::insert(tx, seq, &folder, &saved)?;
    }
    Ok(())
}

/// Store validated messages in one IMMEDIATE transaction together with the caller's own writes
/// (`also`, e.g. a poller's offset, so both commit or neither), then tell main once about chats
/// first seen in this batch. Every way in (lines, one-shot, pollers, bridges) stores through here.
pub fn store_batch<T>(
    store: &mut Store,
    items: &[(Inbound, i64)],
    summary: &mut Summary,
    also: impl FnOnce(&Transaction) -> Result<T>,
) -> Result<T> {
    let registered = registered_chats(store)?;
    let known_before = summary.unknown_chats.len();
    let tx = store.write()?;
    let out = also(&tx)?;
    store_in_tx(&tx, items, &registered, summary)?;
    tx.commit()?;
    let fresh = &summary.unknown_chats[known_before..];
    summary.notices +=
        crate::rules::notice::notify_unknown(store, fresh, &summary.unknown_names)?.len();
    Ok(out)
}

/// The set of registered chat ids.
pub fn registered_chats(store: &Store) -> Result<HashSet<String>> {
    let mut stmt = store.conn.prepare("SELECT chat_id FROM groups")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Lines per transaction: large enough for speed (fewer commits rewrite the same index pages into
/// the WAL less often: 8,000 ingests ~30% faster than 2,000), small enough that a crash loses
/// little work (a killed ingest simply re-reads; re-ingesting is a no-op).
const BATCH: usize = 8000;
/// Bytes of input per transaction, so a batch of large messages cannot balloon memory.
const BATCH_BYTES: usize = 4 << 20;

/// Read JSON lines, store good ones in batches, and report bad ones by line number.
pub fn ingest_lines(store: &mut Store, input: impl BufRead, max_bytes: usize) -> Result<Summary> {
    ingest_lines_with(store, input, max_bytes, None)
}

/// [`ingest_lines`], saving attachments through `media` (downloads happen between reading a
/// batch and its transaction, never inside it).
pub fn ingest_lines_with(
    store: &mut Store,
    input: impl BufRead,
    max_bytes: usize,
    media: Option<&crate::media::save::Ctx>,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut batch: Vec<(Inbound, i64)> = Vec::with_capacity(BATCH);
    let mut batch_bytes = 0usize;
    let mut line_no = 0u64;
    // A line longer than the text cap plus generous room for the other fields is rejected unread.
    let line_cap = max_bytes * 6 + 16 * 1024;
    let mut reader = input;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = read_line_capped(&mut reader, &mut buf, line_cap)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.len() > line_cap {
            summary.reject(line_no, format!("line is over {line_cap} bytes"));
            continue;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim(),
            Err(_) => {
                summary.reject(line_no, "line is not valid UTF-8".into());
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        let m: Inbound = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                summary.reject(line_no, format!("invalid message JSON: {e}"));
                continue;
            }
        };
        match validate(&m, max_bytes) {
            Ok(at) => {
                batch_bytes += buf.len();
                batch.push((m, at));
            }
            Err(reason) => summary.reject(line_no, reason),
        }
        if batch.len() >= BATCH || batch_bytes >= BATCH_BYTES {
            flush(store, &mut batch, &mut summary, media)?;
            batch_bytes = 0;
        }
    }
    flush(store, &mut batch, &mut summary, media)?;
    Ok(summary)
}

fn flush(
    store: &mut Store,
    batch: &mut Vec<(Inbound, i64)>,
    summary: &mut Summary,
    media: Option<&crate::media::save::Ctx>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    if let Some(ctx) = media {
        crate::media::save::prepare(ctx, &store.conn, batch);
    }
    store_batch(store, batch, summary, |_| Ok(()))?;
    batch.clear();
    Ok(())
}

/// Read one line into `buf`, but stop storing bytes past `cap` (the rest of the line is skipped).
/// Returns the number of bytes consumed (0 at EOF).
fn read_line_capped(r: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..=i], true),
            None => (avail, false),
        };
        if buf.len() <= cap {
            let room = cap + 1 - buf.len();
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        let n = chunk.len();
        r.consume(n);
        consumed += n;
        if done {
            return Ok(consumed);
        }
    }
}

/// Store one message typed at the shell (`claw ingest --chat … --text …`).
pub fn one_shot(
    store: &mut Store,
    chat: &str,
    text: &str,
    sender: Option<&str>,
    max_bytes: usize,
) -> Result<Summary> {
    let now = crate::infra::time::now_ms();
    let m = Inbound {
        chat: chat.to_string(),
        id: format!("local-{now}-{}", std::process::id()),
        sender: sender
            .map(|s| format!("cli:{s}"))
            .unwrap_or_else(|| "cli:owner".into()),
        sender_name: Some(sender.unwrap_or("owner").to_string()),
        text: text.to_string(),
        time: None,
        from_me: sender.is_none(),
        is_bot: false,
        chat_name: None,
        is_group: None,
        reply_to: None,
        reply_to_sender: None,
        reply_to_text: None,
        attachments: vec![],
    };
    let mut summary = Summary::default();
    match validate(&m, max_bytes) {
        Ok(at) => store_batch(store, &[(m, at)], &mut summary, |_| Ok(()))?,
        Err(reason) => summary.reject(1, reason),
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Inbound {
        serde_json::from_value(
            serde_json::json!({"chat":"tg:1","id":"1","sender":"tg:2","text":text}),
        )
        .unwrap()
    }

    #[test]
    fn validate_caps_text_and_checks_time() {
        assert!(validate(&msg("hi"), 10).is_ok());
        assert!(
            validate(&msg("12345678901"), 10)
                .unwrap_err()
                .contains("over the 10-byte cap")
        );
        let mut m = msg("x");
        m.time = Some("yesterday".into());
        assert!(validate(&m, 10).unwrap_err().contains("RFC 3339"));
        m.time = Some("2026-11-21T10:00:00Z".into());
        assert_eq!(validate(&m, 10).unwrap(), 1_795_255_200_000);
    }

    #[test]
    fn capped_reader_skips_the_rest_of_long_lines() {
        let mut r = std::io::Cursor::new(b"0123456789\nab\n".to_vec());
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut r, &mut buf, 4).unwrap(), 11);
        assert_eq!(buf.len(), 5);
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf, 4).unwrap(), 3);
        assert_eq!(buf, b"ab\n");
    }
}
