//! Safe file names for the inbox: whatever a sender called a file, what lands on disk is one
//! path component of printable characters, no leading dot, bounded length, extension kept.

use super::Kind;

/// Longest sanitised name, in characters (the message id prefix comes on top).
pub const MAX_NAME_CHARS: usize = 80;
/// Longest sanitised message id in a file name.
const MAX_ID_CHARS: usize = 40;

/// One safe path component from any name: the last part after `/` or `\`, control and
/// unusual characters replaced by `_`, no leading dots, at most [`MAX_NAME_CHARS`] characters
/// (the extension is kept when the stem is cut). Empty results get `fallback`.
pub fn sanitise(raw: &str, fallback: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::with_capacity(last.len().min(MAX_NAME_CHARS * 4));
    for c in last.chars() {
        let ok = c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '(' | ')' | '+');
        let c = if ok && !c.is_control() { c } else { '_' };
        // Collapse runs of replacements so a hostile name cannot become a wall of underscores.
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_matches(|c: char| c == '.' || c == ' ' || c == '_');
    let name = if trimmed.is_empty() {
        fallback.to_string()
    } else {
        trimmed.to_string()
    };
    bound(&name)
}

/// Cut to [`MAX_NAME_CHARS`], keeping a short extension.
fn bound(name: &str) -> String {
    if name.chars().count() <= MAX_NAME_CHARS {
        return name.to_string();
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.chars().count() <= 10);
    match ext {
        Some(ext) => {
            let keep = MAX_NAME_CHARS - ext.chars().count() - 1;
            let stem: String = name.chars().take(keep).collect();
            format!("{stem}.{ext}")
        }
        None => name.chars().take(MAX_NAME_CHARS).collect(),
    }
}

/// The message id as it appears in a file name (ids come from bridges too).
pub fn safe_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_ID_CHARS)
        .collect();
    if s.is_empty() { "msg".into() } else { s }
}

/// A default name for a nameless attachment (Telegram photos and voice notes have none).
pub fn default_name(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::Photo) => "photo.jpg",
        Some(Kind::Voice) => "voice.ogg",
        Some(Kind::Audio) => "audio",
        Some(Kind::Video) => "video.mp4",
        Some(Kind::Document) | None => "file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_safe_component() {
        let cases = [
            ("../../x", "x"),
            ("..", "file"),
            ("/etc/passwd", "passwd"),
            ("a\\..\\b.txt", "b.txt"),
            ("line\nbreak\r.txt", "line_break_.txt"),
            (".hidden", "hidden"),
            ("   ", "file"),
            ("report (final).pdf", "report (final).pdf"),
            ("naïve café.jpg", "naïve café.jpg"),
            ("a\u{0}b", "a_b"),
            ("x\u{202e}gpj.exe", "x_gpj.exe"),
            ("$(rm -rf ~).sh", "(rm -rf _).sh"),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitise(raw, "file"), want, "for {raw:?}");
        }
    }

    #[test]
    fn long_names_are_bounded_and_keep_the_extension() {
        let long = format!("{}.pdf", "a".repeat(10_000));
        let s = sanitise(&long, "file");
        assert_eq!(s.chars().count(), MAX_NAME_CHARS);
        assert!(s.ends_with(".pdf"));
        let no_ext = "b".repeat(10_000);
        assert_eq!(sanitise(&no_ext, "file").chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn ids_are_safe() {
        assert_eq!(safe_id("842"), "842");
        assert_eq!(safe_id("../1"), "___1");
        assert_eq!(safe_id(""), "msg");
        assert_eq!(safe_id(&"9".repeat(500)).len(), 40);
    }
}
