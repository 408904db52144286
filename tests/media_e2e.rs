//! Media end to end in a real container: a photo ingested for main lands in the inbox, the real
//! claw-agent sends it to the fake model as an image block (both wire formats, checked at the
//! upstream), and the agent's `send_file` of a file in its folder is copied out by the host
//! into `media-out/` with an outbox row for the chat.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::Env;
use fake_llm::{FakeLlm, Reply};
use serde_json::{Value, json};
use std::time::Duration;

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 10]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn has_image(body: &Value) -> bool {
    body["messages"].as_array().unwrap().iter().any(|m| {
        m["content"].as_array().is_some_and(|parts| {
            parts.iter().any(|p| {
                (p["type"] == "image" && p["source"]["type"] == "base64")
                    || (p["type"] == "image_url"
                        && p["image_url"]["url"]
                            .as_str()
                            .is_some_and(|u| u.starts_with("data:image/jpeg;base64,")))
            })
        })
    })
}

fn round_trip(provider: &str) {
    e2e::require_image();
    let llm = FakeLlm::start();
    let bridge = tempfile::tempdir().unwrap();
    std::fs::write(bridge.path().join("garden.png"), png(64, 48)).unwrap();
    let mut env = Env::new();
    env.anthropic_base = llm.url();
    env.openai_base = llm.url();
    env.extra_config = format!(
        "[model]\nprovider = \"{provider}\"\nname = \"fake-model\"\n[models.\"fake-model\"]\nvision = true\n[media]\ningest_roots = [\"{}\"]\n",
        bridge.path().display()
    );
    env.write_config();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-e2e-key");
    env.set_secret("OPENAI_API_KEY", "sk-oai-e2e-key");
    std::fs::write(
        env.group_dir("main").join("report.pdf"),
        b"%PDF-1.4\nreport",
    )
    .unwrap();
    let line = json!({"chat": "cli:local", "id": "m1", "sender": "cli:owner", "text": "what is this?",
        "attachments": [{"kind": "photo", "path": bridge.path().join("garden.png")}]});
    env.claw()
        .args(["ingest"])
        .write_stdin(line.to_string())
        .assert()
        .success();
    llm.push(Reply::tool(
        "send_file",
        json!({"path": "report.pdf", "caption": "the report"}),
    ));
    llm.push(Reply::text("A green square; I sent the report."));
    env.claw().args(["dispatch", "--wait"]).assert().success();
    let reqs = llm.wait_for(2, Duration::from_secs(60));
    assert_eq!(reqs.len(), 2, "logs:\n{}", env.all_logs());
    assert!(
        reqs[0].text().contains("[photo: inbox/"),
        "{}",
        reqs[0].text()
    );
    assert!(
        has_image(&reqs[0].body),
        "{provider}: no image block upstream"
    );
    assert!(reqs[1].text().contains("queued"), "{}", reqs[1].text());

    // run-group applied the request: the host copy and its outbox row exist.
    let db = env.db();
    let (path, kind, caption): (String, String, String) = db
        .query_row(
            "SELECT f.path, f.kind, o.text FROM outbox_files f JOIN outbox o ON o.id = f.outbox_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap_or_else(|e| panic!("no send_file row ({e}); logs:\n{}", env.all_logs()));
    assert_eq!(
        (kind.as_str(), caption.as_str()),
        ("document", "the report")
    );
    assert!(path.starts_with(env.root.join("media-out").to_str().unwrap()));
    assert_eq!(std::fs::read(&path).unwrap(), b"%PDF-1.4\nreport");
    assert_eq!(env.last_run("main").0, "succeeded");
}

#[test]
fn anthropic_image_in_and_file_out_through_a_real_container() {
    round_trip("anthropic");
}

#[test]
fn openai_image_in_and_file_out_through_a_real_container() {
    round_trip("openai");
}
