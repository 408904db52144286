//! Benchmark, not a test: `bin/bench-mcp` runs it with `--ignored --nocapture`. In a real
//! container (the MCP test image), one run makes N `read_file` calls (the baseline), N calls to a
//! minimal stdio MCP server (standard-library Python, `tests/fixtures/mcp/faulty_server.py`'s
//! `ok`) and N calls to the real `mcp-server-time`. For each call it measures the gap between the
//! fake model finishing one reply and the agent's next request (the tool call plus the agent's
//! own work); MCP overhead is the median gap minus the baseline's. Also printed: how long until
//! the first model request with the two servers starting first. Never fails on timing.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/fake_llm.rs"]
mod fake_llm;

use fake_llm::{FakeLlm, Recorded, Reply};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn gaps_ms(reqs: &[Recorded], from: usize, n: usize) -> Vec<f64> {
    let mut g: Vec<f64> = (from..from + n)
        .map(|i| {
            reqs[i + 1]
                .arrived
                .duration_since(reqs[i].finished)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    g.sort_by(f64::total_cmp);
    g
}

#[test]
#[ignore = "benchmark: run bin/bench-mcp"]
fn mcp_tool_call_overhead_in_a_container() {
    let n: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    e2e::require_image();
    let image = format!("{}-mcp", e2e::image());
    let built = Command::new(Path::new(ROOT).join("bin/mcp-test-image"))
        .args([e2e::image(), image.clone()])
        .status()
        .unwrap();
    assert!(built.success(), "bin/mcp-test-image failed");
    let llm = FakeLlm::start();
    let mut env = e2e::Env::new();
    env.anthropic_base = llm.url();
    env.extra_config = "[model]\nprovider = \"anthropic\"\nname = \"fake-model\"\n".into();
    env.timeout_secs = 600;
    env.write_config();
    let cfg = env.root.join("claw.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &format!("image = \"{}\"", e2e::image()),
            &format!("image = \"{image}\""),
        )
        .replace(
            "[limits]\n",
            &format!("[limits]\nmax_steps = {}\n", 3 * n + 10),
        );
    std::fs::write(&cfg, text).unwrap();
    env.set_secret("ANTHROPIC_API_KEY", "sk-ant-bench");
    std::fs::copy(
        Path::new(ROOT).join("tests/fixtures/mcp/faulty_server.py"),
        env.group_dir("main").join("faulty_server.py"),
    )
    .unwrap();
    std::fs::write(env.group_dir("main").join("small.txt"), "tiny").unwrap();
    env.claw()
        .args(["mcp", "add", "main", "mini", "--", "./faulty_server.py"])
        .assert()
        .success();
    env.claw()
        .args([
            "mcp",
            "add",
            "main",
            "time",
            "--",
            "mcp-server-time",
            "--local-timezone",
            "UTC",
        ])
        .assert()
        .success();
    for _ in 0..n {
        llm.push(Reply::tool("read_file", json!({"path": "small.txt"})));
    }
    for _ in 0..n {
        llm.push(Reply::tool("mini__ok", json!({})));
    }
    for _ in 0..n {
        llm.push(Reply::tool(
            "time__get_current_time",
            json!({"timezone": "Europe/Berlin"}),
        ));
    }
    llm.push(Reply::text("done"));
    env.say("cli:local", "benchmark");
    let t0 = Instant::now();
    env.claw().args(["run-group", "main"]).assert().success();
    let reqs = llm.wait_for(3 * n + 1, Duration::from_secs(60));
    assert_eq!(reqs.len(), 3 * n + 1, "{}", env.all_logs());
    let first = reqs[0].arrived.duration_since(t0);
    let base = gaps_ms(&reqs, 0, n);
    let mini = gaps_ms(&reqs, n, n);
    let time = gaps_ms(&reqs, 2 * n, n);
    let (b50, m50, t50) = (pct(&base, 0.5), pct(&mini, 0.5), pct(&time, 0.5));
    println!("mcp: {n} calls each, in a podman container ({image})");
    println!(
        "mcp: run-group start → first model request, two stdio servers starting: {:.0} ms",
        first.as_secs_f64() * 1000.0
    );
    println!(
        "mcp: built-in read_file step: median {b50:.1} ms, p99 {:.1} ms",
        pct(&base, 0.99)
    );
    println!(
        "mcp: stdio MCP call (minimal server) step: median {m50:.1} ms, p99 {:.1} ms; overhead over read_file: median {:.1} ms",
        pct(&mini, 0.99),
        m50 - b50
    );
    println!(
        "mcp: stdio MCP call (mcp-server-time) step: median {t50:.1} ms, p99 {:.1} ms; overhead over read_file: median {:.1} ms",
        pct(&time, 0.99),
        t50 - b50
    );
}
