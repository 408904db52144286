//! WhatsApp media, the parts that need no network: reading a media message's descriptor (kind,
//! size, name, and the CDN fields a download needs), checking that descriptor before anything is
//! fetched, streaming a download into an unlinked temp file under a byte cap, and choosing which
//! kind of WhatsApp message carries an outgoing file.
//!
//! Only the call to WhatsApp's CDN ([`Download`]) lives behind the `whatsapp` feature
//! (`client.rs`); everything here is built and tested in the main suite with recorded events. The
//! descriptor comes from the sender's message, so every field is untrusted: a declared length is
//! a hint for refusing early, never a bound, and the cap is enforced on the bytes written.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::media::fetch::{Fail, Source};
use crate::media::{AttachmentIn, Kind};

/// The media messages claw takes in, by their protobuf JSON key.
pub const MEDIA_KEYS: [&str; 5] = [
    "imageMessage",
    "videoMessage",
    "audioMessage",
    "documentMessage",
    "stickerMessage",
];

/// Longest declared field kept from a descriptor (paths, URLs, MIME types).
const MAX_FIELD: usize = 2048;

/// Which WhatsApp media message a descriptor came from; it picks the download's key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

/// What one media message says about its file, kept as the attachment's channel reference
/// (`AttachmentIn::channel_ref`, which JSON-lines input cannot set). Binary fields stay base64
/// as in the protobuf JSON form; [`WaMedia::fetch`] decodes and checks them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WaMedia {
    pub kind: Option<WaKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_enc_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<String>,
}

/// A checked descriptor: everything a download needs, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    pub kind: WaKind,
    /// The CDN path (from `directPath`, else the path of `url`).
    pub direct_path: String,
    pub media_key: [u8; 32],
    pub file_sha256: [u8; 32],
    pub file_enc_sha256: [u8; 32],
    /// Declared plaintext length (0 when the message gave none).
    pub file_length: u64,
}

fn str_field(m: &Value, key: &str) -> Option<String> {
    m.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(MAX_FIELD).collect())
}

/// Protobuf JSON writes 64-bit integers as strings; recorded events have both forms.
fn u64_field(m: &Value, key: &str) -> Option<u64> {
    let v = m.get(key)?;
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

/// The attachment a message carries, if it is one of [`MEDIA_KEYS`]: its kind (a voice note is
/// an audio message with `ptt`), declared size, file name (documents; sanitised later), caption
/// and dimensions, with the download descriptor as its channel reference.
pub fn attachment_of(msg: &Value) -> Option<AttachmentIn> {
    let (key, m) = MEDIA_KEYS
        .iter()
        .find_map(|k| msg.get(*k).filter(|v| v.is_object()).map(|v| (*k, v)))?;
    let ptt = m.get("ptt").and_then(Value::as_bool).unwrap_or(false);
    let (wa, kind, name) = match key {
        "imageMessage" => (WaKind::Image, Kind::Photo, None),
        "videoMessage" => (WaKind::Video, Kind::Video, None),
        "audioMessage" if ptt => (WaKind::Audio, Kind::Voice, None),
        "audioMessage" => (WaKind::Audio, Kind::Audio, None),
        // Stickers are WebP images; the name says so (the default photo name would be .jpg).
        "stickerMessage" => (WaKind::Sticker, Kind::Photo, Some("sticker.webp".into())),
        _ => (
            WaKind::Document,
            Kind::Document,
            str_field(m, "fileName").or_else(|| str_field(m, "title")),
        ),
    };
    let desc = WaMedia {
        kind: Some(wa),
        url: str_field(m, "url"),
        direct_path: str_field(m, "directPath"),
        media_key: str_field(m, "mediaKey"),
        file_sha256: str_field(m, "fileSha256"),
        file_enc_sha256: str_field(m, "fileEncSha256"),
        file_length: u64_field(m, "fileLength"),
        mimetype: str_field(m, "mimetype"),
    };
    let dim = |k: &str| u64_field(m, k).and_then(|n| u32::try_from(n).ok());
    Some(AttachmentIn {
        kind: Some(kind),
        name,
        caption: m
            .get("caption")
            .and_then(Value::as_str)
            .filter(|c| !c.trim().is_empty())
            .map(str::to_string),
        size: desc.file_length,
        width: dim("width"),
        height: dim("height"),
        channel_ref: serde_json::to_string(&desc).ok(),
        ..Default::default()
    })
}

fn key32(field: Option<&str>, what: &str) -> Result<[u8; 32], String> {
    let b64 = field.ok_or_else(|| format!("the message carries no {what}"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(b64.trim()))
        .map_err(|_| format!("the message's {what} is not base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("the message's {what} is {} bytes, not 32", bytes.len()))
}

impl WaMedia {
    /// Read a descriptor back from an attachment's channel reference.
    pub fn from_ref(channel_ref: Option<&str>) -> Result<WaMedia, String> {
        let r = channel_ref.ok_or("no WhatsApp media reference on this attachment")?;
        serde_json::from_str(r).map_err(|e| format!("unreadable WhatsApp media reference: {e}"))
    }

    /// Check the descriptor and decode it. Missing or malformed keys and paths are reasons
    /// (recorded on the attachment), found before anything is downloaded.
    pub fn fetch(&self) -> Result<Fetch, String> {
        let kind = self.kind.ok_or("the media reference names no kind")?;
        let direct_path = match (&self.direct_path, &self.url) {
            (Some(p), _) if p.starts_with('/') => p.clone(),
            (Some(p), _) => return Err(format!("the media path {p:?} is not a CDN path")),
            // Older messages carry only the full URL; the CDN path is its path part.
            (None, Some(u)) => u
                .strip_prefix("https://")
                .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
                .ok_or_else(|| "the media URL is not an https URL".to_string())?,
            (None, None) => return Err("the message carries no media path or URL".into()),
        };
        Ok(Fetch {
            kind,
            direct_path,
            media_key: key32(self.media_key.as_deref(), "media key")?,
            file_sha256: key32(self.file_sha256.as_deref(), "file hash")?,
            file_enc_sha256: key32(self.file_enc_sha256.as_deref(), "encrypted file hash")?,
            file_length: self.file_length.unwrap_or(0),
        })
    }
}

/// A file a download writes into that refuses to grow past `cap` bytes: the write that would
/// cross it fails and raises the shared `over` flag, so the caller can tell "too large" from a
/// network failure even after the download library has wrapped the error.
pub struct CappedFile {
    file: File,
    cap: u64,
    pos: u64,
    over: Arc<AtomicBool>,
}

impl CappedFile {
    /// Wrap `file` (positioned at 0) with a cap; `over` is raised when the cap is hit.
    pub fn new(file: File, cap: u64, over: Arc<AtomicBool>) -> CappedFile {
        CappedFile {
            file,
            cap,
            pos: 0,
            over,
        }
    }

    /// Shorten the file to `len` bytes (a retried download starts from empty).
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos.saturating_add(buf.len() as u64) > self.cap {
            self.over.store(true, Ordering::SeqCst);
            return Err(io::Error::other(format!(
                "the file is over the {} limit",
                crate::media::human_size(self.cap)
            )));
        }
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for CappedFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

/// The network call: fetch and decrypt `f` into `out`. On error, `out` may hold anything.
pub trait Download {
    /// Download `f` into `out`; the error is a reason for the message's record.
    fn download(&self, f: &Fetch, out: CappedFile) -> Result<(), String>;
}

/// Opens WhatsApp attachments for [`crate::media::save`]: checks the descriptor, refuses a
/// declared length over the cap, downloads into an unlinked temp file under `tmp_dir` (host-owned,
/// never a group folder) with the cap enforced, and hands back the file to be copied into the
/// inbox exactly as other channels' files are.
pub struct WaSource<'a> {
    pub download: &'a dyn Download,
    pub tmp_dir: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A new file in `dir` that has no name any more: it vanishes when the last handle closes,
/// so a crash leaves nothing behind.
fn anonymous_file(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let name = dir.join(format!(
        ".dl-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&name);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(f)
}

impl Source for WaSource<'_> {
    fn open(&self, a: &AttachmentIn, cap: u64) -> Result<Box<dyn io::Read>, Fail> {
        let fetch = WaMedia::from_ref(a.channel_ref.as_deref())
            .and_then(|d| d.fetch())
            .map_err(|why| Fail::Failed(format!("cannot download: {why}")))?;
        if fetch.file_length > cap {
            return Err(Fail::TooLarge(format!(
                "the file is {}, over the {} limit",
                crate::media::human_size(fetch.file_length),
                crate::media::human_size(cap)
            )));
        }
        let mut file = anonymous_file(&self.tmp_dir)
            .map_err(|e| Fail::Failed(format!("cannot create a download file: {e}")))?;
        let writer = file
            .try_clone()
            .map_err(|e| Fail::Failed(format!("cannot create a download file: {e}")))?;
        let over = Arc::new(AtomicBool::new(false));
        let result = self
            .download
            .download(&fetch, CappedFile::new(writer, cap, over.clone()));
        if over.load(Ordering::SeqCst) {
            return Err(Fail::TooLarge(format!(
                "the download grew past the {} limit",
                crate::media::human_size(cap)
            )));
        }
        result.map_err(|why| Fail::Failed(format!("download failed: {why}")))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Fail::Failed(format!("cannot read the download back: {e}")))?;
        Ok(Box::new(file))
    }
}

/// Which WhatsApp message carries an outgoing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    Image,
    Video,
    /// An audio message with `ptt` set: shown as a voice note.
    Voice,
    Audio,
    Document,
}

/// How a `send_file` row goes out: the message kind, the MIME type to declare, and where the
/// caption goes (audio messages have no caption field, so it follows as a text message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPlan {
    pub kind: OutKind,
    pub mimetype: String,
    pub caption: Option<String>,
    pub caption_after: Option<String>,
}

/// Pick the message for a file by its checked kind and content type: JPEG and PNG as images,
/// MP4 as video, OGG/Opus as a voice note, other audio as audio, anything else (WebP, GIF,
/// other containers, documents) as a document, which every client can open.
pub fn out_plan(kind: Kind, mime: &str, caption: &str) -> OutPlan {
    let out = match (kind, mime) {
        (Kind::Photo, "image/jpeg" | "image/png") => OutKind::Image,
        (Kind::Video, "video/mp4") => OutKind::Video,
        (Kind::Voice | Kind::Audio, "audio/ogg" | "audio/opus") => OutKind::Voice,
        (Kind::Voice | Kind::Audio, m) if m.starts_with("audio/") => OutKind::Audio,
        _ => OutKind::Document,
    };
    let mimetype = match out {
        // WhatsApp plays voice notes only when declared as Opus in OGG.
        OutKind::Voice => "audio/ogg; codecs=opus".to_string(),
        _ if mime.is_empty() => "application/octet-stream".to_string(),
        _ => mime.to_string(),
    };
    let caption = Some(caption.to_string()).filter(|c| !c.trim().is_empty());
    let (caption, caption_after) = match out {
        OutKind::Voice | OutKind::Audio => (None, caption),
        _ => (caption, None),
    };
    OutPlan {
        kind: out,
        mimetype,
        caption,
        caption_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_plan_by_kind_and_content() {
        let p = |k, m| out_plan(k, m, "look").kind;
        assert_eq!(p(Kind::Photo, "image/jpeg"), OutKind::Image);
        assert_eq!(p(Kind::Photo, "image/png"), OutKind::Image);
        assert_eq!(p(Kind::Photo, "image/webp"), OutKind::Document);
        assert_eq!(p(Kind::Video, "video/mp4"), OutKind::Video);
        assert_eq!(p(Kind::Video, "video/x-matroska"), OutKind::Document);
        assert_eq!(p(Kind::Audio, "audio/ogg"), OutKind::Voice);
        assert_eq!(p(Kind::Voice, "audio/opus"), OutKind::Voice);
        assert_eq!(p(Kind::Audio, "audio/mpeg"), OutKind::Audio);
        assert_eq!(p(Kind::Document, "application/pdf"), OutKind::Document);
        assert_eq!(p(Kind::Document, "image/jpeg"), OutKind::Document);
        let voice = out_plan(Kind::Audio, "audio/ogg", "listen");
        assert_eq!(voice.mimetype, "audio/ogg; codecs=opus");
        assert_eq!(voice.caption, None);
        assert_eq!(voice.caption_after.as_deref(), Some("listen"));
        let img = out_plan(Kind::Photo, "image/png", "chart");
        assert_eq!(img.caption.as_deref(), Some("chart"));
        assert_eq!(img.caption_after, None);
        assert_eq!(out_plan(Kind::Photo, "image/png", "  ").caption, None);
        assert_eq!(
            out_plan(Kind::Document, "", "").mimetype,
            "application/octet-stream"
        );
    }

    #[test]
    fn descriptors_are_checked_before_any_download() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let good = WaMedia {
            kind: Some(WaKind::Image),
            direct_path: Some("/v/t62/a.enc".into()),
            media_key: Some(key.clone()),
            file_sha256: Some(key.clone()),
            file_enc_sha256: Some(key.clone()),
            file_length: Some(10),
            ..Default::default()
        };
        let f = good.fetch().unwrap();
        assert_eq!(
            (f.direct_path.as_str(), f.media_key),
            ("/v/t62/a.enc", [7u8; 32])
        );
        let only_url = WaMedia {
            direct_path: None,
            url: Some("https://mmg.whatsapp.net/v/t62/b.enc?x=1".into()),
            ..good.clone()
        };
        assert_eq!(only_url.fetch().unwrap().direct_path, "/v/t62/b.enc?x=1");
        let bad = |m: WaMedia, want: &str| {
            let e = m.fetch().unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        };
        bad(
            WaMedia {
                media_key: None,
                ..good.clone()
            },
            "no media key",
        );
        bad(
            WaMedia {
                media_key: Some("!!".into()),
                ..good.clone()
            },
            "not base64",
        );
        bad(
            WaMedia {
                file_sha256: Some("AAAA".into()),
                ..good.clone()
            },
            "3 bytes, not 32",
        );
        bad(
            WaMedia {
                direct_path: Some("../x".into()),
                ..good.clone()
            },
            "not a CDN path",
        );
        bad(
            WaMedia {
                direct_path: None,
                url: Some("http://evil/x".into()),
                ..good.clone()
            },
            "not an https URL",
        );
        bad(
            WaMedia {
                direct_path: None,
                url: None,
                ..good.clone()
            },
            "no media path",
        );
        bad(
            WaMedia {
                kind: None,
                ..good.clone()
            },
            "no kind",
        );
        // The reference round-trips through the attachment, and only through it.
        let a = attachment_of(&serde_json::json!({"audioMessage": {
            "ptt": true, "fileLength": "99", "directPath": "/v/t62/a.enc", "mediaKey": key}}))
        .unwrap();
        assert_eq!(a.kind, Some(Kind::Voice));
        assert_eq!(a.size, Some(99));
        let back = WaMedia::from_ref(a.channel_ref.as_deref()).unwrap();
        assert_eq!(back.kind, Some(WaKind::Audio));
        assert!(WaMedia::from_ref(None).is_err());
        assert!(attachment_of(&serde_json::json!({"reactionMessage": {}})).is_none());
    }

    #[test]
    fn capped_file_refuses_the_write_that_crosses_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let f = anonymous_file(d.path()).unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "unlinked");
        let over = Arc::new(AtomicBool::new(false));
        let mut w = CappedFile::new(f, 10, over.clone());
        w.write_all(b"0123456789").unwrap();
        assert!(!over.load(Ordering::SeqCst));
        assert!(w.write_all(b"x").is_err());
        assert!(over.load(Ordering::SeqCst));
        // A retry empties and rewinds, then may write up to the cap again.
        w.truncate(0).unwrap();
        w.rewind().unwrap();
        w.write_all(b"abc").unwrap();
    }
}
