//! claw: a personal AI assistant as a toolkit of small commands around one SQLite file.
//!
//! Data flows one way: ingest → store → dispatch → run_group → ipc → outbox → deliver.
//! Each module owns one concern; `main.rs` only parses arguments and calls into `cli`.

pub mod agent;
pub mod protocol;
