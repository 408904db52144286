//! `multipart/form-data` bodies (RFC 7578), streamed: text fields and one file part, with the
//! file read from an open descriptor so an upload of any size costs a fixed buffer.
//!
//! Used for Telegram uploads (`sendPhoto`, `sendDocument`, `sendVoice`) and audio transcription.
//! Field names are ours; the file name is sanitised by the caller and quoted here with any
//! quote, backslash or line break replaced, so a name cannot add a header or end the part.

use std::io::{Cursor, Read};

/// A body ready to send: its content type, exact length and a reader over all its bytes.
pub struct Body {
    pub content_type: String,
    pub length: u64,
    pub reader: Box<dyn Read + Send>,
}

/// Build a body from text fields and one file part.
pub fn build(
    fields: &[(&str, &str)],
    file_field: &str,
    file_name: &str,
    mime: &str,
    file: Box<dyn Read + Send>,
    file_len: u64,
) -> Body {
    let boundary = format!(
        "claw-{:016x}{:08x}",
        crate::infra::time::now_ms(),
        std::process::id()
    );
    let mut head = String::new();
    for (k, v) in fields {
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{v}\r\n",
            quote(k)
        ));
    }
    head.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
        quote(file_field),
        quote(file_name),
        quote(mime)
    ));
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + file_len + tail.len() as u64;
    // The file is cut at its announced length so the body is exactly `length` bytes long even
    // if the file grew meanwhile.
    let reader = Cursor::new(head.into_bytes())
        .chain(file.take(file_len))
        .chain(Cursor::new(tail.into_bytes()));
    Body {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        length,
        reader: Box::new(reader),
    }
}

fn quote(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\r' | '\n' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_fields_file_and_exact_length() {
        let data = b"PNGDATA".to_vec();
        let mut b = build(
            &[("chat_id", "42"), ("caption", "hi")],
            "photo",
            "a\"b\r\nX-Evil: 1.png",
            "image/png",
            Box::new(Cursor::new(data)),
            7,
        );
        let mut all = Vec::new();
        b.reader.read_to_end(&mut all).unwrap();
        assert_eq!(all.len() as u64, b.length);
        let text = String::from_utf8(all).unwrap();
        assert!(text.contains("name=\"chat_id\"\r\n\r\n42\r\n"));
        assert!(text.contains("filename=\"a_b__X-Evil: 1.png\""));
        assert!(!text.contains("\r\nX-Evil"));
        assert!(text.contains("Content-Type: image/png\r\n\r\nPNGDATA\r\n--claw-"));
        assert!(
            b.content_type
                .starts_with("multipart/form-data; boundary=claw-")
        );
    }
}
