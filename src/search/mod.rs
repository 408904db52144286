//! Searching the history: who may search what ([`decide`]), what a request may contain
//! (`query`), and one entry point ([`run`]) shared by `claw search` and the agent's
//! `search_history` tool (which reaches it through the proxy, see `crate::infra::proxy::search`).
//!
//! The boundary: a group searches only its own chat and its own archives; main may search every
//! group's; the owner at the terminal may search everything. The asking group is known from which
//! run's proxy received the request, never from the request, so no field in it can widen the
//! scope. The container never gets the database.

pub mod archives;
pub mod query;

use anyhow::Result;
use rusqlite::Connection;
use serde::Serialize;

use crate::infra::protocol::{SearchHit, SearchRequest, SearchResponse};
use crate::infra::store::{groups, history};

/// Hits returned when the request names no limit.
pub const DEFAULT_LIMIT: usize = 10;
/// Most hits one request returns, whatever it asks for.
pub const MAX_LIMIT: usize = 50;
/// Tokens of context around the match in a snippet.
pub const SNIPPET_TOKENS: usize = 24;
/// Longest snippet, in characters (one FTS5 token can be long).
pub const MAX_SNIPPET_CHARS: usize = 400;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asker {
    /// The owner at the terminal (`claw search`).
    Owner,
    /// A group's agent, identified by the folder its run serves.
    Group(String),
}

/// Whose history a search covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every chat and every folder.
    All,
    /// One group: its chat's messages and replies, its folder's archives.
    Group { folder: String, chat_id: String },
}

/// A group as the scope decision needs it.
#[derive(Debug, Clone)]
pub struct GroupRef {
    pub folder: String,
    pub chat_id: String,
    pub is_main: bool,
}

/// The one authorisation rule for history search, as a pure function: `lookup` finds a
/// registered group by folder. The error is the reason, worded for whoever asked.
pub fn decide(
    asker: &Asker,
    requested: Option<&str>,
    lookup: impl Fn(&str) -> Option<GroupRef>,
) -> Result<Scope, String> {
    let of = |g: GroupRef| Scope::Group {
        folder: g.folder,
        chat_id: g.chat_id,
    };
    let named = |f: &str| {
        lookup(f).ok_or_else(|| format!("there is no group `{f}` (see `claw group list`)"))
    };
    match asker {
        Asker::Owner => match requested {
            None => Ok(Scope::All),
            Some(f) => named(f).map(of),
        },
        Asker::Group(own) => {
            let me = lookup(own).ok_or_else(|| {
                format!("group `{own}` is no longer registered, so it has no history to search")
            })?;
            match requested {
                Some(f) if f != own.as_str() && !me.is_main => Err(format!(
                    "a group searches only its own history; `{f}` is another group's"
                )),
                Some(f) if f != own.as_str() => named(f).map(of),
                Some(_) => Ok(of(me)),
                None if me.is_main => Ok(Scope::All),
                None => Ok(of(me)),
            }
        }
    }
}

/// [`decide`] against the database.
pub fn scope(conn: &Connection, asker: &Asker, requested: Option<&str>) -> Result<Scope, String> {
    decide(asker, requested, |f| {
        groups::get(conn, f).ok().flatten().map(|g| GroupRef {
            folder: g.folder,
            chat_id: g.chat_id,
            is_main: g.is_main,
        })
    })
}

/// Why a search could not run: the asker's mistake (worded for them) or a failure of ours.
#[derive(Debug)]
pub enum Refusal {
    Bad(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Refusal::Failed(e)
    }
}

/// Run one search within `scope`: every word first, any word if that finds nothing.
pub fn run(
    conn: &Connection,
    scope: &Scope,
    req: &SearchRequest,
) -> Result<(Vec<history::Hit>, Option<String>), Refusal> {
    let fts = query::build(&req.query).map_err(Refusal::Bad)?;
    let since = match &req.since {
        Some(s) => parse_when(s, false).map_err(Refusal::Bad)?,
        None => i64::MIN,
    };
    let until = match &req.until {
        Some(s) => parse_when(s, true).map_err(Refusal::Bad)?,
        None => i64::MAX,
    };
    let sender = req
        .sender
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if sender.is_some_and(|s| s.len() > 256) {
        return Err(Refusal::Bad("the sender is longer than 256 bytes".into()));
    }
    let (chat_id, folder) = match scope {
        Scope::All => (None, None),
        Scope::Group { folder, chat_id } => (Some(chat_id.as_str()), Some(folder.as_str())),
    };
    let mut filter = history::Filter {
        fts: &fts.all,
        chat_id,
        folder,
        since,
        until,
        sender,
        limit: req.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        snippet_tokens: SNIPPET_TOKENS,
    };
    let mut notes = Vec::new();
    if fts.dropped > 0 {
        notes.push(format!(
            "only the first {} words were used",
            query::MAX_TERMS
        ));
    }
    let mut hits = history::search(conn, &filter)?;
    if hits.is_empty()
        && let Some(any) = &fts.any
    {
        filter.fts = any;
        hits = history::search(conn, &filter)?;
        if !hits.is_empty() {
            notes.push("no entry has every word; these have some of them".into());
        }
    }
    for h in &mut hits {
        h.snippet = clip_snippet(&h.snippet);
    }
    Ok((hits, (!notes.is_empty()).then(|| notes.join("; "))))
}

/// [`run`] for an agent: decide the scope from `asker`, answer in wire form.
pub fn answer(
    conn: &Connection,
    asker: &Asker,
    req: &SearchRequest,
) -> Result<SearchResponse, Refusal> {
    let scope = scope(conn, asker, req.group.as_deref()).map_err(Refusal::Bad)?;
    let (hits, note) = run(conn, &scope, req)?;
    Ok(SearchResponse {
        hits: hits.iter().map(wire).collect(),
        note,
    })
}

/// A hit as the agent sees it.
pub fn wire(h: &history::Hit) -> SearchHit {
    SearchHit {
        kind: serde_json::to_value(h.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        group: h.group.clone(),
        id: h.id.clone(),
        date: crate::infra::time::rfc3339(h.at),
        sender: h.sender.clone(),
        snippet: h.snippet.clone(),
    }
}

/// What `claw search --reindex` did.
#[derive(Debug, Clone, Serialize)]
pub struct Reindexed {
    pub messages: i64,
    pub replies: i64,
    pub archives: i64,
    pub folders: Vec<(String, archives::Report)>,
}

/// Rebuild every index from its rows and re-read every group's archives. Idempotent: running it
/// twice leaves the same index as once.
pub fn reindex(
    store: &mut crate::infra::store::Store,
    home: &crate::infra::paths::Home,
) -> Result<Reindexed> {
    let folders = archives::index_all(store, home)?;
    let tx = store.write()?;
    history::rebuild(&tx)?;
    let (messages, replies, archives) = history::counts(&tx)?;
    tx.commit()?;
    Ok(Reindexed {
        messages,
        replies,
        archives,
        folders,
    })
}

fn clip_snippet(s: &str) -> String {
    if s.chars().count() <= MAX_SNIPPET_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_SNIPPET_CHARS).collect();
    out.push('…');
    out
}

/// `YYYY-MM-DD` (local midnight; for an end, the midnight after), RFC 3339, or a duration back
/// from now (`45m`, `12h`, `30d`, `8w`), as epoch milliseconds.
pub fn parse_when(s: &str, end: bool) -> Result<i64, String> {
    use chrono::{Local, NaiveDate, TimeZone};
    let s = s.trim();
    if let Some(t) = crate::infra::time::parse_rfc3339(s) {
        return Ok(t);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        if let Some(t) = d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| Local.from_local_datetime(&t).earliest())
        {
            return Ok(t.timestamp_millis());
        }
    }
    let bad = || {
        format!(
            "`{s}` is not a date: use YYYY-MM-DD, an RFC 3339 time, or a duration like 12h, 30d, 8w"
        )
    };
    let (num, unit) = s.split_at(s.len().checked_sub(1).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let back = n.checked_mul(secs * 1000).ok_or_else(bad)?;
    Ok(crate::infra::time::now_ms().saturating_sub(back))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(f: &str) -> Option<GroupRef> {
        let g = |folder: &str, chat: &str, is_main| GroupRef {
            folder: folder.into(),
            chat_id: chat.into(),
            is_main,
        };
        match f {
            "main" => Some(g("main", "cli:local", true)),
            "family" => Some(g("family", "tg:-1", false)),
            "work" => Some(g("work", "tg:-2", false)),
            _ => None,
        }
    }

    #[test]
    fn a_group_searches_its_own_history_and_main_any() {
        let own = |f: &str, c: &str| {
            Ok(Scope::Group {
                folder: f.into(),
                chat_id: c.into(),
            })
        };
        let g = |f: &str| Asker::Group(f.into());
        let cases: Vec<(Asker, Option<&str>, Result<Scope, ()>)> = vec![
            (g("family"), None, own("family", "tg:-1")),
            (g("family"), Some("family"), own("family", "tg:-1")),
            (g("family"), Some("work"), Err(())),
            (g("family"), Some("main"), Err(())),
            (g("family"), Some("nosuch"), Err(())),
            (g("gone"), None, Err(())),
            (g("gone"), Some("family"), Err(())),
            (g("main"), None, Ok(Scope::All)),
            (g("main"), Some("work"), own("work", "tg:-2")),
            (g("main"), Some("main"), own("main", "cli:local")),
            (g("main"), Some("nosuch"), Err(())),
            (Asker::Owner, None, Ok(Scope::All)),
            (Asker::Owner, Some("family"), own("family", "tg:-1")),
            (Asker::Owner, Some("nosuch"), Err(())),
        ];
        for (asker, req, want) in cases {
            let got = decide(&asker, req, lookup).map_err(|_| ());
            assert_eq!(got, want, "{asker:?} asking for {req:?}");
        }
    }

    #[test]
    fn dates_and_durations_parse_and_nonsense_is_refused() {
        let day = parse_when("2026-03-01", false).unwrap();
        let end = parse_when("2026-03-01", true).unwrap();
        assert_eq!(end - day, 86_400_000);
        assert_eq!(
            parse_when("2026-03-01T10:00:00Z", false).unwrap(),
            crate::infra::time::parse_rfc3339("2026-03-01T10:00:00Z").unwrap()
        );
        let now = crate::infra::time::now_ms();
        let d = parse_when("30d", false).unwrap();
        assert!((now - d - 30 * 86_400_000).abs() < 5_000);
        for bad in ["", "yesterday", "30x", "d", "99999999999999999999d"] {
            assert!(parse_when(bad, false).is_err(), "{bad}");
        }
    }
}
