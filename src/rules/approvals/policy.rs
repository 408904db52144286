//! Which acts that leave the sandbox need the owner's yes: every decision of the form "may group
//! G do act A without asking" is made here, as pure functions over the config and the group.
//!
//! Built-in defaults keep the behaviour claw had before approvals existed: egress to a host that
//! is not on the group's list is refused, a bound credential is used, a non-main group may not
//! message another chat (main may), a non-main group may schedule its own tasks, and adding an
//! MCP server always asks.

use serde::{Deserialize, Serialize};

use crate::infra::config::Config;
use crate::infra::store::groups::Group;

/// What to do about one kind of act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Go ahead without asking.
    Allow,
    /// Refuse without asking.
    Deny,
    /// Ask the owner in the main chat and wait for the answer (or the timeout: denied).
    Ask,
}

impl Policy {
    /// Parse `allow`, `deny` or `ask`.
    pub fn parse(s: &str) -> Result<Policy, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(Policy::Allow),
            "deny" => Ok(Policy::Deny),
            "ask" => Ok(Policy::Ask),
            other => Err(format!("`{other}` is not a policy: use allow, deny or ask")),
        }
    }

    /// The word, as written in config and shown in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Allow => "allow",
            Policy::Deny => "deny",
            Policy::Ask => "ask",
        }
    }
}

/// The kinds of act a policy covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reaching a host that is not on the group's egress list.
    Egress,
    /// Using a bound credential (first use in a run, or every use).
    Credential,
    /// Sending a message to a chat other than the group's own.
    SendMessage,
    /// Adding an MCP server to a group.
    AddMcpServer,
    /// A non-main group scheduling a task.
    ScheduleTask,
}

/// Every kind, in the order listings show them.
pub const KINDS: [Kind; 5] = [
    Kind::Egress,
    Kind::Credential,
    Kind::SendMessage,
    Kind::AddMcpServer,
    Kind::ScheduleTask,
];

impl Kind {
    /// The name used in config, the CLI, the approvals table and audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Egress => "egress",
            Kind::Credential => "credential",
            Kind::SendMessage => "send_message",
            Kind::AddMcpServer => "add_mcp_server",
            Kind::ScheduleTask => "schedule_task",
        }
    }

    /// Parse a kind name.
    pub fn parse(s: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.as_str() == s)
    }
}

/// Per-group overrides (`claw group set G --approve ACT=POLICY`), kept in the group's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<Policy>,
    /// Ask (when `credential` is `ask`) on every use instead of the first use in a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_every_use: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_message: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_mcp_server: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_task: Option<Policy>,
}

impl Overrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self == &Overrides::default()
    }

    fn get(&self, k: Kind) -> Option<Policy> {
        match k {
            Kind::Egress => self.egress,
            Kind::Credential => self.credential,
            Kind::SendMessage => self.send_message,
            Kind::AddMcpServer => self.add_mcp_server,
            Kind::ScheduleTask => self.schedule_task,
        }
    }

    /// Apply one `ACT=VALUE` setting; `VALUE` may be `default` to drop the override.
    pub fn set(&mut self, setting: &str) -> Result<(), String> {
        let Some((act, value)) = setting.split_once('=') else {
            return Err(format!(
                "`{setting}` is not ACT=POLICY, e.g. egress=ask (acts: {}, credential_every_use=true|false)",
                kind_names()
            ));
        };
        let (act, value) = (act.trim(), value.trim());
        let clear = value.eq_ignore_ascii_case("default");
        if act == "credential_every_use" {
            self.credential_every_use = match value.to_ascii_lowercase().as_str() {
                _ if clear => None,
                "true" | "yes" | "on" => Some(true),
                "false" | "no" | "off" => Some(false),
                _ => {
                    return Err(format!(
                        "credential_every_use takes true or false, not `{value}`"
                    ));
                }
            };
            return Ok(());
        }
        let Some(kind) = Kind::parse(act) else {
            return Err(format!(
                "`{act}` is not an act; use one of {}, credential_every_use",
                kind_names()
            ));
        };
        let p = if clear {
            None
        } else {
            Some(Policy::parse(value)?)
        };
        match kind {
            Kind::Egress => self.egress = p,
            Kind::Credential => self.credential = p,
            Kind::SendMessage => self.send_message = p,
            Kind::AddMcpServer => self.add_mcp_server = p,
            Kind::ScheduleTask => self.schedule_task = p,
        }
        Ok(())
    }
}

fn kind_names() -> String {
    KINDS.map(Kind::as_str).join(", ")
}

/// The `[approvals]` section of claw.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How long an act waits for the owner's answer before it is denied.
    pub timeout_secs: u64,
    /// Cards one run may send, and IPC acts one group may have waiting at once (further acts
    /// that would ask are refused), so a looping agent cannot flood the main chat.
    pub max_per_run: u32,
    pub egress: Option<Policy>,
    pub credential: Option<Policy>,
    pub credential_every_use: bool,
    /// Unset: main may message other chats, other groups may not.
    pub send_message: Option<Policy>,
    pub add_mcp_server: Option<Policy>,
    pub schedule_task: Option<Policy>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout_secs: 600,
            max_per_run: 20,
            egress: None,
            credential: None,
            credential_every_use: false,
            send_message: None,
            add_mcp_server: None,
            schedule_task: None,
        }
    }
}

impl Settings {
    fn get(&self, k: Kind) -> Option<Policy> {
        match k {
            Kind::Egress => self.egress,
            Kind::Credential => self.credential,
            Kind::SendMessage => self.send_message,
            Kind::AddMcpServer => self.add_mcp_server,
            Kind::ScheduleTask => self.schedule_task,
        }
    }
}

/// The policy built in for `kind` when neither the group nor the config names one.
pub fn builtin(kind: Kind, is_main: bool) -> Policy {
    match kind {
        Kind::Egress => Policy::Deny,
        Kind::Credential => Policy::Allow,
        Kind::SendMessage if is_main => Policy::Allow,
        Kind::SendMessage => Policy::Deny,
        Kind::AddMcpServer => Policy::Ask,
        // Main's own scheduling is administration, never asked about.
        Kind::ScheduleTask => Policy::Allow,
    }
}

/// The policy for `kind` in a group: its override, else the config's, else the built-in one.
/// Main's scheduling is never governed (it is the owner's own chat).
pub fn resolve(settings: &Settings, overrides: &Overrides, is_main: bool, kind: Kind) -> Policy {
    if kind == Kind::ScheduleTask && is_main {
        return Policy::Allow;
    }
    overrides
        .get(kind)
        .or(settings.get(kind))
        .unwrap_or_else(|| builtin(kind, is_main))
}

/// [`resolve`] for a stored group.
pub fn for_group(config: &Config, group: &Group, kind: Kind) -> Policy {
    resolve(
        &config.approvals,
        &group.config.approve,
        group.is_main,
        kind,
    )
}

/// Whether a group asks on every use of a credential rather than the first in a run.
pub fn every_use(config: &Config, group: &Group) -> bool {
    group
        .config
        .approve
        .credential_every_use
        .unwrap_or(config.approvals.credential_every_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_defaults_keep_todays_behaviour() {
        let s = Settings::default();
        let o = Overrides::default();
        let cases = [
            (Kind::Egress, false, Policy::Deny),
            (Kind::Egress, true, Policy::Deny),
            (Kind::Credential, false, Policy::Allow),
            (Kind::SendMessage, false, Policy::Deny),
            (Kind::SendMessage, true, Policy::Allow),
            (Kind::AddMcpServer, true, Policy::Ask),
            (Kind::ScheduleTask, false, Policy::Allow),
            (Kind::ScheduleTask, true, Policy::Allow),
        ];
        for (k, main, want) in cases {
            assert_eq!(resolve(&s, &o, main, k), want, "{k:?} main={main}");
        }
    }

    #[test]
    fn group_beats_config_beats_builtin_and_main_scheduling_is_never_asked() {
        let s = Settings {
            egress: Some(Policy::Ask),
            schedule_task: Some(Policy::Ask),
            ..Settings::default()
        };
        let mut o = Overrides::default();
        assert_eq!(resolve(&s, &o, false, Kind::Egress), Policy::Ask);
        o.set("egress=allow").unwrap();
        assert_eq!(resolve(&s, &o, false, Kind::Egress), Policy::Allow);
        o.set("egress=default").unwrap();
        assert_eq!(resolve(&s, &o, false, Kind::Egress), Policy::Ask);
        assert_eq!(resolve(&s, &o, false, Kind::ScheduleTask), Policy::Ask);
        assert_eq!(resolve(&s, &o, true, Kind::ScheduleTask), Policy::Allow);
    }

    #[test]
    fn settings_parse_or_say_what_is_wrong() {
        let mut o = Overrides::default();
        for ok in [
            "egress=ask",
            "credential=deny",
            "send_message=ALLOW",
            "add_mcp_server = ask",
            "schedule_task=deny",
            "credential_every_use=true",
        ] {
            o.set(ok).unwrap();
        }
        assert_eq!(o.credential_every_use, Some(true));
        assert_eq!(o.send_message, Some(Policy::Allow));
        for (bad, says) in [
            ("egress", "ACT=POLICY"),
            ("fly=ask", "not an act"),
            ("egress=maybe", "not a policy"),
            ("credential_every_use=sometimes", "true or false"),
        ] {
            let e = o.set(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
