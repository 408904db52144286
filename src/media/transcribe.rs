//! Voice notes to text through an OpenAI-compatible `POST /v1/audio/transcriptions` (OpenAI,
//! Groq, a local whisper server). Runs on the host at ingest, so the key stays in secrets.env
//! and never reaches a container; the audio is streamed from the inbox file as multipart.
//!
//! Formats the endpoint does not take are converted with `ffmpeg` (to 16 kHz mono WAV) only
//! when needed; `claw doctor` says whether ffmpeg is there.

use std::io::Read;
use std::time::Duration;

use super::TranscriptionConfig;
use crate::infra::secrets::Secrets;

/// Longest transcript kept (the rest is cut with a marker).
pub const MAX_TRANSCRIPT_BYTES: usize = 16 * 1024;
/// Most bytes sent to the endpoint (OpenAI's limit is 25 MB).
const MAX_UPLOAD: u64 = 25 * 1024 * 1024;

/// A configured transcription endpoint.
pub struct Transcriber {
    url: String,
    model: String,
    key: Option<String>,
    accepts: Vec<String>,
    agent: ureq::Agent,
}

impl Transcriber {
    /// `None` when `[media.transcription] base_url` is empty (transcription off).
    pub fn from_config(cfg: &TranscriptionConfig, secrets: &Secrets) -> Option<Transcriber> {
        let base = cfg.base_url.trim().trim_end_matches('/');
        if base.is_empty() {
            return None;
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(cfg.timeout_secs.max(1))))
            .build()
            .into();
        let url = if base.ends_with("/v1") {
            format!("{base}/audio/transcriptions")
        } else {
            format!("{base}/v1/audio/transcriptions")
        };
        Some(Transcriber {
            url,
            model: cfg.model.clone(),
            key: secrets.get(&cfg.key_env).map(str::to_string),
            accepts: cfg.accepts.clone(),
            agent,
        })
    }

    /// Transcribe audio of type `mime` read from `file` (`len` bytes). Errors never contain the key.
    pub fn transcribe(
        &self,
        file: std::fs::File,
        len: u64,
        mime: &str,
        name: &str,
    ) -> Result<String, String> {
        let (reader, len, mime, name): (Box<dyn Read + Send>, u64, String, String) =
            if self.accepts.iter().any(|a| a == mime) {
                (Box::new(file), len, mime.to_string(), name.to_string())
            } else {
                let wav = convert_to_wav(file)?;
                let n = wav.len() as u64;
                (
                    Box::new(std::io::Cursor::new(wav)),
                    n,
                    "audio/wav".into(),
                    "voice.wav".into(),
                )
            };
        if len > MAX_UPLOAD {
            return Err(format!(
                "audio is {}, over the 25 MB the endpoint takes",
                super::human_size(len)
            ));
        }
        let body = super::multipart::build(
            &[("model", &self.model), ("response_format", "json")],
            "file",
            &name,
            &mime,
            reader,
            len,
        );
        let mut req = self
            .agent
            .post(&self.url)
            .header("content-type", &body.content_type)
            .header("content-length", body.length.to_string());
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let scrub = |s: String| match &self.key {
            Some(k) if !k.is_empty() => s.replace(k.as_str(), "<key>"),
            _ => s,
        };
        let mut reader = body.reader;
        let mut resp = req
            .send(ureq::SendBody::from_reader(&mut reader))
            .map_err(|e| scrub(format!("transcription request failed: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .map_err(|e| scrub(format!("transcription answer unreadable: {e}")))?;
        if status != 200 {
            let head: String = text.chars().take(200).collect();
            return Err(scrub(format!(
                "transcription endpoint answered {status}: {head}"
            )));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("transcription answer is not JSON: {e}"))?;
        let t = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or("transcription answer has no `text`")?
            .trim();
        Ok(bound(t))
    }
}

fn bound(t: &str) -> String {
    if t.len() <= MAX_TRANSCRIPT_BYTES {
        return t.to_string();
    }
    let mut end = MAX_TRANSCRIPT_BYTES;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} […]", &t[..end])
}

/// Convert audio to 16 kHz mono WAV with ffmpeg (stdin → stdout, no files, no shell).
fn convert_to_wav(file: std::fs::File) -> Result<Vec<u8>, String> {
    let reader = duct::cmd!(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-ac", "1", "-ar",
        "16000", "-f", "wav", "pipe:1"
    )
    .stdin_file(file)
    .stderr_null()
    .reader()
    .map_err(|e| format!("ffmpeg is needed to convert this audio and could not start: {e} (install ffmpeg; `claw doctor` checks it)"))?;
    let mut out = Vec::new();
    (&reader)
        .take(MAX_UPLOAD + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("ffmpeg failed to convert the audio: {e}"))?;
    Ok(out)
}

/// Whether `ffmpeg` runs on this host (for `claw doctor`).
pub fn ffmpeg_available() -> bool {
    duct::cmd!("ffmpeg", "-version")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
