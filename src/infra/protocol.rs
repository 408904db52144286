//! The JSON lines spoken between `claw run-group` (host) and `claw-agent` (container).
//!
//! Host → agent on stdin: one [`HostLine::Start`], then any number of [`HostLine::Message`],
//! then [`HostLine::Close`] (or EOF). Agent → host on stdout: [`AgentLine`]s only; anything else
//! on stdout is a protocol error, and logs go to stderr. Nothing in here may ever carry a secret:
//! the API key stays in the host's proxy.

use serde::{Deserialize, Serialize};

/// Path of the proxy socket inside the container.
pub const PROXY_SOCKET: &str = "/run/claw/proxy.sock";

/// Model and provider settings the host resolves from config for one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// `anthropic` or `openai` (any OpenAI-compatible chat-completions endpoint).
    pub provider: String,
    /// Model name passed upstream, e.g. `claude-sonnet-4-5` or `gpt-4o-mini`.
    pub model: String,
    /// Output token cap per model turn.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Context window used to decide when to compact the transcript (tokens).
    #[serde(default = "default_context_window")]
    pub context_window: u32,
}

fn default_max_tokens() -> u32 {
    4096
}
fn default_context_window() -> u32 {
    200_000
}

/// Limits the agent enforces on itself (the host enforces its own independently).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Model turns per user message before the loop gives up.
    pub max_steps: u32,
    /// Seconds a `bash` tool call may run.
    pub bash_timeout_secs: u64,
    /// Bytes of tool output returned to the model before truncation.
    pub tool_output_cap: usize,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            max_steps: 40,
            bash_timeout_secs: 120,
            tool_output_cap: 30_000,
        }
    }
}

/// What the host writes to the agent's stdin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostLine {
    /// First line of every run.
    Start(Box<Start>),
    /// A follow-up prompt (new chat messages) for the running conversation.
    Message {
        text: String,
        /// Photos of these messages to show a vision model (paths under /workspace/group).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<String>,
    },
    /// Finish the current turn, then exit.
    Close,
}

/// The opening line: everything the agent needs to know about this run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub prompt: String,
    pub group_folder: String,
    pub chat_id: String,
    pub is_main: bool,
    /// True when this run was started by a scheduled task rather than by chat messages.
    pub is_task: bool,
    #[serde(default)]
    pub task_id: Option<i64>,
    /// Session to resume; `None` starts a fresh transcript.
    #[serde(default)]
    pub session_id: Option<String>,
    pub assistant_name: String,
    /// The chat's channel (`cli`, `telegram`, `whatsapp`, `signal`, …) so formatting rules fit.
    pub channel: String,
    pub model: ModelSettings,
    #[serde(default)]
    pub limits: AgentLimits,
    /// Photos of the prompt's messages to show the model as image blocks (paths relative to
    /// /workspace/group); empty when the model takes no images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Whether the model takes images (`read_file` on an image then shows it to the model).
    #[serde(default)]
    pub vision: bool,
    /// The group's MCP servers (`mcp.toml`); left out of the line when there are none, so an
    /// agent that predates MCP still reads the start line of a group without servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<McpServer>,
}

/// One MCP server the agent connects to at start. No secrets: a credential reaches a server only
/// as a placeholder the host's proxy substitutes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Namespace of its tools (`NAME__tool`): `^[a-z0-9][a-z0-9-]{0,31}$`.
    pub name: String,
    pub transport: McpTransport,
    /// Seconds one tool call may take (and starting the server, at most [`MCP_START_SECS`]).
    #[serde(default = "default_mcp_timeout")]
    pub timeout_secs: u64,
}

/// Longest wait for an MCP server to start and list its tools.
pub const MCP_START_SECS: u64 = 30;

fn default_mcp_timeout() -> u64 {
    60
}

/// How the agent reaches an MCP server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpTransport {
    /// A child process inside the container speaking JSON-RPC on stdin/stdout.
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: std::collections::BTreeMap<String, String>,
    },
    /// Streamable HTTP through the proxy's `/mcp/NAME` route; the URL itself stays on the host.
    Http,
}

/// What the agent writes to its stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentLine {
    /// Text for the chat (the host strips `<internal>` spans before sending).
    Result { text: String },
    /// Session id to store and resume next time.
    Session { id: String },
    /// A tool is being used; for logs and typing indicators.
    Progress {
        tool: String,
        #[serde(default)]
        detail: String,
    },
    /// The turn finished; the agent waits for more input.
    Idle {
        #[serde(default)]
        usage: Option<Usage>,
    },
    /// Something failed; `fatal` means the agent is about to exit non-zero.
    Error {
        message: String,
        #[serde(default)]
        fatal: bool,
    },
}

/// Token accounting for one turn (summed over its model calls), as the provider reported it.
///
/// The three input counts are disjoint, as in Anthropic's usage and the host's `usage` table:
/// `input_tokens` is input billed at the full rate, `cache_read_tokens` was read from the prompt
/// cache (about a tenth of the price) and `cache_write_tokens` was written to it (Anthropic: 1.25×).
/// The cache fields are optional on the wire, so an agent that predates them still parses.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Every input token of the calls, cached or not: the size of the context the model read.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    /// Add another call's usage to this total.
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

impl HostLine {
    /// One JSON line, newline-terminated.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("protocol types always serialise");
        s.push('\n');
        s
    }
}

impl AgentLine {
    /// One JSON line, newline-terminated.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("protocol types always serialise");
        s.push('\n');
        s
    }
}

/// Subfolders of `/workspace/ipc` (host: `ipc/FOLDER/`). The file's folder is its only identity.
pub const IPC_MESSAGES_DIR: &str = "messages";
/// Task and admin requests.
pub const IPC_TASKS_DIR: &str = "tasks";
/// Replies the host writes for task requests, named after the request file's stem.
pub const IPC_REPLIES_DIR: &str = "replies";
/// Snapshot of the tasks this group may see (all tasks for main), written by the host.
pub const IPC_TASKS_SNAPSHOT: &str = "current_tasks.json";
/// Snapshot of known chats (main only), written by the host.
pub const IPC_CHATS_SNAPSHOT: &str = "available_chats.json";

/// A request an agent writes as one JSON file under `messages/` or `tasks/`.
///
/// The request id is the file's stem, so a reply can be matched without trusting a field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IpcRequest {
    /// Send text to a chat; `chat` defaults to the group's own chat.
    SendMessage {
        text: String,
        #[serde(default)]
        chat: Option<String>,
        /// Why, for the owner, when the act needs approval (another chat): shown on the card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Send a file from the group folder (`path` relative to it); `chat` as for send_message.
    SendFile {
        path: String,
        #[serde(default)]
        caption: Option<String>,
        #[serde(default)]
        chat: Option<String>,
    },
    /// Create a scheduled task; `folder` (main only) targets another group.
    ScheduleTask {
        prompt: String,
        schedule_type: String,
        schedule_value: String,
        #[serde(default)]
        context_mode: Option<String>,
        #[serde(default)]
        timezone: Option<String>,
        #[serde(default)]
        folder: Option<String>,
        /// A shell command run in the group's container (no network) before the model is woken;
        /// the task runs only when it exits 0 and prints something, and gets what it printed.
        #[serde(default)]
        check: Option<String>,
        /// Why, for the owner, when the act needs approval: shown on the card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Change a task's prompt or schedule.
    UpdateTask {
        task_id: i64,
        #[serde(default)]
        prompt: Option<String>,
        #[serde(default)]
        schedule_type: Option<String>,
        #[serde(default)]
        schedule_value: Option<String>,
        #[serde(default)]
        timezone: Option<String>,
        /// A new check command; an empty string removes the check.
        #[serde(default)]
        check: Option<String>,
    },
    PauseTask {
        task_id: i64,
    },
    ResumeTask {
        task_id: i64,
    },
    CancelTask {
        task_id: i64,
    },
    /// Main only: register a known chat as a group.
    RegisterGroup {
        chat: String,
        folder: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        trigger: Option<String>,
        #[serde(default)]
        requires_trigger: Option<bool>,
    },
    /// Main only: rewrite the chats snapshot.
    RefreshGroups,
    /// Ask for an MCP server for a group (`folder`, default the asking group's own): a stdio
    /// `command` with `args`, or a remote `url`. Governed by the group's `add_mcp_server` approval policy (`approvals::ipc`).
    AddMcpServer {
        name: String,
        #[serde(default)]
        folder: Option<String>,
        #[serde(default)]
        command: Option<String>,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        url: Option<String>,
        /// Why the agent wants it, for the owner deciding.
        #[serde(default)]
        reason: Option<String>,
    },
}

/// The host's answer to a task request, at `replies/<request stem>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IpcReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i64>,
    /// The request waits for the owner's answer to approval `approval_id`; a final reply
    /// replaces this one when it is decided or expires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// The approval that decides (or decided) this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<i64>,
    /// Seconds the owner has left to answer, in a pending reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lines_round_trip_with_type_tags() {
        let line = HostLine::Message {
            text: "hi".into(),
            images: vec![],
        }
        .to_line();
        assert_eq!(line, "{\"type\":\"message\",\"text\":\"hi\"}\n");
        assert_eq!(
            serde_json::from_str::<HostLine>(&line).unwrap(),
            HostLine::Message {
                text: "hi".into(),
                images: vec![]
            }
        );
        assert_eq!(
            serde_json::from_str::<HostLine>("{\"type\":\"close\"}").unwrap(),
            HostLine::Close
        );
    }

    #[test]
    fn agent_lines_parse_with_defaults() {
        let l: AgentLine = serde_json::from_str("{\"type\":\"idle\"}").unwrap();
        assert_eq!(l, AgentLine::Idle { usage: None });
        let l: AgentLine =
            serde_json::from_str("{\"type\":\"progress\",\"tool\":\"bash\"}").unwrap();
        assert_eq!(
            l,
            AgentLine::Progress {
                tool: "bash".into(),
                detail: String::new()
            }
        );
        assert!(serde_json::from_str::<AgentLine>("{\"type\":\"shout\"}").is_err());
    }

    #[test]
    fn usage_cache_fields_are_optional_and_disjoint() {
        let old = r#"{"type":"idle","usage":{"input_tokens":7,"output_tokens":2}}"#;
        let Ok(AgentLine::Idle { usage: Some(u) }) = serde_json::from_str::<AgentLine>(old) else {
            panic!("an idle line without cache fields must still parse");
        };
        assert_eq!((u.cache_read_tokens, u.cache_write_tokens), (0, 0));
        let mut total = u;
        total.add(Usage {
            input_tokens: 1,
            output_tokens: 1,
            cache_read_tokens: 100,
            cache_write_tokens: 20,
        });
        assert_eq!(total.prompt_tokens(), 7 + 1 + 100 + 20);
        let line = AgentLine::Idle { usage: Some(total) }.to_line();
        assert!(line.contains("\"cache_read_tokens\":100"), "{line}");
        assert!(line.contains("\"cache_write_tokens\":20"), "{line}");
    }
}

/// The proxy's local route for `search_history`: `POST http://claw/search` with a
/// [`SearchRequest`] body, answered with a [`SearchResponse`]. The host decides whose history is
/// searched from which run's proxy answered, never from anything in the request.
pub const SEARCH_PATH: &str = "/search";

/// What the agent asks `search_history` for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Plain words; every word must occur (if nothing matches, any word may). A trailing `*`
    /// matches a prefix. Quotes and operators are taken as words, never as query syntax.
    pub query: String,
    /// `YYYY-MM-DD`, RFC 3339, or a duration back from now (`30d`, `12h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Same forms as `since`; exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// A sender id or name; `assistant` for the agent's own replies, `archive` for archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Main only: search this group's history instead of every group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// At most this many hits (bounded by the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One hit as the agent sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchHit {
    /// `message`, `reply` (the assistant's own) or `archive`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The chat's message id, `out:N` for a reply, the file name for an archive.
    pub id: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub sender: String,
    /// The matching fragment, matched words in `**…**`.
    pub snippet: String,
}

/// The answer to a [`SearchRequest`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    /// How the query was read (e.g. that it fell back to any word), for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
