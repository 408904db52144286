//! Benchmark, not a test: `bin/bench-agent` runs it with `--ignored --nocapture` and it prints
//! figures (agent start to first model request, agent overhead per model turn, peak RSS). It never
//! fails on timing.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::fake_llm::Reply;
use support::{Sandbox, start};

#[test]
#[ignore = "benchmark: run bin/bench-agent"]
fn agent_overhead_figures() {
    let turns: usize = std::env::var("BENCH_TURNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for provider in ["openai", "anthropic"] {
        let sb = Sandbox::new();
        std::fs::write(sb.group().join("small.txt"), "tiny file").unwrap();
        for _ in 0..turns {
            sb.llm
                .push(Reply::tool("read_file", json!({"path": "small.txt"})));
        }
        sb.llm.push(Reply::text("done"));
        let mut s = start(provider, "benchmark");
        s.limits.max_steps = turns as u32 + 5;
        let t0 = Instant::now();
        let agent = sb.spawn(s);
        agent.until_idle();
        let total = t0.elapsed();
        let rss_kb = agent.peak_rss_kb();
        let out = agent.finish();
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        let reqs = sb.llm.requests();
        let first = reqs[0].arrived.duration_since(t0);
        // Gap between the server finishing one reply and the next request arriving: parsing, the
        // tool (a tiny read_file), transcript upkeep, request building and the relay hop.
        let mut gaps: Vec<Duration> = reqs
            .windows(2)
            .map(|w| w[1].arrived.duration_since(w[0].finished))
            .collect();
        gaps.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |p: f64| ms(gaps[((gaps.len() - 1) as f64 * p) as usize]);
        println!(
            "{provider:9} start→first request {:6.2} ms | per turn median {:5.2} ms p90 {:5.2} ms max {:5.2} ms ({} turns) | total {:6.1} ms | peak RSS {:.1} MiB",
            ms(first),
            pct(0.5),
            pct(0.9),
            ms(*gaps.last().unwrap()),
            gaps.len(),
            ms(total),
            rss_kb as f64 / 1024.0
        );
    }
}
