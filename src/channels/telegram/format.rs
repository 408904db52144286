//! Turning the assistant's Markdown into Telegram messages: HTML parse mode with everything
//! escaped, cut into pieces Telegram accepts (4096 characters, counted in UTF-16 units as
//! Telegram does). Pure functions; never sends anything.

/// Telegram's limit on one message's text after entity parsing.
pub const MAX_CHARS: usize = 4096;

/// Room kept in each piece for closing and reopening a code fence cut in two.
const FENCE_ROOM: usize = 8;

/// Markdown → list of HTML messages, each within Telegram's limit.
pub fn render(markdown: &str) -> Vec<String> {
    split(markdown, MAX_CHARS)
        .iter()
        .map(|piece| to_html(piece))
        .filter(|h| !h.trim().is_empty())
        .collect()
}

/// Length as Telegram counts it (UTF-16 code units).
pub fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Cut text into pieces of at most `max` units: on paragraph boundaries first, then lines,
/// then anywhere. A fenced code block cut in two is closed and reopened so both halves render.
pub fn split(text: &str, max: usize) -> Vec<String> {
    if units(text) <= max {
        return vec![text.to_string()];
    }
    let mut out = Vec::new();
    pack(text, max.saturating_sub(FENCE_ROOM).max(16), 0, &mut out);
    // Balance code fences across pieces.
    let mut open = false;
    for piece in &mut out {
        if open {
            piece.insert_str(0, "```\n");
        }
        let fences = piece
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        open = fences % 2 == 1;
        if open {
            piece.push_str("\n```");
        }
    }
    out
}

const SEPARATORS: [&str; 2] = ["\n\n", "\n"];

fn pack(text: &str, max: usize, level: usize, out: &mut Vec<String>) {
    if units(text) <= max {
        push(out, text.to_string());
        return;
    }
    let Some(sep) = SEPARATORS.get(level) else {
        hard_split(text, max, out);
        return;
    };
    let mut cur = String::new();
    for part in text.split(sep) {
        if units(part) > max {
            push(out, std::mem::take(&mut cur));
            pack(part, max, level + 1, out);
            continue;
        }
        let joined = units(&cur) + if cur.is_empty() { 0 } else { sep.len() } + units(part);
        if joined <= max {
            if !cur.is_empty() {
                cur.push_str(sep);
            }
            cur.push_str(part);
        } else {
            push(out, std::mem::replace(&mut cur, part.to_string()));
        }
    }
    push(out, cur);
}

fn hard_split(text: &str, max: usize, out: &mut Vec<String>) {
    let mut cur = String::new();
    let mut n = 0;
    for c in text.chars() {
        let w = c.len_utf16();
        if n + w > max {
            push(out, std::mem::take(&mut cur));
            n = 0;
        }
        cur.push(c);
        n += w;
    }
    push(out, cur);
}

fn push(out: &mut Vec<String>, s: String) {
    if !s.trim().is_empty() {
        out.push(s);
    }
}

/// Escape text for Telegram HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

/// Convert the Markdown subset models write (fences, `code`, **bold**, *italic*, _italic_,
/// ~~strike~~, [links](url), # headings, - bullets) to Telegram HTML. Anything else is escaped
/// text, so the result always parses.
pub fn to_html(md: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    // An open code block: its opening tag and escaped lines so far.
    let mut code: Option<(String, Vec<String>)> = None;
    for line in md.split('\n') {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            match code.take() {
                Some((open, body)) => lines.push(format!("{open}{}</code></pre>", body.join("\n"))),
                None => code = Some((code_open(lang.trim()), Vec::new())),
            }
            continue;
        }
        if let Some((_, body)) = &mut code {
            body.push(escape(line));
            continue;
        }
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            lines.push(format!("<b>{}</b>", inline(trimmed[hashes..].trim())));
        } else if let Some(rest) = trimmed
            .strip_prefix("- ")
            .or_else(|| trimmed.strip_prefix("* "))
        {
            lines.push(format!(
                "{}• {}",
                &line[..line.len() - trimmed.len()],
                inline(rest)
            ));
        } else {
            lines.push(inline(line));
        }
    }
    if let Some((open, body)) = code {
        lines.push(format!("{open}{}</code></pre>", body.join("\n")));
    }
    lines.join("\n")
}

fn code_open(lang: &str) -> String {
    if lang.is_empty()
        || !lang
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '+')
    {
        "<pre><code>".into()
    } else {
        format!("<pre><code class=\"language-{lang}\">")
    }
}

/// Inline markup within one line.
fn inline(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 16);
    let mut i = 0;
    'scan: while i < chars.len() {
        let c = chars[i];
        if c == '`'
            && let Some(end) = find(&chars, i + 1, &['`'])
        {
            out.push_str("<code>");
            out.push_str(&escape(&chars[i + 1..end].iter().collect::<String>()));
            out.push_str("</code>");
            i = end + 1;
            continue;
        }
        if c == '['
            && let Some(close) = find(&chars, i + 1, &[']'])
            && chars.get(close + 1) == Some(&'(')
            && let Some(paren) = find(&chars, close + 2, &[')'])
        {
            let label: String = chars[i + 1..close].iter().collect();
            let url: String = chars[close + 2..paren].iter().collect();
            if url.starts_with("http://") || url.starts_with("https://") || url.starts_with("tg://")
            {
                out.push_str(&format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&url),
                    inline(&label)
                ));
                i = paren + 1;
                continue;
            }
        }
        for (delim, tag) in [
            ("**", "b"),
            ("__", "b"),
            ("~~", "s"),
            ("*", "i"),
            ("_", "i"),
        ] {
            let d: Vec<char> = delim.chars().collect();
            if chars[i..].starts_with(&d)
                && opens(&chars, i, d.len())
                && let Some(end) = find(&chars, i + d.len(), &d)
                && end > i + d.len()
                && closes(&chars, end, d.len())
            {
                let body: String = chars[i + d.len()..end].iter().collect();
                out.push_str(&format!("<{tag}>{}</{tag}>", inline(&body)));
                i = end + d.len();
                continue 'scan;
            }
        }
        out.push_str(&escape(c.encode_utf8(&mut [0; 4])));
        i += 1;
    }
    out
}

/// A delimiter opens emphasis when followed by non-space and (for `_`) not inside a word.
fn opens(chars: &[char], i: usize, n: usize) -> bool {
    let next = chars.get(i + n);
    let prev = if i == 0 { None } else { chars.get(i - 1) };
    next.is_some_and(|c| !c.is_whitespace())
        && !(chars[i] == '_' && prev.is_some_and(|c| c.is_alphanumeric()))
}

fn closes(chars: &[char], end: usize, n: usize) -> bool {
    let prev = chars.get(end.wrapping_sub(1));
    let next = chars.get(end + n);
    prev.is_some_and(|c| !c.is_whitespace())
        && !(chars[end] == '_' && next.is_some_and(|c| c.is_alphanumeric()))
}

/// Index of the first occurrence of `pat` at or after `from`.
fn find(chars: &[char], from: usize, pat: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&j| chars[j..].starts_with(pat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_converts_common_markdown() {
        assert_eq!(to_html("a < b & c > d"), "a &lt; b &amp; c &gt; d");
        assert_eq!(
            to_html("**bold** and *it* and _it_"),
            "<b>bold</b> and <i>it</i> and <i>it</i>"
        );
        assert_eq!(to_html("snake_case_name stays"), "snake_case_name stays");
        assert_eq!(
            to_html("use `a<b>` here"),
            "use <code>a&lt;b&gt;</code> here"
        );
        assert_eq!(
            to_html("[site](https://x.y/?a=1&b=2)"),
            "<a href=\"https://x.y/?a=1&amp;b=2\">site</a>"
        );
        assert_eq!(to_html("[bad](javascript:x)"), "[bad](javascript:x)");
        assert_eq!(to_html("# Title\n- item"), "<b>Title</b>\n• item");
        assert_eq!(to_html("~~gone~~ 2 * 3 * 4"), "<s>gone</s> 2 * 3 * 4");
        assert_eq!(to_html("unclosed **bold"), "unclosed **bold");
    }

    #[test]
    fn code_blocks_are_escaped_verbatim() {
        assert_eq!(
            to_html("see:\n```rust\nlet a = b < c && **d**;\n```\nend"),
            "see:\n<pre><code class=\"language-rust\">let a = b &lt; c &amp;&amp; **d**;</code></pre>\nend"
        );
    }

    #[test]
    fn splits_on_paragraphs_then_lines_then_hard() {
        let para = "x".repeat(3000);
        let text = format!("{para}\n\n{para}\n\n{para}");
        let parts = split(&text, MAX_CHARS);
        assert_eq!(parts, vec![para.clone(), para.clone(), para.clone()]);

        let lines: Vec<String> = (0..100)
            .map(|i| format!("line {i:03} {}", "y".repeat(70)))
            .collect();
        let text = lines.join("\n");
        let parts = split(&text, MAX_CHARS);
        assert!(parts.len() >= 2);
        assert!(parts.iter().all(|p| units(p) <= MAX_CHARS));
        assert_eq!(parts.join("\n"), text, "line cuts lose only the separators");

        let long = "z".repeat(10_000);
        let parts = split(&long, MAX_CHARS);
        assert_eq!(parts.concat(), long);
        assert!(parts.iter().all(|p| units(p) <= MAX_CHARS));
    }

    #[test]
    fn counts_utf16_and_reopens_cut_code_fences() {
        let emoji = "😀".repeat(3000); // 6000 UTF-16 units
        assert!(
            split(&emoji, MAX_CHARS)
                .iter()
                .all(|p| units(p) <= MAX_CHARS)
        );
        let code = format!(
            "```\n{}\n```",
            (0..600)
                .map(|i| format!("row {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let parts = split(&code, 2000);
        assert!(parts.len() >= 2);
        for p in &parts {
            assert!(units(p) <= 2000);
            assert_eq!(
                p.lines().filter(|l| l.starts_with("```")).count() % 2,
                0,
                "{p}"
            );
            assert!(to_html(p).starts_with("<pre><code>"));
        }
    }
}
