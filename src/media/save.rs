//! Saving a message's attachments into its group's inbox before the message is stored.
//!
//! Called between a channel's fetch and the store's transaction: downloads happen here, with no
//! transaction open; what each attempt came to is left in `AttachmentIn::outcome` for the store.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;

use super::fetch::{Fail, Source};
use super::image_info::{self, HEAD_BYTES};
use super::name;
use super::transcribe::Transcriber;
use super::{AttachmentIn, Kind, MediaConfig, Saved, Status};
use crate::infra::untrusted::{Copied, Dir, ensure_subdir};
use crate::steps::ingest::Inbound;

/// Everything saving needs, built once per ingest batch.
pub struct Ctx<'a> {
    /// `home/groups`.
    pub groups_root: PathBuf,
    /// Registered chat id → group folder.
    pub folders: HashMap<String, String>,
    pub config: &'a MediaConfig,
    pub source: &'a dyn Source,
    pub transcriber: Option<&'a Transcriber>,
}

impl<'a> Ctx<'a> {
    /// A context for the registered groups in `conn`.
    pub fn new(
        conn: &rusqlite::Connection,
        home: &crate::infra::paths::Home,
        config: &'a MediaConfig,
        source: &'a dyn Source,
        transcriber: Option<&'a Transcriber>,
    ) -> anyhow::Result<Ctx<'a>> {
        let folders = crate::infra::store::groups::list(conn)?
            .into_iter()
            .map(|g| (g.chat_id, g.folder))
            .collect();
        Ok(Ctx {
            groups_root: home.groups(),
            folders,
            config,
            source,
            transcriber,
        })
    }
}

/// Save the attachments of every new message of a registered chat; messages already stored (a
/// re-fetch) and messages of unknown chats download nothing. Voice transcripts are appended to
/// the message text as `[voice transcript] …`. Never fails: each problem is recorded per file.
pub fn prepare(ctx: &Ctx, conn: &rusqlite::Connection, items: &mut [(Inbound, i64)]) {
    for (m, at) in items.iter_mut() {
        if m.attachments.is_empty() {
            continue;
        }
        let Some(folder) = ctx.folders.get(&m.chat) else {
            continue;
        };
        if already_stored(conn, &m.chat, &m.id) {
            continue;
        }
        let date = crate::infra::time::local_date(*at);
        let id = name::safe_id(&m.id);
        let mut notes = Vec::new();
        for a in m.attachments.iter_mut() {
            let saved = save_one(ctx, folder, &date, &id, a);
            if let Some(t) = &saved.transcript {
                notes.push(format!("[voice transcript] {t}"));
            }
            a.outcome = Some(saved);
        }
        for n in notes {
            if !m.text.is_empty() {
                m.text.push('\n');
            }
            m.text.push_str(&n);
        }
    }
}

fn already_stored(conn: &rusqlite::Connection, chat: &str, id: &str) -> bool {
    conn.prepare_cached("SELECT 1 FROM messages WHERE chat_id = ?1 AND msg_id = ?2")
        .and_then(|mut s| s.exists([chat, id]))
        .unwrap_or(false)
}

fn outcome(a: &AttachmentIn, kind: Kind, name: &str, status: Status, error: String) -> Saved {
    Saved {
        kind,
        name: name.to_string(),
        path: None,
        mime: None,
        size: a.size,
        caption: a.caption.clone(),
        width: a.width,
        height: a.height,
        status,
        error: Some(error),
        transcript: None,
    }
}

/// Download one attachment into `inbox/<date>/<id>-<name>`.
pub fn save_one(ctx: &Ctx, folder: &str, date: &str, id: &str, a: &AttachmentIn) -> Saved {
    let claimed = a.kind;
    let kind_guess = claimed.unwrap_or(Kind::Document);
    // A bridge that names no file still gave a path or URL whose last part is a name.
    let given = a.name.as_deref().or_else(|| {
        let src = a.path.as_deref().or(a.url.as_deref())?;
        src.split(['?', '#']).next()?.rsplit('/').next()
    });
    let safe = name::sanitise(given.unwrap_or(""), name::default_name(claimed));
    let cap = ctx.config.cap(claimed);
    if let Some(size) = a.size
        && size > cap
    {
        let why = format!(
            "{} ({size} bytes) is over the {} ({cap} bytes) limit for a {}",
            super::human_size(size),
            super::human_size(cap),
            kind_guess.as_str()
        );
        return outcome(a, kind_guess, &safe, Status::TooLarge, why);
    }
    let mut reader = match ctx.source.open(a, cap) {
        Ok(r) => r,
        Err(Fail::TooLarge(why)) => return outcome(a, kind_guess, &safe, Status::TooLarge, why),
        Err(Fail::Failed(why)) => return outcome(a, kind_guess, &safe, Status::Failed, why),
    };
    let dir = match inbox_dir(ctx, folder, date) {
        Ok(d) => d,
        Err(e) => {
            let why = format!("cannot create the inbox folder: {e}");
            return outcome(a, kind_guess, &safe, Status::Failed, why);
        }
    };
    // Two files of one message may share a name; the second gets a number.
    let mut copied = None;
    let mut file = String::new();
    for n in 0..20 {
        file = if n == 0 {
            format!("{id}-{safe}")
        } else {
            format!("{id}-{n}-{safe}")
        };
        match dir.create_streamed(OsStr::new(&file), &mut reader, cap, HEAD_BYTES) {
            Ok(Some(c)) => {
                copied = Some(c);
                break;
            }
            Ok(None) => continue,
            Err(e) => {
                let why = format!("saving failed: {e}");
                return outcome(a, kind_guess, &safe, Status::Failed, why);
            }
        }
    }
    let (bytes, head) = match copied {
        Some(Copied::Done { bytes, head }) => (bytes, head),
        Some(Copied::TooLarge { .. }) => {
            let why = format!("the file is over the {} limit", super::human_size(cap));
            return outcome(a, kind_guess, &safe, Status::TooLarge, why);
        }
        None => {
            let why = "too many files of the same name in this message".to_string();
            return outcome(a, kind_guess, &safe, Status::Failed, why);
        }
    };
    let mime = image_info::sniff(&head);
    let kind = Kind::checked(claimed, &mime);
    let (width, height) = match kind {
        Kind::Photo => image_info::dimensions(&head)
            .map(|(w, h)| (Some(w), Some(h)))
            .unwrap_or((a.width, a.height)),
        _ => (a.width, a.height),
    };
    let mut saved = Saved {
        kind,
        name: safe,
        path: Some(format!("inbox/{date}/{file}")),
        mime: Some(mime.clone()),
        size: Some(bytes),
        caption: a.caption.clone(),
        width,
        height,
        status: Status::Ok,
        error: None,
        transcript: None,
    };
    if kind == Kind::Voice
        && let Some(t) = ctx.transcriber
    {
        match dir.open_regular(OsStr::new(&file), bytes) {
            Ok((f, len)) => match t.transcribe(f, len, &mime, &file) {
                Ok(text) => saved.transcript = Some(text),
                Err(why) => saved.error = Some(format!("transcription failed: {why}")),
            },
            Err(why) => saved.error = Some(format!("transcription failed: {why}")),
        }
    }
    saved
}

/// `groups/FOLDER/inbox/DATE`, made real directories without following anything an agent put
/// there (a symlink or file named `inbox` is removed and replaced by a directory).
fn inbox_dir(ctx: &Ctx, folder: &str, date: &str) -> std::io::Result<Dir> {
    let group = Dir::open(&ctx.groups_root.join(folder))?;
    let (inbox, _) = ensure_subdir(&group, "inbox", None)?;
    let (day, _) = ensure_subdir(&inbox, date, None)?;
    Ok(day)
}
