//! Images for vision models: a photo from the group folder decoded, shrunk to fit the providers'
//! limits (long edge at most 1568 px, Anthropic's recommendation, which OpenAI also takes) and
//! re-encoded as JPEG, as a transcript block both wire formats can carry.
//!
//! Runs inside the container on the agent's own files; decoding is bounded by a byte cap on
//! the input and an allocation limit on the decoder.

use super::transcript::{Block, Message};
use base64::Engine;
use std::io::{Cursor, Read};
use std::path::Path;

/// Longest edge sent, in pixels.
pub const MAX_EDGE: u32 = 1568;
/// Largest image file read.
pub const MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Most memory the decoder may allocate.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// Whether the bytes look like an image format this module decodes.
pub fn is_image(head: &[u8]) -> bool {
    image::guess_format(head).is_ok_and(|f| {
        matches!(
            f,
            image::ImageFormat::Jpeg
                | image::ImageFormat::Png
                | image::ImageFormat::WebP
                | image::ImageFormat::Gif
        )
    })
}

/// Read an image file (capped) and make an image block; also returns the size sent.
pub fn load(path: &Path) -> Result<(Block, u32, u32), String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} is over 20 MB; not sent as an image",
            path.display()
        ));
    }
    from_bytes(&bytes)
}

/// Decode, shrink if needed, and encode as a base64 JPEG block.
pub fn from_bytes(bytes: &[u8]) -> Result<(Block, u32, u32), String> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("unreadable image: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    let img = if img.width().max(img.height()) > MAX_EDGE {
        img.resize(MAX_EDGE, MAX_EDGE, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let rgb = img.to_rgb8();
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&rgb)
        .map_err(|e| format!("cannot encode the image: {e}"))?;
    let data = base64::engine::general_purpose::STANDARD.encode(out.into_inner());
    Ok((
        Block::Image {
            media_type: "image/jpeg".into(),
            data,
        },
        rgb.width(),
        rgb.height(),
    ))
}

/// Add the host's photos (paths under the group folder) to the last user message as image
/// blocks; one that cannot be read is said in text instead, so the model knows it is missing.
pub fn attach(group: &Path, messages: &mut [Message], images: &[String]) {
    let Some(last) = messages.last_mut() else {
        return;
    };
    for rel in images {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) {
            continue;
        }
        match load(&group.join(rel)) {
            Ok((block, _, _)) => last.content.push(block),
            Err(e) => last.content.push(Block::Text {
                text: format!("[image {rel} could not be attached: {e}]"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_images_are_shrunk_and_sent_as_jpeg() {
        let img = image::RgbImage::new(3000, 1000);
        let mut png = Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let png = png.into_inner();
        assert!(is_image(&png));
        let (b, w, h) = from_bytes(&png).unwrap();
        assert_eq!((w, h), (1568, 523));
        let Block::Image { media_type, data } = b else {
            panic!()
        };
        assert_eq!(media_type, "image/jpeg");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(&raw[..2], &[0xff, 0xd8]);
        assert!(from_bytes(b"not an image").is_err());
        assert!(!is_image(b"%PDF-1.7"));
    }
}
