//! claw: a personal AI assistant as a toolkit of small commands around one SQLite file.
//!
//! Data flows one way: ingest → store → dispatch → run_group → ipc → outbox → deliver.
//! Each module owns one concern; `main.rs` only parses arguments and calls into `cli`.

// The folder tree is the architecture (docs/ARCHITECTURE.md): `steps` is the pipeline,
// `rules` the domain, `infra` what both stand on, `ops` installing and checking; `channels`,
// `media`, `search` and `mcp` are capabilities that reach across them; `cli` parses and calls;
// `agent` is the other binary, the loop inside the container.
pub mod agent;
pub mod channels;
pub mod cli;
pub mod infra;
pub mod mcp;
pub mod media;
pub mod ops;
pub mod rules;
pub mod search;
pub mod steps;

/// The assistant's name becomes `@Name`, so it must be one word of letters, digits, `-` or `_`.
pub fn validate_assistant_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return Err(infra::error::Coded::err(
            infra::error::Code::Usage,
            format!(
                "assistant name `{name}` must be one word (letters, digits, `-`, `_`, at most 32)"
            ),
        ));
    }
    Ok(())
}
