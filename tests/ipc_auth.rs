//! The authorisation matrix, request by request, through real files in real folders.

#[path = "support/ipc.rs"]
mod ipc;

use claw::infra::store::tasks;

fn in_future() -> i64 {
    claw::infra::time::now_ms()
}

#[test]
fn non_main_group_is_confined_to_its_own_chat_and_tasks() {
    let mut e = ipc::env();
    let now = in_future();
    let own = e.task("fam", "interval", "3600", now);
    let others = e.task("other", "interval", "3600", now);
    let mains = e.task(&e.main_folder(), "interval", "3600", now);
    let cases: Vec<(&str, &str, String, bool)> = vec![
        ("messages", "m1.json", r#"{"type":"send_message","text":"own chat"}"#.into(), true),
        ("messages", "m2.json", r#"{"type":"send_message","text":"own explicit","chat":"tg:2"}"#.into(), true),
        ("messages", "m3.json", r#"{"type":"send_message","text":"to main","chat":"tg:1"}"#.into(), false),
        ("messages", "m4.json", r#"{"type":"send_message","text":"to other","chat":"tg:3"}"#.into(), false),
        ("messages", "m5.json", r#"{"type":"send_message","text":"to unregistered","chat":"tg:9"}"#.into(), false),
        ("tasks", "t01.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"3600"}"#.into(), true),
        ("tasks", "t02.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"3600","folder":"fam"}"#.into(), true),
        ("tasks", "t03.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"60","folder":"other"}"#.into(), false),
        ("tasks", "t04.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"60","folder":"main"}"#.into(), false),
        ("tasks", "t05.json", format!(r#"{{"type":"pause_task","task_id":{own}}}"#), true),
        ("tasks", "t06.json", format!(r#"{{"type":"resume_task","task_id":{own}}}"#), true),
        ("tasks", "t07.json", format!(r#"{{"type":"update_task","task_id":{own},"prompt":"new"}}"#), true),
        ("tasks", "t08.json", format!(r#"{{"type":"pause_task","task_id":{others}}}"#), false),
        ("tasks", "t09.json", format!(r#"{{"type":"update_task","task_id":{mains},"prompt":"x"}}"#), false),
        ("tasks", "t10.json", format!(r#"{{"type":"cancel_task","task_id":{others}}}"#), false),
        ("tasks", "t11.json", format!(r#"{{"type":"resume_task","task_id":{mains}}}"#), false),
        ("tasks", "t12.json", r#"{"type":"register_group","chat":"tg:9","folder":"sneaky"}"#.into(), false),
        ("tasks", "t13.json", r#"{"type":"refresh_groups"}"#.into(), false),
        ("tasks", "t14.json", format!(r#"{{"type":"cancel_task","task_id":{own}}}"#), true),
    ];
    for (sub, name, body, _) in &cases {
        e.put("fam", sub, name, body);
    }
    let report = e.apply("fam");
    for (sub, name, _, allowed) in &cases {
        let label = format!("{sub}/{name}");
        let entry = report.entries.iter().find(|x| x.file == label).unwrap();
        assert_eq!(entry.ok, *allowed, "{label}: {:?}", entry.reason);
        assert!(
            !e.home.ipc_dir("fam").join(sub).join(name).exists(),
            "{label} left in place"
        );
        if *sub == "tasks" {
            let r = e.reply("fam", name.strip_suffix(".json").unwrap());
            assert_eq!(r.ok, *allowed, "{label} reply {r:?}");
            if !allowed {
                assert!(r.error.is_some());
            }
        }
    }
    // Only the group's own chat got messages, with the origin naming the file.
    let out = e.outbox();
    assert_eq!(
        out,
        vec![
            ("tg:2".into(), "own chat".into(), "ipc:fam/m1".into()),
            ("tg:2".into(), "own explicit".into(), "ipc:fam/m2".into())
        ]
    );
    // Other groups' tasks are untouched; its own went through pause, resume, update, cancel.
    for id in [others, mains] {
        let t = tasks::get(&e.store.conn, id).unwrap().unwrap();
        assert_eq!(
            (t.status.as_str(), t.prompt.starts_with("task for")),
            ("active", true)
        );
    }
    let t = tasks::get(&e.store.conn, own).unwrap().unwrap();
    assert_eq!((t.status.as_str(), t.prompt.as_str()), ("cancelled", "new"));
    // The two schedule_task requests made tasks in fam, for fam's chat.
    let fam_tasks = tasks::list(&e.store.conn, Some("fam"), false).unwrap();
    assert_eq!(fam_tasks.len(), 2);
    assert!(
        fam_tasks
            .iter()
            .all(|t| t.chat_id == "tg:2" && t.created_by.starts_with("ipc:fam/"))
    );
    assert!(
        claw::infra::store::groups::get(&e.store.conn, "sneaky")
            .unwrap()
            .is_none()
    );
    let refused = cases.iter().filter(|c| !c.3).count();
    assert_eq!(e.audit_kinds("ipc.rejected"), refused);
    assert_eq!(e.audit_kinds("ipc.applied"), cases.len() - refused);
    // Every refused file sits in ipc/errors with a reason file beside it.
    assert_eq!(
        e.errors()
            .iter()
            .filter(|n| n.ends_with(".reason.txt"))
            .count(),
        refused
    );
    let reason = e.reason_for("fam-m3-1.json");
    assert!(reason.contains("only message its own chat"), "{reason}");
}

#[test]
fn main_may_act_on_any_group_and_known_chat() {
    let mut e = ipc::env();
    let main = e.main_folder();
    let now = in_future();
    let fams = e.task("fam", "interval", "3600", now);
    let cases: Vec<(&str, &str, String, bool)> = vec![
        ("messages", "m1.json", r#"{"type":"send_message","text":"own"}"#.into(), true),
        ("messages", "m2.json", r#"{"type":"send_message","text":"to fam","chat":"tg:2"}"#.into(), true),
        ("messages", "m3.json", r#"{"type":"send_message","text":"to known","chat":"tg:9"}"#.into(), true),
        ("messages", "m4.json", r#"{"type":"send_message","text":"to unknown","chat":"tg:404"}"#.into(), false),
        ("tasks", "t1.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"cron","schedule_value":"0 9 * * 1-5","folder":"fam","timezone":"Europe/Berlin"}"#.into(), true),
        ("tasks", "t2.json", r#"{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"60","folder":"ghost"}"#.into(), false),
        ("tasks", "t3.json", format!(r#"{{"type":"pause_task","task_id":{fams}}}"#), true),
        ("tasks", "t4.json", r#"{"type":"pause_task","task_id":999999}"#.into(), false),
        ("tasks", "t5.json", r#"{"type":"register_group","chat":"tg:9","folder":"nine"}"#.into(), true),
        ("tasks", "t6.json", r#"{"type":"register_group","chat":"tg:404","folder":"nope"}"#.into(), false),
        ("tasks", "t7.json", r#"{"type":"register_group","chat":"tg:2","folder":"dup"}"#.into(), false),
        ("tasks", "t8.json", r#"{"type":"refresh_groups"}"#.into(), true),
    ];
    for (sub, name, body, _) in &cases {
        e.put(&main, sub, name, body);
    }
    let report = e.apply(&main);
    for (sub, name, _, allowed) in &cases {
        let label = format!("{sub}/{name}");
        let entry = report.entries.iter().find(|x| x.file == label).unwrap();
        assert_eq!(entry.ok, *allowed, "{label}: {:?}", entry.reason);
    }
    let chats: Vec<String> = e.outbox().into_iter().map(|r| r.0).collect();
    assert_eq!(chats, ["tg:1", "tg:2", "tg:9"]);
    let t1 = e.reply(&main, "t1");
    let t = tasks::get(&e.store.conn, t1.task_id.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.folder.as_str(), t.chat_id.as_str(), t.timezone.as_str()),
        ("fam", "tg:2", "Europe/Berlin")
    );
    assert_eq!(
        tasks::get(&e.store.conn, fams).unwrap().unwrap().status,
        "paused"
    );
    let nine = claw::infra::store::groups::get(&e.store.conn, "nine")
        .unwrap()
        .unwrap();
    assert_eq!(
        (nine.chat_id.as_str(), nine.trigger.as_str(), nine.is_main),
        ("tg:9", "@Andy", false)
    );
    assert!(e.home.ipc_dir("nine").join("tasks").is_dir());
    assert!(
        e.reply(&main, "t7")
            .error
            .unwrap()
            .contains("already registered")
    );
    // Main's snapshots list every group's tasks and the chats it may address.
    let snap: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(e.home.ipc_dir(&main).join("current_tasks.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(snap.as_array().unwrap().len(), 2);
    let chats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(e.home.ipc_dir(&main).join("available_chats.json")).unwrap(),
    )
    .unwrap();
    let nine = chats
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "tg:9")
        .unwrap();
    assert_eq!(nine["registered"], true);
    // fam's snapshot shows only fam's tasks, and fam gets no chat list.
    let fam_snap: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(e.home.ipc_dir("fam").join("current_tasks.json")).unwrap(),
    )
    .unwrap();
    assert!(
        fam_snap
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["folder"] == "fam")
    );
    assert_eq!(fam_snap.as_array().unwrap().len(), 2);
    assert!(!e.home.ipc_dir("fam").join("available_chats.json").exists());
}
