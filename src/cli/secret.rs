//! `claw secret`: the secrets file from the command line. Values come from stdin and are never
//! printed; listings show names and which groups bind them.

use anyhow::Result;
use std::io::{IsTerminal, Read};

use super::Ctx;
use crate::infra::error::{Code, Coded};
use crate::infra::secrets;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Store a secret, reading its value from stdin (one line), e.g.
    /// `printf %s "$TOKEN" | claw secret set github`.
    Set {
        /// Letters, digits, `_` or `-`, starting with a letter.
        name: String,
    },
    /// List secret names (never values) and the groups that bind them.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret.
    Rm { name: String },
}

pub fn run(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    ctx.config()?;
    let path = ctx.home.secrets();
    match cmd {
        Cmd::Set { name } => {
            crate::rules::credentials::validate_name(&name)
                .map_err(|e| Coded::err(Code::Usage, e))?;
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("type the value of `{name}`, then Enter and Ctrl-D:");
            }
            let mut raw = Vec::new();
            stdin
                .lock()
                .take(secrets::MAX_VALUE as u64 + 3)
                .read_to_end(&mut raw)?;
            let text = String::from_utf8(raw)
                .map_err(|_| Coded::err(Code::Usage, "the value is not UTF-8 text"))?;
            // One trailing newline is how `echo` and a terminal end a line, not part of the value.
            let value = text
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&text);
            secrets::set(&path, &name, value)
                .map_err(|e| Coded::err(Code::Usage, e.to_string()))?;
            audit(ctx, "secret.set", &name);
            println!("stored secret `{name}` in {}", path.display());
            Ok(())
        }
        Cmd::List { json } => {
            let s = secrets::Secrets::load(&path)?;
            let groups = ctx
                .store()
                .and_then(|st| crate::infra::store::groups::list(&st.conn))
                .unwrap_or_default();
            let rows: Vec<serde_json::Value> = s
                .names()
                .map(|n| {
                    let bound: Vec<&str> = groups
                        .iter()
                        .filter(|g| g.config.credentials.iter().any(|c| c.name == n))
                        .map(|g| g.folder.as_str())
                        .collect();
                    serde_json::json!({"name": n, "groups": bound})
                })
                .collect();
            if json {
                return crate::infra::output::json(&rows);
            }
            if rows.is_empty() {
                println!("no secrets; add one with `printf %s VALUE | claw secret set NAME`");
                return Ok(());
            }
            let table = rows
                .iter()
                .map(|r| {
                    let gs: Vec<&str> = r["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|g| g.as_str())
                        .collect();
                    vec![
                        r["name"].as_str().unwrap_or("").to_string(),
                        if gs.is_empty() {
                            "-".into()
                        } else {
                            gs.join(", ")
                        },
                    ]
                })
                .collect();
            crate::infra::output::table(&["NAME", "BOUND IN GROUPS"], table);
            Ok(())
        }
        Cmd::Rm { name } => {
            if !secrets::remove(&path, &name)? {
                return Err(Coded::err(
                    Code::Usage,
                    format!("no secret `{name}`; see `claw secret list`"),
                ));
            }
            audit(ctx, "secret.removed", &name);
            println!("removed secret `{name}`");
            Ok(())
        }
    }
}

/// Records the act (the name only) when the database is there.
fn audit(ctx: &Ctx, kind: &str, name: &str) {
    if let Ok(store) = ctx.store() {
        let _ = crate::infra::store::audit::record(
            &store.conn,
            None,
            None,
            kind,
            serde_json::json!({"name": name}),
        );
    }
}
