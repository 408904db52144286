//! Signal attachments through the stand-in `signal-cli`: files are taken from its attachment
//! folder by id into the group's inbox with safe names; a link, a FIFO, a hostile id, a missing
//! file and an oversize file are recorded as not saved, and the messages are stored anyway.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use serde_json::json;

const GROUP: &str = "sig:R3JvdXBJZEZvclRlc3Rz+/8=";

fn envelope(ts: i64, text: Option<&str>, attachments: serde_json::Value) -> String {
    json!({"envelope": {"source": "+4915100000002", "sourceNumber": "+4915100000002",
        "sourceName": "Ben", "timestamp": ts,
        "dataMessage": {"timestamp": ts, "message": text, "attachments": attachments,
            "groupInfo": {"groupId": "R3JvdXBJZEZvclRlc3Rz+/8=", "type": "DELIVER"}}},
        "account": "+4915199999999"})
    .to_string()
}

#[test]
fn signal_attachments_land_safely_and_bad_ones_are_recorded() {
    let h = TestHome::init().with_log("info");
    let atts = tempfile::tempdir().unwrap();
    let a = atts.path();
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(12, 9)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    std::fs::write(a.join("ok1"), png.into_inner()).unwrap();
    std::fs::write(a.join("named"), b"%PDF-1.4 x").unwrap();
    std::fs::write(a.join("big"), vec![0u8; 1024 * 1024 + 1]).unwrap();
    std::os::unix::fs::symlink(h.path("secrets.env"), a.join("link")).unwrap();
    let fifo = std::ffi::CString::new(a.join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let cli =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signal/signal-cli");
    h.append_config(&format!(
        "[channels.signal]\nenabled = true\ncli = \"{}\"\naccount = \"+4915199999999\"\nattachments_dir = \"{}\"\n[media.max_mb]\ndocument = 1\n",
        cli.display(),
        a.display()
    ));
    h.add_group(GROUP, "hiking", &[]);
    let lines = [
        envelope(1_795_255_300_000, Some("the summit"), json!([{"contentType": "image/jpeg", "filename": "summit.jpg", "id": "ok1", "size": 100}])),
        envelope(1_795_255_301_000, None, json!([{"contentType": "application/pdf", "filename": "../../x\nevil.pdf", "id": "named"}])),
        envelope(1_795_255_302_000, None, json!([{"contentType": "application/octet-stream", "filename": "big.bin", "id": "big"}])),
        envelope(1_795_255_303_000, None, json!([{"contentType": "image/png", "id": "link"}])),
        envelope(1_795_255_304_000, None, json!([{"contentType": "image/png", "id": "fifo"}])),
        envelope(1_795_255_305_000, None, json!([{"contentType": "image/png", "id": "../ok1"}])),
        envelope(1_795_255_306_000, None, json!([{"contentType": "image/png", "id": "gone"}])),
    ]
    .join("\n");
    let fixture = h.path("receive.jsonl");
    std::fs::write(&fixture, lines + "\n").unwrap();
    let out = h
        .claw()
        .args(["ingest", "--from", "signal"])
        .env("SIGNAL_FIXTURE", &fixture)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("stored 7"), "{stdout}");

    let db = h.db();
    let rows: Vec<(String, String, Option<String>, Option<String>)> = db
        .prepare("SELECT kind, status, path, error FROM attachments ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows[0].0, "photo");
    let p0 = rows[0].2.clone().unwrap();
    assert!(
        p0.starts_with("inbox/") && p0.ends_with("-summit.jpg"),
        "{p0}"
    );
    let p1 = rows[1].2.clone().unwrap();
    assert!(p1.ends_with("-x_evil.pdf"), "{p1}");
    assert!(!p1.contains('\n'));
    assert_eq!(rows[2].1, "too_large");
    assert!(
        rows[3].3.as_deref().unwrap().contains("symlink"),
        "{rows:?}"
    );
    assert!(rows[4].3.as_deref().unwrap().contains("FIFO"), "{rows:?}");
    assert!(
        rows[5]
            .3
            .as_deref()
            .unwrap()
            .contains("not a plain file name"),
        "{rows:?}"
    );
    assert!(
        rows[6].3.as_deref().unwrap().contains("no such file"),
        "{rows:?}"
    );
    // Only the two good files exist in the group folder.
    let group = h.path("groups/hiking");
    let mut found = vec![];
    for day in std::fs::read_dir(group.join("inbox")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            found.push(f.unwrap().file_name().to_string_lossy().to_string());
        }
    }
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        std::fs::read(group.join(&p1)).unwrap(),
        b"%PDF-1.4 x",
        "the file itself was copied"
    );
}

#[test]
fn send_file_goes_out_as_a_signal_attachment() {
    let h = TestHome::init().with_log("info");
    let cli =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signal/signal-cli");
    h.append_config(&format!(
        "[channels.signal]\nenabled = true\ncli = \"{}\"\naccount = \"+4915199999999\"\n",
        cli.display()
    ));
    h.add_group(GROUP, "hiking", &[]);
    std::fs::write(h.path("groups/hiking/map.pdf"), b"%PDF-1.4 map").unwrap();
    let req = h.path("ipc/hiking/messages");
    std::fs::create_dir_all(&req).unwrap();
    std::fs::write(
        req.join("1.json"),
        json!({"type": "send_file", "path": "map.pdf", "caption": "-the route"}).to_string(),
    )
    .unwrap();
    h.claw().arg("ipc-apply").assert().success();
    let log = h.path("send.log");
    h.claw()
        .arg("deliver")
        .env("SIGNAL_SEND_LOG", &log)
        .assert()
        .success();
    let args = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    let copy = h.path("media-out");
    let attach = lines
        .iter()
        .find(|l| l.starts_with("--attachment="))
        .unwrap_or_else(|| panic!("{args}"));
    assert!(
        attach.starts_with(&format!("--attachment={}/", copy.display())),
        "{attach}"
    );
    assert_eq!(
        std::fs::read(attach.trim_start_matches("--attachment=")).unwrap(),
        b"%PDF-1.4 map"
    );
    assert!(lines.contains(&"--message=-the route"), "{args}");
    assert!(
        lines.contains(&"--group-id=R3JvdXBJZEZvclRlc3Rz+/8="),
        "{args}"
    );
}
