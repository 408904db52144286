//! Registering chats as groups: every rule about folder names and the one main group lives here.

pub mod change;

use anyhow::{Context, Result, bail};

use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::store::groups::{self as q, Group, GroupConfig};
use crate::infra::store::{Store, audit, messages};

/// Check a group folder name: `^[a-z0-9][a-z0-9_-]{0,63}$`, and not `global`.
pub fn validate_folder(folder: &str) -> Result<(), String> {
    let ok_first = folder
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = folder
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if folder.is_empty() || folder.len() > 64 || !ok_first || !ok_rest {
        return Err(format!(
            "group folder `{folder}` is not allowed: use 1–64 lowercase letters, digits, `-` or `_`, starting with a letter or digit"
        ));
    }
    if folder == "global" || folder == "errors" {
        return Err(format!(
            "group folder `{folder}` is reserved; pick another name"
        ));
    }
    Ok(())
}

/// Check a chat id: `channel:rest`, with `rest` in a conservative character set per channel
/// (`tg:` a number, `wa:` a jid, `sig:` a phone number, UUID or group id, `cli:` a word, any other
/// channel letters, digits and `@._+=:/-`). Ids are printed in notices and suggested commands, so
/// nothing a shell or a terminal would act on may pass.
pub fn validate_chat_id(chat: &str) -> Result<(), String> {
    validate_chat_shape(chat)?;
    let (ch, rest) = chat.split_once(':').unwrap_or(("", ""));
    let word = |c: char, extra: &str| c.is_ascii_alphanumeric() || extra.contains(c);
    let (ok, what) = match ch {
        "tg" => (
            rest.strip_prefix('-')
                .unwrap_or(rest)
                .chars()
                .all(|c| c.is_ascii_digit())
                && rest.len() <= 21,
            "a Telegram chat number such as `tg:-100123`",
        ),
        "wa" => (
            rest.split_once('@').is_some_and(|(user, server)| {
                !user.is_empty()
                    && !server.is_empty()
                    && user.chars().all(|c| word(c, "._:-"))
                    && server.chars().all(|c| c.is_ascii_lowercase() || c == '.')
            }),
            "a WhatsApp jid such as `wa:1203630@g.us`",
        ),
        "sig" => (
            rest.chars().all(|c| word(c, "+/=-")),
            "a Signal number, UUID or group id such as `sig:+4915112345678`",
        ),
        "cli" => (
            rest.chars().all(|c| word(c, "._-")),
            "a word such as `cli:local`",
        ),
        _ => (
            rest.chars().all(|c| word(c, "@._+=:/-")),
            "letters, digits and `@._+=:/-` after the channel prefix",
        ),
    };
    if !ok {
        return Err(format!(
            "chat id `{}` is not allowed: expected {what}",
            crate::infra::output::clean_line(chat)
        ));
    }
    Ok(())
}

fn validate_chat_shape(chat: &str) -> Result<(), String> {
    let shown = crate::infra::output::clip(chat, 80);
    if chat.len() > 200 {
        return Err(format!(
            "chat id `{shown}` is {} bytes; the limit is 200",
            chat.len()
        ));
    }
    let Some((ch, rest)) = chat.split_once(':') else {
        return Err(format!(
            "chat id `{shown}` needs a channel prefix, e.g. `tg:-100123` or `cli:local`"
        ));
    };
    if ch.is_empty()
        || rest.is_empty()
        || !ch
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(format!(
            "chat id `{shown}` must look like `channel:id` with a lowercase channel prefix"
        ));
    }
    Ok(())
}

/// What `claw group add` asks for.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub chat_id: String,
    pub folder: String,
    pub name: Option<String>,
    pub trigger: Option<String>,
    pub requires_trigger: bool,
    pub is_main: bool,
    pub allowed_senders: Option<Vec<String>>,
}

/// Register a chat as a group and create its folders. `by` names who asked (for the audit).
pub fn add(
    store: &mut Store,
    home: &Home,
    default_trigger: &str,
    g: NewGroup,
    by: &str,
) -> Result<Group> {
    validate_folder(&g.folder).map_err(|e| Coded::err(Code::Usage, e))?;
    validate_chat_id(&g.chat_id).map_err(|e| Coded::err(Code::Usage, e))?;
    let trigger = g
        .trigger
        .clone()
        .unwrap_or_else(|| default_trigger.to_string());
    validate_trigger(&trigger).map_err(|e| Coded::err(Code::Usage, e))?;
    let tx = store.write()?;
    if q::get(&tx, &g.folder)?.is_some() {
        return Err(Coded::err(
            Code::Usage,
            format!("group folder `{}` is already registered", g.folder),
        ));
    }
    if let Some(other) = q::by_chat(&tx, &g.chat_id)? {
        return Err(Coded::err(
            Code::Usage,
            format!(
                "chat {} is already registered as group `{}`",
                g.chat_id, other.folder
            ),
        ));
    }
    if g.is_main
        && let Some(m) = q::main(&tx)?
    {
        return Err(Coded::err(
            Code::Usage,
            format!(
                "there is already a main group (`{}`); there can be only one",
                m.folder
            ),
        ));
    }
    let now = crate::infra::time::now_ms();
    let chat = messages::chat(&tx, &g.chat_id)?;
    messages::upsert_chat(
        &tx,
        &g.chat_id,
        g.name.as_deref(),
        None,
        chat.as_ref().map_or(now, |c| c.last_activity),
        None,
    )?;
    let name = g
        .name
        .clone()
        .or_else(|| chat.and_then(|c| c.name))
        .unwrap_or_else(|| g.folder.clone());
    let group = Group {
        folder: g.folder.clone(),
        chat_id: g.chat_id.clone(),
        name,
        trigger,
        requires_trigger: g.requires_trigger,
        is_main: g.is_main,
        config: GroupConfig::default(),
        allowed_senders: g.allowed_senders.clone(),
        added_at: now,
    };
    q::insert(&tx, &group)?;
    // Earlier messages were never stored (the chat was unknown), so start from the current end.
    let start = messages::max_seq(&tx, &g.chat_id)?;
    q::advance_cursor(&tx, &g.folder, start)?;
    audit::record(
        &tx,
        Some(&g.folder),
        None,
        "group.registered",
        serde_json::json!({"chat": g.chat_id, "is_main": g.is_main, "by": by}),
    )?;
    tx.commit()?;
    create_folders(home, &g.folder)?;
    Ok(group)
}

/// Create a group's workspace, session and IPC folders and its first memory file (idempotent).
/// All of it goes through `untrusted`: an agent may have planted links or FIFOs in these trees,
/// and a memory file that exists in any form is left alone, never written through.
pub fn create_folders(home: &Home, folder: &str) -> Result<()> {
    let memory = format!("# Memory for {folder}\n\nNotes the assistant keeps about this chat.\n");
    let done = crate::infra::untrusted::create_group(home, folder, &memory)
        .with_context(|| format!("cannot create the folders of group `{folder}`"))?;
    for d in &done.displaced {
        tracing::warn!(folder, "{d}");
    }
    Ok(())
}

/// A trigger must be a single word such as `@Andy`.
pub fn validate_trigger(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 64 || t.chars().any(char::is_whitespace) {
        return Err(format!(
            "trigger `{t}` must be one word of at most 64 characters, like `@Andy`"
        ));
    }
    Ok(())
}

/// Remove a group's registration; its folders stay on disk.
pub fn remove(store: &mut Store, folder: &str) -> Result<Group> {
    let tx = store.write()?;
    let Some(g) = q::get(&tx, folder)? else {
        bail!(Coded {
            code: Code::Usage,
            message: format!("no group `{folder}`; see `claw group list`")
        });
    };
    if g.is_main {
        bail!(Coded {
            code: Code::Usage,
            message: "the main group cannot be removed; it is the owner's admin channel".into()
        });
    }
    q::delete(&tx, folder)?;
    audit::record(
        &tx,
        Some(folder),
        None,
        "group.removed",
        serde_json::json!({"chat": g.chat_id}),
    )?;
    tx.commit()?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_rules() {
        for ok in ["main", "a", "family-chat", "x_1", "0", &"a".repeat(64)] {
            assert!(validate_folder(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "/x",
            "Main",
            "global",
            "-x",
            "_x",
            "a b",
            "a/b",
            "a.b",
            &"a".repeat(65),
            "é",
        ] {
            assert!(validate_folder(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_id_rules() {
        for ok in [
            "tg:-100123",
            "tg:42",
            "wa:1203@g.us",
            "wa:120363012345678901@g.us",
            "wa:4915112345678@s.whatsapp.net",
            "wa:1234-5678@g.us",
            "wa:99887766@lid",
            "sig:+4915112345678",
            "sig:R3JvdXBJZEZvclRlc3Rz+/8=",
            "sig:0b0e0e3c-8f7a-4c8e-9d43-1b2c3d4e5f60",
            "cli:local",
            "matrix:room:example.org",
            "mx:room_1@example.org",
        ] {
            assert!(validate_chat_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "nochannel",
            ":x",
            "tg:",
            "TG:1",
            "tg:a b",
            "tg:\n",
            "tg:evil",
            "tg:-1`id`",
            "tg:1;rm -rf ~",
            "wa:$(id)@g.us",
            "wa:1203",
            "wa:1@G.US",
            "sig:+49 151",
            "sig:x`y`",
            "cli:a/b",
            "mx:a`b`",
            "mx:a$b",
            "mx:a'b",
            "mx:a\u{1b}]0;x",
            &format!("tg:{}", "1".repeat(30)),
            &format!("mx:{}", "a".repeat(300)),
        ] {
            assert!(validate_chat_id(bad).is_err(), "{bad}");
        }
    }
}
