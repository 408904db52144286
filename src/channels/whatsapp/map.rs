//! WhatsApp message events → claw's inbound messages. Pure: no network, no database.
//!
//! The event shape (`Event`) mirrors what the WhatsApp Web client reports (message info plus the
//! protobuf message in its JSON form), so recorded events in tests/fixtures/whatsapp/ exercise
//! exactly this code. Owns: which jid becomes the chat and sender id (phone numbers preferred over
//! LIDs), what counts as text, what a reply keeps, and which media a message carries (read by
//! `super::media`). Never decides who is allowed in.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

use crate::channels::Mapped;
use crate::steps::ingest::Inbound;

/// Longest quoted text kept with a reply.
const QUOTE_CHARS: usize = 500;

/// One received message as the client reports it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Event {
    pub info: Info,
    /// The message in WhatsApp's protobuf JSON form (`conversation`, `extendedTextMessage`, …).
    pub message: Value,
    /// The group's subject, when the client knows it.
    #[serde(default)]
    pub group_name: Option<String>,
}

/// Who sent what where.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Info {
    pub id: String,
    /// `…@g.us` for groups, `…@s.whatsapp.net` or `…@lid` for people.
    pub chat: String,
    pub sender: String,
    /// The sender's other identity: the phone jid when `sender` is a LID, or the reverse.
    #[serde(default)]
    pub sender_alt: Option<String>,
    #[serde(default)]
    pub is_from_me: bool,
    #[serde(default)]
    pub is_group: bool,
    #[serde(default)]
    pub push_name: String,
    /// Seconds since the epoch.
    pub timestamp: i64,
}

/// Strip the device part (`4915…:12@s.whatsapp.net` → `4915…@s.whatsapp.net`).
pub fn bare(jid: &str) -> String {
    match jid.split_once('@') {
        Some((user, server)) => {
            let user = user.split_once(':').map(|(u, _)| u).unwrap_or(user);
            format!("{user}@{server}")
        }
        None => jid.to_string(),
    }
}

/// A person's stable id: the phone jid when one is known, else the LID.
pub fn person(jid: &str, alt: Option<&str>, lids: &HashMap<String, String>) -> String {
    let jid = bare(jid);
    if !jid.ends_with("@lid") {
        return jid;
    }
    if let Some(alt) = alt.map(bare).filter(|a| a.ends_with("@s.whatsapp.net")) {
        return alt;
    }
    lids.get(&jid).map(|p| bare(p)).unwrap_or(jid)
}

/// Map one event. `lids` maps LID jids to phone jids learnt earlier (may be empty).
pub fn map_event(ev: &Event, lids: &HashMap<String, String>) -> Mapped {
    let info = &ev.info;
    let msg = unwrap(&ev.message);
    let sender = person(&info.sender, info.sender_alt.as_deref(), lids);
    let chat_jid = if info.is_group {
        bare(&info.chat)
    } else if info.is_from_me {
        // Our own message in a DM: the chat is the other person.
        person(&info.chat, None, lids)
    } else {
        person(&info.chat, info.sender_alt.as_deref(), lids)
    };
    let chat = format!("wa:{chat_jid}");
    let attachment = super::media::attachment_of(msg);
    let text = match text_of(msg).filter(|t| !t.trim().is_empty()) {
        Some(t) => t,
        // A photo, voice note or sticker without a caption is still a message.
        None if attachment.is_some() => "",
        None => {
            let kind = msg
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_else(|| "empty".into());
            return Mapped::Skip(format!(
                "message {} in {chat} has no text or media ({kind}); skipped",
                info.id
            ));
        }
    };
    let ctx = context_info(msg);
    let quoted = ctx.and_then(|c| c.get("quotedMessage"));
    let name = Some(info.push_name.clone()).filter(|n| !n.is_empty());
    Mapped::Message(Box::new(Inbound {
        chat,
        id: info.id.clone(),
        sender: format!("wa:{sender}"),
        sender_name: name.clone(),
        text: text.to_string(),
        time: Some(crate::infra::time::rfc3339(
            info.timestamp.saturating_mul(1000),
        )),
        from_me: info.is_from_me,
        is_bot: false,
        chat_name: if info.is_group {
            ev.group_name.clone()
        } else if info.is_from_me {
            None
        } else {
            name
        },
        is_group: Some(info.is_group),
        reply_to: ctx
            .and_then(|c| c.get("stanzaId"))
            .and_then(Value::as_str)
            .map(str::to_string),
        reply_to_sender: ctx
            .and_then(|c| c.get("participant"))
            .and_then(Value::as_str)
            .map(|p| format!("wa:{}", person(p, None, lids))),
        reply_to_text: quoted
            .and_then(|q| text_of(unwrap(q)))
            .map(|t| t.chars().take(QUOTE_CHARS).collect()),
        // Downloaded by `claw whatsapp run` through `media::WaSource` before the message is stored.
        attachments: attachment.into_iter().collect(),
    }))
}

/// Ephemeral, view-once and edited wrappers hold the real message inside.
fn unwrap(msg: &Value) -> &Value {
    for wrapper in [
        "ephemeralMessage",
        "viewOnceMessage",
        "viewOnceMessageV2",
        "documentWithCaptionMessage",
    ] {
        if let Some(inner) = msg.get(wrapper).and_then(|w| w.get("message")) {
            return unwrap(inner);
        }
    }
    msg
}

const CAPTIONED: [&str; 3] = ["imageMessage", "videoMessage", "documentMessage"];

fn text_of(msg: &Value) -> Option<&str> {
    if let Some(t) = msg.get("conversation").and_then(Value::as_str) {
        return Some(t);
    }
    if let Some(t) = msg
        .get("extendedTextMessage")
        .and_then(|m| m.get("text"))
        .and_then(Value::as_str)
    {
        return Some(t);
    }
    CAPTIONED.iter().find_map(|k| {
        msg.get(*k)
            .and_then(|m| m.get("caption"))
            .and_then(Value::as_str)
    })
}

fn context_info(msg: &Value) -> Option<&Value> {
    [
        "extendedTextMessage",
        "imageMessage",
        "videoMessage",
        "documentMessage",
        "audioMessage",
        "stickerMessage",
    ]
    .iter()
    .find_map(|k| msg.get(*k).and_then(|m| m.get("contextInfo")))
}
