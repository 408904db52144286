//! The state every tool and turn shares during one run: where things are, who we are, how to
//! reach the proxy, the usage so far and the connected MCP servers.

use super::Paths;
use super::mcp::Mcp;
use super::transport::Http;
use crate::infra::protocol::{Start, Usage};
use std::sync::Mutex;

/// What every tool may need: where things are, who we are, how to reach the proxy.
pub struct Ctx {
    pub paths: Paths,
    pub start: Start,
    pub http: Http,
    /// `http://127.0.0.1:PORT`, the relay to the proxy socket, for egress.
    pub proxy_url: String,
    /// Token usage of every model call since the last idle line (sub-agents included).
    pub usage: Mutex<Usage>,
    /// The group's MCP servers, connected at start (tools `SERVER__tool`).
    pub mcp: Mcp,
}

impl Ctx {
    /// Add one model call's usage to the running total.
    pub fn add_usage(&self, u: Usage) {
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).add(u);
    }
    /// Return the running usage total and reset it.
    pub fn take_usage(&self) -> Usage {
        std::mem::take(&mut *self.usage.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
