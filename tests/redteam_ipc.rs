//! Red team, IPC and spending: a non-main group's agent, in its real container, floods the host
//! with request files and tasks and runs too often. The host must stay within its memory bound,
//! keep serving other groups, refuse the excess with reasons the agent can read, and tell the
//! chat once.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/rss.rs"]
#[allow(clippy::zombie_processes)] // wait_measured reaps it with wait4
mod rss;

use e2e::{Env, PROBE_HEAD, probe_report};
use std::time::{Duration, Instant};

fn count(env: &Env, sql: &str) -> i64 {
    env.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Poll until `f` holds (generous: the machine may be loaded).
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_request_flood_keeps_ipc_apply_small_and_other_groups_served() {
    let mut env = Env::new();
    env.timeout_secs = 900;
    env.add_group("tg:2", "fam", &["--no-trigger"]);
    env.add_group("tg:3", "zeta", &["--no-trigger"]);
    // The flood is the subject here, not the disk limit (tested elsewhere).
    env.claw()
        .args(["group", "set", "fam", "--disk-mb", "16384"])
        .assert()
        .success();
    env.install_probe("zeta", &format!("{PROBE_HEAD}report zeta ran\nfinish\n"));
    // 4,000 requests of 1 MiB each that parse (the old scan held every one: 4 GB) and 20,000
    // tiny ones, staged and then moved in at once as an agent would.
    env.install_probe(
        "fam",
        &format!(
            r#"{PROBE_HEAD}
cd /workspace/ipc && mkdir -p stage messages
big=$(head -c $((1024 * 1024 - 80)) /dev/zero | tr '\0' 'x')
body="{{\"type\":\"send_message\",\"chat\":\"cli:local\",\"text\":\"$big\"}}"
for i in $(seq -w 1 4000); do printf '%s' "$body" > stage/a-$i.json; done
for i in $(seq -w 1 20000); do printf '{{"type":"refresh_groups"}}' > stage/b-$i.json; done
report written "$(ls stage | wc -l)"
report big "$(stat -c %s stage/a-0001.json)"
find stage -name '*.json' -exec mv -t messages {{}} +
report moved "$(ls stage | wc -l)"
finish
"#
        ),
    );
    env.say("tg:2", "go");
    // Writing 4 GB may take a while on a loaded machine: no 180 s command timeout here.
    let st = env.claw_std().args(["run-group", "fam"]).status().unwrap();
    assert!(st.success(), "{}", env.all_logs());
    let r = probe_report(&env, "tg:2");
    assert_eq!(
        (r["written"].as_str(), r["moved"].as_str()),
        (Some("24000"), Some("0")),
        "{r}"
    );
    let big: u64 = r["big"].as_str().unwrap().parse().unwrap();
    assert!(big > 1_040_000 && big <= 1 << 20, "{r}");
    let left = || {
        std::fs::read_dir(env.root.join("ipc/fam/messages"))
            .unwrap()
            .count()
    };
    assert!(
        left() > 20_000,
        "run-group applied more than its passes allow: {}",
        left()
    );

    // Other groups' requests, written while fam floods.
    let zeta = env.root.join("ipc/zeta/messages");
    std::fs::create_dir_all(&zeta).unwrap();
    for i in 0..5 {
        std::fs::write(
            zeta.join(format!("m{i}.json")),
            r#"{"type":"send_message","text":"still here"}"#,
        )
        .unwrap();
    }
    let mut cmd = env.claw_std();
    cmd.args(["ipc-apply", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (code, peak_kb) = rss::run_measured(&mut cmd);
    eprintln!("ipc-apply under a 4,000 x 1 MiB + 20,000 file flood: peak RSS {peak_kb} KiB");
    assert_eq!(
        code,
        Some(4),
        "fam's requests are rejected (exit 4), nothing failed"
    );
    assert!(peak_kb < 64 * 1024, "ipc-apply peak RSS {peak_kb} KiB");
    assert_eq!(
        env.outbox("tg:3")
            .iter()
            .filter(|t| *t == "still here")
            .count(),
        5,
        "zeta's requests were applied in the same pass"
    );
    assert!(
        env.outbox("cli:local").iter().all(|t| t.len() < 1000),
        "nothing reached main"
    );

    // tick still runs other groups while fam's files keep waiting.
    env.say("tg:3", "hello zeta");
    let mut cmd = env.claw_std();
    cmd.args(["tick", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (_, tick_kb) = rss::run_measured(&mut cmd);
    eprintln!("claw tick during the flood: peak RSS {tick_kb} KiB");
    assert!(tick_kb < 64 * 1024, "tick peak RSS {tick_kb} KiB");
    wait_for("zeta's run", 300, || {
        env.outbox("tg:3").iter().any(|t| t.contains("zeta"))
    });
    let r = probe_report(&env, "tg:3");
    assert_eq!(r["zeta"], "ran", "{r}");
    assert!(left() > 19_000, "each pass is capped: {} left", left());
    // Big rejected requests are not kept (they would leave the group's disk limit).
    let kept = std::fs::read_dir(env.root.join("ipc/errors"))
        .unwrap()
        .filter(|d| d.as_ref().unwrap().metadata().unwrap().len() > 64 * 1024)
        .count();
    assert_eq!(kept, 0);
}

#[test]
fn a_task_flood_is_refused_with_reasons_the_agent_reads() {
    let mut env = Env::new();
    env.timeout_secs = 600;
    env.add_group("tg:2", "fam", &["--no-trigger"]);
    env.install_probe(
        "fam",
        &format!(
            r#"{PROBE_HEAD}
cd /workspace/ipc && mkdir -p stage tasks
printf '{{"type":"schedule_task","prompt":"every second","schedule_type":"interval","schedule_value":"1"}}' > stage/a-0000.json
for i in $(seq -w 1 1000); do
  printf '{{"type":"schedule_task","prompt":"t %s","schedule_type":"interval","schedule_value":"3600"}}' "$i" > stage/b-$i.json
done
find stage -name '*.json' -exec mv -t tasks {{}} +
c=0
for n in $(seq 1 240); do c=$(ls replies 2>/dev/null | wc -l); [ "$c" -ge 1001 ] && break; sleep 1; done
report replies "$c"
report ok "$(cat replies/*.json | jq -s '[.[] | select(.ok)] | length')"
report every_second "$(jq -r .error replies/a-0000.json)"
report max_tasks "$(grep -l 'limits.max_tasks' replies/*.json | wc -l)"
finish
"#
        ),
    );
    env.say("tg:2", "go");
    env.claw().args(["run-group", "fam"]).assert().success();
    let r = probe_report(&env, "tg:2");
    assert_eq!(r["replies"], "1001", "{r}");
    assert_eq!(r["ok"], "20", "{r}");
    assert_eq!(r["max_tasks"], "980", "{r}");
    let why = r["every_second"].as_str().unwrap();
    assert!(
        why.contains("every 1 s") && why.contains("limits.min_task_interval_secs = 300"),
        "{why}"
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM tasks WHERE folder = 'fam' AND status IN ('active','paused')"
        ),
        20
    );
    // The chat heard about each limit once, not 981 times.
    let told = env.outbox("tg:2");
    assert_eq!(
        told.iter()
            .filter(|t| t.contains("tasks here may run at most every 5 min"))
            .count(),
        1
    );
    assert_eq!(
        told.iter()
            .filter(|t| t.contains("more than 20 scheduled tasks"))
            .count(),
        1
    );
}

#[test]
fn a_group_over_its_runs_per_hour_is_not_started_and_its_chat_is_told_once() {
    let mut env = Env::new();
    env.add_group("tg:2", "fam", &["--no-trigger"]);
    env.claw()
        .args(["group", "set", "fam", "--runs-per-hour", "2"])
        .assert()
        .success();
    env.install_probe("fam", &format!("{PROBE_HEAD}report n ok\nfinish\n"));
    for text in ["one", "two"] {
        env.say("tg:2", text);
        env.claw().args(["run-group", "fam"]).assert().success();
    }
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM runs WHERE folder = 'fam' AND started_at IS NOT NULL"
        ),
        2
    );
    env.say("tg:2", "three");
    for _ in 0..2 {
        let out = env.claw().args(["dispatch", "--json"]).output().unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = &v["decisions"][0];
        assert_eq!(d["action"], "skip", "{v}");
        assert!(d["pid"].is_null(), "{v}");
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .contains("2 runs started in the last hour"),
            "{v}"
        );
    }
    env.claw().args(["run-group", "fam"]).assert().code(5);
    let out = env.claw().args(["tick", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs_started"], 0, "{v}");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM runs WHERE folder = 'fam' AND started_at IS NOT NULL"
        ),
        2
    );
    assert!(env.containers().is_empty());
    let told: Vec<String> = env
        .outbox("tg:2")
        .into_iter()
        .filter(|t| t.contains("runs in the last hour"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].starts_with("fam has started 2 runs in the last hour (its limit)"),
        "{}",
        told[0]
    );
}
