//! How the proxy asks the owner before an act that leaves the sandbox (reaching a host not on the
//! group's egress list, using a bound credential). The proxy never touches SQLite: run-group gives
//! it an [`Asker`], a function that records the question (an approval row), waits for the owner's
//! answer or the timeout, and returns the decision. The proxy holds the agent's connection while
//! it waits, so the act either happens once, approved, or not at all.

use std::sync::Arc;

/// An act the proxy wants the owner to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// CONNECT or plain-HTTP egress to a host that is not on the group's allowlist.
    Egress { host: String, port: u16 },
    /// A bound credential about to be substituted into a request to `host`.
    Credential { name: String, host: String },
}

/// The owner's answer, as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead, this once.
    Approved,
    /// Refused by the owner or by policy; the text says why, for the agent.
    Denied(String),
    /// Nobody answered within the configured time.
    Expired,
}

/// The request header in which an agent states why it wants an act (shown to the owner on the
/// card). Read from the `CONNECT` head or a plain-HTTP request, never forwarded upstream.
pub const REASON_HEADER: &str = "x-claw-reason";
/// Characters of a stated reason kept; the rest is cut (the card must stay readable).
pub const MAX_REASON_CHARS: usize = 300;

/// Asks the owner: blocks until the act is decided; called on a proxy connection thread. The
/// second argument is the agent's stated reason, if it gave one.
#[derive(Clone)]
pub struct Asker(pub Arc<dyn Fn(Act, Option<String>) -> Decision + Send + Sync>);

impl Asker {
    /// Ask about one act and wait for the decision.
    pub fn ask(&self, act: Act) -> Decision {
        (self.0)(act, None)
    }

    /// Ask about one act, with the agent's stated reason, and wait for the decision.
    pub fn ask_with_reason(&self, act: Act, reason: Option<String>) -> Decision {
        (self.0)(act, reason)
    }
}

/// The stated reason from a header value: one line, printable, at most [`MAX_REASON_CHARS`];
/// `None` when nothing readable is left.
pub fn clean_reason(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (!s.is_empty()).then_some(s)
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Asker")
    }
}
