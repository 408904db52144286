//! The pending-work rule: which messages since a group's cursor are waiting, and whether they
//! may start a run under the trigger and sender rules (docs/ARCHITECTURE.md, "Who may start a
//! run"). Pure, so dispatch, status and run-group all decide the same way.

use serde::Serialize;

use crate::infra::store::groups::Group;
use crate::infra::store::messages::Message;

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

fn allowed(group: &Group, sender: &str, from_me: bool) -> bool {
    if from_me {
        return true;
    }
    match &group.allowed_senders {
        None => true,
        Some(list) => list.iter().any(|s| s == sender),
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
    let mut scan = Scan::new(group, pending.len());
    // Newest first, like callers that stream from the database.
    for m in pending.iter().rev() {
        if scan.push(m) {
            break;
        }
    }
    scan.finish()
}

/// The same rule as [`decide`], fed one message at a time so a caller reading from the database
/// can stop as soon as the answer is known (`claw status` over many groups depends on this).
pub struct Scan<'g> {
    group: &'g Group,
    pending: usize,
    any_allowed: bool,
    runnable: Option<String>,
}

impl<'g> Scan<'g> {
    /// Start a decision for `group` with `pending` messages waiting in all.
    pub fn new(group: &'g Group, pending: usize) -> Scan<'g> {
        Scan {
            group,
            pending,
            any_allowed: false,
            runnable: None,
        }
    }

    /// Look at one pending message; returns true once the group is known to be runnable.
    pub fn push(&mut self, m: &Message) -> bool {
        self.push_parts(&m.sender, m.from_me, &m.text)
    }

    /// [`Scan::push`] for callers holding only the fields the rule reads.
    pub fn push_parts(&mut self, sender: &str, from_me: bool, text: &str) -> bool {
        if self.runnable.is_some() {
            return true;
        }
        if !allowed(self.group, sender, from_me) {
            return false;
        }
        self.any_allowed = true;
        let g = self.group;
        self.runnable = if g.is_main {
            Some("main group: every message runs".into())
        } else if !g.requires_trigger {
            Some("trigger not required in this group".into())
        } else if has_trigger(text, &g.trigger) {
            Some(format!("a message starts with {}", g.trigger))
        } else {
            None
        };
        self.runnable.is_some()
    }

    /// The decision from what was pushed.
    pub fn finish(self) -> Decision {
        let pending = self.pending;
        let (runnable, reason) = if pending == 0 {
            (false, "no pending messages".to_string())
        } else if let Some(why) = self.runnable {
            (true, why)
        } else if !self.any_allowed {
            (
                false,
                "pending messages are from senders not on the allowlist (kept as context)".into(),
            )
        } else {
            (
                false,
                format!(
                    "waiting for a message starting with {} (the rest is kept as context)",
                    self.group.trigger
                ),
            )
        };
        Decision {
            pending,
            runnable,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::store::groups::GroupConfig;

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
    fn a_scan_stops_at_the_deciding_message_and_keeps_the_full_count() {
        let g = group(false, true, Some(vec!["tg:ok"]));
        let mut scan = Scan::new(&g, 120);
        assert!(!scan.push_parts("tg:evil", false, "@Andy no"));
        assert!(!scan.push_parts("tg:ok", false, "plain"));
        assert!(scan.push_parts("tg:ok", false, "@andy yes"));
        // Once decided, later messages cannot undo it.
        assert!(scan.push_parts("tg:evil", false, "x"));
        let d = scan.finish();
        assert_eq!((d.pending, d.runnable), (120, true));
        let mut denied = Scan::new(&g, 3);
        denied.push_parts("tg:evil", false, "@Andy");
        assert!(denied.finish().reason.contains("allowlist"));
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
