//! Turning what a person or an agent typed into FTS5 query text that can neither fail to parse
//! nor use an operator: every word becomes a quoted string (FTS5 applies its tokenizer inside
//! the quotes, so `tg:55` is the phrase "tg 55"), `"` is doubled, and only a trailing `*`
//! (prefix match) survives as syntax. `AND`, `OR`, `NEAR`, `NOT`, `^`, `:` and parentheses are
//! therefore plain words.

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 512;
/// Most words used from a query; the rest are dropped (and said so).
pub const MAX_TERMS: usize = 16;

/// A query ready for `MATCH`: all words, and the any-word fallback when there are several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fts {
    pub all: String,
    pub any: Option<String>,
    /// Words dropped because the query had more than [`MAX_TERMS`].
    pub dropped: usize,
}

/// Build the FTS5 text for `input`; the error says what to change.
pub fn build(input: &str) -> Result<Fts, String> {
    if input.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "the query is {} bytes; use at most {MAX_QUERY_BYTES} (a few distinctive words work best)",
            input.len()
        ));
    }
    let mut terms = Vec::new();
    let mut dropped = 0;
    for word in input.split_whitespace() {
        let Some(term) = term(word) else { continue };
        if terms.len() == MAX_TERMS {
            dropped += 1;
            continue;
        }
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
    if terms.is_empty() {
        return Err("the query has no words to search for (letters or digits)".into());
    }
    Ok(Fts {
        all: terms.join(" AND "),
        any: (terms.len() > 1).then(|| terms.join(" OR ")),
        dropped,
    })
}

/// One word as a quoted FTS5 string, or `None` if it holds no letter or digit.
fn term(word: &str) -> Option<String> {
    let (body, prefix) = match word.strip_suffix('*') {
        Some(b) => (b.trim_end_matches('*'), true),
        None => (word, false),
    };
    // Control characters carry no words and have no business in SQL text.
    let body: String = body.chars().filter(|c| !c.is_control()).collect();
    let alnum = body.chars().filter(|c| c.is_alphanumeric()).count();
    if alnum == 0 {
        return None;
    }
    let quoted = format!("\"{}\"", body.replace('"', "\"\""));
    // A one-letter prefix would match most of the index; it is searched as a word instead.
    Some(if prefix && alnum >= 2 {
        format!("{quoted} *")
    } else {
        quoted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_quoted_strings_and_operators_lose_their_meaning() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("garden", "\"garden\"", None),
            (
                "tomato garden",
                "\"tomato\" AND \"garden\"",
                Some("\"tomato\" OR \"garden\""),
            ),
            (
                "a OR b",
                "\"a\" AND \"OR\" AND \"b\"",
                Some("\"a\" OR \"OR\" OR \"b\""),
            ),
            (
                "NEAR(a b)",
                "\"NEAR(a\" AND \"b)\"",
                Some("\"NEAR(a\" OR \"b)\""),
            ),
            (
                "say \"hi\"",
                "\"say\" AND \"\"\"hi\"\"\"",
                Some("\"say\" OR \"\"\"hi\"\"\""),
            ),
            ("text:secret", "\"text:secret\"", None),
            ("gard*", "\"gard\" *", None),
            ("g*", "\"g\"", None),
            (
                "^start -x",
                "\"^start\" AND \"-x\"",
                Some("\"^start\" OR \"-x\""),
            ),
            ("dup dup", "\"dup\"", None),
            ("café", "\"café\"", None),
        ];
        for (input, all, any) in cases {
            let q = build(input).unwrap();
            assert_eq!(&q.all, all, "{input}");
            assert_eq!(q.any.as_deref(), *any, "{input}");
        }
    }

    #[test]
    fn empty_long_and_wordless_queries_are_refused_and_terms_are_capped() {
        assert!(build("").is_err());
        assert!(build("  * ** \"\" () ").is_err());
        assert!(build(&"x".repeat(MAX_QUERY_BYTES + 1)).is_err());
        let many: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
        let q = build(&many.join(" ")).unwrap();
        assert_eq!(q.all.matches(" AND ").count(), MAX_TERMS - 1);
        assert_eq!(q.dropped, 4);
        assert!(build("a\u{0}b").unwrap().all == "\"ab\"");
    }
}
