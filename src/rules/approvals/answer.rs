//! The owner's answers: `yes 42` / `no 42` typed in the main chat, a Telegram button
//! (callback data `ap:<id>:<nonce>:<y|n>`), or `claw approve 42` / `claw deny 42`.
//!
//! A typed answer counts only in the main chat (the owner's admin channel) and is taken out of
//! the message stream, so the main agent never sees it and cannot be talked into answering. A
//! button counts only with the row's nonce (callback data is sent by the client, so the id alone
//! could be forged by anyone who can press a button). An act whose run has ended cannot be
//! approved: its connection is gone, so the row expires instead.

use anyhow::Result;
use rusqlite::Connection;

use crate::infra::store::approvals::{self, Approval, Decided};
use crate::infra::store::{groups, outbox, runs};

/// Parse a typed answer: `yes 42`, `no 42` (also `approve`/`deny`, `#42`, any case); the whole
/// message must be the answer.
pub fn parse_text(text: &str) -> Option<(bool, i64)> {
    let mut words = text.split_whitespace();
    let verb = words.next()?.to_ascii_lowercase();
    let id = words.next()?.trim_start_matches('#');
    if words.next().is_some() {
        return None;
    }
    let approve = match verb.as_str() {
        "yes" | "approve" | "y" => true,
        "no" | "deny" | "n" => false,
        _ => return None,
    };
    let id: i64 = id.parse().ok().filter(|n| *n > 0)?;
    Some((approve, id))
}

/// A button's callback data (at most 64 bytes, as Telegram requires).
pub fn callback_data(id: i64, nonce: &str, approve: bool) -> String {
    format!("ap:{id}:{nonce}:{}", if approve { "y" } else { "n" })
}

/// Parse callback data made by [`callback_data`].
pub fn parse_callback(data: &str) -> Option<(i64, String, bool)> {
    let mut p = data.split(':');
    if p.next()? != "ap" {
        return None;
    }
    let id: i64 = p.next()?.parse().ok()?;
    let nonce = p.next()?.to_string();
    let approve = match p.next()? {
        "y" => true,
        "n" => false,
        _ => return None,
    };
    if p.next().is_some() || nonce.is_empty() || nonce.len() > 32 {
        return None;
    }
    Some((id, nonce, approve))
}

/// What an answer did, with the text to show the owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The answer decided the row.
    pub decided: bool,
    /// The row after the answer, if it exists.
    pub row: Option<Approval>,
    /// For the owner: "Approved 42: family may reach …" or why nothing changed.
    pub message: String,
}

/// Approve or deny row `id` (`nonce` for buttons), as `by`.
pub fn answer(
    conn: &Connection,
    id: i64,
    approve: bool,
    nonce: Option<&str>,
    by: &str,
    now: i64,
) -> Result<Answered> {
    if approve
        && let Some(a) = approvals::get(conn, id)?
        && a.status == "requested"
        && nonce.is_none_or(|n| n == a.nonce)
        && !asker_alive(conn, &a)?
    {
        approvals::expire(conn, id, "run ended", now)?;
    }
    let d = approvals::decide(conn, id, approve, nonce, by, now)?;
    Ok(match d {
        Decided::Now(a) => Answered {
            decided: true,
            message: format!(
                "{} {}: {} may {}.",
                if approve { "Approved" } else { "Denied" },
                a.id,
                a.folder,
                super::describe(&a.kind, &a.detail)
            ),
            row: Some(a),
        },
        Decided::Already(a) => Answered {
            decided: false,
            message: format!(
                "Approval {} is already {}{}.",
                a.id,
                a.status,
                a.decided_by
                    .as_deref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default()
            ),
            row: Some(a),
        },
        Decided::Missing => Answered {
            decided: false,
            message: format!("There is no approval {id}; see `claw approvals`."),
            row: None,
        },
    })
}

/// Expire the open proxy rows whose run is gone (a run-group killed while it waited), so
/// listings show them as what they are; returns how many.
pub fn expire_orphans(conn: &Connection, now: i64) -> Result<usize> {
    let mut n = 0;
    for a in approvals::list(conn, false, 1000)? {
        if matches!(a.kind.as_str(), "egress" | "credential") && !asker_alive(conn, &a)? {
            n += approvals::expire(conn, a.id, "run ended", now)? as usize;
        }
    }
    Ok(n)
}

/// Whether the run that asked is still there to act on an approval. IPC acts (no run, or a
/// request file that waits in its folder) always are; a proxy act needs its run-group alive.
fn asker_alive(conn: &Connection, a: &Approval) -> Result<bool> {
    if !matches!(a.kind.as_str(), "egress" | "credential") {
        return Ok(true);
    }
    let Some(run_id) = a.run_id else {
        return Ok(true);
    };
    let Some(run) = runs::get(conn, run_id)? else {
        return Ok(false);
    };
    Ok(run.status == "running" && run.pid.is_some_and(pid_alive))
}

fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; it sends nothing.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// If `text` from `sender` in `chat` is an answer typed in the main chat, decide it and queue
/// the acknowledgement there; returns whether the message was an answer (and so must not be
/// stored for the agent). A duplicate of an answer already applied is consumed silently.
pub fn from_chat(
    conn: &Connection,
    chat: &str,
    msg_id: &str,
    sender: &str,
    text: &str,
    now: i64,
) -> Result<bool> {
    let Some((approve, id)) = parse_text(text) else {
        return Ok(false);
    };
    let Some(main) = groups::main(conn)? else {
        return Ok(false);
    };
    if main.chat_id != chat {
        return Ok(false);
    }
    if sent_by_us(conn, chat, msg_id)? {
        // Our own message echoed back (WhatsApp shows the bot's sends in the self-chat as the
        // owner's): an agent that made claw say `yes 42` must not have answered its own card.
        return Ok(false);
    }
    let by = format!("chat:{chat}:{msg_id}:{sender}");
    if approvals::get(conn, id)?.is_some_and(|a| a.decided_by.as_deref() == Some(by.as_str())) {
        // The same message fetched again (a poller's re-fetch after a crash).
        return Ok(true);
    }
    let a = answer(conn, id, approve, None, &by, now)?;
    outbox::enqueue(conn, chat, &a.message, &format!("approval-answer:{id}"))?;
    Ok(true)
}

/// Whether `msg_id` is the channel id of a message claw itself sent to `chat`.
fn sent_by_us(conn: &Connection, chat: &str, msg_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE chat_id = ?1 AND channel_msg_id IS NOT NULL
               AND ',' || channel_msg_id || ',' LIKE '%,' || ?2 || ',%')",
        )?
        .query_row(rusqlite::params![chat, msg_id], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_answers_parse_strictly() {
        for (t, want) in [
            ("yes 42", Some((true, 42))),
            ("No 7", Some((false, 7))),
            ("  APPROVE   #9 ", Some((true, 9))),
            ("deny 3", Some((false, 3))),
            ("yes", None),
            ("yes 42 please", None),
            ("yes 0", None),
            ("yes -1", None),
            ("maybe 4", None),
            ("Reply `yes 42` or `no 42`", None),
        ] {
            assert_eq!(parse_text(t), want, "{t}");
        }
    }

    #[test]
    fn callback_data_round_trips_and_fits_telegram() {
        let d = callback_data(i64::MAX, "0123456789abcdef", true);
        assert!(d.len() <= 64, "{d}");
        assert_eq!(
            parse_callback(&d),
            Some((i64::MAX, "0123456789abcdef".into(), true))
        );
        assert_eq!(parse_callback("ap:4:abc:n"), Some((4, "abc".into(), false)));
        for bad in [
            "ap:4:abc",
            "ap:x:abc:y",
            "xx:4:abc:y",
            "ap:4::y",
            "ap:4:a:y:z",
            "ap:4:a:maybe",
        ] {
            assert_eq!(parse_callback(bad), None, "{bad}");
        }
    }
}
