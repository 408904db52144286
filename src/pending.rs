//! The pending-work rule: which messages since a group's cursor are waiting, and whether they
//! may start a run under the trigger and sender rules (DESIGN.md §4). Pure, so dispatch, status
//! and run-group all decide the same way.

use serde::Serialize;

use crate::store::groups::Group;
use crate::store::messages::Message;

/// True when `text` starts with `trigger` (case-insensitive) followed by a word boundary.
pub fn has_trigger(text: &str, trigger: &str) -> bool {
    let t = text.trim_start();
    let Some(head) = t.get(..trigger.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(trigger) {
        return false;
    }
    match t[trigger.len()..].chars().next() {
        None => true,
        Some(c) => !(c.is_alphanumeric() || c == '_'),
    }
}

/// True when this sender may trigger a run in this group.
pub fn sender_allowed(group: &Group, m: &Message) -> bool {
    if m.from_me {
        return true;
    }
    match &group.allowed_senders {
        None => true,
        Some(list) => list.iter().any(|s| s == &m.sender),
    }
}

/// Whether a group should run now, and why (not).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub pending: usize,
    pub runnable: bool,
    pub reason: String,
}

/// Decide from the pending messages (oldest first, assistant's own excluded).
pub fn decide(group: &Group, pending: &[Message]) -> Decision {
    let n = pending.len();
    if n == 0 {
        return Decision {
            pending: 0,
            runnable: false,
            reason: "no pending messages".into(),
        };
    }
    let allowed: Vec<&Message> = pending
        .iter()
        .filter(|m| sender_allowed(group, m))
        .collect();
    if allowed.is_empty() {
        return Decision {
            pending: n,
            runnable: false,
            reason: "pending messages are from senders not on the allowlist (kept as context)"
                .into(),
        };
    }
    if group.is_main {
        return Decision {
            pending: n,
            runnable: true,
            reason: "main group: every message runs".into(),
        };
    }
    if !group.requires_trigger {
        return Decision {
            pending: n,
            runnable: true,
            reason: "trigger not required in this group".into(),
        };
    }
    if allowed.iter().any(|m| has_trigger(&m.text, &group.trigger)) {
        return Decision {
            pending: n,
            runnable: true,
            reason: format!("a message starts with {}", group.trigger),
        };
    }
    Decision {
        pending: n,
        runnable: false,
        reason: format!(
            "waiting for a message starting with {} (the rest is kept as context)",
            group.trigger
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::groups::GroupConfig;

    fn group(is_main: bool, requires_trigger: bool, allowed: Option<Vec<&str>>) -> Group {
        Group {
            folder: "g".into(),
            chat_id: "tg:1".into(),
            name: "G".into(),
            trigger: "@Andy".into(),
            requires_trigger,
            is_main,
            config: GroupConfig::default(),
            allowed_senders: allowed.map(|v| v.into_iter().map(String::from).collect()),
            added_at: 0,
        }
    }

    fn msg(sender: &str, text: &str) -> Message {
        Message {
            seq: 1,
            chat_id: "tg:1".into(),
            msg_id: "1".into(),
            sender: sender.into(),
            sender_name: "S".into(),
            text: text.into(),
            sent_at: 0,
            from_me: false,
            is_bot: false,
            reply_to_sender: None,
            reply_to_text: None,
        }
    }

    #[test]
    fn trigger_is_a_case_insensitive_prefix_at_a_word_boundary() {
        let cases = [
            ("@andy hi", true),
            ("@Andy", true),
            ("  @ANDY, hi", true),
            ("@Andy: do it", true),
            ("hello @Andy", false),
            ("@Andyx", false),
            ("@Andy_x", false),
            ("@And", false),
            ("", false),
            ("@Andé", false),
        ];
        for (text, want) in cases {
            assert_eq!(has_trigger(text, "@Andy"), want, "{text:?}");
        }
    }

    #[test]
    fn main_runs_on_every_message() {
        assert!(decide(&group(true, true, None), &[msg("a", "hello")]).runnable);
    }

    #[test]
    fn other_groups_need_the_trigger_unless_turned_off() {
        let g = group(false, true, None);
        assert!(!decide(&g, &[msg("a", "hello @Andy")]).runnable);
        assert!(decide(&g, &[msg("a", "context"), msg("b", "@andy summarise")]).runnable);
        assert!(decide(&group(false, false, None), &[msg("a", "hello")]).runnable);
        assert!(!decide(&g, &[]).runnable);
    }

    #[test]
    fn denied_senders_never_trigger_but_stay_pending() {
        let g = group(false, true, Some(vec!["tg:ok"]));
        let d = decide(&g, &[msg("tg:evil", "@Andy rm -rf")]);
        assert!(!d.runnable);
        assert_eq!(d.pending, 1);
        assert!(decide(&g, &[msg("tg:evil", "context"), msg("tg:ok", "@Andy go")]).runnable);
        let mut own = msg("tg:evil", "@Andy from the owner");
        own.from_me = true;
        assert!(decide(&g, &[own]).runnable);
        let main = group(true, true, Some(vec!["tg:ok"]));
        assert!(!decide(&main, &[msg("tg:evil", "hi")]).runnable);
    }
}
