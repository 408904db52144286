//! MCP client of claw-agent: a synchronous facade over the official Rust SDK (`rmcp`), which is
//! async. It owns one small tokio runtime and the connections to the group's MCP servers:
//! stdio servers started as child processes inside the container, and remote servers over
//! Streamable HTTP through the proxy socket's `/mcp/NAME` route (the container has no network;
//! the URL and the egress decision stay on the host).
//!
//! Promises: every server is started (and its tools listed) within
//! [`crate::infra::protocol::MCP_START_SECS`], every call within the server's timeout; a server that
//! fails to start, hangs, exits or answers junk becomes a tool error the model reads, never a
//! stuck or crashed run. Everything read from a server is bounded: a JSON-RPC line or event is at
//! most 16 MiB (rmcp's limits), tools per server, names, descriptions and schemas are capped
//! here, and results are capped by the tool output cap. Tools are offered as `SERVER__tool`.

mod content;
mod names;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ClientConfig, Implementation};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceExt};
use serde_json::Value;

use super::providers::ToolSpec;
use super::tools::output::Output;
use crate::infra::protocol::{MCP_START_SECS, McpServer, McpTransport};

/// Tools taken from one server; the rest are left out (and logged).
pub const MAX_TOOLS: usize = 128;

/// Where stdio servers run and how they reach the proxy.
pub struct Env<'a> {
    /// The proxy socket (remote servers).
    pub socket: &'a Path,
    /// The group folder: working directory of stdio servers, and where relative commands live.
    pub group: &'a Path,
    /// `http://127.0.0.1:PORT`, the loopback relay, given to stdio servers as their HTTP proxy.
    pub proxy_url: &'a str,
}

/// The connected servers of this run.
pub struct Mcp {
    rt: Option<tokio::runtime::Runtime>,
    servers: Vec<Server>,
    specs: Vec<ToolSpec>,
}

struct Server {
    name: String,
    timeout: Duration,
    state: State,
}

enum State {
    Ready {
        /// Kept so the connection (and a stdio child) lives as long as the run.
        _service: Box<Service>,
        peer: Peer<RoleClient>,
        /// (offered name, the server's own name)
        tools: Vec<(String, String)>,
    },
    Failed(String),
}

/// A live connection to one server.
type Service = RunningService<RoleClient, ClientConfig>;
/// What connecting one server yields.
type Connected = (Service, Vec<rmcp::model::Tool>);

/// How claw-agent introduces itself to servers (what a server logs, and conformance checks).
fn client_info() -> ClientConfig {
    let mut info = ClientConfig::default();
    info.client_info = Implementation::new("claw-agent", env!("CARGO_PKG_VERSION"));
    info
}

impl Mcp {
    /// No servers: offers no tools and starts no runtime.
    pub fn none() -> Mcp {
        Mcp {
            rt: None,
            servers: vec![],
            specs: vec![],
        }
    }

    /// Start or connect every server at once and list their tools; failures are kept, not fatal.
    pub fn start(servers: &[McpServer], env: &Env) -> Mcp {
        if servers.is_empty() {
            return Mcp::none();
        }
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcp")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let why = format!("could not start the MCP runtime: {e}");
                super::log(&why);
                return Mcp {
                    rt: None,
                    servers: servers
                        .iter()
                        .map(|s| Server {
                            name: s.name.clone(),
                            timeout: Duration::from_secs(s.timeout_secs),
                            state: State::Failed(why.clone()),
                        })
                        .collect(),
                    specs: vec![],
                };
            }
        };
        let start_limit = Duration::from_secs(MCP_START_SECS);
        let handles: Vec<_> = servers
            .iter()
            .map(|s| {
                let (s, socket, group, proxy) = (
                    s.clone(),
                    env.socket.to_path_buf(),
                    env.group.to_path_buf(),
                    env.proxy_url.to_string(),
                );
                rt.spawn(async move {
                    let limit = start_limit.min(Duration::from_secs(s.timeout_secs.max(1)));
                    match tokio::time::timeout(limit, connect(&s, &socket, &group, &proxy)).await {
                        Ok(r) => r,
                        Err(_) => Err(format!(
                            "did not start and list its tools within {} s",
                            limit.as_secs()
                        )),
                    }
                })
            })
            .collect();
        let mut out = Mcp {
            rt: None,
            servers: vec![],
            specs: vec![],
        };
        let mut taken = std::collections::HashSet::new();
        for (s, h) in servers.iter().zip(handles) {
            let result = rt
                .block_on(h)
                .unwrap_or_else(|e| Err(format!("its start task failed: {e}")));
            let state = match result {
                Ok((service, tools)) => {
                    let (specs, map) = names::offer(&s.name, &tools, &mut taken);
                    super::log(&format!(
                        "MCP server `{}`: {} tools offered",
                        s.name,
                        specs.len()
                    ));
                    out.specs.extend(specs);
                    State::Ready {
                        peer: service.peer().clone(),
                        _service: Box::new(service),
                        tools: map,
                    }
                }
                Err(why) => {
                    super::log(&format!("MCP server `{}` is unavailable: {why}", s.name));
                    State::Failed(why)
                }
            };
            out.servers.push(Server {
                name: s.name.clone(),
                timeout: Duration::from_secs(s.timeout_secs.max(1)),
                state,
            });
        }
        out.rt = Some(rt);
        out
    }

    /// The tool specs to offer the model, in server order.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// Servers that could not be used, with why (for the system prompt and `claw mcp tools`).
    pub fn failures(&self) -> Vec<(String, String)> {
        self.servers
            .iter()
            .filter_map(|s| match &s.state {
                State::Failed(why) => Some((s.name.clone(), why.clone())),
                State::Ready { .. } => None,
            })
            .collect()
    }

    /// What every server offers, as JSON for `claw mcp tools`: per server its tools (offered
    /// name, description, schema) or why it is unavailable.
    pub fn listing(&self) -> Value {
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|s| match &s.state {
                State::Ready { tools, .. } => {
                    let tools: Vec<Value> = tools
                        .iter()
                        .filter_map(|(offered, original)| {
                            let spec = self.specs.iter().find(|t| t.name == offered)?;
                            Some(serde_json::json!({
                                "name": offered,
                                "tool": original,
                                "description": spec.description,
                                "input_schema": spec.schema,
                            }))
                        })
                        .collect();
                    serde_json::json!({"server": s.name, "ok": true, "tools": tools})
                }
                State::Failed(why) => {
                    serde_json::json!({"server": s.name, "ok": false, "error": why, "tools": []})
                }
            })
            .collect();
        serde_json::json!({ "servers": servers })
    }

    /// Whether `name` is an MCP tool name (`SERVER__tool` of a configured server).
    pub fn owns(&self, name: &str) -> bool {
        name.split_once("__")
            .is_some_and(|(s, _)| self.servers.iter().any(|x| x.name == s))
    }

    /// For a `SERVER__tool` name of a server that could not be used, the error to answer with.
    pub fn unavailable(&self, name: &str) -> Option<Output> {
        let (server, _) = name.split_once("__")?;
        let s = self.servers.iter().find(|s| s.name == server)?;
        match &s.state {
            State::Failed(why) => Some(Output::err(format!(
                "MCP server `{server}` is unavailable in this run: {why}. Carry on without it; the owner can check it with `claw mcp tools`."
            ))),
            State::Ready { .. } => None,
        }
    }

    /// Calls one tool; every failure is an error result naming the server and what to do.
    pub fn call(&self, name: &str, input: &Value, save_dir: &Path) -> Output {
        let Some((server_name, _)) = name.split_once("__") else {
            return Output::err(format!("`{name}` is not an MCP tool"));
        };
        let Some(server) = self.servers.iter().find(|s| s.name == server_name) else {
            return Output::err(format!("no MCP server `{server_name}` in this run"));
        };
        let (peer, tools) = match &server.state {
            State::Ready { peer, tools, .. } => (peer, tools),
            State::Failed(_) => {
                return self
                    .unavailable(name)
                    .unwrap_or_else(|| Output::err("unavailable"));
            }
        };
        let Some((_, original)) = tools.iter().find(|(offered, _)| offered == name) else {
            let offered: Vec<&str> = tools.iter().map(|(o, _)| o.as_str()).collect();
            return Output::err(format!(
                "MCP server `{server_name}` has no tool `{name}`; it offers: {}",
                offered.join(", ")
            ));
        };
        let args = match input {
            Value::Object(m) => m.clone(),
            Value::Null => Default::default(),
            _ => return Output::err("MCP tool arguments must be a JSON object"),
        };
        let Some(rt) = &self.rt else {
            return Output::err("the MCP runtime is not running");
        };
        let params = CallToolRequestParams::new(original.clone()).with_arguments(args);
        let secs = server.timeout.as_secs();
        let result = rt
            .block_on(async { tokio::time::timeout(server.timeout, peer.call_tool(params)).await });
        match result {
            Err(_) => Output::err(format!(
                "MCP server `{server_name}` did not answer `{original}` within {secs} s; the call was cancelled. Try again later or do without it."
            )),
            Ok(Err(e)) => Output::err(describe_error(server_name, &e)),
            Ok(Ok(r)) => content::render(server_name, &r, save_dir),
        }
    }
}

impl Drop for Mcp {
    /// Closes connections and kills stdio children without waiting long for them.
    fn drop(&mut self) {
        self.servers.clear();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn describe_error(server: &str, e: &rmcp::ServiceError) -> String {
    use rmcp::ServiceError as E;
    match e {
        E::McpError(err) => format!(
            "MCP server `{server}` refused the call: {} (code {})",
            crate::infra::output::clip(&err.message, 2000),
            err.code.0
        ),
        E::TransportClosed | E::TransportSend(_) => format!(
            "MCP server `{server}` is gone (its process exited or its connection closed): {}. It stays unavailable for this run.",
            crate::infra::output::clip(&e.to_string(), 500)
        ),
        E::UnexpectedResponse => {
            format!("MCP server `{server}` answered with something that is not a tool result")
        }
        other => format!(
            "MCP server `{server}` failed: {}",
            crate::infra::output::clip(&other.to_string(), 500)
        ),
    }
}

/// Starts or connects one server and lists its tools.
async fn connect(
    s: &McpServer,
    socket: &Path,
    group: &Path,
    proxy_url: &str,
) -> Result<Connected, String> {
    let service = match &s.transport {
        McpTransport::Stdio { command, args, env } => {
            let program = program_path(command, group);
            let mut cmd = tokio::process::Command::new(&program);
            cmd.args(args).current_dir(group).kill_on_drop(true);
            // Like `bash`: HTTP(S) from a server goes to the loopback relay, so the egress
            // allowlist applies to it too.
            for k in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "http_proxy",
                "https_proxy",
                "ALL_PROXY",
            ] {
                cmd.env(k, proxy_url);
            }
            cmd.env("NO_PROXY", "").env("no_proxy", "");
            cmd.envs(env);
            let (child, _) = rmcp::transport::TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        format!(
                            "command `{command}` was not found in the image's PATH or the group folder"
                        )
                    } else {
                        format!("could not start `{command}`: {e}")
                    }
                })?;
            client_info().serve(child).await.map_err(|e| {
                format!(
                    "`{command}` did not complete the MCP handshake (it exited or wrote something that is not MCP): {}",
                    crate::infra::output::clip(&e.to_string(), 300)
                )
            })?
        }
        McpTransport::Http => {
            let socket = socket
                .to_str()
                .ok_or("the proxy socket path is not UTF-8")?;
            let t = rmcp::transport::StreamableHttpClientTransport::from_unix_socket(
                socket,
                format!("http://claw/mcp/{}", s.name),
            );
            client_info().serve(t).await.map_err(|e| {
                format!(
                    "the remote server (through the host's proxy) did not complete the MCP handshake: {}",
                    crate::infra::output::clip(&e.to_string(), 500)
                )
            })?
        }
    };
    let tools = service.peer().list_all_tools().await.map_err(|e| {
        format!(
            "could not list its tools: {}",
            crate::infra::output::clip(&e.to_string(), 300)
        )
    })?;
    Ok((service, tools))
}

/// A command with a `/` that is not absolute is taken relative to the group folder; a bare
/// name is looked up in the image's PATH.
fn program_path(command: &str, group: &Path) -> PathBuf {
    let p = Path::new(command);
    if command.contains('/') && p.is_relative() {
        group.join(p)
    } else {
        p.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_commands_live_in_the_group_folder() {
        let g = Path::new("/workspace/group");
        assert_eq!(program_path("./bin/srv", g), g.join("./bin/srv"));
        assert_eq!(program_path("tools/srv", g), g.join("tools/srv"));
        assert_eq!(
            program_path("mcp-server-time", g),
            Path::new("mcp-server-time")
        );
        assert_eq!(program_path("/usr/bin/x", g), Path::new("/usr/bin/x"));
    }

    #[test]
    fn a_missing_command_is_a_clear_failure_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let servers = vec![McpServer {
            name: "nope".into(),
            transport: McpTransport::Stdio {
                command: "claw-no-such-mcp-server".into(),
                args: vec![],
                env: Default::default(),
            },
            timeout_secs: 5,
        }];
        let env = Env {
            socket: &dir.path().join("none.sock"),
            group: dir.path(),
            proxy_url: "http://127.0.0.1:9",
        };
        let mcp = Mcp::start(&servers, &env);
        assert!(mcp.specs().is_empty());
        let f = mcp.failures();
        assert!(f[0].1.contains("was not found"), "{f:?}");
        let out = mcp.call("nope__x", &serde_json::json!({}), dir.path());
        assert!(
            out.is_error && out.content.contains("unavailable"),
            "{out:?}"
        );
        assert!(mcp.owns("nope__x") && !mcp.owns("bash") && !mcp.owns("other__x"));
    }
}
