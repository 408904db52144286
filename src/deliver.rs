//! `claw deliver`: send due outbox rows through their chat's channel.
//!
//! Holds one lock per channel so two delivers never send the same channel's rows at once. A row
//! is claimed (committed) before it is sent and marked after; a crash in between leaves it
//! claimed, and the next deliver re-sends it: at most one duplicate in that window, never a loss.

use anyhow::Result;
use serde::Serialize;

use crate::channels::{self, Outcome};
use crate::config::Config;
use crate::paths::Home;
use crate::secrets::Secrets;
use crate::store::{Store, audit, outbox};

/// The claimer name `claw deliver` uses for its claims.
pub const CLAIMER: &str = "deliver";

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
        None => outbox::channels_with_due(&store.conn)?,
    };
    for prefix in channels {
        let mut sender = match channels::sender_for(&prefix, config, &home.root, secrets) {
            Ok(s) => s,
            Err(why) => {
                report.skipped.push((prefix, why));
                continue;
            }
        };
        let Some(_lock) = crate::lock::try_acquire(&home.channel_lock(&prefix))? else {
            report
                .skipped
                .push((prefix, "another deliver holds this channel".into()));
            continue;
        };
        // We hold the channel lock, so any claim of ours still open is from a killed deliver.
        report.released += release_own_claims(store, &prefix)? as u64;
        loop {
            let rows = outbox::claim(&mut store.conn, &prefix, CLAIMER, 50)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                match sender.send(row.id, &row.chat_id, &row.text) {
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
    Ok(report)
}

fn release_own_claims(store: &Store, prefix: &str) -> Result<usize> {
    Ok(store.conn.execute(
        "UPDATE outbox SET status = 'pending', claimed_by = NULL, claimed_at = NULL
         WHERE status = 'sending' AND claimed_by = ?2 AND substr(chat_id, 1, length(?1) + 1) = ?1 || ':'",
        rusqlite::params![prefix, CLAIMER],
    )?)
}
