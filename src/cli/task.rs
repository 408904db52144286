use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::infra::store::tasks::{self as q, Task};
use crate::rules::tasks::{Changes, NewTask};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Schedule a prompt to run in a group's container.
    Add(AddArgs),
    /// List tasks (active and paused; --all adds finished ones).
    List {
        /// Only this group's tasks.
        #[arg(long, value_name = "FOLDER")]
        group: Option<String>,
        /// Include completed and cancelled tasks.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one task.
    Show {
        id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a task from running until resumed.
    Pause {
        id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let a paused task run again.
    Resume {
        id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a task for good (its history stays).
    Cancel {
        id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a task's prompt, schedule, zone or context mode.
    Update(UpdateArgs),
    /// A task's run history, newest first.
    Runs {
        id: i64,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Exactly one way to say when.
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
pub struct When {
    /// Standard 5-field cron, e.g. "0 9 * * 1-5".
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Every this many seconds.
    #[arg(long, value_name = "SECS")]
    pub every: Option<String>,
    /// Once, at an RFC 3339 time or local "YYYY-MM-DD HH:MM".
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

impl When {
    fn pair(&self) -> Option<(String, String)> {
        let p = |k: &str, v: &Option<String>| v.clone().map(|v| (k.to_string(), v));
        p("cron", &self.cron)
            .or_else(|| p("interval", &self.every))
            .or_else(|| p("once", &self.at))
    }
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The group whose container runs the task and whose chat gets the result.
    #[arg(long, value_name = "FOLDER")]
    pub group: String,
    /// What the agent is asked to do each time.
    #[arg(long)]
    pub prompt: String,
    #[command(flatten)]
    pub when: When,
    /// IANA time zone for cron and local times (default the host's).
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// `group` resumes the chat's session; `isolated` starts fresh.
    #[arg(long, value_parser = ["group", "isolated"])]
    pub context: Option<String>,
    /// A shell command run first in the group's container (no network); the model is woken
    /// only when it exits 0 and prints something, and gets what it printed.
    #[arg(long, value_name = "CMD")]
    pub check: Option<String>,
    /// The check's time limit in seconds (default 60, at most 600).
    #[arg(long, value_name = "SECS", requires = "check")]
    pub check_timeout: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    pub id: i64,
    /// New prompt.
    #[arg(long)]
    pub prompt: Option<String>,
    #[command(flatten)]
    pub when: When,
    /// New IANA time zone for cron and local times.
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// New context mode: `group` resumes the chat's session; `isolated` starts fresh.
    #[arg(long, value_parser = ["group", "isolated"])]
    pub context: Option<String>,
    /// New check command (run before the model is woken; see `claw task add --help`).
    #[arg(long, value_name = "CMD", conflicts_with = "no_check")]
    pub check: Option<String>,
    /// Remove the check: the task wakes the model every time again.
    #[arg(long)]
    pub no_check: bool,
    /// New time limit for the check, in seconds (1 to 600).
    #[arg(long, value_name = "SECS", conflicts_with = "no_check")]
    pub check_timeout: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    let now = crate::infra::time::now_ms();
    match cmd {
        Cmd::Add(a) => {
            let Some((kind, value)) = a.when.pair() else {
                return Err(Coded::err(
                    Code::Usage,
                    "say when: --cron EXPR, --every SECS or --at TIME",
                ));
            };
            let t = write(ctx, |tx| {
                crate::rules::tasks::create(
                    tx,
                    NewTask {
                        folder: a.group,
                        prompt: a.prompt,
                        kind,
                        value,
                        timezone: a.tz,
                        context_mode: a.context,
                        created_by: "cli".into(),
                        check: a.check,
                        check_timeout: a.check_timeout,
                    },
                    now,
                )
            })?;
            print_one(&t, a.json, "created")
        }
        Cmd::List { group, all, json } => {
            let store = ctx.store()?;
            let list = q::list(&store.conn, group.as_deref(), all)?;
            if json {
                return crate::infra::output::json(&list);
            }
            if list.is_empty() {
                println!(
                    "no tasks; add one with `claw task add --group FOLDER --prompt … --cron …`"
                );
                return Ok(());
            }
            let rows = list
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.folder.clone(),
                        t.status.clone(),
                        format!("{} {}", t.kind, t.schedule),
                        t.next_run
                            .map(crate::infra::time::local_short)
                            .unwrap_or_default(),
                        crate::infra::output::clip(&t.prompt, 40),
                    ]
                })
                .collect();
            crate::infra::output::table(
                &["ID", "GROUP", "STATE", "SCHEDULE", "NEXT", "PROMPT"],
                rows,
            );
            Ok(())
        }
        Cmd::Show { id, json } => {
            let store = ctx.store()?;
            let t = crate::rules::tasks::get(&store.conn, id)?;
            let check = q::check(&store.conn, id)?;
            if json {
                let mut v = serde_json::to_value(&t)?;
                v["check"] = serde_json::to_value(&check)?;
                return crate::infra::output::json(&v);
            }
            print_one(&t, false, "")?;
            if let Some(c) = check {
                println!(
                    "check:    {} (timeout {}s)",
                    crate::infra::output::clean_line(&c.command),
                    c.timeout_secs
                );
            }
            Ok(())
        }
        Cmd::Pause { id, json } => {
            let t = write(ctx, |tx| crate::rules::tasks::pause(tx, id, "cli"))?;
            print_one(&t, json, "paused")
        }
        Cmd::Resume { id, json } => {
            let t = write(ctx, |tx| crate::rules::tasks::resume(tx, id, "cli", now))?;
            print_one(&t, json, "resumed")
        }
        Cmd::Cancel { id, json } => {
            let t = write(ctx, |tx| crate::rules::tasks::cancel(tx, id, "cli"))?;
            print_one(&t, json, "cancelled")
        }
        Cmd::Update(a) => {
            let (kind, value) = a.when.pair().unzip();
            let t = write(ctx, |tx| {
                crate::rules::tasks::update(
                    tx,
                    a.id,
                    Changes {
                        prompt: a.prompt,
                        kind,
                        value,
                        timezone: a.tz,
                        context_mode: a.context,
                        check: if a.no_check {
                            Some(None)
                        } else {
                            a.check.map(Some)
                        },
                        check_timeout: a.check_timeout,
                    },
                    "cli",
                    now,
                )
            })?;
            print_one(&t, a.json, "updated")
        }
        Cmd::Runs { id, limit, json } => {
            let store = ctx.store()?;
            crate::rules::tasks::get(&store.conn, id)?;
            let runs = q::runs(&store.conn, id, limit)?;
            if json {
                return crate::infra::output::json(&runs);
            }
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.status.clone(),
                        crate::infra::time::local_short(r.scheduled_for),
                        r.ended_at
                            .map(crate::infra::time::local_short)
                            .unwrap_or_default(),
                        crate::infra::output::clip(
                            r.error.as_deref().or(r.result.as_deref()).unwrap_or(""),
                            50,
                        ),
                    ]
                })
                .collect();
            crate::infra::output::table(&["RUN", "STATE", "DUE", "ENDED", "RESULT / ERROR"], rows);
            Ok(())
        }
    }
}

/// One task change as the owner, through the same rule as IPC (`crate::rules::tasks::change`).
fn write(ctx: &Ctx, f: impl FnOnce(&rusqlite::Connection) -> Result<Task>) -> Result<Task> {
    crate::rules::tasks::change(&ctx.home, &mut ctx.store()?, f)
}

fn print_one(t: &Task, json: bool, verb: &str) -> Result<()> {
    if json {
        return crate::infra::output::json(t);
    }
    if !verb.is_empty() {
        println!("{verb} task {}", t.id);
    }
    use crate::infra::output::{clean, clean_line};
    println!("group:    {} (chat {})", t.folder, clean_line(&t.chat_id));
    println!("state:    {}", t.status);
    println!(
        "schedule: {} {} ({})",
        t.kind,
        clean_line(&t.schedule),
        clean_line(&t.timezone)
    );
    println!("context:  {}", t.context_mode);
    println!(
        "next run: {}",
        t.next_run
            .map_or("none".into(), crate::infra::time::local_short)
    );
    if let Some(l) = t.last_run {
        println!(
            "last run: {} {}",
            crate::infra::time::local_short(l),
            clean(t.last_result.as_deref().unwrap_or(""))
        );
    }
    println!("prompt:   {}", clean(&t.prompt));
    Ok(())
}
