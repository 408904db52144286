//! `search_history`: words in, ranked snippets out, answered by the host through the proxy's
//! `/search` route. The agent never sees the database; the host decides whose history is
//! searched from which run asked, so this side sends only the request and shows the answer.

use super::{Ctx, Output, arg_str};
use crate::infra::protocol::{SEARCH_PATH, SearchRequest, SearchResponse};
use serde_json::Value;

/// Largest answer read from the host (50 hits of at most 400 characters fit many times over).
const MAX_ANSWER: u64 = 512 * 1024;

/// Run one search and format the hits for the model.
pub fn search(ctx: &Ctx, input: &Value) -> Output {
    let query = match arg_str(input, "query") {
        Ok(q) => q.to_string(),
        Err(e) => return e,
    };
    let text = |k: &str| input[k].as_str().map(str::to_string);
    let req = SearchRequest {
        query,
        since: text("since"),
        until: text("until"),
        sender: text("sender"),
        group: text("group"),
        limit: input["limit"].as_u64().map(|n| n as usize),
    };
    let (status, body) = match ctx.http.post_local(SEARCH_PATH, &req, MAX_ANSWER) {
        Ok(r) => r,
        Err(e) => return Output::err(format!("search_history failed: {e}")),
    };
    if status != 200 {
        return Output::err(format!(
            "search_history was refused ({status}): {}",
            body.trim()
        ));
    }
    match serde_json::from_str::<SearchResponse>(&body) {
        Ok(r) => Output::ok(format_hits(&r)),
        Err(e) => Output::err(format!(
            "search_history: the host's answer was unreadable: {e}"
        )),
    }
}

/// One block per hit, best first.
pub fn format_hits(r: &SearchResponse) -> String {
    let mut out = String::new();
    if let Some(n) = &r.note {
        out.push_str(&format!("note: {n}\n"));
    }
    if r.hits.is_empty() {
        out.push_str("no matches");
        return out;
    }
    out.push_str(&format!("{} match(es), best first:\n", r.hits.len()));
    for (i, h) in r.hits.iter().enumerate() {
        let group = h
            .group
            .as_deref()
            .map(|g| format!(" in {g}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}. {} {} from {}{group}, id {}:\n   {}\n",
            i + 1,
            h.date,
            h.kind,
            h.sender,
            h.id,
            h.snippet.replace('\n', " ")
        ));
    }
    out
}
