//! `claw.toml`: the owner's settings. Unknown keys are errors so a typo never silently does nothing.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::infra::error::{Code, Coded};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The assistant's name; `@Name` is the default trigger.
    pub assistant_name: String,
    pub runtime: RuntimeConfig,
    pub limits: Limits,
    pub model: ModelConfig,
    pub providers: Providers,
    /// How long host-side records of agents' activity are kept.
    pub retention: Retention,
    /// Prices per model, for `claw usage`, `claw status` and money budgets.
    pub pricing: crate::rules::cost::pricing::PricingConfig,
    /// Caps on model use for all groups together (each group may have its own, `claw group set`).
    pub budget: crate::rules::cost::budget::Caps,
    /// Channel settings by channel name (`telegram`, `signal`, or any `command` channel).
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Attachments in and out (`[media]`): size caps, inbox age, transcription.
    pub media: crate::media::MediaConfig,
    /// Per-model facts (`[models."NAME"] vision = true`).
    pub models: BTreeMap<String, crate::media::ModelEntry>,
    /// Which acts that leave the sandbox need the owner's yes, and how long an act waits for it.
    pub approvals: crate::rules::approvals::Settings,
    /// The host proxy's own settings (credential substitution).
    pub proxy: ProxySettings,
}

/// `[proxy]`: settings of the proxy run-group serves to each container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySettings {
    /// A PEM file of CA certificates the proxy trusts upstream beside Mozilla's roots, when it
    /// terminates TLS for a host with a bound credential (a private service, or tests).
    pub extra_ca_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `auto`, `podman`, `docker` or `container` (Apple).
    pub kind: String,
    /// The agent image tag.
    pub image: String,
    /// Containers running at once across all groups.
    pub max_concurrent: usize,
    /// Extra arguments passed to `<runtime> run` before the image (e.g. `--ulimit`).
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock limit for one container run.
    pub timeout_secs: u64,
    /// Close the container after this long without new input once the agent is idle.
    pub idle_secs: u64,
    pub memory: String,
    pub cpus: f64,
    pub pids: u32,
    /// Inbound message text above this many bytes is rejected.
    pub max_message_bytes: usize,
    /// Most pending messages put into one prompt.
    pub prompt_messages: usize,
    /// Tries of a failing run before the chat is told it failed.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_base_secs: u64,
    /// Model turns per message before the agent stops (runaway guard).
    pub max_steps: u32,
    /// Disk a group's writable folders (workspace, session, IPC) may use, in MiB; a run that
    /// passes it is stopped and the chat told. `group set --disk-mb` overrides it per group.
    pub group_disk_mb: u64,
    /// Files and folders a group's writable folders may hold (inodes are a disk too).
    pub group_max_files: u64,
    /// Size of one run's log in KiB; past it the head and tail are kept and the middle dropped.
    pub run_log_kb: u64,
    /// Model requests one run may have in flight at once (the proxy queues the rest).
    pub llm_concurrency: usize,
    /// Model requests one run may make in all; past it the proxy refuses them.
    pub llm_requests_per_run: u32,
    /// Shortest schedule a non-main group's agent may set for a task (cron or interval).
    pub min_task_interval_secs: u64,
    /// Active or paused tasks a non-main group may have.
    pub max_tasks: u32,
    /// Runs a non-main group may start in any hour (messages and tasks together); 0 = no limit.
    pub runs_per_hour: u32,
    /// A message that could run but was not acted on for this long, while nothing runs for its
    /// group, is a problem (`claw status --problems`, `claw doctor`, the tick's log).
    pub stale_after_secs: u64,
}

/// Retention of host-side records (pruned by `claw tick`'s housekeeping, at most hourly).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Audit rows older than this many days are deleted.
    pub audit_days: u32,
    /// Rejected IPC files in `ipc/errors/` older than this many days are deleted.
    pub ipc_errors_days: u32,
    /// `ipc/errors/` is kept under this many MiB, oldest removed first.
    pub ipc_errors_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `anthropic` or `openai` (any OpenAI-compatible endpoint).
    pub provider: String,
    pub name: String,
    pub max_tokens: u32,
    pub context_window: u32,
    /// Other model names any group's agent may ask for; a request for a model that is neither
    /// `name`, one of these, nor in the group's own list is rewritten to `name` by the proxy.
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Providers {
    pub anthropic: ProviderConfig,
    pub openai: ProviderConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub base_url: String,
    /// Name of the variable in secrets.env holding the key.
    pub key_env: String,
}

/// One channel's settings. Channel-specific keys live in `extra`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelConfig {
    pub enabled: bool,
    /// For `command` channels: argv that receives outbox rows as JSON lines on stdin.
    pub send_command: Vec<String>,
    /// For `command` channels: argv that prints inbound JSON lines.
    pub receive_command: Vec<String>,
    #[serde(flatten)]
    pub extra: toml::Table,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            assistant_name: "Andy".into(),
            runtime: RuntimeConfig::default(),
            limits: Limits::default(),
            model: ModelConfig::default(),
            providers: Providers::default(),
            retention: Retention::default(),
            pricing: Default::default(),
            budget: Default::default(),
            channels: BTreeMap::new(),
            media: Default::default(),
            models: BTreeMap::new(),
            approvals: Default::default(),
            proxy: ProxySettings::default(),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kind: "auto".into(),
            image: "claw-agent:latest".into(),
            max_concurrent: 3,
            extra_args: vec![],
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_secs: 1800,
            idle_secs: 30,
            memory: "1g".into(),
            cpus: 1.0,
            pids: 256,
            max_message_bytes: 64 * 1024,
            prompt_messages: 50,
            max_attempts: 4,
            retry_base_secs: 5,
            max_steps: 40,
            group_disk_mb: 1024,
            group_max_files: 100_000,
            run_log_kb: 4096,
            llm_concurrency: 4,
            llm_requests_per_run: 500,
            min_task_interval_secs: 300,
            max_tasks: 20,
            runs_per_hour: 30,
            stale_after_secs: 120,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            audit_days: 90,
            ipc_errors_days: 14,
            ipc_errors_mb: 64,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            provider: "anthropic".into(),
            name: "claude-sonnet-4-5".into(),
            max_tokens: 4096,
            context_window: 200_000,
            allowed: vec![],
        }
    }
}

impl Default for Providers {
    fn default() -> Self {
        Providers {
            anthropic: ProviderConfig {
                base_url: "https://api.anthropic.com".into(),
                key_env: "ANTHROPIC_API_KEY".into(),
            },
            openai: ProviderConfig {
                base_url: "https://api.openai.com".into(),
                key_env: "OPENAI_API_KEY".into(),
            },
        }
    }
}

impl Config {
    /// Read and validate `claw.toml`; errors say which file and line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Coded::err(
                Code::NotInitialised,
                format!(
                    "cannot read {}: {e}; run `claw init` to create it",
                    path.display()
                ),
            )
        })?;
        Config::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parse config text, filling defaults, and check values make sense.
    pub fn parse(text: &str) -> Result<Config> {
        let mut cfg: Config =
            toml::from_str(text).map_err(|e| Coded::err(Code::NotInitialised, e.to_string()))?;
        // Empty provider sections in the file would otherwise wipe the defaults.
        let defaults = Providers::default();
        for (p, d) in [
            (&mut cfg.providers.anthropic, defaults.anthropic),
            (&mut cfg.providers.openai, defaults.openai),
        ] {
            if p.base_url.is_empty() {
                p.base_url = d.base_url;
            }
            if p.key_env.is_empty() {
                p.key_env = d.key_env;
            }
        }
        if cfg.runtime.max_concurrent == 0 {
            return Err(Coded::err(
                Code::NotInitialised,
                "runtime.max_concurrent must be at least 1",
            ));
        }
        for (name, v) in [
            ("limits.llm_concurrency", cfg.limits.llm_concurrency as u64),
            ("limits.run_log_kb", cfg.limits.run_log_kb),
            ("limits.group_disk_mb", cfg.limits.group_disk_mb),
            ("limits.group_max_files", cfg.limits.group_max_files),
            ("model.max_tokens", u64::from(cfg.model.max_tokens)),
        ] {
            if v == 0 {
                return Err(Coded::err(
                    Code::NotInitialised,
                    format!("{name} must be at least 1"),
                ));
            }
        }
        if let Some(problem) = cfg
            .pricing
            .problem()
            .or_else(|| cfg.budget.problem("budget."))
        {
            return Err(Coded::err(Code::NotInitialised, problem));
        }
        if !matches!(cfg.model.provider.as_str(), "anthropic" | "openai") {
            return Err(Coded::err(
                Code::NotInitialised,
                format!(
                    "model.provider `{}` is unknown: use `anthropic` or `openai`",
                    cfg.model.provider
                ),
            ));
        }
        if !matches!(
            cfg.runtime.kind.as_str(),
            "auto" | "podman" | "docker" | "container"
        ) {
            return Err(Coded::err(
                Code::NotInitialised,
                format!(
                    "runtime.kind `{}` is unknown: use auto, podman, docker or container",
                    cfg.runtime.kind
                ),
            ));
        }
        Ok(cfg)
    }

    /// The default trigger, `@Name`.
    pub fn default_trigger(&self) -> String {
        format!("@{}", self.assistant_name)
    }

    /// The send command configured for a channel, if any.
    pub fn send_command(&self, channel: &str) -> Option<&[String]> {
        self.channels
            .get(channel)
            .map(|c| c.send_command.as_slice())
            .filter(|c| !c.is_empty())
    }
}

/// The commented file `claw init` writes.
pub fn default_file(assistant_name: &str) -> String {
    format!(
        r#"# claw configuration. Every key is optional; the values shown are the defaults.
# Secrets (API keys, bot tokens) belong in secrets.env beside this file, never here.

# The assistant's name. In groups other than main, messages must start with @{assistant_name}.
assistant_name = "{assistant_name}"

[runtime]
# auto picks podman, then docker, then Apple `container` on macOS.
kind = "auto"
image = "claw-agent:latest"
# Containers running at once across all groups.
max_concurrent = 3
# Extra arguments for `<runtime> run`, e.g. ["--ulimit", "nofile=1024:1024"].
extra_args = []

[limits]
timeout_secs = 1800      # wall clock per container run
idle_secs = 30           # close an idle container after this long
memory = "1g"
cpus = 1.0
pids = 256
max_message_bytes = 65536
prompt_messages = 50     # most pending messages in one prompt
max_attempts = 4         # tries of a failing run before the chat is told
retry_base_secs = 5      # first retry delay, doubling
max_steps = 40           # model turns per message
group_disk_mb = 1024     # disk a group's writable folders may use; the run is stopped past it
group_max_files = 100000 # files and folders in them
run_log_kb = 4096        # one run's log; past it the head and tail are kept
llm_concurrency = 4      # model requests one run may have in flight
llm_requests_per_run = 500
# Limits for groups other than main (main is the owner's own chat):
min_task_interval_secs = 300   # shortest task schedule an agent may set
max_tasks = 20                 # active or paused tasks per group
runs_per_hour = 30             # runs per group per hour (0 = no limit)
stale_after_secs = 120         # a runnable message untouched this long is reported as a problem

[retention]
audit_days = 90          # audit rows older than this are deleted
ipc_errors_days = 14     # rejected IPC files in ipc/errors/ older than this are deleted
ipc_errors_mb = 64       # and ipc/errors/ is kept under this size

# Budgets: caps on model use for all groups together, per local day and calendar month, in the
# pricing currency or in tokens (input, output and cache tokens together); absent or 0: no cap.
# When one is spent the proxy refuses model requests and no run starts until the period ends
# (a request already in flight completes); the main chat is warned at 80%. Per group:
# `claw group set FOLDER --budget-daily 2.00` (and --budget-monthly, --budget-daily-tokens,
# --budget-monthly-tokens). `claw usage` and `claw status` show the spend.
# [budget]
# daily = 5.0
# monthly = 50.0
# daily_tokens = 2000000
# monthly_tokens = 20000000

# Prices: built in (US dollars) for current Anthropic and OpenAI models; with another currency
# they apply only multiplied by usd_rate. A model without a price shows tokens only.
# [pricing]
# currency = "USD"
# symbol = "$"
# usd_rate = 0.92
# Per million tokens; cache_read defaults to 0.1 x input, cache_write to 1.25 x input; a name
# ending in * is a prefix.
# [pricing.models."claude-sonnet-4-5"]
# input = 3.0
# output = 15.0
# cache_read = 0.3
# cache_write = 3.75

# Approvals: acts that leave the sandbox, each allow, deny or ask. `ask` sends a card to the main
# chat and the act waits for `yes ID` / `no ID` there (Telegram: buttons), or `claw approve ID` /
# `claw deny ID`; no answer within timeout_secs denies it. Per group:
# `claw group set FOLDER --approve egress=ask`. Unset keys keep the built-in behaviour shown.
[approvals]
timeout_secs = 600       # how long an act waits for the owner's answer
max_per_run = 20         # cards one run may send, and IPC acts a group may have waiting
# egress = "deny"              # a host not on the group's egress list
# credential = "allow"         # a bound credential, first use in a run
# credential_every_use = false # with credential = "ask": ask on every use
# send_message = "deny"        # to a chat other than the group's own (main: "allow")
# add_mcp_server = "ask"       # adding an MCP server to a group
# schedule_task = "allow"      # a non-main group scheduling a task

[model]
provider = "anthropic"   # or "openai" for any OpenAI-compatible endpoint
name = "claude-sonnet-4-5"
max_tokens = 4096        # the proxy clamps every model request to this
context_window = 200000
allowed = []             # other models an agent may ask for; anything else becomes `name`

[providers.anthropic]
base_url = "https://api.anthropic.com"
key_env = "ANTHROPIC_API_KEY"   # the variable in secrets.env

[providers.openai]
base_url = "https://api.openai.com"   # OpenRouter, Ollama, vLLM, llama.cpp: their base URL
key_env = "OPENAI_API_KEY"

# Service credentials (docs/guides/credentials.md): `claw secret set github` stores a value,
# `claw group set G --credential github=api.github.com:Authorization:Bearer` binds it. The
# container sees only a placeholder; the proxy swaps in the value for the bound host, verifying
# the host's certificate against Mozilla's roots and, if set, the CAs in this PEM file.
# [proxy]
# extra_ca_file = "/etc/claw/internal-ca.pem"

# Channels (docs/channels/). Chat ids carry the channel's prefix: tg:, sig:, wa:, cli:.
#
# Telegram: put TELEGRAM_BOT_TOKEN in secrets.env, then `claw ingest --from telegram` on a timer.
# [channels.telegram]
# enabled = true
# api_base = "https://api.telegram.org"   # or a self-hosted Bot API server
# poll_timeout_secs = 25                   # long-poll wait (0-50)
# bot_username = "my_claw_bot"             # optional; learnt with getMe when missing
#
# Signal through signal-cli: `claw ingest --from signal`; `claw deliver` runs `signal-cli send`.
# [channels.signal]
# enabled = true
# cli = "signal-cli"                       # program name on PATH, or a path
# account = "+4915112345678"               # or SIGNAL_ACCOUNT in secrets.env
# receive_timeout_secs = 5
# attachments_dir = "~/.local/share/signal-cli/attachments"   # where signal-cli saves files
#
# WhatsApp (`claw whatsapp run`, or any bridge using `claw outbox claim --channel wa`):
# [channels.whatsapp]
# enabled = true
# claim_timeout_secs = 300                 # an unreported claim is released after this
#
# Attachments (photos, voice notes, audio, documents, video) land in the group's folder under
# inbox/<date>/<message id>-<name>; the agent sees them in its prompt and can send files back.
# [media]
# inbox_max_age_days = 30                  # inbox files older than this are deleted (0 = keep)
# ingest_roots = []                        # folders JSON-lines bridges may pass `path` files from
# download_timeout_secs = 120
# [media.max_mb]                           # largest file per kind, in MiB
# photo = 20
# voice = 20
# audio = 20
# document = 20
# video = 20
# Voice notes transcribed on the host by an OpenAI-compatible /v1/audio/transcriptions endpoint
# (OpenAI, Groq, a local whisper server); the key stays in secrets.env. Empty base_url: off.
# Audio of a type not in `accepts` is converted with ffmpeg first (`claw doctor` checks it).
# [media.transcription]
# base_url = "https://api.openai.com"
# model = "whisper-1"
# key_env = "TRANSCRIPTION_API_KEY"
#
# Whether a model takes images (default: true for Claude 3+, GPT-4o, GPT-4.1, GPT-5, o3/o4):
# [models."llama3.2-vision"]
# vision = true
#
# A channel whose outbox rows are piped as JSON lines to a script:
# [channels.matrix]
# enabled = true
# send_command = ["/path/to/claw/bin/matrix-send"]
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_defaults() {
        let c = Config::parse(&default_file("Andy")).unwrap();
        assert_eq!(c.assistant_name, "Andy");
        assert_eq!(c.runtime.max_concurrent, 3);
        assert_eq!(c.providers.openai.key_env, "OPENAI_API_KEY");
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.pricing.currency, "USD");
        assert!(c.budget.is_empty());
    }

    #[test]
    fn budget_and_pricing_sections_parse_and_are_checked() {
        let c = Config::parse(
            "[budget]\ndaily = 5.0\nmonthly_tokens = 1000\n[pricing]\ncurrency = \"EUR\"\n\
             [pricing.models.\"m*\"]\ninput = 1.0\noutput = 2.0",
        )
        .unwrap();
        assert_eq!(c.budget.daily, Some(5.0));
        assert_eq!(c.budget.list().len(), 2);
        assert_eq!(c.pricing.models["m*"].output, 2.0);
        assert!(Config::parse("[budget]\ndaily = -1.0").is_err());
        assert!(Config::parse("[budget]\nweekly = 1.0").is_err());
        assert!(Config::parse("[pricing.models.x]\ninput = 1.0").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::parse("assitant_name = \"x\"").is_err());
        assert!(Config::parse("[runtime]\nmax_concurrent = 0").is_err());
        assert!(Config::parse("[model]\nprovider = \"gemini\"").is_err());
        let c = Config::parse("[channels.wa]\nsend_command = [\"x\"]\nfoo = 1").unwrap();
        assert_eq!(
            c.channels["wa"]
                .extra
                .get("foo")
                .and_then(|v| v.as_integer()),
            Some(1)
        );
        assert_eq!(c.send_command("wa"), Some(&["x".to_string()][..]));
    }
}
