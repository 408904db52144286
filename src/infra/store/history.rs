//! Queries on the searchable history (migration 8): three FTS5 indexes, over `messages`, over the
//! agent's replies in `outbox` (the view `outbox_replies`) and over `archives`, kept in step by
//! triggers. This file only runs SQL: what a query may contain and who may search what are
//! decided in `crate::search`, and nothing here ever sees unsanitised FTS syntax from an agent.

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Which source a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A message someone sent in a chat.
    Message,
    /// What the agent said (an outbox row from a run or an IPC `send_message`).
    Reply,
    /// A compaction archive, `conversations/NAME.md` in the group's folder.
    Archive,
}

impl Kind {
    fn from_code(c: i64) -> Kind {
        match c {
            0 => Kind::Message,
            1 => Kind::Reply,
            _ => Kind::Archive,
        }
    }
}

/// What to look for and where; the query is already FTS5 syntax built by `search::query`.
#[derive(Debug, Clone)]
pub struct Filter<'a> {
    pub fts: &'a str,
    /// Only this chat's messages and replies (`None`: every chat).
    pub chat_id: Option<&'a str>,
    /// Only this folder's archives (`None`: every folder).
    pub folder: Option<&'a str>,
    /// Epoch milliseconds, inclusive.
    pub since: i64,
    /// Epoch milliseconds, exclusive.
    pub until: i64,
    /// Exact sender id or (case-insensitive) sender name; `assistant` selects replies,
    /// `archive` archives.
    pub sender: Option<&'a str>,
    pub limit: usize,
    /// Tokens of context in each snippet (FTS5 allows at most 64).
    pub snippet_tokens: usize,
}

/// One ranked match.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub kind: Kind,
    /// The group folder it belongs to, when its chat is registered (archives always have one).
    pub group: Option<String>,
    pub chat_id: Option<String>,
    /// The chat's message id (messages), `out:N` (replies) or the archive's file name.
    pub id: String,
    /// The row: message `seq`, outbox id or archive id.
    pub row: i64,
    pub sender: String,
    /// Epoch milliseconds: when it was sent, queued, or archived.
    pub at: i64,
    /// The best-matching fragment, matched words in `**…**`.
    pub snippet: String,
    /// FTS5 bm25 rank: lower is better.
    pub rank: f64,
}

/// Matches ranked per source, newest first, before the best are chosen. A word in a third of
/// all messages would otherwise have every one of its matches joined and ranked (hundreds of
/// milliseconds over a million messages); FTS5 walks matches in row order and stops here, so
/// for very common words the newest this-many matches in scope are the ones ranked. Rarer
/// words have fewer matches than this and are ranked exactly.
pub const RANK_WINDOW: i64 = 500;

const RANKED: &str = "
SELECT kind, id, rank FROM (
    SELECT * FROM (
        SELECT 0 AS kind, messages_fts.rowid AS id, messages_fts.rank AS rank
          FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid
         WHERE messages_fts MATCH ?1 AND (?2 IS NULL OR m.chat_id = ?2)
           AND m.sent_at >= ?4 AND m.sent_at < ?5
           AND (?6 IS NULL OR m.sender = ?6 OR m.sender_name = ?6 COLLATE NOCASE)
         ORDER BY messages_fts.rowid DESC LIMIT ?8)
    UNION ALL
    SELECT * FROM (
        SELECT 1, outbox_fts.rowid, outbox_fts.rank
          FROM outbox_fts JOIN outbox o ON o.id = outbox_fts.rowid
         WHERE outbox_fts MATCH ?1 AND (?2 IS NULL OR o.chat_id = ?2)
           AND o.created_at >= ?4 AND o.created_at < ?5
           AND (?6 IS NULL OR ?6 = 'assistant' COLLATE NOCASE)
         ORDER BY outbox_fts.rowid DESC LIMIT ?8)
    UNION ALL
    SELECT * FROM (
        SELECT 2, archives_fts.rowid, archives_fts.rank
          FROM archives_fts JOIN archives a ON a.id = archives_fts.rowid
         WHERE archives_fts MATCH ?1 AND (?3 IS NULL OR a.folder = ?3)
           AND a.archived_at >= ?4 AND a.archived_at < ?5
           AND (?6 IS NULL OR ?6 = 'archive' COLLATE NOCASE)
         ORDER BY archives_fts.rowid DESC LIMIT ?8)
) ORDER BY rank LIMIT ?7";

/// The best `limit` matches, best first. Ranking runs over row ids only; snippets are made
/// afterwards for the winners alone, since a snippet costs far more than a rank.
pub fn search(conn: &Connection, f: &Filter) -> Result<Vec<Hit>> {
    let ranked: Vec<(i64, i64, f64)> = conn
        .prepare_cached(RANKED)?
        .query_map(
            params![
                f.fts,
                f.chat_id,
                f.folder,
                f.since,
                f.until,
                f.sender,
                f.limit as i64,
                RANK_WINDOW
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .collect::<rusqlite::Result<_>>()
        .context("searching the history index")?;
    let tokens = f.snippet_tokens.clamp(4, 64) as i64;
    let mut hits = Vec::with_capacity(ranked.len());
    for (kind, row, rank) in ranked {
        let kind = Kind::from_code(kind);
        if let Some(mut h) = detail(conn, kind, row, f.fts, tokens)? {
            h.rank = rank;
            hits.push(h);
        }
    }
    Ok(hits)
}

fn detail(conn: &Connection, kind: Kind, row: i64, fts: &str, tokens: i64) -> Result<Option<Hit>> {
    let sql = match kind {
        Kind::Message => {
            "SELECT g.folder, m.chat_id, m.msg_id,
                    CASE WHEN m.sender_name = '' THEN m.sender ELSE m.sender_name || ' (' || m.sender || ')' END,
                    m.sent_at, snippet(messages_fts, 0, '**', '**', '…', ?3)
               FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid
               LEFT JOIN groups g ON g.chat_id = m.chat_id
              WHERE messages_fts MATCH ?1 AND messages_fts.rowid = ?2"
        }
        Kind::Reply => {
            "SELECT g.folder, o.chat_id, 'out:' || o.id, 'assistant', o.created_at,
                    snippet(outbox_fts, 0, '**', '**', '…', ?3)
               FROM outbox_fts JOIN outbox o ON o.id = outbox_fts.rowid
               LEFT JOIN groups g ON g.chat_id = o.chat_id
              WHERE outbox_fts MATCH ?1 AND outbox_fts.rowid = ?2"
        }
        Kind::Archive => {
            "SELECT a.folder, NULL, a.name, 'archive', a.archived_at,
                    snippet(archives_fts, 0, '**', '**', '…', ?3)
               FROM archives_fts JOIN archives a ON a.id = archives_fts.rowid
              WHERE archives_fts MATCH ?1 AND archives_fts.rowid = ?2"
        }
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![fts, row, tokens], |r| {
            Ok(Hit {
                kind,
                group: r.get(0)?,
                chat_id: r.get(1)?,
                id: r.get(2)?,
                row,
                sender: r.get(3)?,
                at: r.get(4)?,
                snippet: r.get(5)?,
                rank: 0.0,
            })
        })
        .optional()?)
}

/// An archive file as read from a group folder.
pub struct ArchiveFile<'a> {
    pub folder: &'a str,
    pub name: &'a str,
    pub text: &'a str,
    pub archived_at: i64,
    pub size: i64,
    pub mtime: i64,
}

/// Size and mtime of the archive already indexed under `(folder, name)`, to skip unchanged files.
pub fn archive_stamp(conn: &Connection, folder: &str, name: &str) -> Result<Option<(i64, i64)>> {
    Ok(conn
        .prepare_cached("SELECT size, mtime FROM archives WHERE folder = ?1 AND name = ?2")?
        .query_row(params![folder, name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Index an archive, replacing what was indexed under the same folder and name.
pub fn upsert_archive(conn: &Connection, a: &ArchiveFile) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO archives (folder, name, text, archived_at, size, mtime, indexed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (folder, name) DO UPDATE SET
           text = excluded.text, archived_at = excluded.archived_at, size = excluded.size,
           mtime = excluded.mtime, indexed_at = excluded.indexed_at",
    )?
    .execute(params![
        a.folder,
        a.name,
        a.text,
        a.archived_at,
        a.size,
        a.mtime,
        crate::infra::time::now_ms()
    ])?;
    Ok(())
}

/// Names of the archives indexed for `folder`.
pub fn archive_names(conn: &Connection, folder: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached("SELECT name FROM archives WHERE folder = ?1 ORDER BY name")?
        .query_map([folder], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Forget an archive whose file is gone.
pub fn delete_archive(conn: &Connection, folder: &str, name: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM archives WHERE folder = ?1 AND name = ?2")?
        .execute(params![folder, name])?;
    Ok(())
}

/// The three indexes, for rebuild and integrity checks.
pub const INDEXES: [&str; 3] = ["messages_fts", "outbox_fts", "archives_fts"];

/// Rebuild every index from its content table. Idempotent: the result depends only on the rows.
pub fn rebuild(conn: &Connection) -> Result<()> {
    for t in INDEXES {
        conn.execute(&format!("INSERT INTO {t} ({t}) VALUES ('rebuild')"), [])
            .with_context(|| format!("rebuilding {t}"))?;
    }
    Ok(())
}

/// FTS5's own check that each index matches its content exactly; the error names the index.
pub fn integrity_check(conn: &Connection) -> Result<()> {
    for t in INDEXES {
        conn.execute(
            &format!("INSERT INTO {t} ({t}, rank) VALUES ('integrity-check', 1)"),
            [],
        )
        .with_context(|| {
            format!("the search index {t} does not match its rows: run `claw search --reindex`")
        })?;
    }
    Ok(())
}

/// Rows each index covers: messages, agent replies, archives.
pub fn counts(conn: &Connection) -> Result<(i64, i64, i64)> {
    Ok(conn.query_row(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM outbox_replies),
                (SELECT count(*) FROM archives)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}
