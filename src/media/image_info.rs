//! What a file is, from its first bytes: the MIME type (never from the name) and, for images,
//! the pixel size read from the header alone.

/// Bytes of a file's head kept for sniffing (JPEG size markers can sit after a large EXIF block).
pub const HEAD_BYTES: usize = 256 * 1024;

/// The MIME type the content says, or `application/octet-stream`; plain UTF-8 text is `text/plain`.
pub fn sniff(head: &[u8]) -> String {
    if let Some(t) = infer::get(head) {
        return t.mime_type().to_string();
    }
    if !head.is_empty() && std::str::from_utf8(head).is_ok() {
        return "text/plain".into();
    }
    "application/octet-stream".into()
}

/// Width and height of an image from its header bytes, if the format is one claw decodes.
pub fn dimensions(head: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(head))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// A file extension for a MIME type, for names that have none.
pub fn extension(mime: &str) -> Option<&'static str> {
    Some(match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "audio/ogg" | "video/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/x-wav" | "audio/wav" => "wav",
        "audio/m4a" | "audio/x-m4a" | "audio/mp4" => "m4a",
        "video/mp4" => "mp4",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_the_type() {
        let png = tiny_png(3, 2);
        assert_eq!(sniff(&png), "image/png");
        assert_eq!(dimensions(&png), Some((3, 2)));
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff(b"hello"), "text/plain");
        assert_eq!(sniff(&[0xff, 0x00, 0x13]), "application/octet-stream");
        assert_eq!(dimensions(b"not an image"), None);
    }

    fn tiny_png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::new(w, h);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }
}
