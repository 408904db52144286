//! Attachments from JSON-lines bridges and voice transcription, against a fake server on
//! loopback that serves files and speaks OpenAI's `/v1/audio/transcriptions` (multipart).
//! Path attachments are taken only from `media.ingest_roots`, never from the claw home; the
//! transcription key stays on the host and the transcript joins the message text.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Default, Clone)]
struct Seen {
    path: String,
    headers: String,
    body: Vec<u8>,
}

/// A one-thread HTTP server: GET /files/NAME serves bytes, POST /v1/audio/transcriptions
/// answers a transcript. Records every request.
fn serve(files: Vec<(&'static str, Vec<u8>)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            let (head_len, len) = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse::<usize>().unwrap())
                        .unwrap_or(0);
                    break (i + 4, len);
                }
            };
            while buf.len() < head_len + len {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            s2.lock().unwrap().push(Seen {
                path: path.clone(),
                headers: head.clone(),
                body: buf[head_len..].to_vec(),
            });
            let (status, body) = if path == "/v1/audio/transcriptions" {
                (200, br#"{"text":"  buy milk and call Ana  "}"#.to_vec())
            } else if let Some((_, b)) = files.iter().find(|(n, _)| path == format!("/files/{n}")) {
                (200, b.clone())
            } else {
                (404, b"no".to_vec())
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(&body);
        }
    });
    (base, seen)
}

fn ogg() -> Vec<u8> {
    let mut v = b"OggS\x00\x02".to_vec();
    v.extend_from_slice(&[0u8; 22]);
    v.extend_from_slice(b"OpusHead");
    v.extend_from_slice(&[7u8; 300]);
    v
}

#[test]
fn bridge_paths_urls_and_voice_transcription() {
    let (base, seen) = serve(vec![
        ("note.ogg", ogg()),
        ("pic.png", {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::new(6, 5)
                .write_to(&mut out, image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        }),
    ]);
    let h = TestHome::init().with_log("info");
    let bridge = tempfile::tempdir().unwrap();
    std::fs::write(bridge.path().join("scan.pdf"), b"%PDF-1.5\nscan").unwrap();
    std::os::unix::fs::symlink(h.path("secrets.env"), bridge.path().join("sneaky.pdf")).unwrap();
    h.append_config(&format!(
        "[media]\ningest_roots = [\"{}\"]\n[media.transcription]\nbase_url = \"{base}\"\nkey_env = \"STT_KEY\"\n",
        bridge.path().display()
    ));
    h.set_secret("STT_KEY", "sk-transcribe-secret");
    h.add_group("sig:+4915", "ana", &[]);
    let line = |id: &str, att: serde_json::Value| {
        json!({"chat": "sig:+4915", "id": id, "sender": "sig:+4915", "text": "",
               "time": "2026-12-02T10:00:00Z", "attachments": [att]})
        .to_string()
    };
    let input = [
        line(
            "v1",
            json!({"kind": "voice", "url": format!("{base}/files/note.ogg")}),
        ),
        line(
            "p1",
            json!({"url": format!("{base}/files/pic.png"), "name": "../../pic.png"}),
        ),
        line(
            "d1",
            json!({"kind": "document", "path": bridge.path().join("scan.pdf")}),
        ),
        line(
            "d2",
            json!({"kind": "document", "path": bridge.path().join("sneaky.pdf")}),
        ),
        line("d3", json!({"kind": "document", "path": "/etc/hostname"})),
        line("d4", json!({"url": format!("{base}/files/missing")})),
        line("d5", json!({"url": "file:///etc/passwd"})),
    ]
    .join("\n");
    let out = h.claw().arg("ingest").write_stdin(input).assert().success();
    let out = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(out.contains("stored 7"), "{out}");

    let db = h.db();
    let text: String = db
        .query_row("SELECT text FROM messages WHERE msg_id = 'v1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(text, "[voice transcript] buy milk and call Ana");
    let rows: Vec<(String, String, Option<String>, Option<String>)> = db
        .prepare("SELECT kind, status, path, error FROM attachments ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows[0].0, "voice");
    assert_eq!(rows[0].2.as_deref(), Some("inbox/2026-12-02/v1-note.ogg"));
    assert_eq!(
        (rows[1].0.as_str(), rows[1].2.as_deref()),
        ("photo", Some("inbox/2026-12-02/p1-pic.png")),
        "kind from the content, name without its path"
    );
    assert_eq!(
        (rows[2].1.as_str(), rows[2].2.as_deref()),
        ("ok", Some("inbox/2026-12-02/d1-scan.pdf"))
    );
    assert!(
        rows[3]
            .3
            .as_deref()
            .unwrap()
            .contains("inside the claw home"),
        "{rows:?}"
    );
    assert!(
        rows[4]
            .3
            .as_deref()
            .unwrap()
            .contains("not under any of media.ingest_roots"),
        "{rows:?}"
    );
    assert!(rows[5].3.as_deref().unwrap().contains("404"), "{rows:?}");
    assert!(
        rows[6].3.as_deref().unwrap().contains("http or https"),
        "{rows:?}"
    );
    assert_eq!(
        std::fs::read(h.path("groups/ana/inbox/2026-12-02/d1-scan.pdf")).unwrap(),
        b"%PDF-1.5\nscan"
    );

    // The endpoint got the audio as multipart with the model, and the key as a bearer token.
    let seen = seen.lock().unwrap();
    let t = seen
        .iter()
        .find(|s| s.path == "/v1/audio/transcriptions")
        .unwrap();
    assert!(
        t.headers
            .to_lowercase()
            .contains("authorization: bearer sk-transcribe-secret")
    );
    assert!(
        t.headers
            .to_lowercase()
            .contains("content-type: multipart/form-data; boundary=")
    );
    let body = String::from_utf8_lossy(&t.body);
    assert!(
        body.contains("name=\"model\"\r\n\r\nwhisper-1\r\n"),
        "{body}"
    );
    assert!(
        t.body.windows(8).any(|w| w == b"OpusHead"),
        "the audio itself was sent"
    );
    // The key is on the host only: not in the database, not in the group folder.
    let dump: String = db
        .query_row(
            "SELECT group_concat(coalesce(error,'') || coalesce(transcript,'')) FROM attachments",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!dump.contains("sk-transcribe-secret"));
}

#[test]
fn audio_the_endpoint_does_not_take_is_converted_with_ffmpeg_only_then() {
    use std::os::unix::fs::PermissionsExt;
    let (base, seen) = serve(vec![]);
    let h = TestHome::init().with_log("info");
    let bridge = tempfile::tempdir().unwrap();
    std::fs::write(bridge.path().join("a.ogg"), ogg()).unwrap();
    // A stand-in ffmpeg: records its arguments, reads stdin, prints a tiny WAV.
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    let script = bin.path().join("ffmpeg");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncat > /dev/null\nprintf 'RIFF\\044\\000\\000\\000WAVEfmt converted'\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.append_config(&format!(
        "[media]\ningest_roots = [\"{}\"]\n[media.transcription]\nbase_url = \"{base}\"\naccepts = [\"audio/wav\"]\n",
        bridge.path().display()
    ));
    h.add_group("sig:+1", "v", &[]);
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let line = json!({"chat": "sig:+1", "id": "c1", "sender": "sig:+1", "text": "",
        "attachments": [{"kind": "voice", "path": bridge.path().join("a.ogg")}]});
    h.claw()
        .arg("ingest")
        .env("PATH", &path)
        .write_stdin(line.to_string())
        .assert()
        .success();
    let args = std::fs::read_to_string(&calls).unwrap();
    assert!(
        args.contains("-i pipe:0") && args.contains("-f wav pipe:1"),
        "{args}"
    );
    let seen = seen.lock().unwrap();
    let t = seen
        .iter()
        .find(|s| s.path == "/v1/audio/transcriptions")
        .unwrap();
    let body = String::from_utf8_lossy(&t.body);
    assert!(
        body.contains("filename=\"voice.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF"),
        "{body}"
    );
    let text: String = h
        .db()
        .query_row("SELECT text FROM messages WHERE msg_id = 'c1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(text, "[voice transcript] buy milk and call Ana");
    drop(seen);

    // OGG is taken as it is by default: no conversion, ffmpeg never started.
    std::fs::remove_file(&calls).unwrap();
    let h2 = TestHome::init().with_log("info");
    h2.append_config(&format!(
        "[media]\ningest_roots = [\"{}\"]\n[media.transcription]\nbase_url = \"{base}\"\n",
        bridge.path().display()
    ));
    h2.add_group("sig:+1", "v", &[]);
    h2.claw()
        .arg("ingest")
        .env("PATH", &path)
        .write_stdin(line.to_string())
        .assert()
        .success();
    assert!(
        !calls.exists(),
        "ffmpeg ran although the endpoint takes OGG"
    );
}
