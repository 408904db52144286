//! End-to-end history search in real containers started by the real `claw run-group`:
//! - a probe in a non-main group's container forges every request it can think of on the proxy
//!   socket and never sees another group's messages, while main may search any group;
//! - the real agent's `search_history` finds a message from months ago, and after the next run
//!   compacts its transcript the archive is indexed by run-group and found by `claw search`.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use e2e::{Env, PROBE_HEAD, probe_report};
use fake_llm::{FakeLlm, Reply};
use serde_json::json;
use std::time::Duration;

const FORGE: &str = r#"
S=/run/claw/proxy.sock
q() { curl -s --max-time 20 --unix-socket $S -H 'content-type: application/json' "$@" http://claw/search; }
report own "$(q -d '{"query":"alphaword"}')"
report plain "$(q -d '{"query":"betasecret"}')"
report named "$(q -d '{"query":"betasecret","group":"beta"}')"
report main "$(q -d '{"query":"betasecret","group":"main"}')"
report forged "$(q -d '{"query":"betasecret","folder":"beta","is_main":true}')"
report header "$(q -H 'X-Claw-Folder: beta' -H 'X-Claw-Main: 1' -d '{"query":"betasecret"}')"
report syntax "$(q -d '{"query":"betasecret OR alphaword NEAR(betasecret) * ^ \" :"}')"
report prefix "$(q -d '{"query":"bet*"}')"
report get "$(curl -s --max-time 20 --unix-socket $S 'http://claw/search?query=betasecret&group=beta')"
report dbfiles "$(find / -xdev -name 'claw.db*' 2>/dev/null | tr '\n' ' ')"
"#;

#[test]
fn a_non_main_group_cannot_search_another_groups_history_by_any_request() {
    let mut env = Env::new();
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    env.add_group("tg:2", "beta", &["--no-trigger"]);
    env.say("tg:2", "BETASECRET-z9 the vault code is 4711");
    env.say("tg:1", "ALPHAWORD shopping list");
    env.install_probe("alpha", &format!("{PROBE_HEAD}{FORGE}\nfinish\n"));
    env.say("tg:1", "probe");
    env.claw().args(["run-group", "alpha"]).assert().success();
    let r = probe_report(&env, "tg:1");
    let own: serde_json::Value = serde_json::from_str(r["own"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("own search is not JSON ({e}): {r}"));
    assert_eq!(own["hits"][0]["group"], "alpha", "{r}");
    assert!(
        own["hits"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("**ALPHAWORD**")
    );
    for key in [
        "plain", "named", "main", "forged", "header", "syntax", "prefix", "get",
    ] {
        let answer = r[key].as_str().unwrap();
        assert!(
            !answer.contains("BETASECRET")
                && !answer.contains("4711")
                && !answer.contains("\"beta\""),
            "{key} crossed into beta: {answer}"
        );
    }
    assert!(
        r["named"]
            .as_str()
            .unwrap()
            .contains("only its own history"),
        "{r}"
    );
    assert!(
        r["forged"].as_str().unwrap().contains("unknown field"),
        "{r}"
    );
    assert_eq!(
        r["dbfiles"], "",
        "the database is visible in the container: {r}"
    );
    // The searches are in the audit trail as proxy requests of this run, refusals included.
    let audited: Vec<String> = {
        let db = env.db();
        let mut st = db
            .prepare("SELECT detail FROM audit WHERE folder = 'alpha' AND kind = 'proxy.local' AND detail LIKE '%/search%'")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    for status in ["200", "400", "405"] {
        assert!(
            audited
                .iter()
                .any(|d| d.contains(&format!("\"status\":{status}"))),
            "no audited search with status {status}: {audited:?}"
        );
    }

    // Main may search any group's history.
    env.install_probe(
        "main",
        &format!(
            "{PROBE_HEAD}\nreport beta \"$(curl -s --unix-socket /run/claw/proxy.sock -d '{{\"query\":\"betasecret\",\"group\":\"beta\"}}' http://claw/search)\"\n\
             report all \"$(curl -s --unix-socket /run/claw/proxy.sock -d '{{\"query\":\"betasecret\"}}' http://claw/search)\"\nfinish\n"
        ),
    );
    env.say("cli:local", "probe");
    env.claw().args(["run-group", "main"]).assert().success();
    let m = probe_report(&env, "cli:local");
    for key in ["beta", "all"] {
        assert!(
            m[key].as_str().unwrap().contains("**BETASECRET**"),
            "main's {key} search: {m}"
        );
    }
}

#[test]
fn the_agent_finds_an_old_message_and_its_compaction_archive_becomes_searchable() {
    let llm = FakeLlm::start();
    let mut env = Env::new();
    env.anthropic_base = llm.url();
    env.extra_config =
        "[model]\nprovider = \"anthropic\"\nname = \"fake-model\"\ncontext_window = 1000\n".into();
    env.write_config();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-e2e-key");
    env.add_group("tg:-1", "family", &["--no-trigger"]);
    // A message from months ago, long handled (the cursor is past it).
    let old = json!({"chat": "tg:-1", "id": "old1", "sender": "tg:55", "sender_name": "Ana",
        "text": "The spare key is under the GERANIUM pot by the door", "time": "2026-02-10T09:00:00Z"});
    env.claw()
        .arg("ingest")
        .write_stdin(format!("{old}\n"))
        .assert()
        .success();
    env.db()
        .execute(
            "INSERT INTO cursors (folder, seq) VALUES ('family', (SELECT max(seq) FROM messages))
             ON CONFLICT (folder) DO UPDATE SET seq = excluded.seq",
            [],
        )
        .unwrap();

    // Run 1: the agent searches, reads the hit, answers (reporting a context near the window).
    llm.push(Reply::tool(
        "search_history",
        json!({"query": "spare key", "since": "2026-01-01"}),
    ));
    llm.push(Reply::text("Ana said it is under the geranium pot.").usage(900, 5));
    // Run 2 compacts first: memory turn, summary, then the answer.
    llm.push(Reply::text("nothing new").when(claw::agent::memory::FLUSH_MARKER));
    llm.push(
        Reply::text("SUMMARY: the spare key is under the geranium pot (ZUCCHINI-ARCHIVE)")
            .when("Summarise the conversation"),
    );
    llm.push(Reply::text("You're welcome."));

    env.say("tg:-1", "where is the spare key?");
    env.claw().args(["run-group", "family"]).assert().success();
    let reqs = llm.wait_for(2, Duration::from_secs(60));
    let result = reqs[1].text();
    assert!(
        result.contains("**spare** **key**")
            && result.contains("2026-02-10")
            && result.contains("id old1"),
        "the tool result lacks the old message: {result}"
    );
    assert_eq!(
        env.outbox("tg:-1").last().unwrap(),
        "Ana said it is under the geranium pot."
    );

    env.say("tg:-1", "thanks");
    env.claw().args(["run-group", "family"]).assert().success();
    assert_eq!(
        env.outbox("tg:-1").last().unwrap(),
        "You're welcome.",
        "{}",
        env.all_logs()
    );
    assert_eq!(llm.requests().len(), 5, "{}", env.all_logs());
    // run-group indexed the archive the agent wrote; the owner (and the group) can find it.
    let out = env
        .claw()
        .args(["search", "zucchini", "--group", "family", "--json"])
        .output()
        .unwrap();
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}\n{}", env.all_logs());
    assert_eq!(hits[0]["kind"], "archive");
    assert!(
        hits[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("**ZUCCHINI**")
    );
    assert!(
        env.all_logs().contains("archives: 1 indexed"),
        "{}",
        env.all_logs()
    );
}
