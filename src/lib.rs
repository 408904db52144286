//! claw: a personal AI assistant as a toolkit of small commands around one SQLite file.
//!
//! Data flows one way: ingest → store → dispatch → run_group → ipc → outbox → deliver.
//! Each module owns one concern; `main.rs` only parses arguments and calls into `cli`.

pub mod agent;
pub mod approvals;
pub mod ca;
pub mod chain;
pub mod channels;
pub mod chat;
pub mod cli;
pub mod config;
pub mod cost;
pub mod credentials;
pub mod deliver;
pub mod dispatch;
pub mod doctor;
pub mod error;
pub mod exe;
pub mod groups;
pub mod housekeeping;
pub mod image;
pub mod ingest;
pub mod init;
pub mod ipc;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod mcp;
pub mod media;
pub mod mounts;
pub mod notice;
pub mod output;
pub mod paths;
pub mod pending;
pub mod problems;
pub mod prompt;
pub mod protocol;
pub mod proxy;
pub mod run_group;
pub mod runtime;
pub mod schedule;
pub mod search;
pub mod secrets;
pub mod service;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod tasks;
pub mod tick;
pub mod time;
pub mod untrusted;
pub mod wake;
pub mod watchdog;

/// The assistant's name becomes `@Name`, so it must be one word of letters, digits, `-` or `_`.
pub fn validate_assistant_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return Err(error::Coded::err(
            error::Code::Usage,
            format!(
                "assistant name `{name}` must be one word (letters, digits, `-`, `_`, at most 32)"
            ),
        ));
    }
    Ok(())
}
