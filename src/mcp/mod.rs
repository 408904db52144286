//! MCP servers per group, on the host: the `mcp.toml` file in the claw home that `claw mcp
//! add|rm` and the IPC request `add_mcp_server` edit, and what a run makes of it (the start line's
//! server list and the proxy's `/mcp/NAME` routes). `claw mcp tools` is `run_group::mcp_probe`.
//!
//! The file lives in the home, which is never mounted: an agent can ask for a server only through
//! IPC, never write one in. A remote server's URL stays here and in the proxy; the container only
//! knows the route name. Every name and URL is checked here, on every load, so a hand-edited file
//! cannot smuggle a bad name into a tool namespace or a bad URL into the proxy.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::infra::error::{Code, Coded};
use crate::infra::paths::Home;
use crate::infra::protocol::{McpServer, McpTransport};
use crate::infra::proxy::McpRoute;

/// Servers one group may have: each is started (or connected) at every run.
pub const MAX_PER_GROUP: usize = 16;
/// Largest `mcp.toml` read.
const MAX_FILE: u64 = 1024 * 1024;
/// Longest tool-call timeout the owner may set, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// One configured server, as stored in `mcp.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub group: String,
    pub name: String,
    /// Stdio: the program, found in the image's PATH or relative to the group folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment for a stdio server (placeholders only; real credentials stay on the host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Remote: the Streamable HTTP endpoint, reached only by the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: Vec<Entry>,
}

/// What one run gets for its group.
#[derive(Debug, Default, Clone)]
pub struct GroupServers {
    pub servers: Vec<McpServer>,
    remotes: Vec<McpRoute>,
}

impl GroupServers {
    /// The proxy routes for the remote servers.
    pub fn routes(&self) -> Vec<McpRoute> {
        self.remotes.clone()
    }
}

/// Path of the file.
pub fn path(home: &Home) -> PathBuf {
    home.root.join("mcp.toml")
}

/// Check a server name: `^[a-z0-9][a-z0-9-]{0,31}$` (no `_`, so `NAME__tool` splits one way).
pub fn validate_name(name: &str) -> Result<(), String> {
    let first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > 32 || !first || !rest {
        return Err(format!(
            "MCP server name `{}` is not allowed: use 1–32 lowercase letters, digits or `-`, starting with a letter or digit",
            crate::infra::output::clip(name, 40)
        ));
    }
    Ok(())
}

/// Check a remote URL: `http(s)://host[:port]/path`, no user info, no fragment.
pub fn validate_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "MCP server URL `{}` {why}; give a URL like https://example.com/mcp",
            crate::infra::output::clip(url, 200)
        ))
    };
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("is too long or holds spaces or control characters");
    }
    let uri: ureq::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => return bad("is not a URL"),
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return bad("must start with http:// or https://"),
    }
    let Some(auth) = uri.authority() else {
        return bad("names no host");
    };
    if auth.as_str().contains('@') {
        return bad("must not carry a user name or password (bind credentials with `claw secret`)");
    }
    if auth.host().is_empty() || url.contains('#') {
        return bad("names no host or has a #fragment");
    }
    Ok(())
}

/// Check one entry completely (the same rules for the CLI, IPC and a hand-edited file).
pub fn validate(e: &Entry) -> Result<(), String> {
    crate::rules::groups::validate_folder(&e.group)?;
    validate_name(&e.name)?;
    match (&e.command, &e.url) {
        (Some(c), None) => {
            if c.trim().is_empty() || c.contains('\0') || c.len() > 4096 {
                return Err(format!(
                    "MCP server `{}`: the command is empty or too long",
                    e.name
                ));
            }
            if e.args.len() > 256 || e.args.iter().any(|a| a.contains('\0') || a.len() > 4096) {
                return Err(format!(
                    "MCP server `{}`: too many or too long arguments",
                    e.name
                ));
            }
            for (k, v) in &e.env {
                let ok_key = !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.starts_with(|c: char| c.is_ascii_digit());
                if !ok_key || v.contains('\0') || v.len() > 4096 {
                    return Err(format!(
                        "MCP server `{}`: environment variable `{}` is not a plain NAME=value",
                        e.name,
                        crate::infra::output::clip(k, 40)
                    ));
                }
            }
        }
        (None, Some(u)) => {
            validate_url(u)?;
            if !e.args.is_empty() || !e.env.is_empty() {
                return Err(format!(
                    "MCP server `{}`: a remote server takes no arguments or environment",
                    e.name
                ));
            }
        }
        _ => {
            return Err(format!(
                "MCP server `{}` needs exactly one of a command (stdio) or a URL (remote)",
                e.name
            ));
        }
    }
    if let Some(t) = e.timeout_secs
        && !(1..=MAX_TIMEOUT_SECS).contains(&t)
    {
        return Err(format!(
            "MCP server `{}`: timeout_secs must be 1–{MAX_TIMEOUT_SECS}",
            e.name
        ));
    }
    Ok(())
}

/// Every configured server (validated), in file order.
pub fn list(home: &Home) -> Result<Vec<Entry>> {
    let p = path(home);
    let text = match std::fs::metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        Ok(m) if !m.is_file() || m.len() > MAX_FILE => {
            return Err(Coded::err(
                Code::NotInitialised,
                format!(
                    "{} is not a regular file under {} KiB; fix or remove it",
                    p.display(),
                    MAX_FILE >> 10
                ),
            ));
        }
        Ok(_) => {
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?
        }
    };
    let file: File = toml::from_str(&text).map_err(|e| {
        Coded::err(
            Code::NotInitialised,
            format!(
                "{} is not valid: {e}; fix it or manage it with `claw mcp`",
                p.display()
            ),
        )
    })?;
    for e in &file.server {
        validate(e)
            .map_err(|why| Coded::err(Code::NotInitialised, format!("{}: {why}", p.display())))?;
    }
    Ok(file.server)
}

/// The servers of one group as the run needs them.
pub fn load_group(home: &Home, folder: &str) -> Result<GroupServers> {
    let mut out = GroupServers::default();
    for e in list(home)?.into_iter().filter(|e| e.group == folder) {
        out.servers.push(to_protocol(&e));
        if let Some(url) = &e.url {
            out.remotes.push(McpRoute {
                name: e.name.clone(),
                url: url.clone(),
            });
        }
    }
    Ok(out)
}

/// The start-line form of an entry.
pub fn to_protocol(e: &Entry) -> McpServer {
    McpServer {
        name: e.name.clone(),
        transport: match &e.command {
            Some(c) => McpTransport::Stdio {
                command: c.clone(),
                args: e.args.clone(),
                env: e.env.clone(),
            },
            None => McpTransport::Http,
        },
        timeout_secs: e.timeout_secs.unwrap_or(60),
    }
}

/// Adds a server; refuses a duplicate name in the group and more than [`MAX_PER_GROUP`].
/// `replace` overwrites an existing one of the same name instead.
pub fn add(home: &Home, entry: Entry, replace: bool) -> Result<()> {
    validate(&entry).map_err(|e| Coded::err(Code::Usage, e))?;
    edit(home, |servers| {
        let same = |e: &Entry| e.group == entry.group && e.name == entry.name;
        if let Some(i) = servers.iter().position(same) {
            if !replace {
                return Err(Coded::err(
                    Code::Usage,
                    format!(
                        "group `{}` already has an MCP server `{}`; remove it first with `claw mcp rm {} {}` or pass --replace",
                        entry.group, entry.name, entry.group, entry.name
                    ),
                ));
            }
            servers[i] = entry.clone();
            return Ok(());
        }
        if servers.iter().filter(|e| e.group == entry.group).count() >= MAX_PER_GROUP {
            return Err(Coded::err(
                Code::Usage,
                format!(
                    "group `{}` already has {MAX_PER_GROUP} MCP servers; remove one first",
                    entry.group
                ),
            ));
        }
        servers.push(entry.clone());
        Ok(())
    })
}

/// Removes a server; an unknown name is a usage error naming `claw mcp list`.
pub fn remove(home: &Home, group: &str, name: &str) -> Result<()> {
    edit(home, |servers| {
        let before = servers.len();
        servers.retain(|e| !(e.group == group && e.name == name));
        if servers.len() == before {
            return Err(Coded::err(
                Code::Usage,
                format!("group `{group}` has no MCP server `{name}`; see `claw mcp list {group}`"),
            ));
        }
        Ok(())
    })
}

/// Read, change and atomically rewrite the file under a lock, so the CLI and ipc-apply never
/// lose each other's edits.
fn edit(home: &Home, change: impl FnOnce(&mut Vec<Entry>) -> Result<()>) -> Result<()> {
    std::fs::create_dir_all(home.locks()).ok();
    let _held = crate::infra::lock::acquire(&home.locks().join("mcp.lock"))?;
    let mut servers = list(home)?;
    change(&mut servers)?;
    let text = format!(
        "# MCP servers per group; edit with `claw mcp add|rm` (see docs/guides/mcp.md).\n\
         # Never mounted into a container; remote URLs are reached only by the host's proxy.\n\n{}",
        toml::to_string_pretty(&File { server: servers }).context("cannot write mcp.toml")?
    );
    let p = path(home);
    let tmp = p.with_extension(format!("toml.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p).with_context(|| format!("cannot replace {}", p.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(name: &str) -> Entry {
        Entry {
            group: "main".into(),
            name: name.into(),
            command: Some("mcp-server-time".into()),
            args: vec![],
            env: BTreeMap::new(),
            url: None,
            timeout_secs: None,
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in ["time", "gh-2", "a", "0x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Time", "a_b", "-a", "a b", "a/b", &"x".repeat(33), "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_checked() {
        for ok in [
            "https://api.example.com/mcp",
            "http://127.0.0.1:8123/mcp",
            "https://h",
        ] {
            assert!(validate_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://h/x",
            "https://user:pw@h/mcp",
            "/mcp",
            "https:///x",
            "https://h/ x",
            "https://h/#f",
            "file:///etc/passwd",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_need_one_transport() {
        assert!(validate(&stdio("time")).is_ok());
        let mut both = stdio("x");
        both.url = Some("https://h/mcp".into());
        assert!(validate(&both).is_err());
        let mut none = stdio("x");
        none.command = None;
        assert!(validate(&none).is_err());
        let mut env = stdio("x");
        env.env.insert("BAD KEY".into(), "v".into());
        assert!(validate(&env).is_err());
        let mut t = stdio("x");
        t.timeout_secs = Some(0);
        assert!(validate(&t).is_err());
    }

    #[test]
    fn add_list_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        add(&home, stdio("time"), false).unwrap();
        let mut remote = stdio("gh");
        remote.command = None;
        remote.url = Some("https://api.example.com/mcp".into());
        add(&home, remote, false).unwrap();
        assert!(add(&home, stdio("time"), false).is_err());
        add(&home, stdio("time"), true).unwrap();
        let g = load_group(&home, "main").unwrap();
        assert_eq!(g.servers.len(), 2);
        assert_eq!(g.routes().len(), 1);
        assert_eq!(g.routes()[0].name, "gh");
        assert!(load_group(&home, "other").unwrap().servers.is_empty());
        remove(&home, "main", "time").unwrap();
        assert!(remove(&home, "main", "time").is_err());
        assert_eq!(list(&home).unwrap().len(), 1);
        // A hand-edited bad name is refused on load, naming the file.
        std::fs::write(
            path(&home),
            "[[server]]\ngroup = \"main\"\nname = \"a__b\"\ncommand = \"x\"\n",
        )
        .unwrap();
        let err = format!("{:#}", list(&home).unwrap_err());
        assert!(err.contains("mcp.toml") && err.contains("a__b"), "{err}");
    }
}
