//! The outbox claim protocol for long-running bridges, driven through real `claw` processes:
//! parallel claimers never share a row, and a claim never reported back is released.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use std::collections::HashSet;
use std::time::Duration;

fn enqueue_many(h: &TestHome, chat: &str, n: usize) -> Vec<i64> {
    let home = claw::infra::paths::Home::new(&h.root);
    let store = claw::infra::store::Store::open(&home).unwrap();
    (0..n)
        .map(|i| {
            claw::infra::store::outbox::enqueue(&store.conn, chat, &format!("row {i}"), "test")
                .unwrap()
        })
        .collect()
}

fn claim(h: &TestHome, name: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["outbox", "claim", "--channel", "wa", "--as", name];
    args.extend_from_slice(extra);
    let out = h.claw().args(&args).assert().success();
    String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn parallel_bridges_never_claim_the_same_row() {
    let h = TestHome::init().with_log("info");
    let ids: HashSet<i64> = enqueue_many(&h, "wa:1@s.whatsapp.net", 300)
        .into_iter()
        .collect();
    // Another channel's rows are never handed to a wa bridge.
    enqueue_many(&h, "tg:5", 10);
    let bridges: Vec<_> = (0..4)
        .map(|b| {
            let root = h.root.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claw"))
                        .env("CLAW_HOME", &root)
                        .args([
                            "outbox",
                            "claim",
                            "--channel",
                            "wa",
                            "--as",
                            &format!("bridge{b}"),
                            "--limit",
                            "7",
                        ])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect();
                    if rows.is_empty() {
                        break got;
                    }
                    for r in rows {
                        assert!(r["chat"].as_str().unwrap().starts_with("wa:"));
                        got.push(r["id"].as_i64().unwrap());
                    }
                }
            })
        })
        .collect();
    let results: Vec<Vec<i64>> = bridges.into_iter().map(|t| t.join().unwrap()).collect();
    let mut seen = HashSet::new();
    for ids in &results {
        for id in ids {
            assert!(seen.insert(*id), "row {id} was claimed twice");
        }
    }
    assert_eq!(seen, ids, "every row claimed exactly once");
    assert!(
        results.iter().filter(|r| !r.is_empty()).count() >= 2,
        "claims were spread over bridges"
    );
    // Each row is recorded as claimed by the bridge that got it.
    let db = h.db();
    for (b, ids) in results.iter().enumerate() {
        for id in ids {
            let by: String = db
                .query_row(
                    "SELECT claimed_by FROM outbox WHERE id = ?1 AND status = 'sending'",
                    [id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(by, format!("bridge{b}"));
        }
    }
}

#[test]
fn an_unreported_claim_is_released_after_the_timeout() {
    let h = TestHome::init().with_log("info");
    let ids = enqueue_many(&h, "wa:1@s.whatsapp.net", 2);
    let a = claim(&h, "crashy", &[]);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["text"], "row 0");
    // Within the timeout another bridge gets nothing.
    assert!(claim(&h, "steady", &["--timeout", "1"]).is_empty());
    std::thread::sleep(Duration::from_millis(1_100));
    let b = claim(&h, "steady", &["--timeout", "1"]);
    assert_eq!(
        b.iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids
    );

    // The crashed bridge coming back cannot report rows it no longer holds.
    let out = h
        .claw()
        .args(["outbox", "done", &ids[0].to_string(), "--as", "crashy"])
        .assert()
        .code(1);
    assert!(
        String::from_utf8_lossy(&out.get_output().stderr).contains("is not claimed by `crashy`")
    );

    h.claw()
        .args([
            "outbox",
            "done",
            &ids[0].to_string(),
            "--as",
            "steady",
            "--msg-id",
            "WA-1",
        ])
        .assert()
        .success();
    let before = claw::infra::time::now_ms();
    h.claw()
        .args([
            "outbox",
            "fail",
            &ids[1].to_string(),
            "--as",
            "steady",
            "--error",
            "phone offline",
            "--retry-after",
            "60",
        ])
        .assert()
        .success();
    let db = h.db();
    let (s0, m0): (String, String) = db
        .query_row(
            "SELECT status, channel_msg_id FROM outbox WHERE id = ?1",
            [ids[0]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((s0.as_str(), m0.as_str()), ("sent", "WA-1"));
    let (s1, e1, next): (String, String, i64) = db
        .query_row(
            "SELECT status, last_error, next_attempt_at FROM outbox WHERE id = ?1",
            [ids[1]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((s1.as_str(), e1.as_str()), ("pending", "phone offline"));
    assert!(next >= before + 59_000, "retry-after honoured");
    assert!(
        claim(&h, "steady", &[]).is_empty(),
        "the failed row is not due yet"
    );
}

#[test]
fn the_default_claim_timeout_comes_from_config() {
    let h = TestHome::init().with_log("info");
    h.append_config("[channels.wa]\nclaim_timeout_secs = 1\n");
    enqueue_many(&h, "wa:1@s.whatsapp.net", 1);
    assert_eq!(claim(&h, "one", &[]).len(), 1);
    assert!(claim(&h, "two", &[]).is_empty());
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(claim(&h, "two", &[]).len(), 1);
    // `claw outbox` without a subcommand still lists.
    let out = h.claw().args(["outbox", "--json"]).assert().success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(rows[0]["claimed_by"], "two");
}

#[test]
fn a_claimed_send_file_row_carries_the_host_copy() {
    // The agent's send_file is copied out at ipc-apply time; a bridge gets that copy to upload.
    let h = TestHome::init();
    h.add_group("wa:120363012345678901@g.us", "hiking", &[]);
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(4, 3)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    std::fs::write(h.path("groups/hiking/chart.png"), &png).unwrap();
    let req = h.path("ipc/hiking/messages");
    std::fs::create_dir_all(&req).unwrap();
    std::fs::write(
        req.join("1.json"),
        serde_json::json!({"type": "send_file", "path": "chart.png", "caption": "the climb"})
            .to_string(),
    )
    .unwrap();
    h.claw().arg("ipc-apply").assert().success();
    enqueue_many(&h, "wa:1@s.whatsapp.net", 1);
    let rows = claim(&h, "bridge", &[]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let with_file: Vec<_> = rows.iter().filter(|r| r.get("file").is_some()).collect();
    assert_eq!(
        with_file.len(),
        1,
        "only the send_file row has a file: {rows:?}"
    );
    let r = with_file[0];
    assert_eq!(r["text"], "the climb");
    let f = &r["file"];
    assert_eq!(f["name"], "chart.png");
    assert_eq!(f["mime"], "image/png");
    assert_eq!(f["kind"], "photo");
    assert_eq!(f["size"], png.len() as u64);
    let path = std::path::PathBuf::from(f["path"].as_str().unwrap());
    assert!(
        path.is_absolute() && !path.starts_with(h.path("groups")),
        "{path:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), png, "the copy is the file");
    // The agent changing its file afterwards does not change what is sent.
    std::fs::write(h.path("groups/hiking/chart.png"), b"swapped").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), png);
}
