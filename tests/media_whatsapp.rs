//! WhatsApp media in, through the same code `claw whatsapp run` uses (`whatsapp::store`,
//! `whatsapp::media::WaSource`), with recorded events from tests/fixtures/whatsapp/ and a
//! stand-in for WhatsApp's CDN (the one network call, which needs the live service). Good files
//! land in the inbox with safe names and content types; a hostile name, a declared length over
//! the cap (never requested), a CDN that sends more than it declared, missing keys and a failed
//! download are recorded and said in the prompt, and never stop the other messages.

#[path = "support/home.rs"]
mod home;

use claw::channels::whatsapp::map::Event;
use claw::channels::whatsapp::media::{CappedFile, Download, Fetch, WaSource};
use home::TestHome;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const GROUP: &str = "wa:120363012345678901@g.us";

/// msg id, kind, status, path, error, mime of one attachment row.
type Row = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Serves files by CDN path, as WhatsApp's CDN would after decryption; records each request.
struct FakeCdn {
    files: HashMap<String, Vec<u8>>,
    asked: RefCell<Vec<String>>,
}

impl Download for FakeCdn {
    fn download(&self, f: &Fetch, mut out: CappedFile) -> Result<(), String> {
        self.asked.borrow_mut().push(f.direct_path.clone());
        let body = self
            .files
            .get(&f.direct_path)
            .ok_or("the CDN answered HTTP 404")?;
        // In pieces, as a streamed download writes.
        for chunk in body.chunks(64 * 1024) {
            out.write_all(chunk).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn fixture(name: &str) -> Event {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/whatsapp")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    serde_json::from_value(v["event"].clone()).unwrap()
}

fn path_of(ev: &Event) -> String {
    let m = &ev.message;
    let inner = m
        .get("documentWithCaptionMessage")
        .map(|w| &w["message"])
        .unwrap_or(m);
    inner
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .get("directPath")
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

fn png() -> Vec<u8> {
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(16, 9)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    png.into_inner()
}

fn ogg() -> Vec<u8> {
    let mut v = b"OggS\x00\x02".to_vec();
    v.extend_from_slice(&[0u8; 22]);
    v.extend_from_slice(b"OpusHead");
    v.extend_from_slice(&[7u8; 300]);
    v
}

/// A loopback OpenAI-compatible transcription endpoint; records request heads.
fn transcription_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            let need = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    s2.lock().unwrap().push(head);
                    break Some(i + 4 + len);
                }
            };
            while need.is_some_and(|n| buf.len() < n) {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = br#"{"text":"meet at the hut at six"}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(body);
        }
    });
    (base, seen)
}

#[test]
fn whatsapp_media_lands_safely_and_bad_files_are_recorded() {
    let h = TestHome::init();
    let (base, heard) = transcription_server();
    h.append_config(&format!(
        "[media.max_mb]\nvideo = 1\ndocument = 1\n[media.transcription]\nbase_url = \"{base}\"\n"
    ));
    h.add_group(GROUP, "hiking", &[]);

    let photo = fixture("image_without_caption.json");
    let voice = fixture("voice_note.json");
    let doc = fixture("document_hostile_name.json");
    let big = fixture("video_oversize_declared.json");
    let nokeys = fixture("image_missing_keys.json");
    // A CDN that sends more than the 1 MiB document cap though the message declared 1200 bytes.
    let mut liar = doc.clone();
    liar.info.id = "3EB0LIAR".into();
    let w = &mut liar.message["documentWithCaptionMessage"]["message"]["documentMessage"];
    w["directPath"] = json!("/v/t62/liar.enc");
    w["fileName"] = json!("small.pdf");
    // An audio file the CDN no longer has.
    let mut gone = fixture("audio_file.json");
    gone.info.id = "3EB0GONE".into();
    gone.message["audioMessage"]["directPath"] = json!("/v/t62/gone.enc");

    let mut files = HashMap::new();
    files.insert(path_of(&photo), png());
    files.insert(path_of(&voice), ogg());
    files.insert(path_of(&doc), b"%PDF-1.4 the route".to_vec());
    files.insert(path_of(&big), vec![0u8; 10]);
    files.insert("/v/t62/liar.enc".into(), {
        let mut v = b"%PDF-1.4 ".to_vec();
        v.resize(2 * 1024 * 1024, b'x');
        v
    });
    let cdn = FakeCdn {
        files,
        asked: RefCell::new(vec![]),
    };

    let home = claw::infra::paths::Home::new(&h.root);
    let config = claw::infra::config::Config::load(&home.config()).unwrap();
    let secrets = claw::infra::secrets::Secrets::default();
    let transcriber =
        claw::media::transcribe::Transcriber::from_config(&config.media.transcription, &secrets);
    assert!(transcriber.is_some());
    let mut store = claw::infra::store::Store::open(&home).unwrap();
    let source = WaSource {
        download: &cdn,
        tmp_dir: h.path("whatsapp/tmp"),
    };
    let ctx = claw::media::save::Ctx::new(
        &store.conn,
        &home,
        &config.media,
        &source,
        transcriber.as_ref(),
    )
    .unwrap();
    let batch = vec![photo.clone(), voice, doc, big.clone(), nokeys, liar, gone];
    let summary = claw::channels::whatsapp::store::store_batch(
        &mut store,
        &batch,
        &HashMap::new(),
        65536,
        Some(&ctx),
    )
    .unwrap();
    assert_eq!(summary.stored, 7, "every message is stored: {summary:?}");

    // The declared 3 GB video was refused before any request; the key-less image never asked.
    let asked = cdn.asked.borrow().clone();
    assert!(!asked.contains(&path_of(&big)), "{asked:?}");
    assert!(!asked.iter().any(|p| p.contains("nokey")), "{asked:?}");
    assert_eq!(asked.len(), 5, "{asked:?}");

    let db = h.db();
    let rows: Vec<Row> = db
        .prepare(
            "SELECT m.msg_id, a.kind, a.status, a.path, a.error, a.mime FROM attachments a
             JOIN messages m ON m.seq = a.message_seq ORDER BY a.id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 7, "{rows:?}");
    let by_id = |id: &str| rows.iter().find(|r| r.0 == id).unwrap().clone();

    let p = by_id(&photo.info.id);
    assert_eq!((p.1.as_str(), p.2.as_str()), ("photo", "ok"), "{p:?}");
    assert_eq!(p.5.as_deref(), Some("image/png"), "MIME from the content");
    let photo_path = p.3.unwrap();
    assert!(photo_path.starts_with("inbox/") && photo_path.ends_with("-photo.jpg"));
    assert_eq!(
        std::fs::read(h.path("groups/hiking").join(&photo_path)).unwrap(),
        png()
    );

    let v = by_id("3EB0A1B2C3D4E5F60010");
    assert_eq!((v.1.as_str(), v.2.as_str()), ("voice", "ok"), "{v:?}");
    let text: String = db
        .query_row(
            "SELECT text FROM messages WHERE msg_id = '3EB0A1B2C3D4E5F60010'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(text, "[voice transcript] meet at the hut at six");
    assert!(heard.lock().unwrap()[0].contains("/v1/audio/transcriptions"));

    let d = by_id("3EB0A1B2C3D4E5F60012");
    assert_eq!(d.2, "ok", "{d:?}");
    let dp = d.3.unwrap();
    assert!(dp.ends_with("-passwd_evil.pdf"), "{dp}");
    assert!(!dp.contains('\n') && !dp.contains(".."), "{dp}");

    let b = by_id(&big.info.id);
    assert_eq!(b.2, "too_large", "{b:?}");
    let k = by_id("3EB0A1B2C3D4E5F60014");
    assert_eq!(k.2, "failed");
    assert!(k.4.as_deref().unwrap().contains("no media key"), "{k:?}");
    let l = by_id("3EB0LIAR");
    assert_eq!(l.2, "too_large", "{l:?}");
    let g = by_id("3EB0GONE");
    assert_eq!(g.2, "failed");
    assert!(g.4.as_deref().unwrap().contains("HTTP 404"), "{g:?}");

    // Only the three good files are in the group folder; no temp file is left anywhere.
    let mut found = vec![];
    for day in std::fs::read_dir(h.path("groups/hiking/inbox")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            found.push(f.unwrap().file_name().to_string_lossy().to_string());
        }
    }
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        std::fs::read_dir(h.path("whatsapp/tmp")).unwrap().count(),
        0
    );

    // The prompt says what failed and why, next to the files that arrived.
    let seqs: Vec<i64> = db
        .prepare("SELECT seq FROM messages ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let media = claw::infra::store::attachments::for_messages(&store.conn, &seqs).unwrap();
    let refs: Vec<String> = media
        .values()
        .flatten()
        .map(claw::rules::prompt::attachment_ref)
        .collect();
    let all = refs.join("\n");
    assert!(
        all.contains(&format!("[photo: {photo_path}, 16×9]")),
        "{all}"
    );
    assert!(
        all.contains("not saved:") && all.contains("no media key"),
        "{all}"
    );
    assert!(all.contains("over the"), "{all}");

    // A re-delivered event is a duplicate and downloads nothing again.
    let before = cdn.asked.borrow().len();
    let again = claw::channels::whatsapp::store::store_batch(
        &mut store,
        &[photo],
        &HashMap::new(),
        65536,
        Some(&ctx),
    )
    .unwrap();
    assert_eq!(again.duplicates, 1);
    assert_eq!(cdn.asked.borrow().len(), before);
}

#[test]
fn media_from_an_unregistered_chat_is_not_downloaded() {
    let h = TestHome::init();
    let home = claw::infra::paths::Home::new(&h.root);
    let config = claw::infra::config::Config::load(&home.config()).unwrap();
    let cdn = FakeCdn {
        files: HashMap::new(),
        asked: RefCell::new(vec![]),
    };
    let mut store = claw::infra::store::Store::open(&home).unwrap();
    let source = WaSource {
        download: &cdn,
        tmp_dir: h.path("whatsapp/tmp"),
    };
    let ctx =
        claw::media::save::Ctx::new(&store.conn, &home, &config.media, &source, None).unwrap();
    let s = claw::channels::whatsapp::store::store_batch(
        &mut store,
        &[fixture("sticker.json"), fixture("voice_note.json")],
        &HashMap::new(),
        65536,
        Some(&ctx),
    )
    .unwrap();
    assert_eq!(s.stored, 0);
    assert!(s.unregistered == 2, "{s:?}");
    assert!(
        cdn.asked.borrow().is_empty(),
        "a stranger cannot make claw download"
    );
}
