//! Storing a burst of WhatsApp events: map, validate, download their media (no transaction
//! open), then one ingest batch (`ingest::store_batch`, which also sends the unknown-chat notices). The same steps as the
//! Signal and Telegram pollers; `client.rs` feeds it from the live connection, tests feed it
//! recorded events and a stand-in for WhatsApp's CDN.

use anyhow::Result;
use std::collections::HashMap;

use super::map::{self, Event};
use crate::channels::Mapped;
use crate::infra::store::Store;
use crate::steps::ingest::{self, Inbound, Summary};

/// Map and store `batch`. `lids` maps LID jids to phone jids learnt earlier; `media` saves the
/// attachments of registered chats (none: they are recorded as not downloaded).
pub fn store_batch(
    store: &mut Store,
    batch: &[Event],
    lids: &HashMap<String, String>,
    max_bytes: usize,
    media: Option<&crate::media::save::Ctx>,
) -> Result<Summary> {
    let mut items: Vec<(Inbound, i64)> = Vec::new();
    let mut summary = Summary::default();
    for ev in batch {
        match map::map_event(ev, lids) {
            Mapped::Message(m) => match ingest::validate(&m, max_bytes) {
                Ok(at) => items.push((*m, at)),
                Err(why) => {
                    tracing::warn!(%why, "WhatsApp message rejected");
                    summary.rejected += 1;
                }
            },
            Mapped::Skip(why) => tracing::info!(%why, "WhatsApp message skipped"),
        }
    }
    if let Some(ctx) = media {
        crate::media::save::prepare(ctx, &store.conn, &mut items);
    }
    ingest::store_batch(store, &items, &mut summary, |_| Ok(()))?;
    Ok(summary)
}
