use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::infra::store::groups as q;
use crate::rules::groups::NewGroup;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Register a chat as a group with its own folder and container.
    Add(AddArgs),
    /// List registered groups.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one group's settings.
    Show {
        folder: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a group's settings.
    Set(Box<SetArgs>),
    /// Unregister a group (its folder stays on disk).
    Rm { folder: String },
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Chat id with its channel prefix, e.g. `tg:-100123` or `wa:1203…@g.us`.
    #[arg(long, value_name = "ID")]
    pub chat: String,
    /// Folder name: lowercase letters, digits, `-`, `_` (max 64).
    #[arg(long)]
    pub folder: String,
    /// Display name of the group (default: the chat's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Word that must start a message to wake the agent (default `@AssistantName`).
    #[arg(long)]
    pub trigger: Option<String>,
    /// Every message wakes the agent, not only those starting with the trigger.
    #[arg(long)]
    pub no_trigger: bool,
    /// Make this the main (admin) group; there can be only one.
    #[arg(long)]
    pub main: bool,
    /// Only these sender ids may trigger runs (repeatable); default everyone.
    #[arg(long = "allow", value_name = "SENDER")]
    pub allow: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The group's folder.
    pub folder: String,
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New trigger word, e.g. `@Andy`.
    #[arg(long)]
    pub trigger: Option<String>,
    /// Whether messages must start with the trigger.
    #[arg(long, value_name = "BOOL")]
    pub requires_trigger: Option<bool>,
    /// Add a sender id to the allowlist (repeatable).
    #[arg(long = "allow", value_name = "SENDER")]
    pub allow: Vec<String>,
    /// Let everyone trigger runs again (drop the sender allowlist).
    #[arg(long)]
    pub allow_everyone: bool,
    /// Allow egress to a host (`host`, `host:port`, `*.domain`; repeatable).
    #[arg(long, value_name = "HOST")]
    pub egress: Vec<String>,
    /// Remove a host from the egress allowlist (repeatable).
    #[arg(long, value_name = "HOST")]
    pub no_egress: Vec<String>,
    /// Approval policy for an act: egress, credential, send_message, add_mcp_server or
    /// schedule_task = allow|deny|ask|default; or credential_every_use=true|false (repeatable).
    #[arg(long = "approve", value_name = "ACT=POLICY")]
    pub approve: Vec<String>,
    /// Wall-clock limit for this group's runs.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Model provider for this group (`anthropic` or `openai`).
    #[arg(long)]
    pub provider: Option<String>,
    /// Model name for this group.
    #[arg(long)]
    pub model: Option<String>,
    /// Let this group's agent also ask for this model (repeatable); others are rewritten to its model.
    #[arg(long = "allow-model", value_name = "MODEL")]
    pub allow_model: Vec<String>,
    /// Stop allowing a model added with --allow-model (repeatable).
    #[arg(long = "no-allow-model", value_name = "MODEL")]
    pub no_allow_model: Vec<String>,
    /// Disk this group's writable folders may use, in MiB (overrides limits.group_disk_mb).
    #[arg(long, value_name = "MIB")]
    pub disk_mb: Option<u64>,
    /// Runs this group may start per hour (overrides limits.runs_per_hour; 0 = no limit).
    #[arg(long, value_name = "N")]
    pub runs_per_hour: Option<u32>,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Mount a host folder at /workspace/extra/NAME: `HOST_PATH:NAME[:rw]` (checked against the allowlist at each run).
    #[arg(long, value_name = "SPEC")]
    pub mount: Vec<String>,
    /// Remove an extra mount by NAME.
    #[arg(long, value_name = "NAME")]
    pub unmount: Vec<String>,
    /// Bind a secret to hosts and a header: `NAME=HOST[,HOST…]:HEADER[:SCHEME]`, e.g.
    /// `github=api.github.com:Authorization:Bearer`; `NAME=` removes it (repeatable).
    /// The container sees only a placeholder in NAME_TOKEN; see docs/guides/credentials.md.
    #[arg(long, value_name = "SPEC")]
    pub credential: Vec<String>,
}

/// The budget flags of `group set`.
#[derive(Debug, clap::Args)]
pub struct BudgetArgs {
    /// Money this group's model use may cost per local day, in the pricing currency (0 clears).
    #[arg(long, value_name = "AMOUNT")]
    pub budget_daily: Option<f64>,
    /// Money per calendar month (0 clears).
    #[arg(long, value_name = "AMOUNT")]
    pub budget_monthly: Option<f64>,
    /// Tokens (input, output and cache together) per local day (0 clears).
    #[arg(long, value_name = "N")]
    pub budget_daily_tokens: Option<u64>,
    /// Tokens per calendar month (0 clears).
    #[arg(long, value_name = "N")]
    pub budget_monthly_tokens: Option<u64>,
    /// Remove every budget of this group (the overall [budget] still applies).
    #[arg(long)]
    pub no_budget: bool,
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Add(a) => add(ctx, a),
        Cmd::List { json } => list(ctx, json),
        Cmd::Show { folder, json } => show(ctx, &folder, json),
        Cmd::Set(a) => set(ctx, *a),
        Cmd::Rm { folder } => {
            let mut store = ctx.store()?;
            let g = crate::rules::groups::remove(&mut store, &folder)?;
            println!(
                "removed group `{}` (chat {}); its files stay in {}",
                g.folder,
                g.chat_id,
                ctx.home.group_dir(&g.folder).display()
            );
            Ok(())
        }
    }
}

fn add(ctx: &Ctx, a: AddArgs) -> Result<()> {
    let config = ctx.config()?;
    let mut store = ctx.store()?;
    let g = crate::rules::groups::add(
        &mut store,
        &ctx.home,
        &config.default_trigger(),
        NewGroup {
            chat_id: a.chat,
            folder: a.folder,
            name: a.name,
            trigger: a.trigger,
            requires_trigger: !a.no_trigger,
            is_main: a.main,
            allowed_senders: if a.allow.is_empty() {
                None
            } else {
                Some(a.allow)
            },
        },
        "cli",
    )?;
    println!(
        "registered {} as group `{}` (trigger {}{})",
        g.chat_id,
        g.folder,
        g.trigger,
        if g.requires_trigger {
            ""
        } else {
            ", not required"
        }
    );
    Ok(())
}

fn list(ctx: &Ctx, json: bool) -> Result<()> {
    let store = ctx.store()?;
    let groups = q::list(&store.conn)?;
    if json {
        return crate::infra::output::json(&groups);
    }
    if groups.is_empty() {
        println!("no groups; register one with `claw group add --chat ID --folder NAME`");
        return Ok(());
    }
    let rows = groups
        .iter()
        .map(|g| {
            vec![
                g.folder.clone(),
                g.chat_id.clone(),
                g.name.clone(),
                if g.is_main {
                    "main".into()
                } else if g.requires_trigger {
                    g.trigger.clone()
                } else {
                    "(every message)".into()
                },
                g.allowed_senders.as_ref().map_or("everyone".into(), |s| {
                    crate::infra::output::clean_line(&s.join(", "))
                }),
            ]
        })
        .collect();
    crate::infra::output::table(&["FOLDER", "CHAT", "NAME", "TRIGGER", "SENDERS"], rows);
    Ok(())
}

fn get(store: &crate::infra::store::Store, folder: &str) -> Result<q::Group> {
    q::get(&store.conn, folder)?.ok_or_else(|| {
        Coded::err(
            Code::Usage,
            format!("no group `{folder}`; see `claw group list`"),
        )
    })
}

fn show(ctx: &Ctx, folder: &str, json: bool) -> Result<()> {
    let store = ctx.store()?;
    let g = get(&store, folder)?;
    if json {
        return crate::infra::output::json(&g);
    }
    // The name comes from the chat app and senders from its users: clean them for the terminal.
    use crate::infra::output::clean_line;
    println!("folder:           {}", g.folder);
    println!("chat:             {}", clean_line(&g.chat_id));
    println!("name:             {}", clean_line(&g.name));
    println!("main:             {}", g.is_main);
    println!(
        "trigger:          {} (required: {})",
        clean_line(&g.trigger),
        g.requires_trigger
    );
    println!(
        "senders:          {}",
        g.allowed_senders
            .as_ref()
            .map_or("everyone".into(), |s| clean_line(&s.join(", ")))
    );
    println!(
        "egress:           {}",
        if g.config.egress.is_empty() {
            "none".into()
        } else {
            clean_line(&g.config.egress.join(", "))
        }
    );
    if let Ok(c) = ctx.config() {
        let policies: Vec<String> = crate::rules::approvals::policy::KINDS
            .iter()
            .map(|k| {
                format!(
                    "{}={}",
                    k.as_str(),
                    crate::rules::approvals::policy::for_group(&c, &g, *k).as_str()
                )
            })
            .collect();
        println!("approvals:        {}", policies.join(", "));
    }
    println!(
        "timeout:          {}",
        g.config
            .timeout_secs
            .map_or("default".into(), |t| format!("{t}s"))
    );
    println!(
        "model:            {} {}",
        g.config.provider.as_deref().unwrap_or("default"),
        g.config.model.as_deref().unwrap_or("")
    );
    if !g.config.models.is_empty() {
        println!("models allowed:   {}", g.config.models.join(", "));
    }
    println!(
        "disk limit:       {}",
        g.config
            .disk_mb
            .map_or("default".into(), |d| format!("{d} MiB"))
    );
    if !g.is_main {
        println!(
            "runs per hour:    {}",
            g.config
                .runs_per_hour
                .map_or("default".into(), |r| r.to_string())
        );
    }
    let caps = g.config.budget.list();
    let prices = ctx
        .config()
        .map(|c| crate::rules::cost::pricing::Prices::new(&c.pricing))
        .unwrap_or_default();
    println!(
        "budget:           {}",
        if caps.is_empty() {
            "none of its own".to_string()
        } else {
            caps.iter()
                .map(|(period, limit)| {
                    let b = crate::rules::cost::budget::Budget {
                        folder: Some(g.folder.clone()),
                        name: String::new(),
                        period: *period,
                        limit: *limit,
                    };
                    format!("{} {}", b.cap_text(&prices), period.name())
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for m in &g.config.extra_mounts {
        println!(
            "mount:            {} -> /workspace/extra/{}{}",
            m.host_path,
            m.name,
            if m.readonly {
                " (ro)"
            } else {
                " (rw requested)"
            }
        );
    }
    for c in &g.config.credentials {
        println!(
            "credential:       {} (container sees ${})",
            c.spec(),
            crate::rules::credentials::env_var(&c.name)
        );
    }
    println!(
        "workspace:        {}",
        ctx.home.group_dir(&g.folder).display()
    );
    Ok(())
}

fn set(ctx: &Ctx, a: SetArgs) -> Result<()> {
    let b = a.budget;
    let change = crate::rules::groups::change::Change {
        name: a.name,
        trigger: a.trigger,
        requires_trigger: a.requires_trigger,
        allow: a.allow,
        allow_everyone: a.allow_everyone,
        egress: a.egress,
        no_egress: a.no_egress,
        approve: a.approve,
        timeout_secs: a.timeout,
        provider: a.provider,
        model: a.model,
        allow_model: a.allow_model,
        no_allow_model: a.no_allow_model,
        disk_mb: a.disk_mb,
        runs_per_hour: a.runs_per_hour,
        budget: crate::rules::groups::change::BudgetChange {
            daily: b.budget_daily,
            monthly: b.budget_monthly,
            daily_tokens: b.budget_daily_tokens,
            monthly_tokens: b.budget_monthly_tokens,
            clear: b.no_budget,
        },
        mount: a.mount,
        unmount: a.unmount,
        credential: a.credential,
    };
    let g = crate::rules::groups::change::change(&mut ctx.store()?, &a.folder, change)?;
    println!("updated group `{}`", g.folder);
    Ok(())
}
