//! `claw whatsapp pair|run` on the `whatsapp-rust` crate (cargo feature `whatsapp`).
//!
//! The one long-running piece of claw: WhatsApp Web needs a live connection. Async stays inside
//! this file: a tokio runtime drives the connection, while storing messages and claiming outbox
//! rows happen on plain threads through the same `ingest` and `outbox` code everyone uses. The
//! WhatsApp session keys live in `<home>/whatsapp/session.db`; this file never prints them.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use whatsapp_rust::prelude::*;

use super::map::{self, Event, Info};
use crate::channels::Mapped;
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::store::{Store, outbox};
use crate::steps::ingest;

/// The claimer name `run` uses on outbox rows.
pub const CLAIMER: &str = "whatsapp-run";

fn session_db(home: &Home) -> Result<String> {
    let dir = home.root.join("whatsapp");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join("session.db").display().to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the WhatsApp runtime")
}

/// Link this machine as a WhatsApp device: prints a QR code (drawn with `qrencode` when it is
/// installed) or, with `phone`, an 8-character pairing code. Returns once connected.
pub fn pair(home: &Home, phone: Option<String>) -> Result<()> {
    let db = session_db(home)?;
    runtime()?.block_on(async move {
        let backend = SqliteStore::new(&db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the WhatsApp session store {db}: {e}"))?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
        let mut builder = Bot::builder()
            .with_backend(backend)
            .skip_history_sync()
            .on_qr_code(|code, timeout| async move {
                show_qr(&code, timeout);
            })
            .on_pair_code(|code, timeout| async move {
                println!(
                    "On your phone: WhatsApp → Linked devices → Link a device → Link with phone number instead, and enter:\n\n    {code}\n\n(valid for {}s)",
                    timeout.as_secs()
                );
            })
            .on_connected(move |_client| {
                let done = done_tx.clone();
                async move {
                    if let Some(tx) = done.lock().ok().and_then(|mut d| d.take()) {
                        let _ = tx.send(());
                    }
                }
            });
        if let Some(phone) = phone {
            builder = builder.with_pair_code(whatsapp_rust::pair_code::PairCodeOptions {
                phone_number: phone,
                ..Default::default()
            });
        }
        let bot = builder
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the WhatsApp client: {e}"))?;
        let client = bot.client();
        let handle = bot.spawn();
        let _ = done_rx.await;
        println!("linked and connected; now run `claw whatsapp run` (or install its service)");
        client.disconnect().await;
        handle.shutdown().await;
        Ok(())
    })
}

fn show_qr(code: &str, timeout: Duration) {
    println!(
        "Scan this with WhatsApp → Linked devices → Link a device (valid {}s):",
        timeout.as_secs()
    );
    let drawn = duct::cmd("qrencode", ["-t", "ansiutf8", code])
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .ok()
        .filter(|o| o.status.success());
    match drawn {
        Some(o) => println!("{}", String::from_utf8_lossy(&o.stdout)),
        None => println!(
            "{code}\n(install `qrencode` to see it drawn, or use `claw whatsapp pair --phone NUMBER` for a code)"
        ),
    }
}

/// Stay connected: store inbound messages as `claw ingest` would and send the `wa:` outbox rows.
/// Runs until the process is stopped or WhatsApp logs the device out.
pub fn run(home: &Home, config: &Config) -> Result<()> {
    let db = session_db(home)?;
    // Storage happens on a plain thread with its own connection; the async side only hands over.
    let (tx, rx) = mpsc::channel::<Event>();
    let store_home = home.clone();
    let max_bytes = config.limits.max_message_bytes;
    let storer = std::thread::spawn(move || store_events(&store_home, rx, max_bytes));
    let poll_ms = 2000;
    let home2 = home.clone();
    let result = runtime()?.block_on(async move {
        let backend = SqliteStore::new(&db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the WhatsApp session store {db}: {e}"))?;
        let bot = Bot::builder()
            .with_backend(backend)
            .skip_history_sync()
            .on_message(move |ctx| {
                let tx = tx.clone();
                async move {
                    let mut ev = to_event(&ctx.info, &ctx.message);
                    // Prefer the phone number over a LID when the client has learnt the pair.
                    if ev.info.sender_alt.is_none()
                        && ctx.info.source.sender.is_lid()
                        && let Ok(Some(e)) = ctx.client.get_lid_pn_entry(&ctx.info.source.sender).await
                    {
                        ev.info.sender_alt = Some(format!("{}@s.whatsapp.net", e.phone_number));
                    }
                    let _ = tx.send(ev);
                }
            })
            .on_qr_code(|_code, _t| async move {
                tracing::error!("WhatsApp asks for pairing: this device is not linked; run `claw whatsapp pair`");
            })
            .on_logged_out(|_info| async move {
                tracing::error!("WhatsApp logged this device out; run `claw whatsapp pair` again");
            })
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the WhatsApp client: {e}"))?;
        let client = bot.client();
        let handle = bot.spawn();
        {
            let store = Store::open(&home2)?;
            // Claims of a previous `run` that died are ours to release (other bridges' are not).
            crate::infra::store::outbox::release_claims_of(&store.conn, CLAIMER, None)?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch for SIGTERM")?;
        loop {
            if client.is_logged_in() && client.is_connected() {
                let rows = {
                    let home = home2.clone();
                    tokio::task::spawn_blocking(move || -> Result<Vec<outbox::Row>> {
                        let mut store = Store::open(&home)?;
                        outbox::claim(&mut store.conn, "wa", CLAIMER, 20)
                    })
                    .await??
                };
                for row in rows {
                    let outcome = send(&client, &row.chat_id, &row.text).await;
                    let home = home2.clone();
                    tokio::task::spawn_blocking(move || -> Result<()> {
                        let store = Store::open(&home)?;
                        match outcome {
                            Ok(id) => {
                                outbox::mark_sent(&store.conn, row.id, CLAIMER, Some(&id))?;
                            }
                            Err(e) => {
                                tracing::warn!(outbox = row.id, error = %e, "WhatsApp send failed; will retry");
                                outbox::mark_failed(&store.conn, row.id, CLAIMER, &e, None)?;
                            }
                        }
                        Ok(())
                    })
                    .await??;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(poll_ms)) => {}
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        handle.shutdown().await;
        Ok::<(), anyhow::Error>(())
    });
    // The handler's sender went away with the bot, which ends the storer.
    let _ = storer.join();
    result
}

async fn send(client: &Arc<Client>, chat_id: &str, text: &str) -> Result<String, String> {
    let jid: Jid = chat_id
        .strip_prefix("wa:")
        .ok_or_else(|| format!("{chat_id} is not a WhatsApp chat id"))?
        .parse()
        .map_err(|e| format!("{chat_id} is not a valid jid: {e}"))?;
    client
        .send_message(jid, wa::Message::text(text))
        .await
        .map(|r| r.message_id)
        .map_err(|e| e.to_string())
}

fn store_events(home: &Home, rx: mpsc::Receiver<Event>, max_bytes: usize) {
    let mut store = match Store::open(home) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the claw database; WhatsApp messages are not stored");
            return;
        }
    };
    let lids = HashMap::new();
    while let Ok(first) = rx.recv() {
        // Drain what is queued so a burst is one transaction.
        let batch: Vec<Event> = std::iter::once(first).chain(rx.try_iter()).collect();
        if let Err(e) = store_batch(&mut store, &batch, &lids, max_bytes) {
            tracing::error!(error = %e, "storing WhatsApp messages failed");
        }
    }
}

fn store_batch(
    store: &mut Store,
    batch: &[Event],
    lids: &HashMap<String, String>,
    max_bytes: usize,
) -> Result<()> {
    let mut items = Vec::new();
    for ev in batch {
        match map::map_event(ev, lids) {
            Mapped::Message(m) => match ingest::validate(&m, max_bytes) {
                Ok(at) => items.push((*m, at)),
                Err(why) => tracing::warn!(%why, "WhatsApp message rejected"),
            },
            Mapped::Skip(why) => tracing::info!(%why, "WhatsApp message skipped"),
        }
    }
    let mut summary = ingest::Summary::default();
    ingest::store_batch(store, &items, &mut summary, |_| Ok(()))
}

/// The client's message → the event shape `map` reads (protobuf JSON field names).
fn to_event(info: &MessageInfo, message: &wa::Message) -> Event {
    let base = message.get_base_message();
    Event {
        info: Info {
            id: info.id.clone(),
            chat: info.source.chat.to_string(),
            sender: info.source.sender.to_string(),
            sender_alt: info.source.sender_alt.as_ref().map(|j| j.to_string()),
            is_from_me: info.source.is_from_me,
            is_group: info.source.is_group,
            push_name: info.push_name.clone(),
            timestamp: info.timestamp.timestamp(),
        },
        message: message_json(base),
        group_name: None,
    }
}

fn message_json(m: &wa::Message) -> Value {
    let mut v = json!({});
    if let Some(t) = &m.conversation {
        v["conversation"] = json!(t);
    }
    if let Some(e) = m.extended_text_message.as_option() {
        v["extendedTextMessage"] =
            json!({"text": e.text, "contextInfo": context_json(e.context_info.as_option())});
    }
    if let Some(i) = m.image_message.as_option() {
        v["imageMessage"] =
            json!({"caption": i.caption, "contextInfo": context_json(i.context_info.as_option())});
    }
    if let Some(i) = m.video_message.as_option() {
        v["videoMessage"] =
            json!({"caption": i.caption, "contextInfo": context_json(i.context_info.as_option())});
    }
    if let Some(i) = m.document_message.as_option() {
        v["documentMessage"] =
            json!({"caption": i.caption, "contextInfo": context_json(i.context_info.as_option())});
    }
    if v.as_object().is_some_and(|o| o.is_empty()) {
        // Keep the kind for the skip log line.
        v["otherMessage"] = json!({});
    }
    v
}

fn context_json(c: Option<&wa::ContextInfo>) -> Value {
    let Some(c) = c else { return Value::Null };
    json!({
        "stanzaId": c.stanza_id,
        "participant": c.participant,
        "quotedMessage": c.quoted_message.as_option().map(message_json),
    })
}
