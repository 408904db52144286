//! `claw deliver`: send due outbox rows through their chat's channel.
//!
//! Holds one lock per channel so two delivers never send the same channel's rows at once. A row
//! is claimed (committed) before it is sent and marked after; a crash in between leaves it
//! claimed, and the next deliver re-sends it: at most one duplicate in that window, never a loss.
//!
//! Delivers started by run-group for each result (see `crate::steps::chain`) use the same lock: one that
//! finds the channel busy leaves its rows to the holder, which looks again after letting go.

use anyhow::Result;
use serde::Serialize;

use crate::channels::{self, Outcome};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::{Store, audit, outbox};

/// The claimer name `claw deliver` uses for its claims.
pub const CLAIMER: &str = "deliver";

/// Default seconds before a bridge's unreported claim is released.
pub const DEFAULT_CLAIM_TIMEOUT_SECS: u64 = 300;

/// The claim protocol for outside bridges (`claw outbox claim`): release claims older than
/// `timeout_secs` (default: the channel's `claim_timeout_secs`, else 300), then claim up to
/// `limit` due rows of `channel` for `claimer`, a name other than claw's own sender.
pub fn claim_for_bridge(
    store: &mut Store,
    config: &Config,
    channel: &str,
    claimer: &str,
    limit: usize,
    timeout_secs: Option<u64>,
) -> Result<Vec<outbox::Row>> {
    if claimer.trim().is_empty() || claimer == CLAIMER {
        return Err(crate::infra::error::Coded::err(
            crate::infra::error::Code::Usage,
            format!("`--as {claimer}` is not allowed: pick a name for this bridge"),
        ));
    }
    let timeout = timeout_secs.unwrap_or_else(|| {
        [
            crate::infra::store::messages::channel_name(channel),
            channel,
        ]
        .iter()
        .find_map(|name| config.channels.get(*name))
        .and_then(|ch| ch.extra.get("claim_timeout_secs"))
        .and_then(|v| v.as_integer())
        .map(|n| n.max(1) as u64)
        .unwrap_or(DEFAULT_CLAIM_TIMEOUT_SECS)
    });
    // At least one second: a zero timeout would release claims made a moment ago.
    let released = outbox::release_stale(&store.conn, channel, timeout.max(1) as i64 * 1000)?;
    if released > 0 {
        tracing::warn!(
            released,
            channel,
            "released claims that were never reported back"
        );
    }
    outbox::claim(&mut store.conn, channel, claimer, limit)
}
/// Times one channel is taken again because rows arrived while it was held (bounded so a
/// channel that never goes quiet cannot keep one deliver forever; the timer takes over).
const HANDOFF_ROUNDS: usize = 8;

/// What one deliver pass did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub sent: u64,
    pub failed: u64,
    pub released: u64,
    /// Channels skipped and why (busy lock, no sender).
    pub skipped: Vec<(String, String)>,
}

/// Deliver every due row (of one channel prefix if given).
pub fn deliver(
    home: &Home,
    store: &mut Store,
    config: &Config,
    secrets: &Secrets,
    only: Option<&str>,
) -> Result<Report> {
    let mut report = Report::default();
    let channels = match only {
        Some(c) => vec![c.to_string()],
        None => channels_with_work(&store.conn)?,
    };
    for prefix in channels {
        let mut sender = match channels::sender_for(&prefix, config, &home.root, secrets) {
            Ok(s) => s,
            Err(why) => {
                report.skipped.push((prefix, why));
                continue;
            }
        };
        for round in 0..HANDOFF_ROUNDS {
            let Some(lock) = crate::infra::lock::try_acquire(&home.channel_lock(&prefix))? else {
                if round == 0 {
                    report
                        .skipped
                        .push((prefix.clone(), "another deliver holds this channel".into()));
                }
                break;
            };
            send_all(store, &prefix, sender.as_mut(), &mut report)?;
            drop(lock);
            // A deliver that found the lock busy left its rows to us (run-group hands each
            // result to a chained deliver): it tried the lock after committing them, and we
            // look only now that the lock is free, so no row committed meanwhile is missed.
            if !has_due(&store.conn, &prefix)? {
                break;
            }
        }
    }
    Ok(report)
}

/// Claim and send the channel's due rows until none is left; the caller holds the channel lock.
fn send_all(
    store: &mut Store,
    prefix: &str,
    sender: &mut dyn channels::Sender,
    report: &mut Report,
) -> Result<()> {
    // We hold the channel lock, so any claim of ours still open is from a killed deliver.
    report.released +=
        crate::infra::store::outbox::release_claims_of(&store.conn, CLAIMER, Some(prefix))? as u64;
    loop {
        let rows = outbox::claim(&mut store.conn, prefix, CLAIMER, 50)?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in rows {
            // An approval card gets its buttons; a `send_file` row carries a host-owned copy,
            // its text the caption.
            let card = crate::infra::store::approvals::by_card(&store.conn, row.id)?;
            let file = crate::infra::store::attachments::outbox_file(&store.conn, row.id)?;
            let outcome = match (&card, &file) {
                (Some(a), _) => sender.send_card(row.id, &row.chat_id, &row.text, (a.id, &a.nonce)),
                (None, Some(f)) => sender.send_file(row.id, &row.chat_id, &row.text, f),
                (None, None) => sender.send(row.id, &row.chat_id, &row.text),
            };
            match outcome {
                Outcome::Sent(msg_id) => {
                    outbox::mark_sent(&store.conn, row.id, CLAIMER, msg_id.as_deref())?;
                    audit::record(
                        &store.conn,
                        None,
                        None,
                        "message.delivered",
                        serde_json::json!({"outbox": row.id, "chat": row.chat_id, "bytes": row.text.len()}),
                    )?;
                    report.sent += 1;
                }
                Outcome::Failed {
                    error,
                    retry_after_ms,
                } => {
                    tracing::warn!(outbox = row.id, chat = %row.chat_id, %error, "send failed; will retry");
                    outbox::mark_failed(&store.conn, row.id, CLAIMER, &error, retry_after_ms)?;
                    report.failed += 1;
                }
            }
        }
    }
}

/// Whether the channel has a row to send now (pending and due). Served by `outbox_due`.
fn has_due(conn: &rusqlite::Connection, prefix: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?2
                              AND substr(chat_id, 1, length(?1) + 1) = ?1 || ':')",
        )?
        .query_row(
            rusqlite::params![prefix, crate::infra::time::now_ms()],
            |r| r.get(0),
        )?)
}

/// Channels with work for deliver: rows due now, or claims of ours a killed deliver left.
/// Rows waiting out a backoff and rows claimed by a bridge are not work yet, so an idle tick
/// looks at the `outbox_due` index and nothing else.
fn channels_with_work(conn: &rusqlite::Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT substr(chat_id, 1, instr(chat_id, ':') - 1) FROM outbox
         WHERE ((status = 'pending' AND next_attempt_at <= ?1)
                OR (status = 'sending' AND claimed_by = ?2))
           AND instr(chat_id, ':') > 1",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![crate::infra::time::now_ms(), CLAIMER],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
