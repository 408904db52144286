//! Media on Telegram against the fake Bot API: photos and voice notes land in the group's inbox
//! with safe names and show in the prompt; hostile names and oversize files do no harm; a failed
//! download is recorded, not dropped; `send_file` is copied out at ipc-apply and arrives as a
//! multipart upload with the right method; a symlink or FIFO given to `send_file` is refused.

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
#[path = "support/home.rs"]
mod home;

use fake_telegram::{FakeTelegram, TOKEN};
use home::TestHome;
use serde_json::{Value, json};

fn setup(extra: &str) -> (TestHome, FakeTelegram) {
    let fake = FakeTelegram::start();
    let h = TestHome::init().with_log("info");
    h.append_config(&format!(
        "[channels.telegram]\nenabled = true\napi_base = \"{}\"\n{extra}",
        fake.base
    ));
    h.set_secret("TELEGRAM_BOT_TOKEN", TOKEN);
    h.add_group("tg:-100", "family", &[]);
    (h, fake)
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::new(w, h);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn ogg() -> Vec<u8> {
    let mut v = b"OggS\x00\x02".to_vec();
    v.extend_from_slice(&[0u8; 22]);
    v.extend_from_slice(b"OpusHead");
    v.extend_from_slice(&[1u8; 200]);
    v
}

fn push(fake: &FakeTelegram, fields: Value) -> i64 {
    fake.push(|id| {
        let mut m = json!({"message_id": id, "date": 1_795_255_200 + id,
            "chat": {"id": -100, "type": "supergroup", "title": "Family"},
            "from": {"id": 55, "first_name": "Ana"}});
        for (k, v) in fields.as_object().unwrap() {
            m[k] = v.clone();
        }
        json!({"update_id": id, "message": m})
    })
}

fn doc(id: &str, name: &str, size: Option<usize>) -> Value {
    let mut d = json!({"file_id": id, "file_name": name});
    if let Some(s) = size {
        d["file_size"] = json!(s);
    }
    json!({"document": d})
}

/// Every regular file under `dir`, relative, and whether anything else (a link) is there.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            assert!(!t.is_symlink(), "link in the inbox: {:?}", e.path());
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn photos_voice_and_hostile_files_land_safely_and_show_in_the_prompt() {
    let (h, fake) = setup("[media.max_mb]\ndocument = 1\n");
    let big = vec![b'x'; 1024 * 1024 + 10];
    fake.add_file("ph-small", png(4, 3));
    fake.add_file("ph1", png(40, 30));
    fake.add_file("vo1", ogg());
    fake.add_file("d1", b"dotdot".to_vec());
    fake.add_file("d2", b"newline".to_vec());
    fake.add_file("d3", b"%PDF-1.7\nlong".to_vec());
    fake.add_file("big-said", big.clone());
    fake.add_file("big-silent", big);
    fake.hide_size("big-silent");
    let photo = push(
        &fake,
        json!({"caption": "look at this", "photo": [
            {"file_id": "ph-small", "width": 4, "height": 3},
            {"file_id": "ph1", "width": 40, "height": 30}]}),
    );
    let voice = push(&fake, json!({"voice": {"file_id": "vo1", "duration": 2}}));
    push(&fake, doc("d1", "../../x", None));
    push(&fake, doc("d2", "evil\nname\r.txt", None));
    push(
        &fake,
        doc("d3", &format!("{}.pdf", "a".repeat(10_000)), None),
    );
    push(&fake, doc("big-said", "big.bin", Some(1024 * 1024 + 10)));
    push(&fake, doc("big-silent", "big2.bin", None));
    push(
        &fake,
        json!({"photo": [{"file_id": "gone", "width": 1, "height": 1}]}),
    );

    let out = h
        .claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .assert()
        .success();
    let out = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(out.contains("8 update(s), stored 8"), "{out}");

    let group = h.path("groups/family");
    let files = files_under(&group.join("inbox"));
    let date = files[0].split('/').next().unwrap().to_string();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap())
        .collect();
    assert!(
        names.contains(&format!("{photo}-photo.jpg").as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{voice}-voice.ogg").as_str()),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("-x")), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("-evil_name_.txt")),
        "{names:?}"
    );
    for n in &names {
        assert!(n.chars().count() <= 130, "bounded: {n}");
        assert!(
            !n.contains('\n') && !n.contains('/') && !n.starts_with('.'),
            "{n:?}"
        );
    }
    // The oversize files and the failed download left nothing behind; nothing escaped the inbox.
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(!h.path("groups/x").exists() && !h.path("x").exists());
    assert!(
        !std::fs::read(group.join("inbox").join(&files[0]))
            .unwrap()
            .is_empty()
    );

    let db = h.db();
    let rows: Vec<(String, String, Option<String>, Option<String>)> = db
        .prepare("SELECT kind, status, mime, error FROM attachments ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 8, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("photo", "ok"));
    assert_eq!(rows[0].2.as_deref(), Some("image/png"), "type from content");
    assert_eq!((rows[1].0.as_str(), rows[1].1.as_str()), ("voice", "ok"));
    assert_eq!(rows[4].2.as_deref(), Some("application/pdf"));
    assert_eq!(rows[5].1, "too_large");
    assert_eq!(
        rows[6].1, "too_large",
        "the copy's cap caught the unannounced size"
    );
    assert_eq!(rows[7].1, "failed");
    assert!(
        rows[7].3.as_deref().unwrap().contains("getFile"),
        "{rows:?}"
    );
    // The token never reaches a stored error.
    assert!(
        rows.iter()
            .all(|r| !r.3.as_deref().unwrap_or("").contains(TOKEN))
    );

    // The prompt shows each file as a reference the agent can open, and what failed.
    let pending = claw::infra::store::messages::since(&db, "tg:-100", 0, 50).unwrap();
    let seqs: Vec<i64> = pending.iter().map(|m| m.seq).collect();
    let media = claw::infra::store::attachments::for_messages(&db, &seqs).unwrap();
    let prompt = claw::rules::prompt::messages_with_media(&pending, &media);
    assert!(
        prompt.contains(&format!(
            "look at this\n[photo: inbox/{date}/{photo}-photo.jpg, 40×30]"
        )),
        "{prompt}"
    );
    assert!(
        prompt.contains(&format!(
            "[voice: inbox/{date}/{voice}-voice.ogg, audio/opus"
        )),
        "{prompt}"
    );
    assert!(prompt.contains("transcription is off"), "{prompt}");
    assert!(
        prompt.contains("[document big.bin: not saved: "),
        "{prompt}"
    );
    assert!(
        prompt.contains("[photo photo.jpg: not saved: getFile failed"),
        "{prompt}"
    );

    // A re-fetch of the same updates downloads nothing again.
    let before = fake.file_downloads();
    fake.serve_again_from(1);
    h.claw()
        .args(["ingest", "--from", "telegram", "--wait", "0"])
        .assert()
        .success();
    assert_eq!(fake.file_downloads(), before);
    assert_eq!(h.count("SELECT count(*) FROM attachments"), 8);

    // `claw status` shows the inbox size; pruning by age removes the files, keeps the rows.
    let status = |h: &TestHome| -> Value {
        let out = h.claw().args(["status", "--json"]).assert().success();
        let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["folder"] == "family")
            .unwrap()
            .clone()
    };
    assert!(status(&h)["inbox_bytes"].as_i64().unwrap() > 0);
    drop(db);
    h.db()
        .execute("UPDATE attachments SET created_at = 0", [])
        .unwrap();
    let out = h.claw().arg("prune").assert().success();
    let out = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(out.contains("media: deleted 5 inbox file(s)"), "{out}");
    assert!(files_under(&group.join("inbox")).is_empty());
    assert_eq!(status(&h)["inbox_bytes"].as_i64(), Some(0));
    assert_eq!(h.count("SELECT count(*) FROM attachments"), 8);
}

fn request(h: &TestHome, name: &str, body: Value) {
    let dir = h.path("ipc/family/messages");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), body.to_string()).unwrap();
}

#[test]
fn send_file_uploads_by_type_and_refuses_links_and_fifos() {
    let (h, fake) = setup("");
    let out = h.path("groups/family/out");
    std::fs::create_dir_all(&out).unwrap();
    let chart = png(8, 8);
    std::fs::write(out.join("chart.png"), &chart).unwrap();
    std::fs::write(out.join("report.pdf"), b"%PDF-1.4\nreport").unwrap();
    std::fs::write(out.join("note.ogg"), ogg()).unwrap();
    std::os::unix::fs::symlink(h.path("secrets.env"), out.join("link.png")).unwrap();
    let fifo = std::ffi::CString::new(out.join("pipe").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    request(
        &h,
        "1-chart.json",
        json!({"type": "send_file", "path": "out/chart.png", "caption": "the chart"}),
    );
    request(
        &h,
        "2-report.json",
        json!({"type": "send_file", "path": "/workspace/group/out/report.pdf"}),
    );
    request(
        &h,
        "3-note.json",
        json!({"type": "send_file", "path": "out/note.ogg"}),
    );
    request(
        &h,
        "4-link.json",
        json!({"type": "send_file", "path": "out/link.png"}),
    );
    request(
        &h,
        "5-fifo.json",
        json!({"type": "send_file", "path": "out/pipe"}),
    );
    request(
        &h,
        "6-up.json",
        json!({"type": "send_file", "path": "../../secrets.env"}),
    );
    request(
        &h,
        "7-other.json",
        json!({"type": "send_file", "path": "out/chart.png", "chat": "tg:-999"}),
    );

    let _ = h.claw().arg("ipc-apply").assert();
    // The agent swapping the file after ipc-apply changes nothing: the copy is what is sent.
    std::fs::write(out.join("chart.png"), b"swapped").unwrap();
    h.claw().arg("deliver").assert().success();

    let ups = fake.uploads();
    let methods: Vec<&str> = ups.iter().map(|u| u.method.as_str()).collect();
    assert_eq!(
        methods,
        ["sendPhoto", "sendDocument", "sendVoice"],
        "{methods:?}"
    );
    assert_eq!(ups[0].field("chat_id").as_deref(), Some("-100"));
    assert_eq!(ups[0].field("caption").as_deref(), Some("the chart"));
    let (fname, bytes) = ups[0].file("photo").unwrap();
    assert_eq!(fname, "chart.png");
    assert_eq!(
        bytes, chart,
        "the upload is the file as it was at ipc-apply"
    );
    assert_eq!(ups[1].file("document").unwrap().1, b"%PDF-1.4\nreport");
    assert!(ups[1].field("caption").is_none());
    assert!(ups[2].file("voice").is_some());
    assert!(
        ups.iter()
            .all(|u| u.content_type.starts_with("multipart/form-data; boundary="))
    );

    // The refused requests are in ipc/errors with reasons the agent can read.
    let mut reasons = String::new();
    for e in std::fs::read_dir(h.path("ipc/errors")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            reasons.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            reasons.push('\n');
        }
    }
    assert!(reasons.contains("symlink"), "{reasons}");
    assert!(reasons.contains("FIFO"), "{reasons}");
    assert!(reasons.contains("`..`"), "{reasons}");
    assert!(
        reasons.contains("may only message its own chat"),
        "{reasons}"
    );
    assert_eq!(h.count("SELECT count(*) FROM outbox_files"), 3);
    // Once sent, the host copies are removed by housekeeping.
    let copies = std::fs::read_dir(h.path("media-out")).unwrap().count();
    assert_eq!(copies, 3);
    h.claw().arg("prune").assert().success();
    assert_eq!(std::fs::read_dir(h.path("media-out")).unwrap().count(), 0);
}
