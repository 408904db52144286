//! Turning a server's tool list into tool specs for the model: `SERVER__tool` names in the
//! character set both wire formats accept (`[A-Za-z0-9_-]`, at most 64), bounded descriptions
//! and schemas, and an object schema at the top (what both APIs require).
//!
//! Specs hold `&'static str` (the built-in catalogue is static), so offered names and
//! descriptions are leaked: once per run, at most `MAX_TOOLS` per server and 16 servers.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::MAX_TOOLS;
use crate::agent::providers::ToolSpec;

/// Longest tool name both providers accept.
const MAX_NAME: usize = 64;
/// Characters of a description kept.
const MAX_DESCRIPTION: usize = 2000;
/// Bytes of one input schema (as JSON) kept; larger ones are replaced by an open object.
const MAX_SCHEMA: usize = 32 * 1024;

/// The specs to offer and the map from offered name to the server's own name.
pub fn offer(
    server: &str,
    tools: &[rmcp::model::Tool],
    taken: &mut HashSet<String>,
) -> (Vec<ToolSpec>, Vec<(String, String)>) {
    let mut specs = Vec::new();
    let mut map = Vec::new();
    for t in tools {
        if specs.len() == MAX_TOOLS {
            crate::agent::log(&format!(
                "MCP server `{server}` offers {} tools; only the first {MAX_TOOLS} are used",
                tools.len()
            ));
            break;
        }
        let offered = offered_name(server, &t.name);
        if !taken.insert(offered.clone()) {
            crate::agent::log(&format!(
                "MCP server `{server}`: tool `{}` left out, its name clashes as `{offered}`",
                crate::infra::output::clip(&t.name, 80)
            ));
            continue;
        }
        let description = describe(server, t);
        let schema = schema(&Value::Object((*t.input_schema).clone()));
        map.push((offered.clone(), t.name.to_string()));
        specs.push(ToolSpec {
            name: Box::leak(offered.into_boxed_str()),
            description: Box::leak(description.into_boxed_str()),
            schema,
        });
    }
    (specs, map)
}

/// `SERVER__tool`, with characters the APIs refuse replaced by `_` and cut to 64.
pub fn offered_name(server: &str, tool: &str) -> String {
    let clean: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("{server}__{clean}");
    name.truncate(MAX_NAME);
    name
}

fn describe(server: &str, t: &rmcp::model::Tool) -> String {
    let own = t
        .description
        .as_deref()
        .or(t.title.as_deref())
        .unwrap_or("")
        .trim();
    let mut d = format!("[MCP server `{server}`] {own}");
    if d.chars().count() > MAX_DESCRIPTION {
        d = d.chars().take(MAX_DESCRIPTION).collect::<String>() + "…";
    }
    d
}

/// The input schema as offered: the server's if it is an object schema of bounded size, else an
/// open object schema.
pub fn schema(s: &Value) -> Value {
    let size = serde_json::to_vec(s).map_or(usize::MAX, |v| v.len());
    let mut s = match s {
        Value::Object(_) if size <= MAX_SCHEMA => s.clone(),
        _ => return json!({"type": "object", "additionalProperties": true}),
    };
    if s.get("type").and_then(Value::as_str) != Some("object") {
        s["type"] = json!("object");
    }
    if s.get("properties").is_none() {
        s["properties"] = json!({});
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_both_wire_formats() {
        assert_eq!(
            offered_name("time", "get_current_time"),
            "time__get_current_time"
        );
        assert_eq!(offered_name("fs", "read.file/v2"), "fs__read_file_v2");
        let long = offered_name("srv", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(offered_name("a", "é").is_ascii());
    }

    #[test]
    fn schemas_are_bounded_objects() {
        assert_eq!(
            schema(&json!({"type":"object","properties":{"a":{"type":"string"}}}))["properties"]["a"]
                ["type"],
            "string"
        );
        let big = json!({"type":"object","description":"x".repeat(MAX_SCHEMA)});
        assert_eq!(
            schema(&big),
            json!({"type":"object","additionalProperties":true})
        );
        let untyped = schema(&json!({"properties":{}}));
        assert_eq!(untyped["type"], "object");
    }
}
