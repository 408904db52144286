//! Storing a burst of WhatsApp events: map, validate, download their media (no transaction
//! open), then one ingest transaction, then the unknown-chat notices. The same steps as the
//! Signal and Telegram pollers; `client.rs` feeds it from the live connection, tests feed it
//! recorded events and a stand-in for WhatsApp's CDN.

use anyhow::Result;
use std::collections::HashMap;

use super::map::{self, Event};
use crate::channels::Mapped;
use crate::ingest::{self, Inbound, Summary};
use crate::store::Store;

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
    let mut names = HashMap::new();
    let mut summary = Summary::default();
    for ev in batch {
        match map::map_event(ev, lids) {
            Mapped::Message(m) => match ingest::validate(&m, max_bytes) {
                Ok(at) => {
                    if let Some(n) = &m.sender_name {
                        names.insert(m.chat.clone(), n.clone());
                    }
                    items.push((*m, at));
                }
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
    let registered = ingest::registered_chats(store)?;
    let tx = store.write()?;
    ingest::store_in_tx(&tx, &items, &registered, &mut summary)?;
    tx.commit()?;
    crate::notice::notify_unknown(store, &summary.unknown_chats, &names)?;
    Ok(summary)
}
