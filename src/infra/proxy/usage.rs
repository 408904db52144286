//! Reading the token usage an upstream reports, from the reply as it streams through the proxy to
//! the agent. The reply is never buffered: bytes are fed here after they were relayed, and only a
//! bounded amount is kept (one SSE line, or the top-level `usage` value of a JSON body).
//!
//! Wire formats (both documented by the providers):
//! - Anthropic Messages, streamed: `message_start` carries `message.usage` (`input_tokens`,
//!   `cache_creation_input_tokens`, `cache_read_input_tokens`, `output_tokens`); `message_delta`
//!   carries `usage` with the cumulative `output_tokens` and, where present, cumulative input and
//!   cache counts. Plain: the body's top-level `usage` has the same fields.
//! - OpenAI-compatible chat completions: top-level `usage` with `prompt_tokens`,
//!   `completion_tokens` and `prompt_tokens_details.cached_tokens`, which are part of
//!   `prompt_tokens` (stored as input = prompt − cached, cache read = cached). Streamed, it comes
//!   in a final chunk when the request set `stream_options.include_usage`, which the proxy's
//!   policy forces on for every streamed request.
//!
//! A report is taken as the latest value of each field, since every one is cumulative.

use serde::Deserialize;

use crate::rules::cost::Usage;

/// The longest SSE line kept; longer lines (text deltas never are) are skipped unread.
pub const MAX_LINE: usize = 64 * 1024;
/// The largest `usage` value kept from a JSON body.
pub const MAX_USAGE_JSON: usize = 4096;

/// Which wire format the reply is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Anthropic,
    OpenAi,
}

/// Reads usage from a reply fed to it piece by piece.
pub struct UsageReader {
    format: Format,
    body: Body,
    usage: Usage,
    seen: bool,
}

enum Body {
    Sse(Lines),
    Json(Scan),
}

impl UsageReader {
    /// A reader for a reply in `format` whose `content-type` is `content_type`.
    pub fn new(format: Format, content_type: Option<&[u8]>) -> UsageReader {
        let sse = content_type.is_some_and(|c| {
            String::from_utf8_lossy(c)
                .to_ascii_lowercase()
                .contains("text/event-stream")
        });
        UsageReader {
            format,
            body: if sse {
                Body::Sse(Lines::default())
            } else {
                Body::Json(Scan::default())
            },
            usage: Usage::default(),
            seen: false,
        }
    }

    /// Feeds the next bytes of the reply.
    pub fn feed(&mut self, data: &[u8]) {
        match &mut self.body {
            Body::Sse(lines) => {
                let (format, usage, seen) = (self.format, &mut self.usage, &mut self.seen);
                lines.feed(data, |line| {
                    if let Some(payload) = sse_data(line)
                        && contains(payload, b"\"usage\"")
                    {
                        *seen |= apply_event(format, payload, usage);
                    }
                });
            }
            Body::Json(scan) => scan.feed(data),
        }
    }

    /// The usage reported, or `None` if the reply carried none.
    pub fn finish(mut self) -> Option<Usage> {
        if let Body::Json(scan) = &mut self.body {
            if let Some(raw) = scan.found.take() {
                self.seen |= apply_usage(self.format, &raw, &mut self.usage);
            }
        } else if let Body::Sse(lines) = &mut self.body {
            // A last line without its newline (a stream cut short) still counts.
            let rest = std::mem::take(&mut lines.buf);
            if !lines.skipping
                && let Some(payload) = sse_data(&rest)
                && contains(payload, b"\"usage\"")
            {
                self.seen |= apply_event(self.format, payload, &mut self.usage);
            }
        }
        self.seen.then_some(self.usage)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The payload of an SSE `data:` line.
fn sse_data(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"data:")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// Splits a byte stream into lines (`\n`, `\r\n` or `\r`), keeping at most [`MAX_LINE`] bytes.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// Inside a line that grew past the limit: dropped up to its end.
    skipping: bool,
    /// The last byte was `\r`, so a following `\n` ends nothing.
    after_cr: bool,
}

impl Lines {
    fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(&[u8])) {
        while !data.is_empty() {
            if self.after_cr && data[0] == b'\n' {
                data = &data[1..];
            }
            self.after_cr = false;
            match data.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    if !self.skipping {
                        if self.buf.is_empty() {
                            if i <= MAX_LINE {
                                on_line(&data[..i]);
                            }
                        } else if self.buf.len() + i <= MAX_LINE {
                            self.buf.extend_from_slice(&data[..i]);
                            on_line(&self.buf);
                        }
                    }
                    self.buf.clear();
                    self.skipping = false;
                    self.after_cr = data[i] == b'\r';
                    data = &data[i + 1..];
                }
                None => {
                    if !self.skipping && self.buf.len() + data.len() <= MAX_LINE {
                        self.buf.extend_from_slice(data);
                    } else {
                        self.buf.clear();
                        self.skipping = true;
                    }
                    return;
                }
            }
        }
    }
}

/// Finds the top-level `usage` member of one JSON object streamed through it and keeps its value
/// (at most [`MAX_USAGE_JSON`] bytes), tracking only nesting depth and strings.
#[derive(Default)]
struct Scan {
    depth: u32,
    in_str: bool,
    esc: bool,
    /// The value at depth 0 is an object (anything else has no members to find).
    top_object: bool,
    /// At depth 1, the next string is a member name.
    expect_key: bool,
    /// The member name being read at depth 1 (at most 8 bytes are needed to tell `usage`).
    key: Option<Vec<u8>>,
    key_is_usage: bool,
    /// The `usage` value being read.
    value: Option<Vec<u8>>,
    found: Option<Vec<u8>>,
}

impl Scan {
    fn feed(&mut self, data: &[u8]) {
        if self.found.is_some() {
            return;
        }
        for &b in data {
            if self.in_str {
                if let Some(v) = &mut self.value {
                    v.push(b);
                }
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                    if let Some(k) = self.key.take() {
                        self.key_is_usage = k == b"usage";
                    }
                    continue;
                }
                if let Some(k) = &mut self.key
                    && k.len() <= 8
                {
                    k.push(b);
                }
            } else {
                if self.value.is_some() && self.depth == 1 && (b == b',' || b == b'}') {
                    self.found = self.value.take();
                    return;
                }
                if let Some(v) = &mut self.value {
                    v.push(b);
                }
                match b {
                    b'"' => {
                        self.in_str = true;
                        if self.depth == 1 && self.top_object && self.expect_key {
                            self.key = Some(Vec::new());
                        }
                    }
                    b'{' | b'[' => {
                        if self.depth == 0 {
                            self.top_object = b == b'{';
                            self.expect_key = true;
                        }
                        self.depth += 1;
                    }
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    b':' if self.depth == 1 => {
                        self.expect_key = false;
                        if std::mem::take(&mut self.key_is_usage) && self.top_object {
                            self.value = Some(Vec::new());
                        }
                    }
                    b',' if self.depth == 1 => self.expect_key = true,
                    _ => {}
                }
            }
            if self
                .value
                .as_ref()
                .is_some_and(|v| v.len() > MAX_USAGE_JSON)
            {
                // Not a usage object any provider sends; stop looking.
                self.value = None;
                self.found = Some(Vec::new());
                return;
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<OpenAiDetails>,
}

#[derive(Deserialize, Default)]
struct OpenAiDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct AnthropicEvent {
    message: Option<AnthropicMessage>,
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct OpenAiChunk {
    usage: Option<OpenAiUsage>,
}

/// Applies the usage in one SSE event's JSON; true if it held any.
fn apply_event(format: Format, payload: &[u8], into: &mut Usage) -> bool {
    match format {
        Format::Anthropic => {
            let Ok(ev) = serde_json::from_slice::<AnthropicEvent>(payload) else {
                return false;
            };
            let mut seen = false;
            for u in [ev.message.and_then(|m| m.usage), ev.usage]
                .into_iter()
                .flatten()
            {
                anthropic(&u, into);
                seen = true;
            }
            seen
        }
        Format::OpenAi => match serde_json::from_slice::<OpenAiChunk>(payload) {
            Ok(OpenAiChunk { usage: Some(u) }) => {
                openai(&u, into);
                true
            }
            _ => false,
        },
    }
}

/// Applies a `usage` value taken from a JSON body; true if it was one.
fn apply_usage(format: Format, raw: &[u8], into: &mut Usage) -> bool {
    match format {
        Format::Anthropic => match serde_json::from_slice::<Option<AnthropicUsage>>(raw) {
            Ok(Some(u)) => {
                anthropic(&u, into);
                true
            }
            _ => false,
        },
        Format::OpenAi => match serde_json::from_slice::<Option<OpenAiUsage>>(raw) {
            Ok(Some(u)) => {
                openai(&u, into);
                true
            }
            _ => false,
        },
    }
}

fn anthropic(u: &AnthropicUsage, into: &mut Usage) {
    let set = |field: &mut u64, v: Option<u64>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(&mut into.input, u.input_tokens);
    set(&mut into.output, u.output_tokens);
    set(&mut into.cache_write, u.cache_creation_input_tokens);
    set(&mut into.cache_read, u.cache_read_input_tokens);
}

fn openai(u: &OpenAiUsage, into: &mut Usage) {
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    if let Some(p) = u.prompt_tokens {
        into.input = p.saturating_sub(cached);
        into.cache_read = cached.min(p);
    }
    if let Some(c) = u.completion_tokens {
        into.output = c;
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
