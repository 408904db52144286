use anyhow::Result;

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::mcp::{self, Entry};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Add an MCP server to a group: `claw mcp add G NAME -- CMD ARGS…` (stdio, runs inside the
    /// group's container) or `claw mcp add G NAME --url URL` (remote, reached by the host's proxy).
    Add(AddArgs),
    /// List MCP servers (all groups, or one).
    List {
        /// Only this group's servers.
        group: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an MCP server from a group.
    Rm { group: String, name: String },
    /// Start the group's container like a real run and list the tools its servers offer.
    Tools {
        group: String,
        /// Only this server.
        name: Option<String>,
        /// Print JSON (with input schemas) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  claw mcp add main time -- mcp-server-time --local-timezone Europe/Berlin\n  \
claw mcp add main github --url https://api.githubcopilot.com/mcp/\n\
Tools are offered to the agent as NAME__tool. A stdio command must exist in the image or the \
group folder (a relative path with a `/` is taken from the group folder)."
)]
pub struct AddArgs {
    /// The group's folder.
    pub group: String,
    /// Server name: 1–32 lowercase letters, digits or `-`; its tools become NAME__tool.
    pub name: String,
    /// Remote server (Streamable HTTP) URL; the container never sees it.
    #[arg(long, conflicts_with = "command")]
    pub url: Option<String>,
    /// Environment for a stdio server, NAME=value (repeatable; placeholders, never real secrets).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Seconds one tool call may take (default 60).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Replace a server of the same name instead of refusing.
    #[arg(long)]
    pub replace: bool,
    /// The stdio command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Add(a) => add(ctx, a),
        Cmd::List { group, json } => list(ctx, group, json),
        Cmd::Rm { group, name } => {
            known_group(ctx, &group)?;
            mcp::remove(&ctx.home, &group, &name)?;
            println!("removed MCP server `{name}` from group `{group}`");
            Ok(())
        }
        Cmd::Tools { group, name, json } => tools(ctx, &group, name.as_deref(), json),
    }
}

fn known_group(ctx: &Ctx, group: &str) -> Result<()> {
    let store = ctx.store()?;
    if crate::infra::store::groups::get(&store.conn, group)?.is_none() {
        return Err(Coded::err(
            Code::Usage,
            format!("no group `{group}`; see `claw group list`"),
        ));
    }
    Ok(())
}

fn add(ctx: &Ctx, a: AddArgs) -> Result<()> {
    known_group(ctx, &a.group)?;
    let mut env = std::collections::BTreeMap::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Coded::err(
                Code::Usage,
                format!("--env `{kv}` is not NAME=VALUE"),
            ));
        };
        env.insert(k.to_string(), v.to_string());
    }
    let (command, args) = match (a.url.is_some(), a.command.split_first()) {
        (true, None) => (None, vec![]),
        (false, Some((c, rest))) => (Some(c.clone()), rest.to_vec()),
        (true, Some(_)) => {
            return Err(Coded::err(
                Code::Usage,
                "give either --url URL or `-- CMD ARGS…`, not both",
            ));
        }
        (false, None) => {
            return Err(Coded::err(
                Code::Usage,
                "give the server: `claw mcp add G NAME -- CMD ARGS…` (stdio) or `claw mcp add G NAME --url URL` (remote)",
            ));
        }
    };
    let remote = a.url.is_some();
    mcp::add(
        &ctx.home,
        Entry {
            group: a.group.clone(),
            name: a.name.clone(),
            command,
            args,
            env,
            url: a.url,
            timeout_secs: a.timeout,
        },
        a.replace,
    )?;
    let store = ctx.store()?;
    crate::infra::store::audit::record(
        &store.conn,
        Some(&a.group),
        None,
        "mcp.added",
        serde_json::json!({"name": a.name, "remote": remote, "by": "cli"}),
    )?;
    println!(
        "added MCP server `{}` to group `{}`; its tools are offered from the next run (check with `claw mcp tools {} {}`)",
        a.name, a.group, a.group, a.name
    );
    Ok(())
}

fn list(ctx: &Ctx, group: Option<String>, json: bool) -> Result<()> {
    let all = mcp::list(&ctx.home)?;
    let rows: Vec<&Entry> = all
        .iter()
        .filter(|e| group.as_ref().is_none_or(|g| &e.group == g))
        .collect();
    if json {
        return crate::infra::output::json(&rows);
    }
    if rows.is_empty() {
        println!("no MCP servers; add one with `claw mcp add G NAME -- CMD ARGS…` or `--url URL`");
        return Ok(());
    }
    let cells = |e: &&Entry| {
        let (kind, target) = match (&e.command, &e.url) {
            (Some(c), _) => (
                "stdio",
                shlex::try_join(
                    std::iter::once(c.as_str()).chain(e.args.iter().map(String::as_str)),
                )
                .unwrap_or_else(|_| c.clone()),
            ),
            (None, Some(u)) => ("http", u.clone()),
            _ => ("?", String::new()),
        };
        vec![
            e.group.clone(),
            e.name.clone(),
            kind.to_string(),
            crate::infra::output::clip(&target, 80),
            e.timeout_secs.unwrap_or(60).to_string(),
        ]
    };
    crate::infra::output::table(
        &["GROUP", "NAME", "KIND", "COMMAND / URL", "TIMEOUT"],
        rows.iter().map(cells).collect(),
    );
    Ok(())
}

fn tools(ctx: &Ctx, group: &str, name: Option<&str>, json: bool) -> Result<()> {
    let config = ctx.config()?;
    let secrets = ctx.secrets()?;
    let listing =
        crate::steps::run_group::mcp_probe::list_tools(&ctx.home, &config, &secrets, group, name)?;
    let servers = listing["servers"].as_array().cloned().unwrap_or_default();
    let failed = servers.iter().filter(|s| s["ok"] != true).count();
    if json {
        crate::infra::output::json(&listing)?;
    } else if servers.is_empty() {
        println!("group `{group}` has no MCP servers; add one with `claw mcp add`");
    } else {
        let mut rows = Vec::new();
        for s in &servers {
            let server = s["server"].as_str().unwrap_or("?").to_string();
            if s["ok"] != true {
                rows.push(vec![
                    server,
                    "(unavailable)".into(),
                    crate::infra::output::clip(s["error"].as_str().unwrap_or(""), 100),
                ]);
                continue;
            }
            for t in s["tools"].as_array().into_iter().flatten() {
                rows.push(vec![
                    server.clone(),
                    t["name"].as_str().unwrap_or("").to_string(),
                    crate::infra::output::clip(t["description"].as_str().unwrap_or(""), 100),
                ]);
            }
        }
        crate::infra::output::table(&["SERVER", "TOOL", "DESCRIPTION"], rows);
    }
    if failed > 0 {
        return Err(Coded::err(
            Code::Failure,
            format!("{failed} MCP server(s) of group `{group}` could not be used; see above"),
        ));
    }
    Ok(())
}
