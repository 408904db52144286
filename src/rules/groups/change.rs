//! Changing a registered group's settings (`claw group set`): every rule a new value must meet
//! before it is stored, in one place the CLI and tests call.

use anyhow::Result;

use crate::infra::error::{Code, Coded};
use crate::infra::store::groups::{self as q, ExtraMount, Group};
use crate::infra::store::{Store, audit};

/// What to change; `None` and empty lists leave a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub name: Option<String>,
    pub trigger: Option<String>,
    pub requires_trigger: Option<bool>,
    /// Sender ids added to the allowlist.
    pub allow: Vec<String>,
    /// Drop the sender allowlist (everyone may trigger runs).
    pub allow_everyone: bool,
    pub egress: Vec<String>,
    pub no_egress: Vec<String>,
    /// `ACT=POLICY` settings.
    pub approve: Vec<String>,
    pub timeout_secs: Option<u64>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub allow_model: Vec<String>,
    pub no_allow_model: Vec<String>,
    pub disk_mb: Option<u64>,
    pub runs_per_hour: Option<u32>,
    pub budget: BudgetChange,
    /// `HOST_PATH:NAME[:rw|:ro]` specs.
    pub mount: Vec<String>,
    /// Extra mount names to remove.
    pub unmount: Vec<String>,
    /// `NAME=HOST[,HOST…]:HEADER[:SCHEME]` specs; `NAME=` removes one.
    pub credential: Vec<String>,
}

/// Budget caps to change: money amounts or token counts, 0 clears one, `clear` clears all first.
#[derive(Debug, Clone, Default)]
pub struct BudgetChange {
    pub daily: Option<f64>,
    pub monthly: Option<f64>,
    pub daily_tokens: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub clear: bool,
}

/// Apply `c` to the group `folder` in one IMMEDIATE transaction, audited; returns the new group.
/// A bad value is a usage error and changes nothing.
pub fn change(store: &mut Store, folder: &str, c: Change) -> Result<Group> {
    let tx = store.write()?;
    let mut g = q::get(&tx, folder)?.ok_or_else(|| {
        Coded::err(
            Code::Usage,
            format!("no group `{folder}`; see `claw group list`"),
        )
    })?;
    apply(&mut g, c).map_err(|e| Coded::err(Code::Usage, e))?;
    q::update(&tx, &g)?;
    audit::record(
        &tx,
        Some(&g.folder),
        None,
        "group.updated",
        serde_json::to_value(&g)?,
    )?;
    tx.commit()?;
    Ok(g)
}

/// Apply `c` to `g` in memory; the first bad value is the error.
pub fn apply(g: &mut Group, c: Change) -> Result<(), String> {
    if let Some(n) = c.name {
        g.name = n;
    }
    if let Some(t) = c.trigger {
        super::validate_trigger(&t)?;
        g.trigger = t;
    }
    if let Some(r) = c.requires_trigger {
        g.requires_trigger = r;
    }
    if c.allow_everyone {
        g.allowed_senders = None;
    }
    if !c.allow.is_empty() {
        let list = g.allowed_senders.get_or_insert_with(Vec::new);
        add_new(list, c.allow);
    }
    for h in &c.egress {
        if h.is_empty() || h.contains('/') || h.chars().any(char::is_whitespace) {
            return Err(format!(
                "egress host `{h}` must be `host`, `host:port` or `*.domain`"
            ));
        }
    }
    add_new(&mut g.config.egress, c.egress);
    g.config.egress.retain(|h| !c.no_egress.contains(h));
    for setting in &c.approve {
        g.config
            .approve
            .set(setting)
            .map_err(|e| format!("--approve {e}"))?;
    }
    if let Some(t) = c.timeout_secs {
        g.config.timeout_secs = Some(t);
    }
    if let Some(p) = c.provider {
        if !matches!(p.as_str(), "anthropic" | "openai") {
            return Err(format!(
                "provider `{p}` is unknown: use anthropic or openai"
            ));
        }
        g.config.provider = Some(p);
    }
    if let Some(m) = c.model {
        g.config.model = Some(m);
    }
    for m in &c.allow_model {
        if m.trim().is_empty() || m.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "model name `{m}` must be one word, e.g. `claude-haiku-4-5`"
            ));
        }
    }
    add_new(&mut g.config.models, c.allow_model);
    g.config.models.retain(|m| !c.no_allow_model.contains(m));
    if let Some(d) = c.disk_mb {
        if d == 0 {
            return Err("--disk-mb must be at least 1".into());
        }
        g.config.disk_mb = Some(d);
    }
    if let Some(r) = c.runs_per_hour {
        g.config.runs_per_hour = Some(r);
    }
    apply_budget(&mut g.config.budget, &c.budget)?;
    for spec in &c.mount {
        let m = parse_mount(spec)?;
        g.config.extra_mounts.retain(|e| e.name != m.name);
        g.config.extra_mounts.push(m);
    }
    g.config
        .extra_mounts
        .retain(|m| !c.unmount.contains(&m.name));
    for spec in &c.credential {
        match crate::rules::credentials::parse_spec(spec)? {
            Ok(b) => {
                g.config.credentials.retain(|c| c.name != b.name);
                g.config.credentials.push(b);
            }
            Err(name) => g.config.credentials.retain(|c| c.name != name),
        }
    }
    Ok(())
}

/// Append the values `list` does not hold yet, keeping its order.
fn add_new(list: &mut Vec<String>, values: Vec<String>) {
    for v in values {
        if !list.contains(&v) {
            list.push(v);
        }
    }
}

/// `HOST_PATH:NAME`, `HOST_PATH:NAME:ro` or `HOST_PATH:NAME:rw` (the path may hold colons).
fn parse_mount(spec: &str) -> Result<ExtraMount, String> {
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (host, name, rw) = match parts.as_slice() {
        ["rw", name, host] => (*host, *name, true),
        ["ro", name, host] => (*host, *name, false),
        [name, host] => (*host, *name, false),
        _ => {
            return Err(format!(
                "mount `{spec}` must be HOST_PATH:NAME or HOST_PATH:NAME:rw"
            ));
        }
    };
    Ok(ExtraMount {
        host_path: host.to_string(),
        name: name.to_string(),
        readonly: !rw,
    })
}

/// Applies the budget change: 0 clears one cap, `clear` clears all first.
fn apply_budget(
    caps: &mut crate::rules::cost::budget::Caps,
    b: &BudgetChange,
) -> Result<(), String> {
    if b.clear {
        *caps = Default::default();
    }
    for (flag, v) in [("--budget-daily", b.daily), ("--budget-monthly", b.monthly)] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(format!(
                "{flag} must be an amount of at least 0 (0 removes the budget)"
            ));
        }
    }
    let money = |v: f64| (v > 0.0).then_some(v);
    let tokens = |v: u64| (v > 0).then_some(v);
    if let Some(v) = b.daily {
        caps.daily = money(v);
    }
    if let Some(v) = b.monthly {
        caps.monthly = money(v);
    }
    if let Some(v) = b.daily_tokens {
        caps.daily_tokens = tokens(v);
    }
    if let Some(v) = b.monthly_tokens {
        caps.monthly_tokens = tokens(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        Group {
            chat_id: "tg:1".into(),
            folder: "fam".into(),
            name: "Fam".into(),
            trigger: "@Andy".into(),
            requires_trigger: true,
            is_main: false,
            allowed_senders: None,
            added_at: 0,
            config: Default::default(),
        }
    }

    #[test]
    fn values_are_added_once_and_removed_by_name() {
        let mut g = group();
        let c = Change {
            egress: vec!["a.com".into(), "a.com".into(), "b.com".into()],
            mount: vec![
                "/srv/x:docs".into(),
                "/srv/y:docs:rw".into(),
                "C:/p:win:ro".into(),
            ],
            ..Default::default()
        };
        apply(&mut g, c).unwrap();
        assert_eq!(g.config.egress, ["a.com", "b.com"]);
        // The later mount of the same name replaces the earlier; a path may hold a colon.
        let mounts: Vec<_> = g
            .config
            .extra_mounts
            .iter()
            .map(|m| (m.host_path.as_str(), m.name.as_str(), m.readonly))
            .collect();
        assert_eq!(mounts, [("/srv/y", "docs", false), ("C:/p", "win", true)]);
        let c = Change {
            no_egress: vec!["a.com".into()],
            unmount: vec!["docs".into()],
            ..Default::default()
        };
        apply(&mut g, c).unwrap();
        assert_eq!(g.config.egress, ["b.com"]);
        assert_eq!(g.config.extra_mounts.len(), 1);
    }

    #[test]
    fn a_bad_value_is_an_error_naming_it() {
        for (c, says) in [
            (
                Change {
                    egress: vec!["a.com/x".into()],
                    ..Default::default()
                },
                "egress host",
            ),
            (
                Change {
                    provider: Some("gemini".into()),
                    ..Default::default()
                },
                "provider `gemini`",
            ),
            (
                Change {
                    allow_model: vec!["a b".into()],
                    ..Default::default()
                },
                "one word",
            ),
            (
                Change {
                    disk_mb: Some(0),
                    ..Default::default()
                },
                "--disk-mb",
            ),
            (
                Change {
                    mount: vec!["nocolon".into()],
                    ..Default::default()
                },
                "HOST_PATH:NAME",
            ),
            (
                Change {
                    budget: BudgetChange {
                        daily: Some(-1.0),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "--budget-daily",
            ),
        ] {
            let err = apply(&mut group(), c).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn budget_zero_clears_one_cap_and_clear_clears_all() {
        let mut caps = crate::rules::cost::budget::Caps::default();
        let set = BudgetChange {
            daily: Some(2.0),
            monthly_tokens: Some(9),
            ..Default::default()
        };
        apply_budget(&mut caps, &set).unwrap();
        assert_eq!((caps.daily, caps.monthly_tokens), (Some(2.0), Some(9)));
        apply_budget(
            &mut caps,
            &BudgetChange {
                daily: Some(0.0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((caps.daily, caps.monthly_tokens), (None, Some(9)));
        apply_budget(
            &mut caps,
            &BudgetChange {
                clear: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(caps.monthly_tokens, None);
    }
}
