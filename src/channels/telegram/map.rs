//! Telegram updates → claw's inbound messages. Pure: no network, no database.
//!
//! Owns the Telegram-specific reading of a message: which chat and sender ids it gets, what
//! counts as its text (text, else caption), what a reply keeps, and how an `@botname` mention at
//! the start becomes the group's trigger. It never decides whether a chat is allowed in.

use serde::Deserialize;
use std::collections::HashMap;

use crate::channels::Mapped;
use crate::media::{AttachmentIn, Kind};
use crate::steps::ingest::Inbound;

/// Longest quoted text kept with a reply; the full message is already in the chat's history.
const QUOTE_CHARS: usize = 500;

#[derive(Debug, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub channel_post: Option<Message>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub message_id: i64,
    #[serde(default)]
    pub from: Option<User>,
    #[serde(default)]
    pub sender_chat: Option<Chat>,
    pub chat: Chat,
    pub date: i64,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub reply_to_message: Option<Box<Message>>,
    /// The part of the replied-to message the user selected to quote.
    #[serde(default)]
    pub quote: Option<Quote>,
    /// Sizes of one photo, smallest first.
    #[serde(default)]
    pub photo: Vec<FileRef>,
    #[serde(default)]
    pub voice: Option<FileRef>,
    #[serde(default)]
    pub audio: Option<FileRef>,
    #[serde(default)]
    pub document: Option<FileRef>,
    #[serde(default)]
    pub video: Option<FileRef>,
    #[serde(default)]
    pub video_note: Option<FileRef>,
}

/// A file Telegram holds for us: fetched later with getFile.
#[derive(Debug, Deserialize)]
pub struct FileRef {
    pub file_id: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Quote {
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// How mentions are rewritten: the bot's username and each registered chat's trigger.
pub struct Triggers<'a> {
    pub bot_username: Option<&'a str>,
    pub by_chat: &'a HashMap<String, String>,
    pub default: &'a str,
}

/// Map one raw update (as JSON) to a message or a reason to skip it.
pub fn map_update(raw: &serde_json::Value, triggers: &Triggers) -> Mapped {
    let update: Update = match serde_json::from_value(raw.clone()) {
        Ok(u) => u,
        Err(e) => return Mapped::Skip(format!("unreadable update: {e}")),
    };
    let id = update.update_id;
    let Some(msg) = update.message.or(update.channel_post) else {
        return Mapped::Skip(format!(
            "update {id} is not a new message (edits, reactions and member changes are not stored)"
        ));
    };
    map_message(&msg, triggers)
        .map(|m| Mapped::Message(Box::new(m)))
        .unwrap_or_else(|why| Mapped::Skip(format!("update {id}: {why}")))
}

/// The chat id claw uses for a Telegram chat.
pub fn chat_id(chat: i64) -> String {
    format!("tg:{chat}")
}

fn map_message(msg: &Message, triggers: &Triggers) -> Result<Inbound, String> {
    let chat = chat_id(msg.chat.id);
    let attachments = attachments(msg);
    let text = match body(msg) {
        Some(t) => t,
        None if !attachments.is_empty() => "",
        None => {
            return Err(format!(
                "message {} in {chat} has no text, caption or file (sticker, poll, …); skipped",
                msg.message_id
            ));
        }
    };
    let text = rewrite_mention(text, &chat, triggers);
    let (sender_id, sender_name, is_bot) = sender(msg);
    let is_group = msg.chat.kind != "private";
    let chat_name = if is_group {
        msg.chat.title.clone()
    } else {
        Some(person(
            msg.chat.first_name.as_deref().unwrap_or(""),
            msg.chat.last_name.as_deref(),
            msg.chat.username.as_deref(),
        ))
    };
    let reply = msg.reply_to_message.as_deref();
    Ok(Inbound {
        chat,
        id: msg.message_id.to_string(),
        sender: sender_id,
        sender_name: Some(sender_name),
        text,
        time: Some(crate::infra::time::rfc3339(msg.date.saturating_mul(1000))),
        from_me: false,
        is_bot,
        chat_name,
        is_group: Some(is_group),
        reply_to: reply.map(|r| r.message_id.to_string()),
        reply_to_sender: reply.map(|r| sender(r).1),
        reply_to_text: msg
            .quote
            .as_ref()
            .map(|q| q.text.as_str())
            .or_else(|| reply.and_then(body))
            .map(|t| t.chars().take(QUOTE_CHARS).collect()),
        attachments,
    })
}

/// The files of a message as attachments to fetch with getFile (a photo: its largest size).
fn attachments(msg: &Message) -> Vec<AttachmentIn> {
    let caption = msg.caption.clone().filter(|c| !c.trim().is_empty());
    let photo = msg
        .photo
        .iter()
        .max_by_key(|p| (p.width.unwrap_or(0) as u64) * (p.height.unwrap_or(0) as u64));
    [
        (Kind::Photo, photo),
        (Kind::Voice, msg.voice.as_ref()),
        (Kind::Audio, msg.audio.as_ref()),
        (Kind::Document, msg.document.as_ref()),
        (Kind::Video, msg.video.as_ref()),
        (Kind::Video, msg.video_note.as_ref()),
    ]
    .into_iter()
    .filter_map(|(kind, f)| {
        let f = f?;
        Some(AttachmentIn {
            kind: Some(kind),
            name: f.file_name.clone(),
            caption: caption.clone(),
            size: f.file_size,
            width: f.width,
            height: f.height,
            channel_ref: Some(f.file_id.clone()),
            ..Default::default()
        })
    })
    .collect()
}

fn body(msg: &Message) -> Option<&str> {
    msg.text
        .as_deref()
        .or(msg.caption.as_deref())
        .filter(|t| !t.trim().is_empty())
}

/// Sender id, display name, and whether it is a bot.
fn sender(msg: &Message) -> (String, String, bool) {
    if let Some(u) = &msg.from {
        return (
            format!("tg:{}", u.id),
            person(&u.first_name, u.last_name.as_deref(), u.username.as_deref()),
            u.is_bot,
        );
    }
    // Channel posts and anonymous group admins speak as a chat.
    let c = msg.sender_chat.as_ref().unwrap_or(&msg.chat);
    (
        format!("tg:{}", c.id),
        c.title.clone().unwrap_or_else(|| c.id.to_string()),
        false,
    )
}

fn person(first: &str, last: Option<&str>, username: Option<&str>) -> String {
    let full = match last {
        Some(l) if !l.is_empty() => format!("{first} {l}"),
        _ => first.to_string(),
    };
    if full.trim().is_empty() {
        username.unwrap_or("someone").to_string()
    } else {
        full
    }
}

/// `@botname rest` at the start → `<trigger> rest`, so groups can address the bot by its
/// Telegram handle. Case-insensitive; the mention must end at a word boundary.
pub fn rewrite_mention(text: &str, chat: &str, triggers: &Triggers) -> String {
    let Some(bot) = triggers.bot_username.filter(|b| !b.is_empty()) else {
        return text.to_string();
    };
    let lead = text.len() - text.trim_start().len();
    let rest = &text[lead..];
    let handle_len = bot.len() + 1;
    let matches = rest.len() >= handle_len
        && rest.is_char_boundary(handle_len)
        && rest[..handle_len].eq_ignore_ascii_case(&format!("@{bot}"))
        && !rest[handle_len..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
    if !matches {
        return text.to_string();
    }
    let trigger = triggers
        .by_chat
        .get(chat)
        .map(String::as_str)
        .unwrap_or(triggers.default);
    format!("{trigger}{}", &rest[handle_len..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn triggers(map: &HashMap<String, String>) -> Triggers<'_> {
        Triggers {
            bot_username: Some("andy_bot"),
            by_chat: map,
            default: "@Andy",
        }
    }

    fn msg(v: serde_json::Value) -> Inbound {
        let map = HashMap::from([("tg:-100".to_string(), "@Bob".to_string())]);
        match map_update(&v, &triggers(&map)) {
            Mapped::Message(m) => *m,
            Mapped::Skip(why) => panic!("skipped: {why}"),
        }
    }

    #[test]
    fn group_message_with_mention_becomes_the_trigger() {
        let m = msg(
            json!({"update_id": 1, "message": {"message_id": 7, "date": 1_795_255_200,
            "from": {"id": 55, "first_name": "Ana", "last_name": "Li"},
            "chat": {"id": -100, "type": "supergroup", "title": "Family"},
            "text": "@Andy_Bot, what's up"}}),
        );
        assert_eq!(m.chat, "tg:-100");
        assert_eq!(m.id, "7");
        assert_eq!(m.sender, "tg:55");
        assert_eq!(m.sender_name.as_deref(), Some("Ana Li"));
        assert_eq!(m.text, "@Bob, what's up");
        assert_eq!(m.time.as_deref(), Some("2026-11-21T10:00:00Z"));
        assert_eq!(m.is_group, Some(true));
        assert_eq!(m.chat_name.as_deref(), Some("Family"));
    }

    #[test]
    fn mention_needs_a_word_boundary_and_the_start() {
        let map = HashMap::new();
        let t = triggers(&map);
        assert_eq!(rewrite_mention("@andy_bot hi", "tg:1", &t), "@Andy hi");
        assert_eq!(
            rewrite_mention("@andy_botx hi", "tg:1", &t),
            "@andy_botx hi"
        );
        assert_eq!(rewrite_mention("hi @andy_bot", "tg:1", &t), "hi @andy_bot");
        assert_eq!(rewrite_mention("@andy_bot", "tg:1", &t), "@Andy");
    }

    #[test]
    fn dm_caption_and_reply_with_quote() {
        let m = msg(
            json!({"update_id": 2, "message": {"message_id": 9, "date": 1,
            "from": {"id": 55, "first_name": "", "username": "ana"},
            "chat": {"id": 55, "type": "private", "first_name": "", "username": "ana"},
            "caption": "look at this",
            "reply_to_message": {"message_id": 3, "date": 0, "from": {"id": 99, "first_name": "Andy", "is_bot": true},
                                 "chat": {"id": 55, "type": "private"}, "text": "the whole earlier answer"},
            "quote": {"text": "earlier"}}}),
        );
        assert_eq!(m.chat, "tg:55");
        assert_eq!(m.is_group, Some(false));
        assert_eq!(m.sender_name.as_deref(), Some("ana"));
        assert_eq!(m.text, "look at this");
        assert_eq!(m.reply_to.as_deref(), Some("3"));
        assert_eq!(m.reply_to_sender.as_deref(), Some("Andy"));
        assert_eq!(m.reply_to_text.as_deref(), Some("earlier"));
    }

    #[test]
    fn non_text_updates_are_skipped_with_a_reason() {
        let map = HashMap::new();
        let sticker = json!({"update_id": 3, "message": {"message_id": 1, "date": 1,
            "chat": {"id": 5, "type": "private"}, "sticker": {"file_id": "x"}}});
        let Mapped::Skip(why) = map_update(&sticker, &triggers(&map)) else {
            panic!()
        };
        assert!(why.contains("no text, caption or file"), "{why}");
        let edit = json!({"update_id": 4, "edited_message": {}});
        let Mapped::Skip(why) = map_update(&edit, &triggers(&map)) else {
            panic!()
        };
        assert!(why.contains("not a new message"), "{why}");
    }
}
