//! Approvals: acts that leave the sandbox and that the group's policy marks `ask` wait for the
//! owner's yes in the main chat.
//!
//! Owns the policy (`policy`), asking (a row in the `approvals` table plus a card in the main
//! chat's outbox, in the caller's transaction: [`ask`]), answering (`yes 42` in the main chat, a
//! Telegram button, `claw approve 42`: `answer`), and the IPC side (`ipc`: a request that waits
//! stays in its folder until its row is decided). The proxy side waits in run-group's asker.
//!
//! Rules every part keeps: a row decides exactly one act (its id; for IPC also its exact content),
//! so no answer can unlock another act; a row is decided once (`store::approvals`); nothing an
//! agent wrote (its stated reason, a message text) reaches the card except as quoted, one-line,
//! bounded text; and an unanswered row expires, which denies.

pub mod answer;
pub mod ipc;
pub mod policy;

pub use policy::{Kind, Overrides, Policy, Settings};

use anyhow::Result;
use rusqlite::Connection;
use std::io::Read;

use crate::infra::config::Config;
use crate::infra::store::approvals::{self, Approval, NewApproval};
use crate::infra::store::{groups, outbox};

/// Characters of agent-written text (a reason, a message) quoted on a card.
const QUOTE_CHARS: usize = 300;

/// An act to ask the owner about.
pub struct Request<'a> {
    pub folder: &'a str,
    /// The group's display name, for the card.
    pub group_name: &'a str,
    pub run_id: Option<i64>,
    pub kind: Kind,
    /// Exactly what is asked (host and port, credential and host, the request itself): the
    /// identity of the act. Equal details in one run (proxy) or one folder (IPC) are one act.
    pub detail: serde_json::Value,
    /// The agent's stated reason, untrusted.
    pub reason: Option<&'a str>,
}

/// Record the question and queue its card in the main chat, in the caller's transaction.
/// `Ok(Err(why))` when it cannot be asked (no main chat registered).
pub fn ask(
    conn: &Connection,
    config: &Config,
    req: &Request,
    now: i64,
) -> Result<Result<Approval, String>> {
    let Some(main) = groups::main(conn)? else {
        return Ok(Err(
            "no main chat is registered to ask the owner in (claw init registers one)".into(),
        ));
    };
    let timeout_ms = config.approvals.timeout_secs.max(1).saturating_mul(1000) as i64;
    let reason = req.reason.map(quote);
    let row = approvals::create(
        conn,
        &NewApproval {
            folder: req.folder,
            run_id: req.run_id,
            kind: req.kind.as_str(),
            detail: &req.detail,
            reason: reason.as_deref(),
            nonce: &nonce(),
            expires_at: now.saturating_add(timeout_ms),
        },
        now,
    )?;
    let text = card(&row, req.group_name, config.approvals.timeout_secs);
    let id = outbox::enqueue(conn, &main.chat_id, &text, &format!("approval:{}", row.id))?;
    approvals::set_card(conn, row.id, id)?;
    Ok(Ok(Approval {
        card_outbox_id: Some(id),
        ..row
    }))
}

/// The card's text: what, which group, why, the id and how to answer.
pub fn card(a: &Approval, group_name: &str, timeout_secs: u64) -> String {
    let what = describe(&a.kind, &a.detail);
    let why = match &a.reason {
        Some(r) => format!("reason: «{r}»"),
        None => "no reason given".into(),
    };
    let mins = timeout_secs.div_ceil(60);
    format!(
        "Approval {id}: {group} wants to {what} — {why}. Reply `yes {id}` or `no {id}` (no answer in {mins} min denies it).",
        id = a.id,
        group = one_line(group_name, 80),
    )
}

/// What an act is, in words ("reach api.example.com:443").
pub fn describe(kind: &str, d: &serde_json::Value) -> String {
    let s = |k: &str| one_line(d.get(k).and_then(|v| v.as_str()).unwrap_or("?"), 200);
    match kind {
        "egress" => {
            let host = s("host");
            // A literal address is dialled as shown once approved: say so when it is not public.
            let inward = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !crate::infra::proxy::is_global_unicast(ip));
            format!(
                "reach {host}:{}{}",
                d.get("port").and_then(|v| v.as_u64()).unwrap_or(0),
                if inward {
                    " (a local or private address: yes lets it into this machine or your network)"
                } else {
                    ""
                }
            )
        }
        "credential" => format!(
            "use the credential `{}` with {}",
            s("credential"),
            s("host")
        ),
        "send_message" => format!(
            "send a message to {}: «{}»",
            s("chat"),
            quote(d.get("text").and_then(|v| v.as_str()).unwrap_or(""))
        ),
        "schedule_task" => format!(
            "schedule a task ({} {}): «{}»",
            s("schedule_type"),
            s("schedule_value"),
            quote(d.get("prompt").and_then(|v| v.as_str()).unwrap_or(""))
        ),
        "add_mcp_server" => format!(
            "add an MCP server: «{}»",
            quote(&d.get("request").map(|v| v.to_string()).unwrap_or_default())
        ),
        other => format!("do `{other}`"),
    }
}

/// Agent-written text as a card may show it: one line, printable, bounded.
pub fn quote(s: &str) -> String {
    let mut q = one_line(s, QUOTE_CHARS);
    if s.chars().count() > QUOTE_CHARS {
        q.push('…');
    }
    q
}

fn one_line(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// 16 hex digits from the OS's random source: the part of a button's callback data that only
/// the card's own buttons carry.
fn nonce() -> String {
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        // No random source: time and pid still make a guess unlikely, and a wrong guess only
        // fails (the typed `yes ID` from the main chat needs no nonce anyway).
        let t = crate::infra::time::now_ms() as u64 ^ ((std::process::id() as u64) << 32);
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_quote_agent_text_on_one_bounded_line() {
        let a = Approval {
            id: 42,
            folder: "family".into(),
            run_id: Some(1),
            kind: "egress".into(),
            detail: serde_json::json!({"host": "api.example.com", "port": 443}),
            reason: Some(quote("check the\nweather\u{7}")),
            status: "requested".into(),
            nonce: "n".into(),
            requested_at: 0,
            expires_at: 0,
            decided_at: None,
            decided_by: None,
            card_outbox_id: None,
        };
        let c = card(&a, "Family", 600);
        assert_eq!(
            c,
            "Approval 42: Family wants to reach api.example.com:443 — reason: «check the weather». Reply `yes 42` or `no 42` (no answer in 10 min denies it)."
        );
        let long = "x".repeat(1000);
        assert_eq!(quote(&long).chars().count(), QUOTE_CHARS + 1);
        assert_eq!(nonce().len(), 16);
        assert_ne!(nonce(), nonce());
    }
}
