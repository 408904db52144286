//! `claw usage`, the spend in `claw status`, and budgets as dispatch and status see them, on a real
//! home and database. Usage rows are written here as run-group writes them from the proxy's
//! events (the proxy side is `tests/proxy_usage.rs`, the whole path `tests/budget_e2e.rs`).

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use serde_json::Value;

/// The local day `days_ago` days before today, as the usage table keys it.
fn day(days_ago: i64) -> String {
    let now = claw::infra::time::now_ms();
    claw::rules::cost::local_day(now - days_ago * 86_400_000)
}

/// One usage row: (run, folder, model, day, requests, input, output, cache read, cache write).
#[allow(clippy::too_many_arguments)]
fn usage(h: &TestHome, run: i64, folder: &str, model: &str, day: &str, n: [i64; 5]) {
    h.db()
        .execute(
            "INSERT INTO usage (run_id, folder, provider, model, day, requests, input_tokens,
               output_tokens, cache_read_tokens, cache_write_tokens, updated_at)
             VALUES (?1, ?2, 'anthropic', ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
            rusqlite::params![run, folder, model, day, n[0], n[1], n[2], n[3], n[4]],
        )
        .unwrap();
}

fn json(h: &TestHome, args: &[&str]) -> Value {
    let out = h.claw().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn approx(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
}

fn home_with_usage() -> TestHome {
    let h = TestHome::init();
    h.add_group("tg:-1", "family", &["--no-trigger", "--name", "Family"]);
    h.add_group("tg:-2", "work", &["--no-trigger"]);
    // $3 + $1.50 + $0.60 + $1.50 = $6.60 of Sonnet 4.5 today.
    usage(
        &h,
        1,
        "family",
        "claude-sonnet-4-5",
        &day(0),
        [3, 1_000_000, 100_000, 2_000_000, 400_000],
    );
    // $1.00 + $0.40 of GPT-4.1 yesterday.
    usage(
        &h,
        2,
        "work",
        "gpt-4.1",
        &day(1),
        [1, 500_000, 50_000, 0, 0],
    );
    // A local model without a price, today.
    usage(&h, 3, "work", "local-llama", &day(0), [2, 1000, 10, 0, 0]);
    // Outside the default week.
    usage(
        &h,
        4,
        "family",
        "claude-sonnet-4-5",
        &day(10),
        [1, 9, 9, 9, 9],
    );
    h
}

#[test]
fn usage_by_day_group_and_model_with_costs_totals_and_unpriced_models() {
    let h = home_with_usage();
    let r = json(&h, &["usage", "--json"]);
    let lines = r["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{r}");
    assert_eq!(lines[0]["key"], day(1));
    assert!(approx(&lines[0]["cost"], 1.4));
    assert_eq!(lines[0]["cost_complete"], true);
    assert_eq!(lines[1]["key"], day(0));
    assert_eq!(lines[1]["requests"], 5);
    assert_eq!(lines[1]["input_tokens"], 1_001_000);
    assert_eq!(lines[1]["cache_read_tokens"], 2_000_000);
    assert_eq!(lines[1]["cache_write_tokens"], 400_000);
    assert!(approx(&lines[1]["cost"], 6.6));
    assert_eq!(lines[1]["cost_complete"], false);
    assert!(approx(&r["total"]["cost"], 8.0));
    assert_eq!(r["total"]["requests"], 6);
    assert_eq!(r["unpriced_models"], serde_json::json!(["local-llama"]));
    assert_eq!(r["currency"], "USD");

    let r = json(&h, &["usage", "--by", "group", "--since", "30d", "--json"]);
    let keys: Vec<&str> = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["family", "work"]);
    assert_eq!(r["lines"][0]["input_tokens"], 1_000_009);

    let r = json(
        &h,
        &["usage", "--group", "work", "--since", "today", "--json"],
    );
    assert_eq!(r["total"]["requests"], 2);
    assert_eq!(r["total"]["cost"], Value::Null, "only an unpriced model");

    let out = h.claw().args(["usage", "--by", "model"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "MODEL",
        "CACHE WRITE",
        "claude-sonnet-4-5",
        "$6.60",
        "1,000,000",
        "gpt-4.1",
        "$1.40",
        "local-llama",
        "—",
        "total",
        "$8.00 + —",
        "no price for local-llama",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    h.claw()
        .args(["usage", "--group", "nosuch"])
        .assert()
        .code(2);
    h.claw()
        .args(["usage", "--since", "fortnight"])
        .assert()
        .code(2);
}

#[test]
fn status_shows_todays_spend_per_group() {
    let h = home_with_usage();
    let s = h.status();
    let g = |f: &str| {
        s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["folder"] == f)
            .unwrap()
            .clone()
    };
    assert!(approx(&g("family")["today"]["cost"], 6.6));
    assert_eq!(g("work")["today"]["requests"], 2);
    assert_eq!(g("work")["today"]["cost_complete"], false);
    assert_eq!(g("main")["today"]["requests"], 0);
    assert!(approx(&s["today"]["cost"], 6.6));
    let out = h.claw().arg("status").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("TODAY") && text.contains("$6.60") && text.contains("1,010 tok"),
        "{text}"
    );
    assert!(text.contains("spent today $6.60 + —"), "{text}");
}

fn decision(h: &TestHome, folder: &str) -> Value {
    let r = json(h, &["dispatch", "--dry-run", "--json"]);
    r["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["folder"] == folder)
        .unwrap_or_else(|| panic!("no decision for {folder}: {r}"))
        .clone()
}

fn outbox(h: &TestHome) -> Vec<(String, String)> {
    let db = h.db();
    let mut st = db
        .prepare("SELECT chat_id, text FROM outbox ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_spent_budget_keeps_dispatch_from_starting_a_run_and_says_so_once() {
    let h = TestHome::init();
    h.add_group("tg:-1", "family", &["--no-trigger", "--name", "Family"]);
    h.add_group("tg:-2", "work", &["--no-trigger"]);
    h.claw()
        .args(["group", "set", "family", "--budget-daily", "1.00"])
        .assert()
        .success();
    let show = h.claw().args(["group", "show", "family"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("budget:           $1.00 daily"),
        "{}",
        String::from_utf8_lossy(&show.stdout)
    );
    h.claw()
        .args(["group", "set", "family", "--budget-daily=-1"])
        .assert()
        .code(2);
    // $1.20 of Sonnet input today.
    usage(
        &h,
        1,
        "family",
        "claude-sonnet-4-5",
        &day(0),
        [1, 400_000, 0, 0, 0],
    );
    h.claw()
        .args(["ingest", "--chat", "tg:-1", "--text", "hello?"])
        .assert()
        .success();
    h.claw()
        .args(["ingest", "--chat", "tg:-2", "--text", "hello?"])
        .assert()
        .success();

    let d = decision(&h, "family");
    assert_eq!(d["action"], "skip");
    let why = d["reason"].as_str().unwrap();
    assert!(
        why.starts_with("budget: $1.20 of the group daily budget of $1.00 used; resumes at 00:00")
            && why.contains("claw group set family --budget-daily"),
        "{why}"
    );
    assert_eq!(
        decision(&h, "work")["action"],
        "start",
        "other groups unaffected"
    );
    assert!(outbox(&h).is_empty(), "a dry run tells nobody");
    let s = h.status();
    let fam = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["folder"] == "family")
        .unwrap();
    assert_eq!(fam["would_run"], false);
    assert!(fam["reason"].as_str().unwrap().starts_with("budget:"));

    // A real dispatch: family is not started (no run row, no container), and the chat and the
    // main chat are told, once. `work` would start: take it out of the picture first.
    h.claw().args(["group", "rm", "work"]).assert().success();
    for _ in 0..3 {
        h.claw().arg("dispatch").assert().success();
    }
    assert_eq!(h.count("SELECT count(*) FROM runs"), 0);
    let out = outbox(&h);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out.iter().filter(|(c, _)| c == "tg:-1").count(),
        1,
        "{out:?}"
    );
    let chat = &out.iter().find(|(c, _)| c == "tg:-1").unwrap().1;
    assert_eq!(
        chat,
        "Family has used its $1.00 for today; it resumes at 00:00 or when the owner raises it."
    );
    let main = &out.iter().find(|(c, _)| c == "cli:local").unwrap().1;
    assert!(
        main.starts_with("Budget: Family has used its $1.00 for today ($1.20 so far)"),
        "{main}"
    );

    // Raised: it would start again.
    h.claw()
        .args(["group", "set", "family", "--budget-daily", "0"])
        .assert()
        .success();
    assert_eq!(decision(&h, "family")["action"], "start");
    // The overall budget applies to every group.
    h.append_config("[budget]\ndaily_tokens = 1000\n");
    let why = decision(&h, "family")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.starts_with("budget: 400,000 tokens of the overall daily budget of 1,000 tokens used")
            && why.contains("[budget] daily_tokens in claw.toml"),
        "{why}"
    );
    let s = h.status();
    assert_eq!(s["budgets"][0]["budget"]["limit"]["tokens"], 1000);
    assert!(s["budgets"][0]["fraction"].as_f64().unwrap() >= 1.0);
}
