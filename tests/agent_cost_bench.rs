//! Benchmark, not a test: `bin/bench-cost` runs it with `--ignored --nocapture` and it prints
//! what the input of two scripted sessions costs with prompt caching on and off, billed by the
//! fake LLM like Anthropic (prefix matching by breakpoint, 20-block lookback, 1,024-token
//! minimum; tokens estimated as bytes / 4) at $3 per million input tokens, cache writes 1.25×
//! and cache reads 0.1× of that. It never fails on the figures.
//!
//! - tool session: one message, 19 tool calls (files read, commands run, a search) and an answer:
//!   20 model calls in one turn;
//! - conversation: 10 chat messages, each a new run resuming the session (as claw runs them),
//!   each answered in one model call.
//!
//! "Off" is `CLAW_PROMPT_CACHE=0`: no breakpoints, so everything is billed at the input rate.
//! The OpenAI line shows how much of the same tool session an automatic prefix cache serves.

mod support;

use claw::infra::protocol::{AgentLine, Usage};
use serde_json::json;
use support::fake_llm::Reply;
use support::fake_llm::billing::Bill;
use support::{Outcome, Sandbox, start};

/// Dollars per million input tokens, and the cache multipliers.
const INPUT_PER_MTOK: f64 = 3.0;
const WRITE_X: f64 = 1.25;
const READ_X: f64 = 0.1;
const MIN_CACHEABLE: u64 = 1024;

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    requests: usize,
    bill: Bill,
    /// What the agent's idle lines reported, summed.
    reported: Usage,
}

impl Totals {
    fn dollars(&self) -> f64 {
        let b = &self.bill;
        (b.input as f64 + b.cache_write as f64 * WRITE_X + b.cache_read as f64 * READ_X)
            * INPUT_PER_MTOK
            / 1e6
    }
    fn add_run(&mut self, out: &Outcome) {
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        for l in &out.lines {
            if let AgentLine::Idle { usage: Some(u) } = l {
                self.reported.add(*u);
            }
        }
    }
}

/// A workspace like a real group's: memory files and the repository's skills.
fn workspace(sb: &Sandbox) {
    let memory = (1..=30)
        .map(|n| format!("- Fact {n}: the household prefers option {n} when planning the week's meals and errands.\n"))
        .collect::<String>();
    std::fs::write(
        sb.group().join("AGENTS.md"),
        format!("# Family\n\n{memory}"),
    )
    .unwrap();
    let skills = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("skills");
    for e in std::fs::read_dir(skills).unwrap().flatten() {
        let file = e.path().join("SKILL.md");
        if file.is_file() {
            let to = sb.workspace().join("skills").join(e.file_name());
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(&file, to.join("SKILL.md")).unwrap();
        }
    }
    for n in 0..8 {
        let text = (1..=60)
            .map(|l| format!("notes {n}, line {l}: groceries, school run, dentist at {l}:00\n"))
            .collect::<String>();
        std::fs::write(sb.group().join(format!("notes{n}.txt")), text).unwrap();
    }
}

fn env(cache: bool) -> [(&'static str, &'static str); 1] {
    [("CLAW_PROMPT_CACHE", if cache { "1" } else { "0" })]
}

fn finish(sb: &Sandbox, mut t: Totals) -> Totals {
    let reqs = sb.llm.requests();
    t.requests = reqs.len();
    for r in &reqs {
        let b = r.bill.expect("billing is on");
        t.bill.input += b.input;
        t.bill.cache_read += b.cache_read;
        t.bill.cache_write += b.cache_write;
    }
    t
}

fn tool_session(provider: &str, cache: bool) -> Totals {
    let sb = Sandbox::new();
    sb.llm.billing(MIN_CACHEABLE);
    workspace(&sb);
    for step in 0..19 {
        let n = step % 8;
        let (tool, input) = match step % 4 {
            0 => ("read_file", json!({"path": format!("notes{n}.txt")})),
            1 => (
                "bash",
                json!({"command": format!("wc -l notes{n}.txt; tail -n 5 notes{n}.txt")}),
            ),
            2 => ("grep", json!({"pattern": format!("line {}0", n + 1)})),
            _ => ("glob", json!({"pattern": "*.txt"})),
        };
        sb.llm.push(
            Reply::text(&format!(
                "Step {step}: checking notes{n}.txt before I answer."
            ))
            .and(support::fake_llm::Part::Tool {
                name: tool.into(),
                input,
            }),
        );
    }
    sb.llm.push(Reply::text(
        "Here is the week: groceries on Monday, the school run every morning, the dentist on Thursday.",
    ));
    let mut s = start(
        provider,
        "<messages><message sender=\"Ana\">Plan our week from my notes, please.</message></messages>",
    );
    s.limits.max_steps = 30;
    let mut t = Totals::default();
    t.add_run(&sb.run_with_env(s, &env(cache)));
    finish(&sb, t)
}

fn conversation(provider: &str, cache: bool) -> Totals {
    let sb = Sandbox::new();
    sb.llm.billing(MIN_CACHEABLE);
    workspace(&sb);
    let mut t = Totals::default();
    let mut session = None;
    for n in 1..=10 {
        sb.llm.push(Reply::text(&format!(
            "Answer {n}: {}",
            "that works; I have noted it in the plan and will remind you the day before. "
                .repeat(3)
        )));
        let mut s = start(
            provider,
            &format!(
                "<messages><message sender=\"Ana\" time=\"2026-12-03 10:{n:02}\">Question {n}: can we move the {n} o'clock errand to the afternoon and still make the school run?</message></messages>"
            ),
        );
        s.session_id = session.clone();
        let out = sb.run_with_env(s, &env(cache));
        session = Some(out.session());
        t.add_run(&out);
    }
    finish(&sb, t)
}

fn row(name: &str, t: &Totals) -> String {
    let b = &t.bill;
    format!(
        "{name:4} {:3} calls | prompt {:7} tok = uncached {:7} + cache write {:6} + cache read {:7} | input cost ${:.4}",
        t.requests,
        b.prompt(),
        b.input,
        b.cache_write,
        b.cache_read,
        t.dollars()
    )
}

fn compare(title: &str, target: &str, run: impl Fn(bool) -> Totals) {
    let (on, off) = (run(true), run(false));
    println!("{title}");
    println!("  {}", row("off", &off));
    println!("  {}", row("on", &on));
    let saved = 1.0 - on.dollars() / off.dollars();
    println!(
        "  caching saves {:.1}% of the input cost{target}",
        saved * 100.0
    );
    let mut same = true;
    for (name, t) in [("off", off), ("on", on)] {
        let r = t.reported;
        if (r.input_tokens, r.cache_write_tokens, r.cache_read_tokens)
            != (t.bill.input, t.bill.cache_write, t.bill.cache_read)
        {
            same = false;
            println!(
                "  warning: with caching {name} the agent reported {r:?}, the server billed {:?}",
                t.bill
            );
        }
    }
    if same {
        println!("  the agent's idle lines reported exactly these counts");
    }
}

#[test]
#[ignore = "benchmark: run bin/bench-cost"]
fn prompt_cache_cost_figures() {
    println!(
        "prices: input ${INPUT_PER_MTOK}/MTok, cache write {WRITE_X}x, cache read {READ_X}x; minimum cacheable prefix {MIN_CACHEABLE} tokens; tokens = bytes / 4"
    );
    compare(
        "anthropic, 20-step tool session (one turn):",
        " (target ≥ 70%)",
        |c| tool_session("anthropic", c),
    );
    compare(
        "anthropic, 10-message conversation (10 resumed runs):",
        "",
        |c| conversation("anthropic", c),
    );
    let oa = tool_session("openai", true);
    println!(
        "openai, the same tool session: {} of {} prompt tokens ({:.1}%) served from the automatic prefix cache",
        oa.bill.cache_read,
        oa.bill.prompt(),
        oa.bill.cache_read as f64 * 100.0 / oa.bill.prompt().max(1) as f64
    );
}
