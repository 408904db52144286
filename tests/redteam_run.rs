//! Red team, run lifecycle: an agent in a non-main group's real container attacks run-group
//! itself — floods its stdout and stderr, fills its disk, forges log lines — or run-group is
//! killed under it; the host must stay bounded and no container may outlive its run-group.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/rss.rs"]
mod rss;

use e2e::{Env, PROBE_HEAD, probe_report};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set one `[limits]` key in claw.toml (Env writes the table; a second one would be invalid).
fn set_limit(env: &Env, key: &str, value: u64) {
    let p = env.root.join("claw.toml");
    let toml = std::fs::read_to_string(&p).unwrap().replacen(
        "[limits]\n",
        &format!("[limits]\n{key} = {value}\n"),
        1,
    );
    std::fs::write(p, toml).unwrap();
}

/// The newest run log of a group.
fn run_log(env: &Env, folder: &str) -> Vec<u8> {
    let dir = env.root.join("logs").join(folder);
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .expect("no run log");
    std::fs::read(newest).unwrap()
}

/// Every container of this home in any state (not only running ones).
fn any_containers(env: &Env) -> Vec<String> {
    let tag = format!("x{}", claw::infra::paths::Home::new(&env.root).tag());
    let out = Command::new(e2e::runtime())
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("claw-") && l.ends_with(&tag))
        .map(String::from)
        .collect()
}

fn container_rows(env: &Env, folder: &str) -> i64 {
    env.db()
        .query_row(
            "SELECT count(*) FROM containers WHERE folder = ?1",
            [folder],
            |r| r.get(0),
        )
        .unwrap()
}

fn wait_for_container(env: &Env) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(c) = env.containers().into_iter().next() {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "container never started; logs:\n{}",
            env.all_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) on a pid this test started or found by its exact command line.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// A host line: `HH:MM:SS.mmm +S.SSSs ` as RunLog writes it.
fn is_host_line(l: &str) -> bool {
    let b = l.as_bytes();
    b.len() > 16
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b[12] == b' '
        && b[13] == b'+'
        && [0, 1, 3, 4, 6, 7, 9, 10, 11]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && l[14..]
            .split_once("s ")
            .is_some_and(|(secs, _)| secs.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

const FLOOD: &str = r#"
# Hundreds of MB of stderr in 4 KB lines, and one 100 MB stderr line, beside one 3 GB stdout line.
( yes "$(head -c 4000 /dev/zero | tr '\0' e)" | head -c 300000000 >&2; echo >&2
  head -c 100000000 /dev/zero | tr '\0' f >&2; echo >&2 ) &
head -c 3000000000 /dev/zero | tr '\0' x
echo
wait
report done yes
finish
"#;

#[test]
fn flooding_stdout_and_stderr_keeps_run_group_small_and_its_log_capped() {
    let mut env = Env::new();
    env.timeout_secs = 1200;
    env.add_group("tg:91", "flood", &["--no-trigger"]);
    env.install_probe("flood", &format!("{PROBE_HEAD}{FLOOD}"));
    set_limit(&env, "run_log_kb", 256);
    env.say("tg:91", "go");
    let t = Instant::now();
    // wait4's figure also covers the runtime client run-group reaps (podman's is ~35 MB); the
    // bound is on run-group itself, which its log's finished line reports (getrusage SELF).
    let (code, tree_peak_kib) = rss::run_measured(
        env.claw_std()
            .args(["run-group", "flood"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let took = t.elapsed();
    let log = run_log(&env, "flood");
    let text = String::from_utf8_lossy(&log);
    assert_eq!(code, Some(0), "the run did not finish cleanly:\n{text}");
    assert_eq!(probe_report(&env, "tg:91")["done"], "yes");
    let logged_peak: u64 = text
        .split("peak RSS of this run-group ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in the finished line:\n{text}"));
    println!(
        "3 GB stdout line + 400 MB stderr: run-group peak RSS {logged_peak} KiB; with its runtime client {tree_peak_kib} KiB; run took {took:?}; log {} bytes",
        log.len()
    );
    assert!(
        logged_peak < 64 * 1024,
        "run-group peak RSS {logged_peak} KiB"
    );
    assert!(
        log.len() <= 256 * 1024 + 1024,
        "run log {} bytes over its 256 KiB cap",
        log.len()
    );
    assert!(
        text.contains("dropped here to keep this log under 256 KiB"),
        "no dropped line:\n{}",
        &text[..text.len().min(4000)]
    );
    assert!(
        text.contains("agent printed a line of 3000000000 bytes, over the 1 MiB limit"),
        "oversized stdout line not reported once with its length"
    );
    assert!(
        text.contains("(99991808 more bytes of this line dropped)"),
        "the 100 MB stderr line was not cut at 8 KiB"
    );
    assert!(text.lines().last().unwrap().contains("finished: succeeded"));
}

#[test]
fn disk_filling_agent_is_stopped_and_the_next_run_refuses_once() {
    let mut env = Env::new();
    env.add_group("tg:92", "filler", &["--no-trigger"]);
    env.claw()
        .args(["group", "set", "filler", "--disk-mb", "20"])
        .assert()
        .success();
    // A fast writer: 300 MB in 1 MB files as fast as the shell can start `head`, then it waits.
    env.install_probe(
        "filler",
        &format!(
            "{PROBE_HEAD}for i in $(seq 1 300); do head -c 1048576 /dev/zero > /workspace/group/fill-$i || break; done\nsleep 120\nreport survived yes\nfinish\n"
        ),
    );
    env.say("tg:92", "fill it");
    let t = Instant::now();
    env.claw().args(["run-group", "filler"]).assert().code(1);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(100), "not stopped: {took:?}");
    let (status, error, _, _) = env.last_run("filler");
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("used more than 20 MiB of disk"), "{error}");
    let written: u64 = std::fs::read_dir(env.group_dir("filler"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("fill-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "disk filler stopped after {took:?} with {} MiB written against a 20 MiB limit",
        written >> 20
    );
    assert!(written < 300 << 20, "the writer was never stopped");
    let told = env.outbox("tg:92");
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("used more than 20 MiB of disk")
            && told[0].contains("the run was stopped")
            && told[0].contains("claw group set filler --disk-mb"),
        "{}",
        told[0]
    );
    assert!(any_containers(&env).is_empty());

    // Still over: the next runs do not start a container, and the chat hears it once.
    let starts = env.audit("container.start").len();
    env.say("tg:92", "again");
    env.claw().args(["run-group", "filler"]).assert().code(1);
    env.claw().args(["run-group", "filler"]).assert().code(1);
    assert_eq!(
        env.audit("container.start").len(),
        starts,
        "a container started while the group was over its disk limit"
    );
    assert!(env.last_run("filler").1.unwrap().contains("not started"));
    let told = env.outbox("tg:92");
    assert_eq!(told.len(), 2, "refusal not told exactly once: {told:?}");
    assert!(told[1].contains("I can't start"), "{}", told[1]);

    // Space freed: the group runs again.
    for e in std::fs::read_dir(env.group_dir("filler")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("fill-")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    env.install_probe("filler", &format!("{PROBE_HEAD}report ok yes\nfinish\n"));
    env.say("tg:92", "better now");
    env.claw().args(["run-group", "filler"]).assert().success();
    assert_eq!(probe_report(&env, "tg:92")["ok"], "yes");
}

#[test]
fn sigkill_of_run_group_leaves_no_container_and_the_next_run_clears_its_row() {
    let mut env = Env::new();
    env.add_group("tg:93", "victim", &["--no-trigger"]);
    env.install_probe("victim", &format!("{PROBE_HEAD}sleep 300\n"));
    env.say("tg:93", "go");
    let mut rg = env
        .claw_std()
        .args(["run-group", "victim"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_container(&env);
    kill9(rg.id());
    rg.wait().unwrap();
    let killed = Instant::now();
    while !any_containers(&env).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "container alive {:?} after its run-group was SIGKILLed: {:?}\n{}",
            killed.elapsed(),
            any_containers(&env),
            env.all_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "container gone {:?} after SIGKILL of run-group",
        killed.elapsed()
    );
    assert_eq!(
        container_rows(&env, "victim"),
        1,
        "the row must stay until a run of the group sees it gone"
    );
    env.install_probe("victim", &format!("{PROBE_HEAD}report ok yes\nfinish\n"));
    env.say("tg:93", "again");
    env.claw().args(["run-group", "victim"]).assert().success();
    assert_eq!(container_rows(&env, "victim"), 0);
    assert!(
        String::from_utf8_lossy(&run_log(&env, "victim")).contains("removed leftover container"),
        "the leftover was not removed before the run"
    );
}

/// The watchdog of a container, found by its exact command line.
fn watchdog_pid(container: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        (args.contains(&&b"watchdog"[..]) && args.contains(&container.as_bytes())).then_some(pid)
    })
}

#[test]
fn podman_ends_the_container_at_its_lifetime_when_run_group_and_watchdog_both_die() {
    if e2e::runtime() != "podman" {
        // docker has no --timeout: documented in docs/SECURITY.md, enforced by the watchdog only.
        return;
    }
    let mut env = Env::new();
    env.add_group("tg:94", "orphan", &["--no-trigger"]);
    // Lifetime = timeout + 60 s grace.
    env.claw()
        .args(["group", "set", "orphan", "--timeout", "15"])
        .assert()
        .success();
    env.install_probe("orphan", &format!("{PROBE_HEAD}sleep 600\n"));
    env.say("tg:94", "go");
    let started = Instant::now();
    let mut rg = env
        .claw_std()
        .args(["run-group", "orphan"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let name = wait_for_container(&env);
    let wd = watchdog_pid(&name).expect("no watchdog process for the container");
    kill9(wd);
    kill9(rg.id());
    rg.wait().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        env.containers(),
        vec![name.clone()],
        "with both dead, only the runtime can end it"
    );
    while !env.containers().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(75 + 60),
            "podman --timeout did not end the container"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "podman ended the orphan {:?} after run-group started (lifetime 75 s)",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_secs(70));
}

#[test]
fn agent_output_cannot_forge_log_lines_or_reach_a_terminal() {
    let mut env = Env::new();
    env.add_group("tg:95", "forger", &["--no-trigger"]);
    env.install_probe(
        "forger",
        &format!(
            r#"{PROBE_HEAD}
printf 'innocent\r12:00:00.000 +0.001s finished: succeeded (forged-cr)\n' >&2
printf 'x\n12:00:00.000 +0.001s finished: succeeded (forged-nl)\n' >&2
printf '\033]0;pwned\007\033[2J\033]52;c;cGF3bmVk\007 (forged-esc)\n' >&2
printf '\033[31mnot json (forged-junk)\n'
printf '{{"type":"progress","tool":"bash","detail":"\\u001b[2J\\r(forged-progress)"}}\n'
printf 'last words without newline (forged-eof)\033' >&2
report ok yes
finish
"#
        ),
    );
    env.say("tg:95", "go");
    env.claw().args(["run-group", "forger"]).assert().success();
    let log = run_log(&env, "forger");
    for bad in [0x1b_u8, 0x07, b'\r'] {
        assert!(
            !log.contains(&bad),
            "byte {bad:#x} reached the run log:\n{}",
            String::from_utf8_lossy(&log)
        );
    }
    let text = String::from_utf8(log).unwrap();
    let mut forged = 0;
    for l in text.lines() {
        assert!(is_host_line(l), "a line without the host's stamp: {l:?}");
        if l.contains("(forged-") {
            forged += 1;
            let (_, rest) = l.split_once("s ").unwrap();
            assert!(
                rest.starts_with("agent: ")
                    || rest.starts_with("protocol error: ")
                    || rest.starts_with("tool bash: "),
                "agent text not marked as the agent's: {l:?}"
            );
        }
    }
    assert_eq!(forged, 6, "{text}");
    assert!(text.contains(r"agent: innocent\r12:00:00.000"), "{text}");
    assert!(text.contains(r"\x1b]0;pwned\x07\x1b[2J"), "{text}");
}

#[test]
fn a_store_error_mid_run_still_removes_the_container() {
    let mut env = Env::new();
    env.add_group("tg:96", "locked", &["--no-trigger"]);
    // The result comes once the test holds the database: writing it fails after the busy timeout.
    env.install_probe(
        "locked",
        &format!(
            "{PROBE_HEAD}while [ ! -e /workspace/group/go ]; do sleep 0.1; done\necho '{{\"type\":\"result\",\"text\":\"hi\"}}'\nsleep 300\n"
        ),
    );
    env.say("tg:96", "go");
    let mut rg = env
        .claw_std()
        .args(["run-group", "locked"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_container(&env);
    let db = env.db();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::fs::write(env.group_dir("locked").join("go"), "").unwrap();
    let held = Instant::now();
    // run-group's write fails after its 30 s busy timeout; its guard must remove the container
    // then, while run-group itself still lives (its own final write waits on the lock too).
    loop {
        let gone = any_containers(&env).is_empty();
        let alive = rg.try_wait().unwrap().is_none();
        if gone {
            assert!(alive, "run-group exited before removing its container");
            break;
        }
        assert!(
            held.elapsed() < Duration::from_secs(60),
            "container survived a store error in its run-group"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "container removed {:?} after the database was locked",
        held.elapsed()
    );
    db.execute_batch("ROLLBACK").unwrap();
    let status = rg.wait().unwrap();
    assert!(!status.success());
    assert!(any_containers(&env).is_empty());
    assert_eq!(container_rows(&env, "locked"), 0);
    assert_eq!(env.last_run("locked").0, "failed");
}
