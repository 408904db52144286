//! claw: a personal AI assistant as a toolkit of small commands around one SQLite file.
//!
//! Data flows one way: ingest → store → dispatch → run_group → ipc → outbox → deliver.
//! Each module owns one concern; `main.rs` only parses arguments and calls into `cli`.

pub mod channels;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod error;
pub mod groups;
pub mod ingest;
pub mod init;
pub mod lock;
pub mod logging;
pub mod notice;
pub mod output;
pub mod paths;
pub mod pending;
pub mod protocol;
pub mod secrets;
pub mod status;
pub mod store;
pub mod time;

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
