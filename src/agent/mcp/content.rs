//! A tool result from an MCP server, as text for the model: text blocks as they are, embedded
//! text resources with their URI, links as a line, structured content as JSON when there is
//! nothing else. Images, audio and binary resources are written to the group folder under
//! `mcp-files/` and named in the result, since tool results on both wire formats carry text
//! here; the model can open them with its file tools. The caller caps the text's length.
//!
//! The result is read as JSON (not through the SDK's enums), so a content type this code does not
//! know becomes a line saying so instead of a failed call.

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use crate::agent::tools::output::Output;

/// Binary attachments written per result; the rest are only described.
const MAX_FILES: usize = 8;

/// Renders `result`; `isError` makes an error result.
pub fn render(server: &str, result: &rmcp::model::CallToolResult, save_dir: &Path) -> Output {
    let v = serde_json::to_value(result).unwrap_or(Value::Null);
    render_value(server, &v, save_dir)
}

/// [`render`] on the JSON form of a result.
pub fn render_value(server: &str, v: &Value, save_dir: &Path) -> Output {
    let mut parts: Vec<String> = Vec::new();
    let mut files = 0usize;
    let empty = vec![];
    for item in v["content"].as_array().unwrap_or(&empty) {
        let kind = item["type"].as_str().unwrap_or("");
        let part = match kind {
            "text" => item["text"].as_str().unwrap_or("").to_string(),
            "image" | "audio" => {
                let mime = item["mimeType"]
                    .as_str()
                    .unwrap_or("application/octet-stream");
                let data = item["data"].as_str().unwrap_or("");
                binary(server, kind, mime, data, save_dir, &mut files)
            }
            "resource" => {
                let r = &item["resource"];
                let uri = r["uri"].as_str().unwrap_or("?");
                let mime = r["mimeType"].as_str().unwrap_or("");
                if let Some(text) = r["text"].as_str() {
                    format!("[resource {uri}{}]\n{text}", paren(mime))
                } else {
                    let data = r["blob"].as_str().unwrap_or("");
                    let mime = if mime.is_empty() {
                        "application/octet-stream"
                    } else {
                        mime
                    };
                    format!(
                        "[resource {uri}] {}",
                        binary(server, "resource", mime, data, save_dir, &mut files)
                    )
                }
            }
            "resource_link" => format!(
                "[resource link {}{}{}]",
                item["uri"].as_str().unwrap_or("?"),
                item["name"]
                    .as_str()
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default(),
                item["description"]
                    .as_str()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            other => format!(
                "[content of type `{}` from MCP server `{server}` is not supported]",
                crate::infra::output::clip(other, 40)
            ),
        };
        parts.push(part);
    }
    if parts.is_empty()
        && let Some(s) = v.get("structuredContent").filter(|s| !s.is_null())
    {
        parts.push(s.to_string());
    }
    let text = if parts.is_empty() {
        "(the tool returned no content)".to_string()
    } else {
        parts.join("\n")
    };
    if v["isError"].as_bool() == Some(true) {
        Output::err(format!("MCP server `{server}` reported an error: {text}"))
    } else {
        Output::ok(text)
    }
}

fn paren(mime: &str) -> String {
    if mime.is_empty() {
        String::new()
    } else {
        format!(" ({mime})")
    }
}

/// Decodes and saves one binary block; returns the line that names it.
fn binary(
    server: &str,
    kind: &str,
    mime: &str,
    data: &str,
    dir: &Path,
    files: &mut usize,
) -> String {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data.trim()) else {
        return format!("[{kind} ({mime}) that is not valid base64; left out]");
    };
    if *files >= MAX_FILES {
        return format!(
            "[{kind} ({mime}, {} bytes) not saved: more than {MAX_FILES} in one result]",
            bytes.len()
        );
    }
    *files += 1;
    let ext = match mime {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "audio/wav" | "audio/x-wav" => "wav",
        "audio/mpeg" => "mp3",
        "application/pdf" => "pdf",
        m if m.starts_with("text/") => "txt",
        _ => "bin",
    };
    let folder = dir.join("mcp-files");
    let name = format!("{server}-{}-{}.{ext}", crate::infra::time::now_ms(), *files);
    let path = folder.join(&name);
    let saved = std::fs::create_dir_all(&folder).and_then(|_| std::fs::write(&path, &bytes));
    match saved {
        Ok(()) => format!(
            "[{kind} ({mime}, {} bytes) saved to mcp-files/{name}]",
            bytes.len()
        ),
        Err(e) => format!(
            "[{kind} ({mime}, {} bytes) could not be saved: {e}]",
            bytes.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_content_kind_becomes_text() {
        let dir = tempfile::tempdir().unwrap();
        let v = json!({"content":[
            {"type":"text","text":"hello"},
            {"type":"image","data":"iVBORw0KGgo=","mimeType":"image/png"},
            {"type":"resource","resource":{"uri":"file:///a.txt","mimeType":"text/plain","text":"inside"}},
            {"type":"resource_link","uri":"https://x/y","name":"y"},
            {"type":"hologram"}
        ]});
        let out = render_value("srv", &v, dir.path());
        assert!(!out.is_error);
        assert!(out.content.contains("hello"));
        assert!(
            out.content
                .contains("[resource file:///a.txt (text/plain)]\ninside")
        );
        assert!(out.content.contains("[resource link https://x/y \"y\"]"));
        assert!(out.content.contains("`hologram`"));
        assert!(
            out.content.contains("saved to mcp-files/srv-"),
            "{}",
            out.content
        );
        let saved: Vec<_> = std::fs::read_dir(dir.path().join("mcp-files"))
            .unwrap()
            .collect();
        assert_eq!(saved.len(), 1);
    }

    #[test]
    fn errors_and_structured_content() {
        let dir = tempfile::tempdir().unwrap();
        let e = render_value(
            "s",
            &json!({"content":[{"type":"text","text":"bad tz"}],"isError":true}),
            dir.path(),
        );
        assert!(e.is_error && e.content.contains("bad tz"));
        let s = render_value(
            "s",
            &json!({"content":[],"structuredContent":{"a":1}}),
            dir.path(),
        );
        assert_eq!(s.content, "{\"a\":1}");
        let junk = render_value("s", &json!({"image":"x"}), dir.path());
        assert_eq!(junk.content, "(the tool returned no content)");
        let bad64 = render_value(
            "s",
            &json!({"content":[{"type":"image","data":"%%%","mimeType":"image/png"}]}),
            dir.path(),
        );
        assert!(bad64.content.contains("not valid base64"));
    }
}
