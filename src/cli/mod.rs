//! Command-line definitions. Each subcommand has a file holding its clap arguments and a `run`
//! that calls one library function; the work itself lives in the library modules.

pub mod deliver;
pub mod group;
pub mod ingest;
pub mod init;
pub mod outbox;
pub mod status;
pub mod whatsapp;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

use crate::config::Config;
use crate::paths::Home;
use crate::secrets::Secrets;
use crate::store::Store;

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
    /// WhatsApp Web: `pair` once, then `run` as a service (needs the `whatsapp` build feature).
    #[command(subcommand)]
    Whatsapp(whatsapp::Cmd),
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
            return Err(crate::error::Coded::err(
                crate::error::Code::NotInitialised,
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
        Command::Ingest(a) => ingest::run(&ctx, a),
        Command::Group(c) => group::run(&ctx, c),
        Command::Status(a) => status::run(&ctx, a),
        Command::Outbox(a) => outbox::run(&ctx, a),
        Command::Deliver(a) => deliver::run(&ctx, a),
        Command::Whatsapp(c) => whatsapp::run(&ctx, c),
    }
}
