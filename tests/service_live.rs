//! claw's units under a live systemd. A box (tests/support/systemd_box.rs) runs systemd as PID 1
//! in a podman container; inside it a normal user with lingering enabled installs the freshly
//! built `claw`, runs `claw init` and `claw service install`, and from then on no claw command is
//! typed: the timers ingest, dispatch, run, answer and deliver.
//!
//! Nothing is stubbed. The agent runs in a real container nested in the box (rootless podman for
//! the user `ana`, rootful podman for root), from the agent image `bin/test` built with the fresh
//! `claw-agent` (CLAW_TEST_IMAGE), saved on the host and loaded inside. The model is the fake LLM
//! and Telegram is the fake Bot API, both in this test process on the host's loopback, which the
//! box shares (`--network host`); the agent containers still get `--network none` and reach the
//! model only through claw's proxy socket. Delivery for the `box:` chats goes through a `command`
//! channel whose send script appends each line to a file the test reads.
//!
//! Shown, for a normal user (rootless podman, unhardened units) and for root (rootful podman, the
//! hardened units): the timers fire (`systemctl --user list-timers`, the journal); a Telegram
//! message is picked up by `claw-ingest@telegram.timer` and a bridge-ingested message by the tick,
//! both run in real containers (a `bash` tool call executes inside) and are delivered; `claw
//! service status` reports each unit truthfully, including a failing ingest, and systemd's start
//! limit never refuses a poll; the hardened units (NoNewPrivileges, ProtectSystem=strict) let the
//! runtime work and really are in force (/etc is read-only to the send script); `claw service
//! uninstall` leaves no unit file, link, timer or loaded unit behind.
//!
//! It fails (never skips) when podman, the agent image or the base image is missing.

#[path = "support/fake_llm.rs"]
mod fake_llm;
#[path = "support/fake_telegram.rs"]
mod fake_telegram;
#[path = "support/systemd_box.rs"]
mod systemd_box;

use fake_llm::{FakeLlm, Reply};
use fake_telegram::FakeTelegram;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use systemd_box::{SystemdBox, User};

/// Generous: one tick is 2 s, but a loaded 2-core machine starts nested containers slowly.
const CHAIN: Duration = Duration::from_secs(150);

fn agent_image() -> String {
    std::env::var("CLAW_TEST_IMAGE").unwrap_or_else(|_| "claw-agent:test".into())
}

/// A box with `user`'s manager running, the fresh claw installed, the agent image loaded and
/// `claw init` done for `main_chat`.
fn boot(label: &str, user: &User, main_chat: &str) -> SystemdBox {
    let t0 = Instant::now();
    let claw = PathBuf::from(env!("CARGO_BIN_EXE_claw"));
    let tar = systemd_box::saved_image(&agent_image());
    let bx = SystemdBox::start(
        label,
        &[(claw, "/share/claw"), (tar, "/share/agent-image.tar")],
    );
    eprintln!("[{label}] systemd up after {:.1?}", t0.elapsed());
    bx.start_user_manager(user);
    bx.install_bin(user, "/share/claw", "claw");
    bx.user_ok(
        user,
        &[
            "podman",
            "load",
            "--quiet",
            "--input",
            "/share/agent-image.tar",
        ],
    );
    bx.user_ok(user, &["claw", "init", "--main-chat", main_chat]);
    eprintln!(
        "[{label}] user manager, claw and image ready after {:.1?}",
        t0.elapsed()
    );
    bx
}

fn claw_home(user: &User) -> String {
    format!("{}/.local/share/claw", user.home)
}

/// claw.toml for the box: the agent image, the fake model, and the `box` command channel whose
/// sender appends to `delivered`.
fn config(llm: &FakeLlm, send: &str, telegram: Option<&FakeTelegram>) -> String {
    let tg = telegram.map_or(String::new(), |t| {
        format!(
            "[channels.telegram]\nenabled = true\napi_base = \"{}\"\npoll_timeout_secs = 2\n",
            t.base
        )
    });
    format!(
        r#"assistant_name = "Andy"
[runtime]
kind = "podman"
image = "{img}"
max_concurrent = 3
[limits]
idle_secs = 1
timeout_secs = 120
retry_base_secs = 60
max_attempts = 2
[model]
provider = "anthropic"
name = "fake-model"
[providers.anthropic]
base_url = "{llm}"
[channels.box]
enabled = true
send_command = ["{send}"]
{tg}"#,
        img = agent_image(),
        llm = llm.url(),
    )
}

/// The `box` channel's sender: one outbox line appended to `out`, plus whether it could write
/// under /etc (it runs inside the tick's sandbox, so this shows the sandbox is in force).
fn send_script(out: &str) -> String {
    format!(
        "#!/bin/sh\n\
         if touch /etc/claw-sandbox-probe 2>/dev/null; then w=writable; else w=read-only; fi\n\
         printf '%s\\n' \"$(cat) /etc:$w\" >> '{out}'\n"
    )
}

/// `claw service status --json` as `user`.
fn status(bx: &SystemdBox, user: &User) -> Value {
    let out = bx.user_ok(user, &["claw", "service", "status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}):\n{out}"))
}

/// Status once exactly `n` runs exist and none is queued or running any more.
fn finished_runs(bx: &SystemdBox, user: &User, n: usize) -> Value {
    wait_chain(bx, user, &format!("{n} finished run(s)"), || {
        let st = status(bx, user);
        let runs = st["recent_runs"].as_array()?;
        let done = runs
            .iter()
            .all(|r| !matches!(r["status"].as_str(), Some("queued" | "running")));
        (runs.len() == n && done).then_some(st)
    })
}

fn unit<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["service"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == name)
        .unwrap_or_else(|| panic!("no {name} in status:\n{st:#}"))
}

/// The sum of the numbers that follow `label` in a journal (`runs started 2`, `delivered 1`).
fn count(journal: &str, label: &str) -> u64 {
    journal
        .split(label)
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Lines of the delivered file (empty until the first delivery).
fn delivered(bx: &SystemdBox, user: &User, file: &str) -> Vec<String> {
    let o = bx.user(user, &["cat", file]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What the units, the runs and the service manager said, for a failure message.
fn diagnose(bx: &SystemdBox, user: &User) -> String {
    let mut out = String::new();
    for u in ["claw-tick", "claw-ingest@telegram"] {
        let j = bx.journal(user, u);
        let tail: Vec<&str> = j.lines().rev().take(15).collect();
        out.push_str(&format!(
            "--- journal of {u} (last 15 lines, newest first)\n{}\n",
            tail.join("\n")
        ));
    }
    for argv in [
        &["claw", "service", "status"][..],
        &["claw", "logs"][..],
        &["claw", "logs", "main"][..],
        &["systemctl", "--user", "--no-pager", "list-timers", "--all"][..],
    ] {
        let o = bx.user(user, argv);
        out.push_str(&format!(
            "--- {}\n{}{}\n",
            argv.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    out
}

/// Poll until `f` gives a value, or panic with [`diagnose`] after [`CHAIN`].
fn wait_chain<T>(bx: &SystemdBox, user: &User, what: &str, f: impl FnMut() -> Option<T>) -> T {
    bx.poll(CHAIN, f).unwrap_or_else(|| {
        panic!(
            "timed out after {CHAIN:?} waiting for {what}\n{}",
            diagnose(bx, user)
        )
    })
}

/// Uninstall, then show nothing is left: no files or links, no timers, no loaded units.
fn uninstall_leaves_nothing(bx: &SystemdBox, user: &User) {
    let out = bx.user_ok(user, &["claw", "service", "uninstall"]);
    assert!(out.contains("removed"), "{out}");
    let dir = format!("{}/.config/systemd/user", user.home);
    let left = bx.user_ok(user, &["find", &dir, "-name", "claw*"]);
    assert_eq!(left.trim(), "", "unit files or links left behind");
    let timers = bx.systemctl(user, &["list-timers", "--all"]);
    assert!(
        timers.contains("timers listed") && !timers.contains("claw"),
        "timers left:\n{timers}"
    );
    let units = bx.systemctl(user, &["list-units", "--all", "--plain", "claw*"]);
    assert!(
        units.contains("0 loaded units listed"),
        "units left:\n{units}"
    );
    let files = bx.systemctl(user, &["list-unit-files", "claw*"]);
    assert!(
        files.contains("0 unit files listed"),
        "unit files left:\n{files}"
    );
    // And status says so rather than repeating the last state it saw.
    let st = status(bx, user);
    let tick = unit(&st, "claw-tick.timer");
    assert_eq!(tick["installed"], false, "{st:#}");
    assert_eq!(tick["state"], "not-found", "{st:#}");
}

#[test]
fn rootless_user_units_carry_messages_from_ingest_to_delivery() {
    let t0 = Instant::now();
    let ana = User::ana();
    let llm = FakeLlm::start();
    let tg = FakeTelegram::start();
    let bx = boot("rootless", &ana, "box:ana");
    let home = claw_home(&ana);
    let sink = format!("{}/delivered.jsonl", ana.home);
    let send = format!("{}/box-send", ana.home);
    bx.write(&ana, &send, &send_script(&sink), "755");
    bx.write(
        &ana,
        &format!("{home}/claw.toml"),
        &config(&llm, &send, Some(&tg)),
        "644",
    );
    bx.write(
        &ana,
        &format!("{home}/secrets.env"),
        &format!(
            "ANTHROPIC_API_KEY=sk-ant-live\nTELEGRAM_BOT_TOKEN={}\n",
            fake_telegram::TOKEN
        ),
        "600",
    );
    bx.user_ok(
        &ana,
        &[
            "claw",
            "group",
            "add",
            "--chat",
            "tg:55",
            "--folder",
            "tele",
            "--no-trigger",
        ],
    );

    // Install: channels come from claw.toml (telegram is enabled); rootless podman is detected.
    let out = bx.user_ok(&ana, &["claw", "service", "install"]);
    assert!(
        out.contains(
            "systemctl --user enable --now claw-tick.timer claw-ingest@telegram.timer: ok"
        ),
        "{out}"
    );
    let unit_file = bx.user_ok(&ana, &["cat", ".config/systemd/user/claw-tick.service"]);
    assert!(unit_file.contains("rootless podman"), "{unit_file}");
    eprintln!("[rootless] installed after {:.1?}", t0.elapsed());

    // Two messages, and no claw command from here on: Telegram's arrives through the ingest
    // timer; the box chat's is what a bridge pipes into `claw ingest`.
    llm.push(
        Reply::tool(
            "bash",
            json!({"command": "echo nested-$((6*7))-as-$(id -un)"}),
        )
        .when("hello from the box"),
    );
    llm.push(Reply::text("Hello Ana, the box works.").when("hello from the box"));
    llm.push(Reply::text("Hi from the timers.").when("hi from telegram"));
    tg.push_message(
        json!({"id": 55, "type": "private"}),
        json!({"id": 55, "first_name": "Ana"}),
        "hi from telegram",
    );
    let line = json!({"chat": "box:ana", "id": "m1", "sender": "box:ana", "sender_name": "Ana", "text": "hello from the box"});
    // This ingest stands in for a bridge the owner started by hand, outside systemd: it does not
    // chain (CLAW_CHAIN=0), so the tick timer carries its message, as it does for any such bridge.
    // (The Telegram message is ingested by its unit and chains inside that unit.)
    let o = bx.user_stdin(
        &ana,
        format!("{line}\n").as_bytes(),
        &["env", "CLAW_CHAIN=0", "claw", "ingest"],
    );
    assert!(
        o.status.success(),
        "ingest: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let sent = wait_chain(&bx, &ana, "both replies to be delivered", || {
        let box_done = delivered(&bx, &ana, &sink)
            .iter()
            .any(|l| l.contains("Hello Ana, the box works."));
        let tg_sent = tg.sent();
        (box_done && !tg_sent.is_empty()).then_some(tg_sent)
    });
    eprintln!(
        "[rootless] both replies delivered after {:.1?}",
        t0.elapsed()
    );
    assert_eq!(sent[0]["chat_id"], "55", "{sent:?}");
    assert!(
        sent[0]["text"]
            .as_str()
            .unwrap()
            .contains("Hi from the timers.")
    );
    let lines = delivered(&bx, &ana, &sink);
    let reply: Value = serde_json::from_str(lines[0].rsplit_once(" /etc:").unwrap().0).unwrap();
    assert_eq!(reply["chat"], "box:ana");
    // The tool call really ran, as the image's `agent` user inside the nested container, and its
    // output went back to the model.
    let reqs = llm.requests();
    assert!(
        reqs.iter().any(|r| r.text().contains("nested-42-as-agent")),
        "the bash tool's output never reached the model: {:?}",
        reqs.iter()
            .map(|r| r.text().to_string())
            .collect::<Vec<_>>()
    );

    // The timers fired, as systemd and the journal tell it.
    let timers = bx.systemctl(&ana, &["list-timers", "--all"]);
    for t in ["claw-tick.timer", "claw-ingest@telegram.timer"] {
        let row = timers
            .lines()
            .find(|l| l.contains(t))
            .unwrap_or_else(|| panic!("{t} not listed:\n{timers}"));
        assert!(!row.contains("n/a"), "{t} never fired:\n{timers}");
    }
    // (The tick logs its summary line just after the delivery the test saw: wait for it.)
    let tick_log = bx
        .poll(Duration::from_secs(30), || {
            let j = bx.journal(&ana, "claw-tick");
            (count(&j, "delivered ") >= 2).then_some(j)
        })
        .unwrap_or_else(|| bx.journal(&ana, "claw-tick"));
    // The tick started the bridge's run; the Telegram message's run was chained by its ingest
    // unit (or by a tick that came first).
    assert!(count(&tick_log, "runs started ") >= 1, "{tick_log}");
    // Delivery itself is chained by run-group (a detached `claw deliver` inside the same unit),
    // so the tick's own "delivered" count may be 0: the replies above prove it happened.
    let ingest_log = bx.journal(&ana, "claw-ingest@telegram");
    assert_eq!(count(&ingest_log, "stored "), 1, "{ingest_log}");

    // Status tells the truth: timers active and waiting (or running their service right now),
    // services ending in success, both runs succeeded (a run ends after its reply was delivered:
    // the container idles a second first).
    let st = finished_runs(&bx, &ana, 2);
    for t in ["claw-tick.timer", "claw-ingest@telegram.timer"] {
        let u = unit(&st, t);
        assert_eq!(u["installed"], true, "{u}");
        assert_eq!(u["state"], "active", "{u}");
        let d = u["detail"].as_str().unwrap();
        assert!(
            d.contains("sub waiting") || d.contains("sub running"),
            "{u}"
        );
        assert!(d.contains("last trigger"), "{u}");
    }
    for s in ["claw-tick.service", "claw-ingest@telegram.service"] {
        let u = unit(&st, s);
        assert_eq!(u["installed"], true, "{u}");
        assert!(
            u["detail"].as_str().unwrap().contains("result success"),
            "{u}"
        );
    }
    let runs = st["recent_runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{st:#}");

    // A broken token makes every poll fail: status must say so, not "success".
    bx.write(
        &ana,
        &format!("{home}/secrets.env"),
        "ANTHROPIC_API_KEY=sk-ant-live\nTELEGRAM_BOT_TOKEN=1:wrong\n",
        "600",
    );
    bx.wait_for(
        "status to report the failing ingest",
        Duration::from_secs(60),
        || {
            let st = status(&bx, &ana);
            let u = unit(&st, "claw-ingest@telegram.service");
            (u["state"] == "failed" && u["detail"].as_str().unwrap().contains("result exit-code"))
                .then_some(())
        },
    );
    let st = status(&bx, &ana);
    assert_eq!(
        unit(&st, "claw-ingest@telegram.timer")["state"],
        "active",
        "the timer keeps polling"
    );
    // Polls that end at once restart every ~1 s; systemd's default start limit (5 in 10 s)
    // would refuse some and leave the chat unpolled. The units turn it off: a dozen failed polls
    // in a row, none refused.
    let failed_polls = |j: &str| j.matches("Failed to start claw-ingest@telegram").count();
    bx.wait_for("a dozen failed polls", Duration::from_secs(90), || {
        (failed_polls(&bx.journal(&ana, "claw-ingest@telegram")) >= 12).then_some(())
    });
    let all = bx.user_ok(&ana, &["journalctl", "--user", "--no-pager"]);
    assert!(
        !all.contains("Start request repeated too quickly"),
        "systemd's start limit refused a claw unit:\n{all}"
    );

    uninstall_leaves_nothing(&bx, &ana);
    eprintln!("[rootless] done in {:.1?}", t0.elapsed());
}

#[test]
fn rootful_hardened_units_run_real_containers() {
    let t0 = Instant::now();
    let root = User::root();
    let llm = FakeLlm::start();
    let tg = FakeTelegram::start();
    let bx = boot("rootful", &root, "box:root");
    let home = claw_home(&root);
    // Under ProtectSystem=strict only the claw home is writable, so the sink lives there.
    let sink = format!("{home}/delivered.jsonl");
    let send = format!("{home}/box-send");
    bx.write(&root, &send, &send_script(&sink), "755");
    bx.write(
        &root,
        &format!("{home}/claw.toml"),
        &config(&llm, &send, Some(&tg)),
        "644",
    );
    bx.write(
        &root,
        &format!("{home}/secrets.env"),
        &format!(
            "ANTHROPIC_API_KEY=sk-ant-live\nTELEGRAM_BOT_TOKEN={}\n",
            fake_telegram::TOKEN
        ),
        "600",
    );
    bx.user_ok(
        &root,
        &[
            "claw",
            "group",
            "add",
            "--chat",
            "tg:77",
            "--folder",
            "tele",
            "--no-trigger",
        ],
    );

    let out = bx.user_ok(&root, &["claw", "service", "install"]);
    assert!(
        out.contains(
            "systemctl --user enable --now claw-tick.timer claw-ingest@telegram.timer: ok"
        ),
        "{out}"
    );
    // The live manager applied the full sandbox that rootful podman gets, to both services.
    for service in ["claw-tick.service", "claw-ingest@telegram.service"] {
        let props = bx.systemctl(
            &root,
            &[
                "show",
                service,
                "--property",
                "NoNewPrivileges,ProtectSystem,ReadWritePaths",
            ],
        );
        for want in ["NoNewPrivileges=yes", "ProtectSystem=strict"] {
            assert!(props.contains(want), "{service}: {want} missing:\n{props}");
        }
        assert!(props.contains(&home), "{service}: {props}");
    }
    eprintln!("[rootful] installed after {:.1?}", t0.elapsed());

    llm.push(
        Reply::tool(
            "bash",
            json!({"command": "echo hardened-$((6*7))-as-$(id -un)"}),
        )
        .when("hello from root"),
    );
    llm.push(Reply::text("Hello root, the sandbox holds.").when("hello from root"));
    llm.push(Reply::text("Polled under the sandbox.").when("hi from telegram"));
    tg.push_message(
        json!({"id": 77, "type": "private"}),
        json!({"id": 77, "first_name": "Root"}),
        "hi from telegram",
    );
    let line =
        json!({"chat": "box:root", "id": "r1", "sender": "box:root", "text": "hello from root"});
    // A bridge started by hand (see the rootless test): the tick carries it, inside its sandbox.
    let o = bx.user_stdin(
        &root,
        format!("{line}\n").as_bytes(),
        &["env", "CLAW_CHAIN=0", "claw", "ingest"],
    );
    assert!(
        o.status.success(),
        "ingest: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let lines = wait_chain(&bx, &root, "both replies to be delivered", || {
        let l = delivered(&bx, &root, &sink);
        let done = l.iter().any(|l| l.contains("the sandbox holds"));
        (done && !tg.sent().is_empty()).then_some(l)
    });
    eprintln!(
        "[rootful] both replies delivered after {:.1?}",
        t0.elapsed()
    );
    let sent = tg.sent();
    assert_eq!(sent[0]["chat_id"], "77", "{sent:?}");
    assert!(
        sent[0]["text"]
            .as_str()
            .unwrap()
            .contains("Polled under the sandbox."),
        "{sent:?}"
    );
    // The send script ran inside the tick's sandbox: /etc was read-only for it, as root.
    assert!(lines[0].ends_with("/etc:read-only"), "{lines:?}");
    assert!(
        llm.requests()
            .iter()
            .any(|r| r.text().contains("hardened-42-as-agent")),
        "the bash tool's output never reached the model"
    );

    let st = finished_runs(&bx, &root, 2);
    assert_eq!(unit(&st, "claw-tick.timer")["state"], "active", "{st:#}");
    assert!(
        unit(&st, "claw-tick.service")["detail"]
            .as_str()
            .unwrap()
            .contains("result success"),
        "{st:#}"
    );
    assert!(
        unit(&st, "claw-ingest@telegram.service")["detail"]
            .as_str()
            .unwrap()
            .contains("result success"),
        "{st:#}"
    );
    let runs = st["recent_runs"].as_array().unwrap();
    assert!(
        runs.iter().all(|r| r["status"] == "succeeded"),
        "{st:#}\n{}",
        bx.journal(&root, "claw-tick")
    );

    uninstall_leaves_nothing(&bx, &root);
    eprintln!("[rootful] done in {:.1?}", t0.elapsed());
}
