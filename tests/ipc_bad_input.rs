//! Every kind of bad request file ends in ipc/errors with a reason, and the good ones beside it
//! are still applied. Planted links are never followed.

#[path = "support/ipc.rs"]
mod ipc;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::time::Duration;

const GOOD_MSG: &str = r#"{"type":"send_message","text":"good one"}"#;
const GOOD_TASK: &str = r#"{"type":"schedule_task","prompt":"p","schedule_type":"cron","schedule_value":"*/15 * * * *"}"#;

fn mkfifo(p: &std::path::Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Apply on a thread so a FIFO that blocked would fail the test instead of hanging it.
fn apply_with_watchdog(e: ipc::Env, folder: &'static str) -> (ipc::Env, claw::steps::ipc::Report) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut e = e;
        let r = e.apply(folder);
        tx.send((e, r)).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("ipc-apply blocked (did it open a FIFO?)")
}

#[test]
fn each_bad_file_is_rejected_with_a_reason_and_the_rest_applied() {
    let e = ipc::env();
    let secret = e.outside.join("host-secret.json");
    // If this were ever read it would parse as a valid request and reach the outbox.
    std::fs::write(&secret, r#"{"type":"send_message","text":"HOST SECRET"}"#).unwrap();
    let big = format!(
        r#"{{"type":"send_message","text":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let bad: Vec<(&str, &str, String, &str)> = vec![
        ("messages", "invalid.json", "{not json".into(), "not a valid request"),
        ("messages", "types.json", r#"{"type":"send_message","text":5}"#.into(), "invalid type"),
        ("tasks", "types2.json", r#"{"type":"pause_task","task_id":"one"}"#.into(), "invalid type"),
        ("messages", "unknowntype.json", r#"{"type":"format_disk"}"#.into(), "unknown variant"),
        ("messages", "unknownfield.json", r#"{"type":"send_message","text":"x","urgent":true}"#.into(), "unknown field"),
        ("messages", "big.json", big, "limit is 1048576"),
        ("messages", "bad name.json", GOOD_MSG.into(), "not allowed"),
        ("messages", "notjson.txt", GOOD_MSG.into(), "must end in `.json`"),
        ("messages", "-dash.json", GOOD_MSG.into(), "not allowed"),
        ("tasks", "cronsecs.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"cron","schedule_value":"0 0 9 * * 1"}"#.into(), "6 fields"),
        ("tasks", "cronrange.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"cron","schedule_value":"0 25 * * *"}"#.into(), "not valid"),
        ("tasks", "cronweekday.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"cron","schedule_value":"0 9 * * 8"}"#.into(), "not valid"),
        ("tasks", "interval0.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"0"}"#.into(), "greater than 0"),
        ("tasks", "oncepast.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"once","schedule_value":"2001-01-01 10:00"}"#.into(), "in the past"),
        ("tasks", "badzone.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"60","timezone":"Mars/Olympus"}"#.into(), "unknown"),
        ("tasks", "badkind.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"hourly","schedule_value":"1"}"#.into(), "unknown"),
    ];
    for (sub, name, body, _) in &bad {
        e.put("fam", sub, name, body);
    }
    let msgs = e.home.ipc_dir("fam").join("messages");
    let tasks = e.home.ipc_dir("fam").join("tasks");
    symlink(&secret, msgs.join("link.json")).unwrap();
    symlink(&secret, tasks.join("tasklink.json")).unwrap();
    mkfifo(&msgs.join("fifo.json"));
    std::fs::create_dir(msgs.join("dir.json")).unwrap();
    std::fs::write(msgs.join("dir.json").join("inner.json"), GOOD_MSG).unwrap();
    // Temp files still being written are left alone.
    e.put("fam", "messages", ".tmp-half.json", "{\"type\":");
    e.put("fam", "messages", "a-good.json", GOOD_MSG);
    e.put("fam", "messages", "z-good.json", GOOD_MSG);
    e.put("fam", "tasks", "good-task.json", GOOD_TASK);

    let (e, report) = apply_with_watchdog(e, "fam");

    assert_eq!(report.applied, 3, "{:#?}", report.entries);
    let specials = [
        ("messages/link.json", "symlink"),
        ("tasks/tasklink.json", "symlink"),
        ("messages/fifo.json", "FIFO"),
        ("messages/dir.json", "directory"),
    ];
    let mut expected: Vec<(String, &str)> = bad
        .iter()
        .map(|(sub, name, _, why)| (format!("{sub}/{name}"), *why))
        .collect();
    expected.extend(specials.iter().map(|(l, w)| (l.to_string(), *w)));
    assert_eq!(report.rejected, expected.len());
    for (label, why) in &expected {
        let entry = report
            .entries
            .iter()
            .find(|x| &x.file == label)
            .unwrap_or_else(|| panic!("{label} not in report"));
        assert!(!entry.ok, "{label}");
        let reason = entry.reason.as_deref().unwrap();
        assert!(reason.contains(why), "{label}: {reason}");
        let moved = entry
            .moved_to
            .as_deref()
            .unwrap_or_else(|| panic!("{label} not moved"));
        if label == "messages/big.json" {
            // Too big to keep (it would leave the group's disk limit): deleted, reason kept.
            let kept = moved
                .strip_prefix("(deleted, ")
                .and_then(|m| m.split("reason in ").nth(1))
                .and_then(|m| m.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{moved}"));
            let text = std::fs::read_to_string(e.home.ipc_errors().join(kept)).unwrap();
            assert!(
                text.contains(why) && text.contains("was deleted, not kept"),
                "{text}"
            );
            assert!(
                !e.home
                    .ipc_errors()
                    .join(kept.replace(".reason.txt", ".json"))
                    .exists()
            );
            continue;
        }
        let text = e.reason_for(moved);
        assert!(text.contains(why) && text.contains("ipc/fam/"), "{text}");
        let moved_path = e.home.ipc_errors().join(moved);
        assert!(
            std::fs::symlink_metadata(&moved_path).is_ok(),
            "{label} missing in errors"
        );
    }
    // The links were moved as links, the host file untouched and never read.
    let moved_link = report
        .entries
        .iter()
        .find(|x| x.file == "messages/link.json")
        .unwrap();
    let m = std::fs::symlink_metadata(
        e.home
            .ipc_errors()
            .join(moved_link.moved_to.as_ref().unwrap()),
    )
    .unwrap();
    assert!(m.file_type().is_symlink());
    assert!(secret.exists());
    assert!(e.outbox().iter().all(|r| r.1 != "HOST SECRET"));
    // The directory was moved aside whole; its contents were not applied.
    assert_eq!(e.outbox().len(), 2);
    assert!(
        e.outbox()
            .iter()
            .all(|r| r.0 == "tg:2" && r.1 == "good one")
    );
    assert!(
        e.home
            .ipc_dir("fam")
            .join("messages/.tmp-half.json")
            .exists()
    );
    // Nothing but the temp file is left in the request folders.
    let left: Vec<_> = std::fs::read_dir(&msgs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(".tmp-half.json")]);
    assert_eq!(std::fs::read_dir(&tasks).unwrap().count(), 0);
    // Task requests with a usable name get a reply with the reason.
    assert!(
        e.reply("fam", "interval0")
            .error
            .unwrap()
            .contains("greater than 0")
    );
    assert!(e.reply("fam", "good-task").task_id.is_some());
    assert_eq!(e.audit_kinds("ipc.rejected"), expected.len());
}

#[test]
fn a_symlinked_tasks_folder_is_not_followed() {
    let mut e = ipc::env();
    let host_dir = e.outside.join("hostdir");
    std::fs::create_dir_all(&host_dir).unwrap();
    let planted = host_dir.join("req.json");
    std::fs::write(&planted, GOOD_TASK).unwrap();
    let tasks = e.home.ipc_dir("fam").join("tasks");
    std::fs::remove_dir_all(&tasks).unwrap();
    symlink(&host_dir, &tasks).unwrap();
    e.put("fam", "messages", "ok.json", GOOD_MSG);

    let report = e.apply("fam");

    assert!(planted.exists(), "a file behind the link was consumed");
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), GOOD_TASK);
    assert!(
        claw::infra::store::tasks::list(&e.store.conn, Some("fam"), true)
            .unwrap()
            .is_empty()
    );
    let entry = report.entries.iter().find(|x| x.file == "tasks").unwrap();
    assert!(entry.reason.as_deref().unwrap().contains("symlink"));
    // The link was moved aside and a real folder put back.
    assert!(std::fs::symlink_metadata(&tasks).unwrap().is_dir());
    assert!(
        std::fs::symlink_metadata(e.home.ipc_errors().join(entry.moved_to.as_ref().unwrap()))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(report.applied, 1);
}

#[test]
fn replies_and_snapshots_never_write_through_planted_links() {
    let mut e = ipc::env();
    let host_dir = e.outside.join("replies-target");
    std::fs::create_dir_all(&host_dir).unwrap();
    let host_file = e.outside.join("victim.txt");
    std::fs::write(&host_file, "original").unwrap();
    let gdir = e.home.ipc_dir("fam");
    std::fs::remove_dir_all(gdir.join("replies")).unwrap();
    symlink(&host_dir, gdir.join("replies")).unwrap();
    symlink(&host_file, gdir.join("current_tasks.json")).unwrap();
    e.put("fam", "tasks", "t.json", GOOD_TASK);

    let report = e.apply("fam");

    assert_eq!(report.applied, 1);
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0);
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "original");
    assert!(
        std::fs::symlink_metadata(gdir.join("replies"))
            .unwrap()
            .is_dir()
    );
    assert!(e.reply("fam", "t").ok);
    let snap = std::fs::symlink_metadata(gdir.join("current_tasks.json")).unwrap();
    assert!(snap.is_file());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gdir.join("current_tasks.json")).unwrap())
            .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}
