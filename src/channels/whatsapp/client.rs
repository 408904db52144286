//! `claw whatsapp pair|run` on the `whatsapp-rust` crate (cargo feature `whatsapp`).
//!
//! The one long-running piece of claw: WhatsApp Web needs a live connection. Async stays inside
//! this file: a tokio runtime drives the connection, while storing messages and claiming outbox
//! rows happen on plain threads through the same `ingest` and `outbox` code everyone uses. The
//! WhatsApp session keys live in `<home>/whatsapp/session.db`; this file never prints them.
//!
//! Media: the only network calls for files are here (`ClientDownload`, `send_file`); what a
//! media message carries, the cap, the temp file and the choice of message kind are in
//! `super::media`, and storing goes through `super::store` like every other channel's messages.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;
use whatsapp_rust::prelude::*;

use super::map::{Event, Info};
use super::media::{CappedFile, Download, Fetch, OutKind, WaKind, WaSource, out_plan};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::{Store, outbox};
use crate::media::outfile::OutFile;
use whatsapp_rust::download::{DownloadWriter, Downloadable, MediaType};

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

/// Stay connected: store inbound messages (downloading their media) as `claw ingest` would and
/// send the `wa:` outbox rows, files included. Runs until stopped or logged out.
pub fn run(home: &Home, config: &Config, secrets: &Secrets) -> Result<()> {
    let db = session_db(home)?;
    let rt = runtime()?;
    // Storage happens on a plain thread with its own connection; the async side only hands over
    // the event and the client that saw it (downloads go through that client).
    let (tx, rx) = mpsc::channel::<Incoming>();
    let store_home = home.clone();
    let store_config = config.clone();
    let transcriber =
        crate::media::transcribe::Transcriber::from_config(&config.media.transcription, secrets);
    let rt_handle = rt.handle().clone();
    let storer = std::thread::spawn(move || {
        store_events(&store_home, &store_config, rx, rt_handle, transcriber)
    });
    let poll_ms = 2000;
    let home2 = home.clone();
    let media_cfg = config.media.clone();
    let result = rt.block_on(async move {
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
                    let _ = tx.send(Incoming { ev, client: ctx.client.clone() });
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
                    tokio::task::spawn_blocking(move || -> Result<Vec<(outbox::Row, Option<OutFile>)>> {
                        let mut store = Store::open(&home)?;
                        let rows = outbox::claim(&mut store.conn, "wa", CLAIMER, 20)?;
                        // A `send_file` row carries the host-owned copy made at ipc-apply time.
                        rows.into_iter()
                            .map(|r| {
                                let f = crate::infra::store::attachments::outbox_file(&store.conn, r.id)?;
                                Ok((r, f))
                            })
                            .collect()
                    })
                    .await??
                };
                for (row, file) in rows {
                    let outcome = match &file {
                        Some(f) => send_file(&client, &row.chat_id, &row.text, f, &media_cfg).await,
                        None => send(&client, &row.chat_id, &row.text).await,
                    };
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

fn jid_of(chat_id: &str) -> Result<Jid, String> {
    chat_id
        .strip_prefix("wa:")
        .ok_or_else(|| format!("{chat_id} is not a WhatsApp chat id"))?
        .parse()
        .map_err(|e| format!("{chat_id} is not a valid jid: {e}"))
}

async fn send(client: &Arc<Client>, chat_id: &str, text: &str) -> Result<String, String> {
    let jid = jid_of(chat_id)?;
    client
        .send_message(jid, wa::Message::text(text))
        .await
        .map(|r| r.message_id)
        .map_err(|e| e.to_string())
}

/// An event and the client that received it (media is downloaded through that client).
struct Incoming {
    ev: Event,
    client: Arc<Client>,
}

fn store_events(
    home: &Home,
    config: &Config,
    rx: mpsc::Receiver<Incoming>,
    rt: tokio::runtime::Handle,
    transcriber: Option<crate::media::transcribe::Transcriber>,
) {
    let mut store = match Store::open(home) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the claw database; WhatsApp messages are not stored");
            return;
        }
    };
    let lids = HashMap::new();
    let tmp_dir = home.root.join("whatsapp").join("tmp");
    let max_bytes = config.limits.max_message_bytes;
    while let Ok(first) = rx.recv() {
        // Drain what is queued so a burst is one transaction.
        let batch: Vec<Incoming> = std::iter::once(first).chain(rx.try_iter()).collect();
        let download = ClientDownload {
            client: batch[batch.len() - 1].client.clone(),
            rt: rt.clone(),
            timeout: Duration::from_secs(config.media.download_timeout_secs.max(1)),
        };
        let source = WaSource {
            download: &download,
            tmp_dir: tmp_dir.clone(),
        };
        let events: Vec<Event> = batch.into_iter().map(|i| i.ev).collect();
        let stored = crate::media::save::Ctx::new(
            &store.conn,
            home,
            &config.media,
            &source,
            transcriber.as_ref(),
        )
        .and_then(|ctx| {
            super::store::store_batch(&mut store, &events, &lids, max_bytes, Some(&ctx))
        });
        if let Err(e) = stored {
            tracing::error!(error = %e, "storing WhatsApp messages failed");
        }
    }
}

/// Downloads through the live client: WhatsApp's CDN, decrypted and verified by whatsapp-rust,
/// streamed into the capped temp file. Called from the storing thread, never a runtime worker.
struct ClientDownload {
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    timeout: Duration,
}

/// The descriptor in the shape whatsapp-rust downloads.
struct Params {
    f: Fetch,
}

impl Downloadable for Params {
    fn direct_path(&self) -> Option<&str> {
        Some(&self.f.direct_path)
    }
    fn media_key(&self) -> Option<&[u8]> {
        Some(&self.f.media_key)
    }
    fn file_enc_sha256(&self) -> Option<&[u8]> {
        Some(&self.f.file_enc_sha256)
    }
    fn file_sha256(&self) -> Option<&[u8]> {
        Some(&self.f.file_sha256)
    }
    fn file_length(&self) -> Option<u64> {
        Some(self.f.file_length).filter(|n| *n > 0)
    }
    fn app_info(&self) -> MediaType {
        match self.f.kind {
            WaKind::Image => MediaType::Image,
            WaKind::Video => MediaType::Video,
            WaKind::Audio => MediaType::Audio,
            WaKind::Document => MediaType::Document,
            WaKind::Sticker => MediaType::Sticker,
        }
    }
}

impl DownloadWriter for CappedFile {
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        CappedFile::truncate(self, len)
    }
}

impl Download for ClientDownload {
    fn download(&self, f: &Fetch, out: CappedFile) -> Result<(), String> {
        let params = Params { f: f.clone() };
        let client = self.client.clone();
        let timeout = self.timeout;
        self.rt.block_on(async move {
            match tokio::time::timeout(timeout, client.download_to_writer(&params, out)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
            }
        })
    }
}

/// Upload a `send_file` row's host copy and send it as the message [`out_plan`] picks; an audio
/// file's caption follows as a text message. Returns the media message's id.
async fn send_file(
    client: &Arc<Client>,
    chat_id: &str,
    caption: &str,
    file: &OutFile,
    cfg: &crate::media::MediaConfig,
) -> Result<String, String> {
    let jid = jid_of(chat_id)?;
    if file.path.as_os_str().is_empty() {
        return Err("the file's host copy was already removed".into());
    }
    let plan = out_plan(file.kind, &file.mime, caption);
    // The copy is host-owned (media-out/) and was capped when made; read it bounded anyway.
    let cap = cfg.cap(Some(file.kind));
    let path = file.path.clone();
    let data = tokio::task::spawn_blocking(move || read_capped(&path, cap))
        .await
        .map_err(|e| e.to_string())??;
    let media_type = match plan.kind {
        OutKind::Image => MediaType::Image,
        OutKind::Video => MediaType::Video,
        OutKind::Voice | OutKind::Audio => MediaType::Audio,
        OutKind::Document => MediaType::Document,
    };
    let up = client
        .upload(
            data,
            media_type,
            whatsapp_rust::upload::UploadOptions::new(),
        )
        .await
        .map_err(|e| format!("upload failed: {e:#}"))?;
    use whatsapp_rust::media as m;
    let msg = match plan.kind {
        OutKind::Image => m::image_message(
            up,
            m::ImageOptions {
                caption: plan.caption,
                mimetype: Some(plan.mimetype),
                ..Default::default()
            },
        ),
        OutKind::Video => m::video_message(
            up,
            m::VideoOptions {
                caption: plan.caption,
                mimetype: Some(plan.mimetype),
                ..Default::default()
            },
        ),
        OutKind::Voice | OutKind::Audio => m::audio_message(
            up,
            m::AudioOptions {
                mimetype: Some(plan.mimetype),
                ptt: Some(plan.kind == OutKind::Voice),
                ..Default::default()
            },
        ),
        OutKind::Document => m::document_message(
            up,
            m::DocumentOptions {
                mimetype: Some(plan.mimetype),
                file_name: Some(file.name.clone()),
                caption: plan.caption,
                ..Default::default()
            },
        ),
    };
    let id = client
        .send_message(jid.clone(), msg)
        .await
        .map(|r| r.message_id)
        .map_err(|e| e.to_string())?;
    if let Some(text) = plan.caption_after {
        // The file is out; a lost caption is logged rather than re-sending the file on retry.
        if let Err(e) = client.send_message(jid, wa::Message::text(&text)).await {
            tracing::warn!(error = %e, "the caption after a WhatsApp audio file was not sent");
        }
    }
    Ok(id)
}

fn read_capped(path: &std::path::Path, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut data = Vec::new();
    f.take(cap.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() as u64 > cap {
        return Err(format!(
            "{} is over the {} limit",
            path.display(),
            crate::media::human_size(cap)
        ));
    }
    Ok(data)
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

fn b64(b: &Option<Vec<u8>>) -> Value {
    use base64::Engine;
    match b {
        Some(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        None => Value::Null,
    }
}

/// The download fields every media message has, in protobuf JSON form (bytes as base64).
macro_rules! media_json {
    ($i:expr) => {
        json!({
            "url": $i.url,
            "directPath": $i.direct_path,
            "mediaKey": b64(&$i.media_key),
            "fileSha256": b64(&$i.file_sha256),
            "fileEncSha256": b64(&$i.file_enc_sha256),
            "fileLength": $i.file_length,
            "mimetype": $i.mimetype,
        })
    };
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
        let mut j = media_json!(i);
        j["caption"] = json!(i.caption);
        j["width"] = json!(i.width);
        j["height"] = json!(i.height);
        j["contextInfo"] = context_json(i.context_info.as_option());
        v["imageMessage"] = j;
    }
    if let Some(i) = m.video_message.as_option() {
        let mut j = media_json!(i);
        j["caption"] = json!(i.caption);
        j["contextInfo"] = context_json(i.context_info.as_option());
        v["videoMessage"] = j;
    }
    if let Some(i) = m.document_message.as_option() {
        let mut j = media_json!(i);
        j["caption"] = json!(i.caption);
        j["fileName"] = json!(i.file_name);
        j["title"] = json!(i.title);
        j["contextInfo"] = context_json(i.context_info.as_option());
        v["documentMessage"] = j;
    }
    if let Some(i) = m.audio_message.as_option() {
        let mut j = media_json!(i);
        j["ptt"] = json!(i.ptt);
        j["contextInfo"] = context_json(i.context_info.as_option());
        v["audioMessage"] = j;
    }
    if let Some(i) = m.sticker_message.as_option() {
        let mut j = media_json!(i);
        j["width"] = json!(i.width);
        j["height"] = json!(i.height);
        j["contextInfo"] = context_json(i.context_info.as_option());
        v["stickerMessage"] = j;
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
