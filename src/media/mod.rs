//! Attachments: photos, voice notes, audio, documents and videos in and out of chats.
//!
//! Owns what an attachment is (its kind, its safe name, its status), the `[media]` settings, and
//! the step between a channel and the store: each file a message carries is streamed into the
//! group's `inbox/<date>/<msg id>-<name>` through `crate::infra::untrusted` (the group folder is
//! agent-writable), typed by its content, and recorded whether it was saved or not. It never
//! holds a database transaction across a download, and one bad file never stops a batch.

pub mod fetch;
pub mod image_info;
pub mod multipart;
pub mod name;
pub mod outfile;
pub mod prune;
pub mod save;
pub mod transcribe;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What kind of file an attachment is, as chats tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Photo,
    Voice,
    Audio,
    Document,
    Video,
}

impl Kind {
    /// The word used in the database, the prompt and config keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Photo => "photo",
            Kind::Voice => "voice",
            Kind::Audio => "audio",
            Kind::Document => "document",
            Kind::Video => "video",
        }
    }

    /// Parse the database word.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "photo" => Kind::Photo,
            "voice" => Kind::Voice,
            "audio" => Kind::Audio,
            "document" => Kind::Document,
            "video" => Kind::Video,
            _ => return None,
        })
    }

    /// The kind the content says, given the kind the channel claimed: a "photo" that is not an
    /// image becomes a document (so nothing but real images reaches a model as an image), and
    /// so does a "voice" note that is not audio.
    pub fn checked(claimed: Option<Kind>, mime: &str) -> Kind {
        let top = mime.split('/').next().unwrap_or("");
        let from_content = match top {
            "image" => Kind::Photo,
            "audio" => Kind::Audio,
            "video" => Kind::Video,
            _ => Kind::Document,
        };
        match (claimed, from_content) {
            (Some(Kind::Voice), Kind::Audio) => Kind::Voice,
            // Telegram voice notes are OGG/Opus; some sniffers call OGG a video container.
            (Some(Kind::Voice), Kind::Video) if mime == "video/ogg" => Kind::Voice,
            (Some(Kind::Document), _) => Kind::Document,
            (Some(c), k) if c == k => c,
            (Some(Kind::Audio), Kind::Video) if mime.contains("ogg") => Kind::Audio,
            (None, k) => k,
            _ => Kind::Document,
        }
    }
}

/// What became of one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
    TooLarge,
}

impl Status {
    /// The database word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::TooLarge => "too_large",
        }
    }
}

/// One attachment as a channel or bridge hands it in (the `attachments` field of an inbound line).
///
/// From JSON lines: exactly one of `path` (a file under a `media.ingest_roots` directory) or
/// `url` (http or https). Built-in channels fill `channel_ref` instead (a Telegram file id, a
/// signal-cli attachment id), which JSON cannot set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentIn {
    /// `photo`, `voice`, `audio`, `document` or `video`; missing means "decide from the content".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The file's name as the sender gave it; sanitised before use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Size the channel announced, used to refuse an oversize file before downloading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// A channel's own handle for the file (never from JSON).
    #[serde(skip)]
    pub channel_ref: Option<String>,
    /// Filled by [`save::prepare`]; what is stored.
    #[serde(skip)]
    pub outcome: Option<Saved>,
}

/// An attachment after the download attempt: what the `attachments` row holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Saved {
    pub kind: Kind,
    pub name: String,
    /// Relative to the group folder; `None` unless saved.
    pub path: Option<String>,
    pub mime: Option<String>,
    pub size: Option<u64>,
    pub caption: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub status: Status,
    pub error: Option<String>,
    pub transcript: Option<String>,
}

/// `[media]` in claw.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest file saved per kind, in MiB (inbound and `send_file`).
    pub max_mb: KindCaps,
    /// Inbox files older than this many days are deleted by housekeeping (`claw prune`); 0 keeps them.
    pub inbox_max_age_days: u32,
    /// Directories from which JSON-lines `path` attachments may be taken (a bridge's download
    /// folder). Empty: path attachments are refused. Never the claw home.
    pub ingest_roots: Vec<PathBuf>,
    /// Seconds one URL download may take.
    pub download_timeout_secs: u64,
    pub transcription: TranscriptionConfig,
}

/// Per-kind caps in MiB.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindCaps {
    pub photo: u64,
    pub voice: u64,
    pub audio: u64,
    pub document: u64,
    pub video: u64,
}

/// `[media.transcription]`: an OpenAI-compatible `/v1/audio/transcriptions` endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscriptionConfig {
    /// Base URL (e.g. `https://api.openai.com`); empty turns transcription off.
    pub base_url: String,
    pub model: String,
    /// The variable in secrets.env holding the key (may be unset for a local server).
    pub key_env: String,
    /// Audio types the endpoint takes as they are; anything else is converted with ffmpeg first.
    pub accepts: Vec<String>,
    pub timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_mb: KindCaps::default(),
            inbox_max_age_days: 30,
            ingest_roots: vec![],
            download_timeout_secs: 120,
            transcription: TranscriptionConfig::default(),
        }
    }
}

impl Default for KindCaps {
    fn default() -> Self {
        KindCaps {
            photo: 20,
            voice: 20,
            audio: 20,
            document: 20,
            video: 20,
        }
    }
}

impl Default for TranscriptionConfig {
    fn default() -> Self {
        TranscriptionConfig {
            base_url: String::new(),
            model: "whisper-1".into(),
            key_env: "TRANSCRIPTION_API_KEY".into(),
            // OpenAI's list; OGG/Opus (Telegram, WhatsApp) is among them.
            accepts: [
                "audio/ogg",
                "audio/opus",
                "audio/mpeg",
                "audio/mp4",
                "audio/x-m4a",
                "audio/wav",
                "audio/x-wav",
                "audio/webm",
                "audio/flac",
                "audio/x-flac",
            ]
            .map(String::from)
            .to_vec(),
            timeout_secs: 120,
        }
    }
}

impl MediaConfig {
    /// The byte cap for one kind; `None` (not yet typed) uses the largest.
    pub fn cap(&self, kind: Option<Kind>) -> u64 {
        let m = &self.max_mb;
        let mb = match kind {
            Some(Kind::Photo) => m.photo,
            Some(Kind::Voice) => m.voice,
            Some(Kind::Audio) => m.audio,
            Some(Kind::Document) => m.document,
            Some(Kind::Video) => m.video,
            None => m
                .photo
                .max(m.voice)
                .max(m.audio)
                .max(m.document)
                .max(m.video),
        };
        mb.saturating_mul(1024 * 1024)
    }
}

/// `[models.NAME]` in claw.toml: facts about one model that claw cannot learn from it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelEntry {
    /// Whether the model takes images; unset: guessed from the name ([`vision_default`]).
    pub vision: Option<bool>,
}

/// Whether images go to `model` as image blocks: the `[models.NAME] vision` flag, else true for
/// the families known to take images (Claude 3 and later, GPT-4o, GPT-4.1, GPT-5, o-series).
pub fn supports_vision(models: &BTreeMap<String, ModelEntry>, model: &str) -> bool {
    models
        .get(model)
        .and_then(|m| m.vision)
        .unwrap_or_else(|| vision_default(model))
}

/// The name-based guess used when config says nothing.
pub fn vision_default(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or(&m);
    (m.starts_with("claude-") && !m.starts_with("claude-2") && !m.starts_with("claude-instant"))
        || m.starts_with("gpt-4o")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-5")
        || m.starts_with("o3")
        || m.starts_with("o4")
}

/// The saved photos among `media` to hand a vision model, oldest first (at most
/// [`MAX_IMAGES_PER_PROMPT`]); none when the group's model takes no images.
pub fn images_for_model(
    config: &crate::infra::config::Config,
    group: &crate::infra::store::groups::Group,
    media: &std::collections::HashMap<i64, Vec<crate::infra::store::attachments::Attachment>>,
) -> Vec<String> {
    let model = group
        .config
        .model
        .clone()
        .unwrap_or_else(|| config.model.name.clone());
    if !supports_vision(&config.models, &model) {
        return vec![];
    }
    let mut seqs: Vec<&i64> = media.keys().collect();
    seqs.sort();
    seqs.into_iter()
        .flat_map(|s| &media[s])
        .filter(|a| a.kind == Kind::Photo && a.status == "ok")
        .filter_map(|a| a.path.clone())
        .take(MAX_IMAGES_PER_PROMPT)
        .collect()
}

/// Most images sent with one prompt (providers cap images per request; tokens add up).
pub const MAX_IMAGES_PER_PROMPT: usize = 8;

/// Human size: `842 B`, `12 KB`, `1.2 MB`.
pub fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_follows_the_content() {
        assert_eq!(Kind::checked(Some(Kind::Photo), "image/jpeg"), Kind::Photo);
        assert_eq!(
            Kind::checked(Some(Kind::Photo), "application/pdf"),
            Kind::Document
        );
        assert_eq!(Kind::checked(Some(Kind::Voice), "audio/ogg"), Kind::Voice);
        assert_eq!(
            Kind::checked(Some(Kind::Voice), "text/plain"),
            Kind::Document
        );
        assert_eq!(Kind::checked(None, "image/png"), Kind::Photo);
        assert_eq!(
            Kind::checked(Some(Kind::Document), "image/png"),
            Kind::Document
        );
    }

    #[test]
    fn vision_flag_and_defaults() {
        let mut models = BTreeMap::new();
        assert!(supports_vision(&models, "claude-sonnet-4-5"));
        assert!(supports_vision(&models, "gpt-4o-mini"));
        assert!(!supports_vision(&models, "llama3"));
        models.insert("llama3".into(), ModelEntry { vision: Some(true) });
        models.insert(
            "gpt-4o".into(),
            ModelEntry {
                vision: Some(false),
            },
        );
        assert!(supports_vision(&models, "llama3"));
        assert!(!supports_vision(&models, "gpt-4o"));
    }
}
