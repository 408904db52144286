//! The local route behind the agent's `search_history` tool: `POST http://claw/search`.
//!
//! Why the proxy and not an IPC request with a reply file: the proxy already serves exactly one
//! run of one group, so the asker's identity is fixed when run-group starts it and nothing in a
//! request can change it; the call is synchronous and bounded like any other (the socket's
//! pacing, a small body cap, one answer); and no file crosses the agent-writable IPC folder in
//! either direction. The proxy still never touches SQLite: run-group hands it a [`Searcher`], a
//! function that already knows which folder asks and answers through `crate::search`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::{ProxyEvent, Shared, body, http};
use crate::infra::protocol::{SearchRequest, SearchResponse};

/// Largest request body accepted (a query is at most 512 bytes plus a few fields).
pub const MAX_SEARCH_BODY: usize = 4 * 1024;

/// Answers one search for the run's own group; an `Err` is a reason for the agent.
#[derive(Clone)]
pub struct Searcher(pub Arc<dyn Fn(SearchRequest) -> Result<SearchResponse, String> + Send + Sync>);

impl Searcher {
    /// Run one search.
    pub fn search(&self, req: SearchRequest) -> Result<SearchResponse, String> {
        (self.0)(req)
    }
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Searcher")
    }
}

/// Serve `POST /search`; returns the event for the audit table (status only, never the query).
pub(super) fn serve(
    mut conn: UnixStream,
    head: &http::Head,
    leftover: Vec<u8>,
    shared: &Shared,
) -> ProxyEvent {
    let status = answer(&mut conn, head, leftover, shared);
    ProxyEvent::Local {
        method: head.method.chars().take(16).collect(),
        path: crate::infra::protocol::SEARCH_PATH.into(),
        status,
    }
}

fn answer(conn: &mut UnixStream, head: &http::Head, leftover: Vec<u8>, shared: &Shared) -> u16 {
    fn refuse(conn: &mut UnixStream, status: u16, msg: &str) -> u16 {
        let _ = http::write_simple(conn, status, msg);
        status
    }
    let Some(searcher) = &shared.searcher else {
        return refuse(
            conn,
            404,
            "claw: history search is not available in this run",
        );
    };
    if head.method != "POST" {
        return refuse(conn, 405, "claw: POST a JSON search request to /search");
    }
    // Only a small Content-Length body: a chunked one could not be bounded before reading it.
    let len = head
        .header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        None => return refuse(conn, 411, "claw: a search request needs a Content-Length"),
        Some(n) if n > MAX_SEARCH_BODY => {
            return refuse(
                conn,
                413,
                &format!("claw: a search request is at most {MAX_SEARCH_BODY} bytes"),
            );
        }
        Some(_) => {}
    }
    let _ = conn.set_read_timeout(Some(body::BODY_TIMEOUT));
    let bytes = match body::read_body(conn, head, leftover, &shared.body_budget) {
        Ok(b) => b,
        Err(rej) => return refuse(conn, rej.status, &rej.message),
    };
    let req: SearchRequest = match serde_json::from_slice(&bytes.bytes) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                conn,
                400,
                &format!("claw: the search request is not valid JSON for search_history: {e}"),
            );
        }
    };
    drop(bytes);
    match searcher.search(req) {
        Ok(resp) => {
            // The answer was made; a client gone before reading it is its own business.
            let _ = write_json(conn, &resp);
            200
        }
        Err(why) => refuse(conn, 400, &format!("claw: {why}")),
    }
}

fn write_json(w: &mut impl Write, resp: &SearchResponse) -> std::io::Result<()> {
    let body = serde_json::to_vec(resp)?;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(&body)?;
    w.flush()
}
