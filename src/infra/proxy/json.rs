//! Reading the agent's JSON without copying it: objects are parsed one level at a time with
//! values left as borrowed [`RawValue`]s (slices of the body), duplicate keys are refused so the
//! proxy and the provider can never read two different values for one key, and a rewritten body
//! is sent as [`Spliced`] pieces: new bytes where the proxy changed something, ranges of the
//! original everywhere else.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::limits::Permit;

/// One JSON object's members, keys decoded (escapes resolved), values borrowed.
pub struct Object<'a> {
    pub members: BTreeMap<String, &'a RawValue>,
}

impl<'a> Object<'a> {
    /// Parses `text` as exactly one JSON object.
    pub fn parse(text: &'a str) -> Result<Object<'a>, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The member `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.get(key).copied()
    }

    /// The member `key` as a string, if it is one and at most `max` bytes long as written.
    pub fn str(&self, key: &str, max: usize) -> Option<String> {
        self.get(key).and_then(|v| string(v, max))
    }
}

/// `raw` decoded as a JSON string, if it is one and at most `max` bytes long as written.
pub fn string(raw: &RawValue, max: usize) -> Option<String> {
    let text = raw.get();
    if text.len() > max || !text.starts_with('"') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// Shortens untrusted text for a message or an event.
pub fn clip(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Object<'de>, A::Error> {
                let mut members = BTreeMap::new();
                while let Some(key) = m.next_key::<String>()? {
                    let value: &'de RawValue = m.next_value()?;
                    if members.contains_key(&key) {
                        return Err(de::Error::custom(format!(
                            "duplicate key `{}`",
                            clip(&key, 60)
                        )));
                    }
                    members.insert(key, value);
                }
                Ok(Object { members })
            }
        }
        d.deserialize_map(V)
    }
}

/// Calls `check` on each element of the JSON array `raw`, each parsed as an [`Object`] and
/// dropped before the next, so a long array never costs more than its largest element.
/// `Err` carries `check`'s own error, or the parse error as text.
pub fn each_object<'a, E>(
    raw: &'a RawValue,
    mut check: impl FnMut(&Object<'a>) -> Result<(), E>,
    parse_error: impl Fn(String) -> E,
) -> Result<(), E> {
    struct Seq<'c, F, E> {
        check: &'c mut F,
        failed: &'c mut Option<E>,
    }
    impl<'de, F, E> Visitor<'de> for Seq<'_, F, E>
    where
        F: FnMut(&Object<'de>) -> Result<(), E>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of JSON objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while let Some(obj) = s.next_element::<Object<'de>>()? {
                if let Err(e) = (self.check)(&obj) {
                    *self.failed = Some(e);
                    return Err(de::Error::custom("refused"));
                }
            }
            Ok(())
        }
    }
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let seq = Seq {
        check: &mut check,
        failed: &mut failed,
    };
    let parsed = de.deserialize_seq(seq);
    if let Some(e) = failed {
        return Err(e);
    }
    parsed.map_err(|e| parse_error(e.to_string()))
}

/// One piece of a rewritten body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Bytes of the original body.
    Keep(Range<usize>),
    /// Bytes the proxy wrote.
    New(Vec<u8>),
}

/// Where `raw` (borrowed from `body`) sits in `body`.
pub fn range_in(body: &str, raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

/// The total length of `parts`.
pub fn spliced_len(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|p| match p {
            Part::Keep(r) => r.len(),
            Part::New(b) => b.len(),
        })
        .sum()
}

/// A rewritten body as a reader: the original bytes stay where they are and only the pieces the
/// proxy changed are new. It owns the body's budget permit, so the bytes are counted until the
/// HTTP client drops the reader.
pub struct Spliced {
    body: Vec<u8>,
    parts: std::vec::IntoIter<Part>,
    current: Option<(Part, usize)>,
    _permit: Permit,
}

impl Spliced {
    /// A reader over `parts` of `body`; every `Keep` range must lie inside `body`.
    pub fn new(body: Vec<u8>, parts: Vec<Part>, permit: Permit) -> Spliced {
        Spliced {
            body,
            parts: parts.into_iter(),
            current: None,
            _permit: permit,
        }
    }
}

impl Read for Spliced {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                match self.parts.next() {
                    Some(p) => self.current = Some((p, 0)),
                    None => return Ok(0),
                }
            }
            let Some((part, done)) = &mut self.current else {
                continue;
            };
            let src: &[u8] = match part {
                Part::Keep(r) => &self.body[r.clone()],
                Part::New(b) => b,
            };
            let rest = &src[*done..];
            if rest.is_empty() {
                self.current = None;
                continue;
            }
            let n = rest.len().min(out.len());
            out[..n].copy_from_slice(&rest[..n]);
            *done += n;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::proxy::limits::Gate;
    use std::time::Duration;

    #[test]
    fn objects_borrow_values_and_refuse_duplicates() {
        let text = r#" {"b": [1, 2], "a": "x\"y", "m\u006fdel": 3} "#;
        let o = Object::parse(text).unwrap();
        assert_eq!(o.get("b").unwrap().get(), "[1, 2]");
        assert_eq!(o.str("a", 100).as_deref(), Some("x\"y"));
        assert_eq!(o.get("model").unwrap().get(), "3", "escaped key decoded");
        assert_eq!(&text[range_in(text, o.get("b").unwrap())], "[1, 2]");

        let dup = Object::parse(r#"{"model":"a","mod\u0065l":"b"}"#)
            .err()
            .unwrap();
        assert!(dup.contains("duplicate key `model`"), "{dup}");
        for bad in ["[1]", "\"s\"", "{} {}", "{\"a\":1", "{\"a\":1,}"] {
            assert!(Object::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_object_stops_at_the_first_refusal() {
        let text = r#"[{"n":1},{"n":2},{"n":3}]"#;
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        let mut seen = vec![];
        let r = each_object(
            raw,
            |o| {
                let n = o.get("n").unwrap().get().to_string();
                seen.push(n.clone());
                if n == "2" {
                    Err(format!("no {n}"))
                } else {
                    Ok(())
                }
            },
            |e| e,
        );
        assert_eq!(r, Err("no 2".to_string()));
        assert_eq!(seen, ["1", "2"]);
        let raw: &RawValue = serde_json::from_str(r#"[{"n":1}, 5]"#).unwrap();
        assert!(each_object(raw, |_| Ok::<(), String>(()), |e| e).is_err());
    }

    #[test]
    fn spliced_reads_parts_in_order() {
        let body = b"0123456789".to_vec();
        let permit = Gate::new(10).acquire(10, Duration::ZERO).unwrap();
        let parts = vec![
            Part::New(b"<".to_vec()),
            Part::Keep(2..5),
            Part::New(vec![]),
            Part::Keep(8..10),
            Part::New(b">".to_vec()),
        ];
        assert_eq!(spliced_len(&parts), 7);
        let mut r = Spliced::new(body, parts, permit);
        let mut out = String::new();
        let mut small = [0u8; 2];
        loop {
            let n = r.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(std::str::from_utf8(&small[..n]).unwrap());
        }
        assert_eq!(out, "<23489>");
    }
}
