//! Command-line definitions. Each subcommand has a file holding its clap arguments and a `run`
//! that calls one library function; the work itself lives in the library modules.

pub mod approvals;
pub mod audit;
pub mod ca;
pub mod chat;
pub mod completions;
pub mod deliver;
pub mod dispatch;
pub mod doctor;
pub mod group;
pub mod image;
pub mod ingest;
pub mod init;
pub mod ipc_apply;
pub mod logs;
pub mod man;
pub mod mcp;
pub mod outbox;
pub mod prune;
pub mod run_group;
pub mod schedule;
pub mod search;
pub mod secret;
pub mod service;
pub mod status;
pub mod task;
pub mod tick;
pub mod usage;
pub mod watchdog;
pub mod whatsapp;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::secrets::Secrets;
use crate::infra::store::Store;

/// claw: a personal AI assistant, one sandboxed container per chat group, no daemon.
#[derive(Debug, Parser)]
#[command(name = "claw", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 home not initialised or unusable, \
4 some input rejected, 5 busy (lock held), 6 container runtime problem.\nLogs: set CLAW_LOG=info (or debug)."
)]
pub struct Cli {
    /// The claw home (default ~/.local/share/claw).
    #[arg(long, global = true, env = "CLAW_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the home, config, secrets file, database and main group (safe to re-run).
    Init(init::Args),
    /// Store inbound messages: JSON lines on stdin, or one message with --chat/--text.
    Ingest(ingest::Args),
    /// Register and manage chats as groups.
    #[command(subcommand)]
    Group(group::Cmd),
    /// Show per group what is pending, whether it would run and why, and the outbox backlog.
    Status(status::Args),
    /// List outbox rows; `claim`, `done`, `fail` for long-running bridges.
    Outbox(outbox::Args),
    /// Send pending outbox messages through their channels.
    Deliver(deliver::Args),
    /// Start agent runs for groups with runnable work, within the concurrency limit.
    Dispatch(dispatch::Args),
    /// Run one group's agent in its container, start to exit.
    RunGroup(run_group::Args),
    /// List recent runs, or print one run's log.
    Logs(logs::Args),
    /// Show the audit trail of security-relevant acts.
    Audit(audit::Args),
    /// Search messages, the assistant's replies and compaction archives by words.
    Search(search::Args),
    /// Approve an act waiting for the owner (the id from the card in the main chat).
    Approve(approvals::DecideArgs),
    /// Deny an act waiting for the owner.
    Deny(approvals::DecideArgs),
    /// List acts waiting for the owner's approval (--all: decided ones too).
    Approvals(approvals::ListArgs),
    /// Show model tokens and cost per day, group or model, as the proxy measured them.
    Usage(usage::Args),
    /// Run ipc-apply, schedule, dispatch and deliver once (what the timer runs).
    Tick(tick::Args),
    /// Talk to your assistant from the terminal.
    Chat(chat::Args),
    /// Build the agent image.
    #[command(subcommand)]
    Image(image::Cmd),
    /// Install, remove or inspect the timers and services that run claw.
    #[command(subcommand)]
    Service(service::Cmd),
    /// Check the runtime, image, config, secrets, allowlist, timers and database; run one probe container.
    Doctor(doctor::Args),
    /// Apply the requests agents wrote under ipc/FOLDER/{messages,tasks}/.
    IpcApply(ipc_apply::Args),
    /// Queue a run for every due scheduled task (run from a timer, e.g. every minute).
    Schedule(schedule::Args),
    /// Apply [retention]: delete old audit rows, prune ipc/errors/ by age and size (tick does it hourly).
    Prune(prune::Args),
    /// MCP servers per group: add, list, rm, and tools (what they offer, probed in a container).
    #[command(subcommand)]
    Mcp(mcp::Cmd),
    /// Scheduled tasks: add, list, show, pause, resume, cancel, update, runs.
    #[command(subcommand)]
    Task(task::Cmd),
    /// WhatsApp Web: `pair` once, then `run` as a service (needs the `whatsapp` build feature).
    #[command(subcommand)]
    Whatsapp(whatsapp::Cmd),
    /// Store, list and remove secrets (values are read from stdin and never printed).
    #[command(subcommand)]
    Secret(secret::Cmd),
    /// The per-install CA the proxy uses for hosts with a bound credential: show or rotate it.
    #[command(subcommand)]
    Ca(ca::Cmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Write man pages for claw and every subcommand.
    Man(man::Args),
    /// Internal: removes a run's container if its run-group dies (started by run-group).
    #[command(long_about = watchdog::LONG_ABOUT)]
    Watchdog(watchdog::Args),
}

/// Shared context for subcommands: where the home is and lazy access to its parts.
pub struct Ctx {
    pub home: Home,
}

impl Ctx {
    /// Build from the global `--home`.
    pub fn new(home: Option<PathBuf>) -> Ctx {
        Ctx {
            home: Home::new(home.unwrap_or_else(Home::default_root)),
        }
    }

    /// Open the database (error says to run `claw init` if missing).
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.home)
    }

    /// Load `claw.toml`.
    pub fn config(&self) -> Result<Config> {
        if !self.home.root.is_dir() {
            return Err(crate::infra::error::Coded::err(
                crate::infra::error::Code::NotInitialised,
                format!(
                    "no claw home at {}: run `claw init` first (or pass --home)",
                    self.home.root.display()
                ),
            ));
        }
        Config::load(&self.home.config())
    }

    /// Load `secrets.env`.
    pub fn secrets(&self) -> Result<Secrets> {
        Secrets::load(&self.home.secrets())
    }
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx::new(cli.home);
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
        Command::Service(c) => service::run(&ctx, c),
        Command::Doctor(a) => doctor::run(&ctx, a),
        Command::Ingest(a) => ingest::run(&ctx, a),
        Command::Group(c) => group::run(&ctx, c),
        Command::Status(a) => status::run(&ctx, a),
        Command::Outbox(a) => outbox::run(&ctx, a),
        Command::Deliver(a) => deliver::run(&ctx, a),
        Command::Dispatch(a) => dispatch::run(&ctx, a),
        Command::RunGroup(a) => run_group::run(&ctx, a),
        Command::Logs(a) => logs::run(&ctx, a),
        Command::Audit(a) => audit::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Approve(a) => approvals::decide(&ctx, a, true),
        Command::Deny(a) => approvals::decide(&ctx, a, false),
        Command::Approvals(a) => approvals::list(&ctx, a),
        Command::Usage(a) => usage::run(&ctx, a),
        Command::Image(c) => image::run(&ctx, c),
        Command::Chat(a) => chat::run(&ctx, a),
        Command::Tick(a) => tick::run(&ctx, a),
        Command::IpcApply(a) => ipc_apply::run(&ctx, a),
        Command::Schedule(a) => schedule::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Task(c) => task::run(&ctx, c),
        Command::Mcp(c) => mcp::run(&ctx, c),
        Command::Whatsapp(c) => whatsapp::run(&ctx, c),
        Command::Watchdog(a) => watchdog::run(&ctx, a),
        Command::Secret(c) => secret::run(&ctx, c),
        Command::Ca(c) => ca::run(&ctx, c),
    }
}
