//! The model policy: what a container may ask of the model provider with the owner's key. Every
//! decision about LLM requests is a pure function here, so an auditor reads one file:
//!
//! - only the group's configured provider, and per provider only the routes claw-agent needs
//!   ([`route`]);
//! - only allowlisted client headers go upstream ([`upstream_headers`]);
//! - the body must be one JSON object with allowlisted top-level keys; the model is forced to
//!   one the owner allowed, `max_tokens` is clamped to the config, and a streamed chat
//!   completion always asks for its usage (`stream_options`); tools must be ones the
//!   sandbox runs, and content may not make the provider fetch URLs or read stored files
//!   ([`rewrite_body`], with the nested checks in `content.rs`).
//!
//! Refusals name the thing refused and what is allowed instead, so the agent can correct itself.

use serde_json::value::RawValue;

use super::content;
use super::http::{Head, Reject};
use super::json::{self, Object, Part};

/// Which upstream a route goes to; decides the auth header and the secret's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Anthropic,
    OpenAi,
}

impl Provider {
    /// Name used in routes, config and events.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
        }
    }

    /// The provider called `name` in config (`anthropic` or `openai`).
    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "anthropic" => Some(Provider::Anthropic),
            "openai" => Some(Provider::OpenAi),
            _ => None,
        }
    }

    /// The `secrets.env` variable that holds this provider's key by default.
    pub fn secret_name(self) -> &'static str {
        match self {
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::OpenAi => "OPENAI_API_KEY",
        }
    }
}

/// What the owner allows one run to ask of the model; built by run-group from the config and
/// the group.
#[derive(Debug, Clone)]
pub struct LlmPolicy {
    /// The group's provider; the other provider's routes are refused.
    pub provider: Provider,
    /// The group's model: every request for a model not allowed below is rewritten to it.
    pub model: String,
    /// Other models requests may name (`model.allowed` and the group's `models`).
    pub allowed_models: Vec<String>,
    /// The most output tokens one request may ask for (`model.max_tokens`).
    pub max_tokens: u32,
    /// Model requests in flight at once (`limits.llm_concurrency`); the rest wait.
    pub concurrency: usize,
    /// Model requests in all for the run (`limits.llm_requests_per_run`); the rest get 429.
    pub requests_per_run: u32,
}

/// An allowed LLM route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens` (free; generates nothing).
    CountTokens,
    /// OpenAI-compatible `POST /v1/chat/completions`.
    ChatCompletions,
}

impl Route {
    /// The upstream path, appended to the provider's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Route::Messages => "/v1/messages",
            Route::CountTokens => "/v1/messages/count_tokens",
            Route::ChatCompletions => "/v1/chat/completions",
        }
    }

    fn of(provider: Provider) -> &'static [Route] {
        match provider {
            Provider::Anthropic => &[Route::Messages, Route::CountTokens],
            Provider::OpenAi => &[Route::ChatCompletions],
        }
    }
}

fn allowed_routes(provider: Provider) -> String {
    Route::of(provider)
        .iter()
        .map(|r| format!("POST /llm/{}{}", provider.name(), r.path()))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Decides whether `method` on `/llm/<requested><rest>` may go upstream for a group whose
/// provider is `configured`. The path must match exactly: no query string, no other route.
pub fn route(
    configured: Provider,
    requested: Provider,
    method: &str,
    rest: &str,
) -> Result<Route, Reject> {
    if requested != configured {
        return Err(Reject::new(
            403,
            format!(
                "claw: this group's model provider is {}; /llm/{}/ is not available to it \
                 (use {})",
                configured.name(),
                requested.name(),
                allowed_routes(configured)
            ),
        ));
    }
    let Some(route) = Route::of(configured)
        .iter()
        .copied()
        .find(|r| r.path() == rest)
    else {
        return Err(Reject::new(
            404,
            format!(
                "claw: `{}` is not a model route the proxy forwards; only {} (without a query \
                 string)",
                json::clip(rest, 100),
                allowed_routes(configured)
            ),
        ));
    };
    if method != "POST" {
        return Err(Reject::new(
            405,
            format!(
                "claw: {} is not allowed on this route; only {}",
                json::clip(method, 16),
                allowed_routes(configured)
            ),
        ));
    }
    Ok(route)
}

/// `anthropic-beta` values that only change how the model answers the sandboxed agent. Betas
/// that make the provider act on its own (MCP connector, code execution, files, skills, web
/// fetch, computer use) or that raise prices per token (1M-token context) are not here.
pub const ANTHROPIC_BETAS: &[&str] = &[
    "prompt-caching-2024-07-31",
    "extended-cache-ttl-2025-04-11",
    "interleaved-thinking-2025-05-14",
    "token-efficient-tools-2025-02-19",
    "fine-grained-tool-streaming-2025-05-14",
    "output-128k-2025-02-19",
];

/// The client headers that go upstream (besides `content-type: application/json` and the key,
/// which the proxy sets itself): `accept`, and for Anthropic `anthropic-version` and
/// `anthropic-beta` when every value in it is in [`ANTHROPIC_BETAS`]. Everything else
/// (organisation and project selectors, attribution, encodings, credentials) is dropped.
pub fn upstream_headers(
    provider: Provider,
    head: &Head,
) -> Result<Vec<(&'static str, Vec<u8>)>, Reject> {
    let mut out = Vec::new();
    for (name, value) in &head.headers {
        match (provider, name.as_str()) {
            (_, "accept") => out.push(("accept", value.clone())),
            (Provider::Anthropic, "anthropic-version") => {
                out.push(("anthropic-version", value.clone()))
            }
            (Provider::Anthropic, "anthropic-beta") => {
                let text = String::from_utf8_lossy(value);
                for beta in text.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                    if !ANTHROPIC_BETAS.contains(&beta) {
                        return Err(Reject::new(
                            400,
                            format!(
                                "claw: anthropic-beta `{}` is not forwarded; allowed: {}",
                                json::clip(beta, 60),
                                ANTHROPIC_BETAS.join(", ")
                            ),
                        ));
                    }
                }
                out.push(("anthropic-beta", value.clone()));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Top-level keys forwarded per route: what claw-agent sends, the common sampling parameters,
/// and nothing that makes the provider act outside the sandbox (`mcp_servers`, `container`,
/// `web_search_options`, `audio`, `store`, …) or multiplies the cost (`n`).
fn allowed_keys(route: Route) -> &'static [&'static str] {
    match route {
        Route::Messages => &[
            "max_tokens",
            "messages",
            "metadata",
            "model",
            "stop_sequences",
            "stream",
            "system",
            "temperature",
            "thinking",
            "tool_choice",
            "tools",
            "top_k",
            "top_p",
        ],
        Route::CountTokens => &[
            "messages",
            "model",
            "system",
            "thinking",
            "tool_choice",
            "tools",
        ],
        Route::ChatCompletions => &[
            "frequency_penalty",
            "logit_bias",
            "logprobs",
            "max_completion_tokens",
            "max_tokens",
            "messages",
            "min_p",
            "model",
            "parallel_tool_calls",
            "presence_penalty",
            "reasoning_effort",
            "repetition_penalty",
            "response_format",
            "seed",
            "stop",
            "stream",
            "stream_options",
            "temperature",
            "tool_choice",
            "tools",
            "top_k",
            "top_logprobs",
            "top_p",
            "user",
        ],
    }
}

/// Keys whose value the proxy limits to `model.max_tokens`, and the one it inserts if none is
/// there. Count-tokens generates nothing and its API refuses `max_tokens`.
fn token_keys(route: Route) -> (&'static [&'static str], Option<&'static str>) {
    match route {
        Route::Messages => (&["max_tokens"], Some("max_tokens")),
        Route::CountTokens => (&[], None),
        Route::ChatCompletions => (
            &["max_tokens", "max_completion_tokens"],
            Some("max_completion_tokens"),
        ),
    }
}

/// The body as it goes upstream, and what the policy changed.
#[derive(Debug)]
pub struct Rewrite {
    /// The new body: pieces of the original and the proxy's own bytes.
    pub parts: Vec<Part>,
    /// The model sent upstream.
    pub model: String,
    /// What the request asked for when the proxy replaced it (clipped; `(none)` if absent).
    pub model_from: Option<String>,
    /// Whether a token limit was lowered or inserted.
    pub clamped: bool,
}

fn bad(message: String) -> Reject {
    Reject::new(400, message)
}

/// Applies the body policy to `body` for `route`: see the module comment. Only the top level
/// is rebuilt; every other byte is passed on as a range of `body`.
pub fn rewrite_body(route: Route, p: &LlmPolicy, body: &[u8]) -> Result<Rewrite, Reject> {
    let text = std::str::from_utf8(body)
        .map_err(|_| bad("claw: the request body must be UTF-8 JSON".into()))?;
    let top = Object::parse(text).map_err(|e| {
        bad(format!(
            "claw: the request body must be one JSON object ({})",
            json::clip(&e, 200)
        ))
    })?;
    let allowed = allowed_keys(route);
    if let Some(key) = top.members.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "claw: top-level key `{}` is not forwarded to {}; allowed: {}",
            json::clip(key, 60),
            route.path(),
            allowed.join(", ")
        )));
    }
    if let Some(tools) = top.get("tools") {
        content::check_tools(route, tools)?;
    }
    if let Some(messages) = top.get("messages") {
        content::check_messages(route, messages)?;
    }

    let (model, model_from) = choose_model(p, top.get("model"));
    let (limited, insert) = token_keys(route);
    let mut clamped = false;
    let mut parts = vec![Part::New(b"{".to_vec())];
    let push = |parts: &mut Vec<Part>, key: &str, value: Part| {
        let mut lead = if parts.len() > 1 {
            b",".to_vec()
        } else {
            vec![]
        };
        lead.extend(serde_json::to_vec(key).unwrap_or_default());
        lead.push(b':');
        parts.push(Part::New(lead));
        parts.push(value);
    };
    let model_json = serde_json::to_vec(&model).unwrap_or_default();
    push(&mut parts, "model", Part::New(model_json));
    let mut has_limit = false;
    // A streamed chat completion reports its usage only when asked; the proxy reads usage from
    // replies (budgets depend on it), so it asks whatever the agent sent.
    let force_usage = route == Route::ChatCompletions
        && top.get("stream").is_some_and(|v| v.get().trim() == "true");
    for (key, value) in &top.members {
        if key == "model" || (force_usage && key == "stream_options") {
            continue;
        }
        if limited.contains(&key.as_str()) {
            has_limit = true;
            let n = clamp(value, p.max_tokens);
            clamped |= n.is_some();
            let v = match n {
                Some(n) => Part::New(n.to_string().into_bytes()),
                None => Part::Keep(json::range_in(text, value)),
            };
            push(&mut parts, key, v);
            continue;
        }
        push(&mut parts, key, Part::Keep(json::range_in(text, value)));
    }
    if force_usage {
        push(
            &mut parts,
            "stream_options",
            Part::New(br#"{"include_usage":true}"#.to_vec()),
        );
    }
    if let (false, Some(key)) = (has_limit, insert) {
        clamped = true;
        push(
            &mut parts,
            key,
            Part::New(p.max_tokens.to_string().into_bytes()),
        );
    }
    parts.push(Part::New(b"}".to_vec()));
    Ok(Rewrite {
        parts: merge(parts),
        model,
        model_from,
        clamped,
    })
}

/// The model to send and, if it differs from what was asked, what was asked.
fn choose_model(p: &LlmPolicy, asked: Option<&RawValue>) -> (String, Option<String>) {
    // Model names are short; a longer value is never an allowed one and is not decoded.
    let name = asked.and_then(|v| json::string(v, 512));
    match name {
        Some(n) if n == p.model || p.allowed_models.contains(&n) => (n, None),
        Some(n) => (p.model.clone(), Some(json::clip(&n, 100))),
        None => {
            let shown = asked.map_or("(none)".to_string(), |v| json::clip(v.get(), 100));
            (p.model.clone(), Some(shown))
        }
    }
}

/// `Some(limit)` if `value` is not a whole number at most `limit` (so it must be replaced).
fn clamp(value: &RawValue, limit: u32) -> Option<u32> {
    match serde_json::from_str::<u64>(value.get()) {
        Ok(n) if n <= u64::from(limit) => None,
        _ => Some(limit),
    }
}

/// Joins neighbouring `New` pieces so the reader copies fewer, larger pieces.
fn merge(parts: Vec<Part>) -> Vec<Part> {
    let mut out: Vec<Part> = Vec::with_capacity(parts.len());
    for p in parts {
        match (out.last_mut(), p) {
            (Some(Part::New(a)), Part::New(b)) => a.extend(b),
            (_, p) => out.push(p),
        }
    }
    out
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
