//! Usage parsing on reply bodies in the shape the providers document, fed whole and in every
//! split, so a field cut across two reads is still found.

use super::*;

/// An Anthropic streamed reply that read and wrote the prompt cache (as in the Messages
/// streaming documentation, with cache counts as prompt caching reports them).
const ANTHROPIC_SSE: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":1200,\"cache_read_input_tokens\":3400,\"cache_creation\":{\"ephemeral_5m_input_tokens\":1200,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"My \\\"usage\\\": {\\\"output_tokens\\\": 999999}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

/// A newer-style Anthropic stream whose `message_delta` repeats the cumulative input counts.
const ANTHROPIC_SSE_CUMULATIVE: &str = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\r\n\r\n\
event: message_delta\r\n\
data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":50,\"output_tokens\":7}}\r\n\r\n";

const ANTHROPIC_JSON: &str = r#"{"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"the word usage and {\"usage\": 1} in text"},{"type":"tool_use","id":"t","name":"bash","input":{"usage":{"input_tokens":777}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":1800,"output_tokens":503}}"#;

/// An OpenAI streamed reply with `stream_options.include_usage`: every chunk has `usage: null`
/// except the last, whose `choices` is empty.
const OPENAI_SSE: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4.1\",\"choices\":[],\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,\"total_tokens\":2306,\"prompt_tokens_details\":{\"cached_tokens\":1920,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n\
data: [DONE]\n\n";

const OPENAI_JSON: &str = r#"{
  "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "usage: none here"}, "finish_reason": "stop"}],
  "usage": {
    "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0}
  },
  "system_fingerprint": "fp"
}"#;

fn read(format: Format, ct: &str, body: &[u8], split: usize) -> Option<Usage> {
    let mut r = UsageReader::new(format, Some(ct.as_bytes()));
    for piece in body.chunks(split.max(1)) {
        r.feed(piece);
    }
    r.finish()
}

/// The same answer whatever the reads look like: whole, byte by byte, and at every cut in two.
fn every_split(format: Format, ct: &str, body: &str) -> Option<Usage> {
    let b = body.as_bytes();
    let whole = read(format, ct, b, b.len());
    for split in [1, 2, 3, 7, 64, 1000] {
        assert_eq!(read(format, ct, b, split), whole, "chunks of {split}");
    }
    for cut in 0..b.len() {
        let mut r = UsageReader::new(format, Some(ct.as_bytes()));
        r.feed(&b[..cut]);
        r.feed(&b[cut..]);
        assert_eq!(r.finish(), whole, "cut at {cut}");
    }
    whole
}

const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";

#[test]
fn anthropic_stream_with_cache_fields() {
    assert_eq!(
        every_split(Format::Anthropic, SSE, ANTHROPIC_SSE),
        Some(Usage {
            input: 25,
            output: 15,
            cache_read: 3400,
            cache_write: 1200
        })
    );
    assert_eq!(
        every_split(Format::Anthropic, SSE, ANTHROPIC_SSE_CUMULATIVE),
        Some(Usage {
            input: 12,
            output: 7,
            cache_read: 50,
            cache_write: 0
        })
    );
}

#[test]
fn anthropic_plain_reply_ignores_usage_inside_content() {
    assert_eq!(
        every_split(Format::Anthropic, JSON, ANTHROPIC_JSON),
        Some(Usage {
            input: 2095,
            output: 503,
            cache_read: 1800,
            cache_write: 0
        })
    );
}

#[test]
fn openai_stream_and_plain_split_cached_tokens_out_of_prompt_tokens() {
    assert_eq!(
        every_split(Format::OpenAi, SSE, OPENAI_SSE),
        Some(Usage {
            input: 86,
            output: 300,
            cache_read: 1920,
            cache_write: 0
        })
    );
    assert_eq!(
        every_split(Format::OpenAi, JSON, OPENAI_JSON),
        Some(Usage {
            input: 19,
            output: 10,
            cache_read: 0,
            cache_write: 0
        })
    );
}

#[test]
fn replies_without_usage_report_none() {
    for (format, ct, body) in [
        (
            Format::Anthropic,
            JSON,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"usage"}}"#,
        ),
        (
            Format::OpenAi,
            JSON,
            r#"{"error":{"message":"x"},"usage":null}"#,
        ),
        (Format::OpenAi, JSON, r#"[{"usage":{"prompt_tokens":5}}]"#),
        (Format::OpenAi, "text/plain", "usage: 5"),
        (
            Format::OpenAi,
            SSE,
            "data: {\"choices\":[],\"usage\":null}\n\ndata: [DONE]\n\n",
        ),
        (
            Format::Anthropic,
            SSE,
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        ),
    ] {
        assert_eq!(every_split(format, ct, body), None, "{body}");
    }
}

#[test]
fn a_cut_stream_still_counts_what_arrived() {
    let cut = &ANTHROPIC_SSE[..ANTHROPIC_SSE.find("event: content_block_start").unwrap()];
    assert_eq!(
        read(Format::Anthropic, SSE, cut.as_bytes(), 5),
        Some(Usage {
            input: 25,
            output: 1,
            cache_read: 3400,
            cache_write: 1200
        })
    );
    // The final line without its newline.
    let last = "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
    assert_eq!(
        read(Format::OpenAi, SSE, last.as_bytes(), 9),
        Some(Usage {
            input: 3,
            output: 4,
            ..Usage::default()
        })
    );
}

#[test]
fn memory_stays_bounded_on_huge_lines_and_bodies() {
    // A 10 MiB line without a newline is dropped as it goes; the next line still counts.
    let mut r = UsageReader::new(Format::OpenAi, Some(SSE.as_bytes()));
    let junk = vec![b'x'; 1 << 20];
    for _ in 0..10 {
        r.feed(&junk);
        if let Body::Sse(l) = &r.body {
            assert!(l.buf.len() <= MAX_LINE);
        }
    }
    r.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n");
    assert_eq!(
        r.finish(),
        Some(Usage {
            input: 1,
            output: 2,
            ..Usage::default()
        })
    );
    // A JSON body with 10 MiB of content before its usage keeps only the usage.
    let mut r = UsageReader::new(Format::Anthropic, Some(JSON.as_bytes()));
    r.feed(br#"{"content":[{"type":"text","text":""#);
    let text = vec![b'a'; 1 << 20];
    for _ in 0..10 {
        r.feed(&text);
    }
    r.feed(br#""}],"usage":{"input_tokens":9,"output_tokens":8}}"#);
    if let Body::Json(s) = &r.body {
        assert!(s.found.as_ref().is_some_and(|f| f.len() < 100));
    }
    assert_eq!(
        r.finish(),
        Some(Usage {
            input: 9,
            output: 8,
            ..Usage::default()
        })
    );
    // A `usage` value larger than any provider sends is given up on, not kept.
    let mut r = UsageReader::new(Format::Anthropic, Some(JSON.as_bytes()));
    r.feed(br#"{"usage":{"pad":""#);
    r.feed(&vec![b'p'; 2 * MAX_USAGE_JSON]);
    r.feed(br#"","input_tokens":1}}"#);
    assert_eq!(r.finish(), None);
}
