//! Exit codes that mean something, carried through `anyhow` errors.
//!
//! Any error may be wrapped in [`Coded`] to pick its exit code; everything else exits 1.

use std::fmt;

/// Process exit codes, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Something failed; the message says what.
    Failure = 1,
    /// The command line was wrong (clap also uses 2).
    Usage = 2,
    /// The home is missing, not initialised, or its config or database is unusable.
    NotInitialised = 3,
    /// Some input was rejected (the rest was processed).
    Rejected = 4,
    /// Another process holds the lock this command needs; try again later.
    Busy = 5,
    /// The container runtime is missing or failed.
    Runtime = 6,
}

/// An error with a chosen exit code.
#[derive(Debug)]
pub struct Coded {
    pub code: Code,
    pub message: String,
}

impl Coded {
    /// Build an `anyhow::Error` that exits with `code`.
    pub fn err(code: Code, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Coded {
            code,
            message: message.into(),
        })
    }
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// The exit code for an error: the first [`Coded`] in its chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Coded>())
        .map(|c| c.code as i32)
        .unwrap_or(Code::Failure as i32)
}
