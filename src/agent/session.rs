//! The transcript on disk and its compaction.
//!
//! It owns `$CLAW_STATE_DIR/sessions/<id>.json` and the archives in `$group/conversations/`.
//! It never deletes history without archiving it first.

use super::ctx::Ctx;
use super::providers::{self, Request};
use super::transcript::{Block, Message, to_markdown};
use super::transport::CallError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One conversation: its id, its messages and what the model last said about its size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub messages: Vec<Message>,
    /// Input tokens the provider reported for the latest call (0 when unknown).
    #[serde(default)]
    pub last_input_tokens: u64,
}

/// A fresh, unique session id.
pub fn new_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "s{}-{}-{}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    )
}

/// True for ids safe to use as file names.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn file(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("sessions").join(format!("{id}.json"))
}

impl Session {
    /// Resume `id` if its transcript exists, else start fresh (saying why on stderr).
    pub fn open(state_dir: &Path, id: Option<&str>) -> Session {
        let Some(id) = id else {
            return Session {
                id: new_id(),
                ..Default::default()
            };
        };
        if !valid_id(id) {
            super::log(&format!(
                "session id {id:?} is not a safe file name; starting a fresh session"
            ));
            return Session {
                id: new_id(),
                ..Default::default()
            };
        }
        let path = file(state_dir, id);
        match std::fs::read_to_string(&path).map(|t| serde_json::from_str::<Session>(&t)) {
            Ok(Ok(mut s)) => {
                s.id = id.to_string();
                s
            }
            Ok(Err(e)) => {
                super::log(&format!(
                    "transcript {} is unreadable ({e}); starting a fresh session",
                    path.display()
                ));
                Session {
                    id: new_id(),
                    ..Default::default()
                }
            }
            Err(_) => {
                super::log(&format!(
                    "no transcript at {}; starting a fresh session under that id",
                    path.display()
                ));
                Session {
                    id: id.to_string(),
                    ..Default::default()
                }
            }
        }
    }

    /// Write the transcript atomically.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let path = file(state_dir, &self.id);
        std::fs::create_dir_all(path.parent().expect("sessions folder"))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(tmp, path)
    }

    /// Estimated context size in tokens.
    pub fn estimate_tokens(&self) -> u64 {
        let chars: usize = self.messages.iter().map(Message::chars).sum();
        self.last_input_tokens.max(chars as u64 / 4)
    }
}

/// Index where the kept part starts: the latest turn start after the first message.
fn split_point(messages: &[Message]) -> Option<usize> {
    (1..messages.len())
        .rev()
        .find(|&i| messages[i].starts_turn())
}

/// If the context passed ~75% of the window, let the model save what matters to its memory file
/// (`memory::flush`), then summarise older turns, archive them, keep the rest. Returns the
/// archive path when it compacted.
pub fn maybe_compact(
    ctx: &Ctx,
    system: &str,
    s: &mut Session,
) -> Result<Option<PathBuf>, CallError> {
    let window = ctx.start.model.context_window as u64;
    if s.estimate_tokens() * 4 < window * 3 {
        return Ok(None);
    }
    let Some(k) = split_point(&s.messages) else {
        return Ok(None);
    };
    // Memory first, while the model still sees every turn: what it writes outlives the archive.
    match super::memory::flush(ctx, system, &s.messages) {
        Ok(line) => super::log(&format!(
            "memory turn before compaction: {}",
            line.chars().take(200).collect::<String>()
        )),
        Err(CallError::Fatal(m)) => return Err(CallError::Fatal(m)),
        Err(e) => super::log(&format!(
            "memory turn before compaction failed ({e}); archiving anyway"
        )),
    }
    let old = &s.messages[..k];
    let md = to_markdown(old);
    // The summary request must itself fit: send at most about half the window.
    let budget = (window as usize * 2).max(2000);
    let mut from = md.len().saturating_sub(budget);
    while !md.is_char_boundary(from) {
        from += 1;
    }
    let shown = &md[from..];
    let ask = Message::user_text(&format!(
        "Summarise the conversation below for your own future reference: decisions, facts learned, open tasks, \
         names and preferences. Be concise.\n\n<conversation>\n{shown}\n</conversation>"
    ));
    let reply = providers::complete(
        &ctx.http,
        &Request {
            settings: &ctx.start.model,
            system: "You write concise summaries of conversations.",
            messages: std::slice::from_ref(&ask),
            tools: &[],
            // Sent once and never again: a cache write would only cost 25% more.
            cache: false,
        },
    )?;
    ctx.add_usage(reply.usage);
    let summary: String = reply
        .content
        .iter()
        .filter_map(|b| {
            if let Block::Text { text } = b {
                Some(text.as_str())
            } else {
                None
            }
        })
        .collect();
    let archive = archive(&ctx.paths.group(), &md, &summary).map_err(|e| {
        CallError::Failed(format!(
            "cannot archive the conversation before compacting: {e}"
        ))
    })?;
    let mut kept = s.messages.split_off(k);
    kept[0].content.insert(
        0,
        Block::Text {
            text: format!(
                "<summary of earlier conversation, archived at {}>\n{summary}\n</summary>",
                archive.display()
            ),
        },
    );
    s.messages = kept;
    s.last_input_tokens = 0;
    Ok(Some(archive))
}

/// Write the old turns (and their summary) as Markdown under `conversations/`.
fn archive(group: &Path, md: &str, summary: &str) -> std::io::Result<PathBuf> {
    let dir = group.join("conversations");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y-%m-%d-%H%M%S").to_string();
    let mut path = dir.join(format!("{stamp}.md"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("{stamp}-{n}.md"));
    }
    std::fs::write(
        &path,
        format!(
            "# Conversation archived {stamp}\n\n## Summary\n\n{summary}\n\n## Transcript\n\n{md}"
        ),
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::transcript::Role;

    #[test]
    fn split_keeps_the_latest_turn_and_never_orphans_tool_results() {
        let tool_result = Message {
            role: Role::User,
            content: vec![Block::ToolResult {
                tool_use_id: "t".into(),
                content: "x".into(),
                is_error: false,
            }],
        };
        let asst = Message {
            role: Role::Assistant,
            content: vec![Block::Text { text: "a".into() }],
        };
        let msgs = vec![
            Message::user_text("1"),
            asst.clone(),
            Message::user_text("2"),
            asst.clone(),
            tool_result,
            asst,
        ];
        assert_eq!(split_point(&msgs), Some(2));
        assert_eq!(split_point(&msgs[..2]), None);
    }

    #[test]
    fn ids_are_checked_and_missing_transcripts_start_fresh() {
        assert!(valid_id("s1-2_3"));
        assert!(!valid_id("../x"));
        let dir = std::env::temp_dir().join(format!("claw-sess-{}", std::process::id()));
        let s = Session::open(&dir, Some("abc"));
        assert_eq!((s.id.as_str(), s.messages.len()), ("abc", 0));
        let mut s = s;
        s.messages.push(Message::user_text("hi"));
        s.save(&dir).unwrap();
        assert_eq!(Session::open(&dir, Some("abc")).messages, s.messages);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
