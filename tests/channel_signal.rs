//! Signal through a stand-in `signal-cli` that prints recorded `-o json receive` output and
//! records `send` argument vectors.

#[path = "support/home.rs"]
mod home;

use home::TestHome;

const GROUP: &str = "sig:R3JvdXBJZEZvclRlc3Rz+/8=";

fn setup() -> (TestHome, std::path::PathBuf) {
    let h = TestHome::init().with_log("info");
    let cli =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signal/signal-cli");
    h.append_config(&format!(
        "[channels.signal]\nenabled = true\ncli = \"{}\"\naccount = \"+4915199999999\"\n",
        cli.display()
    ));
    let log = h.path("send.log");
    (h, log)
}

#[test]
fn receive_output_maps_text_groups_dms_replies_captions_and_skips() {
    let (h, _) = setup();
    h.add_group("sig:+4915100000001", "ana", &[]);
    h.add_group(GROUP, "hiking", &[]);
    let out = h
        .claw()
        .args(["ingest", "--from", "signal"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        stdout.contains(
            "9 line(s), stored 6, duplicates 0, unregistered 1, rejected 0, skipped 2, notices 1"
        ),
        "{stdout}"
    );
    assert!(stderr.contains("signal envelope skipped"), "{stderr}");
    assert!(
        stderr.contains("is a receiptMessage") && stderr.contains("is a typingMessage"),
        "{stderr}"
    );

    let db = h.db();
    type Row = (
        String,
        String,
        String,
        String,
        bool,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = db
        .prepare("SELECT chat_id, sender, sender_name, text, from_me, reply_to_sender, reply_to_text FROM messages ORDER BY sent_at")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let dm = "sig:+4915100000001";
    assert_eq!(
        rows[0],
        (
            dm.into(),
            "sig:+4915100000001".into(),
            "Ana".into(),
            "hi from a DM".into(),
            false,
            None,
            None
        )
    );
    assert_eq!(rows[1].0, GROUP);
    assert_eq!(rows[1].3, "@Andy plan the trip");
    assert_eq!(rows[2].3, "yes, Saturday");
    assert_eq!(rows[2].5.as_deref(), Some("sig:+4915100000002"));
    assert_eq!(rows[2].6.as_deref(), Some("@Andy plan the trip"));
    assert_eq!(
        rows[3].3, "the summit",
        "text sent with a photo is kept as its caption"
    );
    // A photo without text is stored too (its file is an attachment row; see media_signal.rs).
    assert_eq!(rows[4].3, "");
    assert_eq!(
        (
            rows[5].0.as_str(),
            rows[5].1.as_str(),
            rows[5].3.as_str(),
            rows[5].4
        ),
        (dm, "sig:+4915199999999", "typed on my phone", true)
    );
    assert_eq!(rows.len(), 6);

    let (is_group, name): (bool, String) = db
        .query_row(
            "SELECT is_group, name FROM chats WHERE id = ?1",
            [GROUP],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(is_group);
    assert_eq!(name, "Hiking");
    let notice: String = db
        .query_row(
            "SELECT text FROM outbox WHERE origin = 'notice:unknown-chat:sig:+4915100000007'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        notice.contains("\"Stranger\" (\"sig:+4915100000007\") sent a private signal message"),
        "{notice}"
    );

    // Receiving the same output again (signal-cli re-delivering) stores nothing twice.
    let out = h
        .claw()
        .args(["ingest", "--from", "signal"])
        .assert()
        .success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("stored 0, duplicates 6"));
}

#[test]
fn delivery_runs_signal_cli_send_with_one_argument_per_value() {
    let (h, log) = setup();
    let home = claw::infra::paths::Home::new(&h.root);
    {
        let store = claw::infra::store::Store::open(&home).unwrap();
        claw::infra::store::outbox::enqueue(
            &store.conn,
            "sig:+4915100000001",
            "-v; rm -rf ~ 'quoted'",
            "test",
        )
        .unwrap();
        claw::infra::store::outbox::enqueue(&store.conn, GROUP, "hello group", "test").unwrap();
    }
    h.claw()
        .args(["deliver", "--channel", "sig"])
        .env("SIGNAL_SEND_LOG", &log)
        .assert()
        .success();
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<Vec<&str>> = calls
        .split("---\n")
        .filter(|c| !c.is_empty())
        .map(|c| c.lines().collect())
        .collect();
    assert_eq!(
        calls,
        vec![
            vec![
                "-a",
                "+4915199999999",
                "-o",
                "json",
                "send",
                "--message=-v; rm -rf ~ 'quoted'",
                "+4915100000001"
            ],
            vec![
                "-a",
                "+4915199999999",
                "-o",
                "json",
                "send",
                "--message=hello group",
                "--group-id=R3JvdXBJZEZvclRlc3Rz+/8="
            ],
        ]
    );
    let ids: Vec<String> = h
        .db()
        .prepare("SELECT channel_msg_id FROM outbox WHERE status = 'sent' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, ["1795255299000", "1795255299000"]);
}
