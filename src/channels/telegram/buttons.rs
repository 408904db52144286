//! Approval cards as Telegram inline buttons: the keyboard sent with a card, and the
//! `callback_query` updates a press produces.
//!
//! A press counts only if it comes from a card in the main chat and carries the row's nonce
//! (`crate::rules::approvals::answer`); it is decided in the same transaction that moves the update
//! offset, and answered (`answerCallbackQuery`, which stops the button's spinner) after commit.

use anyhow::Result;
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::rules::approvals::answer;

/// A press read from one update, decided in the poll's transaction.
pub struct Press {
    /// The callback query's id, for `answerCallbackQuery`.
    pub query_id: String,
    /// What the owner sees as the toast.
    pub text: String,
}

/// The inline keyboard for approval `id`: Approve and Deny, each with the row's nonce.
pub fn keyboard(id: i64, nonce: &str) -> Value {
    json!({"inline_keyboard": [[
        {"text": format!("Approve {id}"), "callback_data": answer::callback_data(id, nonce, true)},
        {"text": format!("Deny {id}"), "callback_data": answer::callback_data(id, nonce, false)},
    ]]})
}

/// If `raw` is a `callback_query` update, decide it inside `tx` and return the press to answer;
/// `None` for any other update.
pub fn take_press(tx: &Connection, raw: &Value, now: i64) -> Result<Option<Press>> {
    let Some(q) = raw.get("callback_query") else {
        return Ok(None);
    };
    let Some(query_id) = q.get("id").and_then(Value::as_str).map(str::to_string) else {
        return Ok(None);
    };
    let from = q
        .pointer("/from/id")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let chat = q
        .pointer("/message/chat/id")
        .and_then(Value::as_i64)
        .map(super::map::chat_id);
    let data = q.get("data").and_then(Value::as_str).unwrap_or("");
    let main = crate::infra::store::groups::main(tx)?;
    let text = match (answer::parse_callback(data), chat, main) {
        (Some((id, nonce, approve)), Some(chat), Some(main)) if chat == main.chat_id => {
            let by = format!("telegram:{from}");
            let a = answer::answer(tx, id, approve, Some(&nonce), &by, now)?;
            if a.decided {
                crate::infra::store::outbox::enqueue(
                    tx,
                    &chat,
                    &a.message,
                    &format!("approval-answer:{id}"),
                )?;
            }
            a.message
        }
        (Some(_), _, _) => "Approvals are answered only in the main chat.".to_string(),
        _ => "This button is not claw's.".to_string(),
    };
    Ok(Some(Press { query_id, text }))
}
