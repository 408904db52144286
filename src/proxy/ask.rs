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

/// Asks the owner: blocks until the act is decided; called on a proxy connection thread.
#[derive(Clone)]
pub struct Asker(pub Arc<dyn Fn(Act) -> Decision + Send + Sync>);

impl Asker {
    /// Ask about one act and wait for the decision.
    pub fn ask(&self, act: Act) -> Decision {
        (self.0)(act)
    }
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Asker")
    }
}
