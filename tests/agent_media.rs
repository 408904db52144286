//! Images reach the model as image blocks in both wire formats, checked at the fake upstream:
//! photos the host lists in the start line, and images the agent opens with `read_file`; a
//! model without vision gets no image and `read_file` stays text.

mod support;

use serde_json::{Value, json};
use support::fake_llm::Reply;
use support::{Sandbox, start};

fn photo(sb: &Sandbox, rel: &str, w: u32, h: u32) {
    let p = sb.group().join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([200, 30, 30]))
        .save_with_format(&p, image::ImageFormat::Png)
        .unwrap();
}

/// Every image block or part in a request body, as (wire type, media prefix).
fn images(body: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for m in body["messages"].as_array().unwrap() {
        let Some(parts) = m["content"].as_array() else {
            continue;
        };
        for p in parts {
            match p["type"].as_str() {
                Some("image") => out.push((
                    "image".into(),
                    format!(
                        "{}:{}",
                        p["source"]["type"].as_str().unwrap(),
                        p["source"]["media_type"].as_str().unwrap()
                    ),
                )),
                Some("image_url") => out.push((
                    "image_url".into(),
                    p["image_url"]["url"].as_str().unwrap()[..23].to_string(),
                )),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn host_photos_arrive_as_image_blocks_in_both_wire_formats() {
    for provider in ["anthropic", "openai"] {
        let sb = Sandbox::new();
        photo(&sb, "inbox/2026-12-02/842-photo.png", 3000, 2000);
        sb.llm.push(Reply::text("a red square"));
        let mut s = start(
            provider,
            "[photo: inbox/2026-12-02/842-photo.png, 3000×2000]",
        );
        s.images = vec!["inbox/2026-12-02/842-photo.png".into()];
        let out = sb.run(s);
        assert_eq!(out.code, 0, "{provider}: {}", out.stderr);
        let req = &sb.llm.requests()[0];
        let found = images(&req.body);
        let want = match provider {
            "anthropic" => ("image".to_string(), "base64:image/jpeg".to_string()),
            _ => (
                "image_url".to_string(),
                "data:image/jpeg;base64,".to_string(),
            ),
        };
        assert_eq!(found, vec![want], "{provider}");
        // Shrunk within the providers' limits before sending.
        assert!(
            req.raw.len() < 1_000_000,
            "{provider}: {} bytes",
            req.raw.len()
        );
    }
}

#[test]
fn read_file_on_an_image_shows_it_to_a_vision_model_only() {
    for provider in ["anthropic", "openai"] {
        let sb = Sandbox::new();
        photo(&sb, "chart.png", 40, 30);
        sb.llm
            .push(Reply::tool("read_file", json!({"path": "chart.png"})));
        sb.llm.push(Reply::text("it is red"));
        let out = sb.run(start(provider, "look at chart.png"));
        assert_eq!(out.code, 0, "{provider}: {}", out.stderr);
        let second = &sb.llm.requests()[1];
        assert_eq!(
            images(&second.body).len(),
            1,
            "{provider}: {}",
            second.raw.chars().take(2000).collect::<String>()
        );
        assert!(
            second.raw.contains("is an image (40×30 as sent)"),
            "{provider}"
        );

        // Without vision the image stays out of the request.
        let sb = Sandbox::new();
        photo(&sb, "chart.png", 40, 30);
        sb.llm
            .push(Reply::tool("read_file", json!({"path": "chart.png"})));
        sb.llm.push(Reply::text("bytes"));
        let mut s = start(provider, "look at chart.png");
        s.vision = false;
        assert_eq!(sb.run(s).code, 0);
        assert!(images(&sb.llm.requests()[1].body).is_empty(), "{provider}");
    }
}

#[test]
fn photos_in_a_follow_up_message_reach_the_model_too() {
    use claw::infra::protocol::HostLine;
    let sb = Sandbox::new();
    photo(&sb, "inbox/d/9-photo.png", 20, 20);
    sb.llm.push(Reply::text("first"));
    sb.llm.push(Reply::text("second"));
    let mut a = sb.spawn(start("openai", "hello"));
    a.until_idle();
    a.send(&HostLine::Message {
        text: "[photo: inbox/d/9-photo.png, 20×20]".into(),
        images: vec!["inbox/d/9-photo.png".into(), "../escape.png".into()],
    });
    a.until_idle();
    let reqs = sb.llm.requests();
    assert!(images(&reqs[0].body).is_empty());
    assert_eq!(
        images(&reqs[1].body).len(),
        1,
        "only the path inside the group folder"
    );
}
