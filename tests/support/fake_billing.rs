//! How the fake LLM bills input tokens when billing is on: Anthropic's prompt cache with explicit
//! breakpoints, and the automatic prefix cache of OpenAI-compatible providers. Tokens are
//! estimated as bytes / 4; the figures are for comparing requests, not for matching a real bill.
//!
//! Anthropic ([`Cache::anthropic`]): a request is rendered as a list of blocks in the order the
//! API caches them (each tool definition, each system block, each message content block), with
//! the `cache_control` markers taken out (moving a marker must not change the content). A cache
//! entry is the exact text of the prefix up to a marked block, stored when that prefix reaches
//! the minimum cacheable length. A request reads the longest stored prefix found at one of its
//! own breakpoints or up to 19 blocks before it (the API's 20-block lookback), writes the rest
//! up to its last breakpoint, and pays the full rate for what follows.
//!
//! OpenAI ([`Cache::openai`]): a request's prompt is its `tools` then its `messages`, exactly as
//! the bytes were sent (where they sit among the top-level keys does not matter, as a provider
//! renders them into its own template; the host proxy sorts those keys). Every prompt is
//! remembered; the cached part of a new one is its longest byte-identical prefix with any earlier
//! prompt, when that reaches the minimum.
//!
//! [`check_breakpoints`] refuses what the real API refuses: more than four markers, or a marker
//! on an empty text block.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};

/// Blocks a breakpoint looks back over for an earlier entry, itself included.
pub const LOOKBACK: usize = 20;
/// Most `cache_control` markers in one request.
pub const MAX_BREAKPOINTS: usize = 4;

/// What one request's input cost, in estimated tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bill {
    /// Input at the full rate.
    pub input: u64,
    /// Input read from the cache.
    pub cache_read: u64,
    /// Input written to the cache.
    pub cache_write: u64,
}

impl Bill {
    /// Every input token, however billed.
    pub fn prompt(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }
}

/// The estimate: one token per four bytes.
pub fn tokens(bytes: usize) -> u64 {
    bytes as u64 / 4
}

/// The server's cache, shared by every request it answers.
#[derive(Debug, Default)]
pub struct Cache {
    /// Prefixes shorter than this many tokens are never cached (Anthropic: 1,024 for Sonnet).
    pub min_tokens: u64,
    entries: HashSet<(u64, usize)>,
    bodies: Vec<String>,
}

/// One block of a rendered Anthropic request.
struct Unit {
    text: String,
    marked: bool,
}

/// The block without its marker, prefixed by where it sits so that blocks cannot run together.
fn unit(place: &str, v: &Value) -> Unit {
    let mut v = v.clone();
    let marked = v
        .as_object_mut()
        .and_then(|o| o.remove("cache_control"))
        .is_some();
    Unit {
        text: format!("\n{place}:{v}"),
        marked,
    }
}

fn units(body: &Value) -> Vec<Unit> {
    let mut out = Vec::new();
    for t in body["tools"].as_array().into_iter().flatten() {
        out.push(unit("tool", t));
    }
    match &body["system"] {
        Value::String(s) => out.push(unit("system", &Value::String(s.clone()))),
        Value::Array(blocks) => out.extend(blocks.iter().map(|b| unit("system", b))),
        _ => {}
    }
    for (i, m) in body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let place = format!("{i}:{}", m["role"].as_str().unwrap_or("?"));
        match &m["content"] {
            Value::Array(blocks) => out.extend(blocks.iter().map(|b| unit(&place, b))),
            other => out.push(unit(&place, other)),
        }
    }
    // Automatic caching: a top-level marker applies to the last block.
    if body.get("cache_control").is_some()
        && let Some(last) = out.last_mut()
    {
        last.marked = true;
    }
    out
}

/// `Err(message)` for a request the real API refuses because of its cache markers.
pub fn check_breakpoints(body: &Value) -> Result<(), String> {
    let mut count = usize::from(body.get("cache_control").is_some());
    let mut empty = false;
    let mut visit = |b: &Value| {
        if b.get("cache_control").is_some() {
            count += 1;
            empty |= b["type"] == "text" && b["text"].as_str().is_some_and(str::is_empty);
        }
    };
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .for_each(&mut visit);
    body["system"]
        .as_array()
        .into_iter()
        .flatten()
        .for_each(&mut visit);
    for m in body["messages"].as_array().into_iter().flatten() {
        m["content"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(&mut visit);
    }
    if empty {
        return Err("cache_control cannot be set for empty text blocks".into());
    }
    if count > MAX_BREAKPOINTS {
        return Err(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {count}."
        ));
    }
    Ok(())
}

impl Cache {
    /// An empty cache that never stores prefixes under `min_tokens`.
    pub fn new(min_tokens: u64) -> Cache {
        Cache {
            min_tokens,
            ..Default::default()
        }
    }

    /// Bill an Anthropic Messages request and store the entries it writes.
    pub fn anthropic(&mut self, body: &Value) -> Bill {
        let units = units(body);
        // Each prefix is kept as (hash of its text, its length): equal prefixes, equal keys.
        let mut prefixes = Vec::with_capacity(units.len());
        let (mut hasher, mut len) = (DefaultHasher::new(), 0);
        for u in &units {
            hasher.write(u.text.as_bytes());
            len += u.text.len();
            prefixes.push((hasher.clone().finish(), len));
        }
        let total = tokens(len);
        let size = |i: usize| tokens(prefixes[i].1);
        let marks: Vec<usize> = (0..units.len()).filter(|&i| units[i].marked).collect();
        // Read: the longest entry found from any breakpoint, looking back up to LOOKBACK blocks.
        let read = marks
            .iter()
            .filter_map(|&b| {
                (b.saturating_sub(LOOKBACK - 1)..=b)
                    .rev()
                    .find(|&i| self.entries.contains(&prefixes[i]))
            })
            .max();
        let read_tokens = read.map_or(0, size);
        // Write: every breakpoint prefix past the read and long enough; billed up to the last.
        let mut written_to = read_tokens;
        for &b in &marks {
            if size(b) >= self.min_tokens && read.is_none_or(|r| b > r) {
                self.entries.insert(prefixes[b]);
                written_to = written_to.max(size(b));
            }
        }
        Bill {
            input: total - written_to,
            cache_read: read_tokens,
            cache_write: written_to - read_tokens,
        }
    }

    /// Bill an OpenAI chat-completions request by its prompt's longest byte-identical prefix
    /// with any prompt seen before, and remember this one.
    pub fn openai(&mut self, raw: &str) -> Bill {
        let raw = &openai_prompt(raw);
        let common = self
            .bodies
            .iter()
            .map(|b| {
                b.bytes()
                    .zip(raw.bytes())
                    .take_while(|(x, y)| x == y)
                    .count()
            })
            .max()
            .unwrap_or(0);
        let cached = Some(tokens(common)).filter(|t| *t >= self.min_tokens.max(1));
        self.bodies.push(raw.to_string());
        let total = tokens(raw.len());
        let read = cached.unwrap_or(0);
        Bill {
            input: total - read,
            cache_read: read,
            cache_write: 0,
        }
    }
}

/// The bytes of an OpenAI request that a provider turns into the prompt: the raw `tools` and
/// `messages` values, in that order.
pub fn openai_prompt(raw: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        tools: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        messages: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(top) = serde_json::from_str::<Top>(raw) else {
        return raw.to_string();
    };
    let part = |v: Option<&serde_json::value::RawValue>| v.map_or("", |v| v.get()).to_string();
    part(top.tools) + &part(top.messages)
}

/// An Anthropic `usage` object (the same in `message_start`, `message_delta` and plain replies:
/// the stream's counts are cumulative).
pub fn anthropic_usage(bill: Bill, output: u64) -> Value {
    serde_json::json!({"input_tokens": bill.input, "output_tokens": output,
        "cache_creation_input_tokens": bill.cache_write, "cache_read_input_tokens": bill.cache_read})
}

/// An OpenAI `usage` object: `prompt_tokens` counts every input token, the cached ones among
/// them in `prompt_tokens_details`.
pub fn openai_usage(bill: Bill, output: u64) -> Value {
    let mut details = serde_json::json!({"cached_tokens": bill.cache_read});
    if bill.cache_write > 0 {
        details["cache_write_tokens"] = bill.cache_write.into();
    }
    serde_json::json!({"prompt_tokens": bill.prompt(), "completion_tokens": output,
        "total_tokens": bill.prompt() + output, "prompt_tokens_details": details})
}
