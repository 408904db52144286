//! WhatsApp event mapping against recorded events in tests/fixtures/whatsapp/: each file holds
//! an event and either the fields the mapped message must have or the reason it is skipped.

use claw::channels::Mapped;
use claw::channels::whatsapp::map::{Event, map_event};
use serde_json::Value;
use std::collections::HashMap;

fn fixtures() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().to_string(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn recorded_events_map_as_expected() {
    let all = fixtures();
    assert!(all.len() >= 17, "fixtures missing");
    let (mut mapped, mut skipped) = (0, 0);
    for (name, fx) in all {
        let ev: Event =
            serde_json::from_value(fx["event"].clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lids: HashMap<String, String> =
            serde_json::from_value(fx.get("lids").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        match (map_event(&ev, &lids), fx.get("expect"), fx.get("skip")) {
            (Mapped::Message(m), Some(expect), None) => {
                let got = serde_json::to_value(&*m).unwrap();
                for (k, want) in expect.as_object().unwrap() {
                    assert_eq!(&got[k], want, "{name}: field {k}");
                }
                // Whatever is mapped must pass the same validation ingest applies.
                claw::steps::ingest::validate(&m, 65536).unwrap_or_else(|e| panic!("{name}: {e}"));
                mapped += 1;
            }
            (Mapped::Skip(why), None, Some(want)) => {
                assert!(why.contains(want.as_str().unwrap()), "{name}: {why}");
                skipped += 1;
            }
            (got, _, _) => panic!("{name}: unexpected {got:?}"),
        }
    }
    assert!(
        mapped >= 16 && skipped >= 1,
        "{mapped} mapped, {skipped} skipped"
    );
}

#[test]
fn bare_jids_and_person_ids() {
    use claw::channels::whatsapp::map::{bare, person};
    assert_eq!(bare("4915:12@s.whatsapp.net"), "4915@s.whatsapp.net");
    assert_eq!(bare("120363@g.us"), "120363@g.us");
    let lids = HashMap::from([("1@lid".to_string(), "49:3@s.whatsapp.net".to_string())]);
    assert_eq!(person("1:5@lid", None, &lids), "49@s.whatsapp.net");
    assert_eq!(
        person("2@lid", Some("48@s.whatsapp.net"), &lids),
        "48@s.whatsapp.net"
    );
    assert_eq!(person("2@lid", None, &lids), "2@lid");
    assert_eq!(
        person("47@s.whatsapp.net", Some("9@lid"), &lids),
        "47@s.whatsapp.net"
    );
}

#[test]
fn mapped_events_store_through_ingest_and_unknown_dms_do_not() {
    // The same path `claw whatsapp run` takes: map, then the shared ingest lines.
    let dir = tempfile::tempdir().unwrap();
    let home = claw::infra::paths::Home::new(dir.path());
    claw::ops::init::init(
        &home,
        &claw::ops::init::Options {
            assistant_name: "Andy".into(),
            main_chat: "cli:local".into(),
        },
    )
    .unwrap();
    let mut store = claw::infra::store::Store::open(&home).unwrap();
    claw::rules::groups::add(
        &mut store,
        &home,
        "@Andy",
        claw::rules::groups::NewGroup {
            chat_id: "wa:120363012345678901@g.us".into(),
            folder: "hiking".into(),
            name: None,
            trigger: None,
            requires_trigger: true,
            is_main: false,
            allowed_senders: None,
        },
        "test",
    )
    .unwrap();
    let mut lines = String::new();
    for (_, fx) in fixtures() {
        let ev: Event = serde_json::from_value(fx["event"].clone()).unwrap();
        if let Mapped::Message(m) = map_event(&ev, &HashMap::new()) {
            lines.push_str(&serde_json::to_string(&*m).unwrap());
            lines.push('\n');
        }
    }
    let s =
        claw::steps::ingest::ingest_lines(&mut store, std::io::Cursor::new(lines.clone()), 65536)
            .unwrap();
    assert_eq!(s.rejected, 0);
    assert_eq!(
        s.stored, 10,
        "the ten group messages, media without captions included"
    );
    // This path (JSON lines) downloads nothing: each WhatsApp file is recorded as not saved, so
    // the prompt still says it was there. The descriptor never travels in JSON.
    let not_saved: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM attachments WHERE status = 'failed' AND error LIKE 'not downloaded%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(not_saved, 7);
    assert!(!lines.contains("mediaKey") && !lines.contains("media_key"));
    assert!(
        s.unregistered >= 5,
        "DMs from unregistered chats are not stored"
    );
    let dm_rows: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM messages WHERE chat_id NOT LIKE '%@g.us'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dm_rows, 0);
}

#[cfg(not(feature = "whatsapp"))]
#[test]
fn without_the_feature_the_commands_say_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_claw"))
        .env("CLAW_HOME", dir.path())
        .args(["whatsapp", "run"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(stderr.contains("--features whatsapp"), "{stderr}");
}
