//! Server-sent events: split a byte stream into `(event, data)` pairs.
//!
//! It owns only the framing; it never interprets payloads.

use std::io::BufRead;

/// One server-sent event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Event {
    /// The `event:` field, empty when absent (OpenAI sends only `data:`).
    pub event: String,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

/// Read the next event; `Ok(None)` at end of stream.
pub fn next_event(r: &mut impl BufRead) -> std::io::Result<Option<Event>> {
    let mut ev = Event::default();
    let mut seen = false;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(if seen { Some(ev) } else { None });
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if seen {
                return Ok(Some(ev));
            }
            continue;
        }
        if l.starts_with(':') {
            continue; // comment / keep-alive
        }
        let (field, value) = match l.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (l, ""),
        };
        match field {
            "event" => ev.event = value.to_string(),
            "data" => {
                if seen && !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
            }
            _ => {}
        }
        seen = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_and_joins_data_lines() {
        let raw = ": hi\nevent: a\ndata: {\"x\":1}\n\ndata: one\ndata: two\r\n\r\ndata: [DONE]";
        let mut r = std::io::Cursor::new(raw);
        assert_eq!(
            next_event(&mut r).unwrap().unwrap(),
            Event {
                event: "a".into(),
                data: "{\"x\":1}".into()
            }
        );
        assert_eq!(next_event(&mut r).unwrap().unwrap().data, "one\ntwo");
        assert_eq!(next_event(&mut r).unwrap().unwrap().data, "[DONE]");
        assert_eq!(next_event(&mut r).unwrap(), None);
    }
}
