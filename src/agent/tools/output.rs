//! A tool's answer, kept apart from the dispatcher so MCP can build one without the catalogue.

use crate::agent::transcript::Block;

/// A tool's answer for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub content: String,
    pub is_error: bool,
    /// An image the tool opened, shown to a vision model after the results (`read_file`).
    pub image: Option<Block>,
}

impl Output {
    /// A successful result.
    pub fn ok(s: impl Into<String>) -> Output {
        Output {
            content: s.into(),
            is_error: false,
            image: None,
        }
    }
    /// A failed result the model should read and react to.
    pub fn err(s: impl Into<String>) -> Output {
        Output {
            content: s.into(),
            is_error: true,
            image: None,
        }
    }
}
