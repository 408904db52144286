//! `claw doctor` against a real home, the real runtime and the test image: first healthy, then
//! with each condition it claims to detect broken on purpose, checking the message and the fix.

#[path = "support/e2e.rs"]
mod e2e;

use e2e::Env;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Run doctor with HOME and XDG_CONFIG_HOME inside the test's temp dir (so the user's own
/// timers never leak in); returns (success, stdout, parsed --json report).
fn doctor(env: &Env, extra: &[&str]) -> (bool, String, serde_json::Value) {
    let user = env.dir.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    let run = |json: bool| {
        let mut c = env.claw();
        c.env("HOME", &user)
            .env("XDG_CONFIG_HOME", user.join(".config"))
            .arg("doctor")
            .args(extra);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let text = run(false);
    let json = run(true);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e})"));
    assert_eq!(text.status.success(), json.status.success());
    (
        text.status.success(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
        report,
    )
}

/// The check named `name` from a JSON report.
fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn healthy() -> Env {
    let env = Env::new();
    env.set_secret("ANTHROPIC_API_KEY", "sk-test-not-printed");
    env
}

#[test]
fn healthy_home_passes_and_the_probe_proves_the_sandbox() {
    let env = healthy();
    let (ok, text, report) = doctor(&env, &[]);
    assert!(ok, "{text}");
    let probe = check(&report, "probe");
    assert_eq!(probe["level"], "ok", "{probe}");
    let msg = probe["message"].as_str().unwrap();
    assert!(
        msg.contains("no network") && msg.contains("read-only mount"),
        "{msg}"
    );
    assert_eq!(check(&report, "database")["level"], "ok");
    assert_eq!(check(&report, "provider-key")["level"], "ok");
    // Names only, never values.
    assert!(!text.contains("sk-test-not-printed"));
    assert!(!report.to_string().contains("sk-test-not-printed"));
    // The probe removed its container and its folder.
    assert!(env.containers().is_empty());
    assert!(
        std::fs::read_dir(env.root.join("run"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
}

#[test]
fn secrets_readable_by_others_is_a_failure_with_chmod_fix() {
    let env = healthy();
    let secrets = env.root.join("secrets.env");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text, report) = doctor(&env, &["--no-probe"]);
    assert!(!ok);
    let c = check(&report, "secrets");
    assert_eq!(c["level"], "fail");
    assert!(c["message"].as_str().unwrap().contains("0644"), "{c}");
    assert_eq!(c["fix"], format!("chmod 600 {}", secrets.display()));
    assert!(text.contains("FAIL secrets"), "{text}");
}

#[test]
fn missing_provider_key_names_the_variable() {
    let mut env = Env::new();
    // A local endpoint (the test default) may need no key: only a warning.
    let (_, _, report) = doctor(&env, &["--no-probe"]);
    assert_eq!(check(&report, "provider-key")["level"], "warn");
    env.anthropic_base = "https://api.anthropic.com".into();
    env.write_config();
    let (ok, _, report) = doctor(&env, &["--no-probe"]);
    assert!(!ok);
    let c = check(&report, "provider-key");
    assert_eq!(c["level"], "fail");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .starts_with("echo 'ANTHROPIC_API_KEY=<your key>' >>"),
        "{c}"
    );
}

#[test]
fn corrupt_config_is_reported_with_its_line() {
    let env = healthy();
    std::fs::write(
        env.root.join("claw.toml"),
        "assistant_name = \"Andy\"\n[runtime\nkind = 1\n",
    )
    .unwrap();
    let (ok, _, report) = doctor(&env, &["--no-probe"]);
    assert!(!ok);
    let c = check(&report, "config");
    assert_eq!(c["level"], "fail");
    assert!(c["message"].as_str().unwrap().contains("line 2"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("claw init"), "{c}");
}

#[test]
fn corrupt_database_fails_the_integrity_check() {
    let env = healthy();
    let db = env.root.join("claw.db");
    // Keep SQLite's header so the file opens, and overwrite the pages behind it.
    let mut bytes = std::fs::read(&db).unwrap();
    let _ = std::fs::remove_file(env.root.join("claw.db-wal"));
    let _ = std::fs::remove_file(env.root.join("claw.db-shm"));
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let (ok, _, report) = doctor(&env, &["--no-probe"]);
    assert!(!ok);
    let c = check(&report, "database");
    assert_eq!(c["level"], "fail", "{c}");
    assert!(c["fix"].as_str().unwrap().contains("claw.db.broken"), "{c}");

    std::fs::write(
        &db,
        b"this is not sqlite at all, not even close to it......",
    )
    .unwrap();
    let (_, _, report) = doctor(&env, &["--no-probe"]);
    let c = check(&report, "database");
    assert_eq!(c["level"], "fail", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("not a usable database")
            || c["message"].as_str().unwrap().contains("integrity"),
        "{c}"
    );
}

#[test]
fn database_from_a_newer_claw_is_refused_untouched() {
    let env = healthy();
    env.db().pragma_update(None, "user_version", 999).unwrap();
    let (ok, _, report) = doctor(&env, &["--no-probe"]);
    assert!(!ok);
    let c = check(&report, "database");
    assert!(c["message"].as_str().unwrap().contains("schema 999"), "{c}");
    let v: i64 = env
        .db()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 999, "doctor must not migrate");
}

#[test]
fn missing_image_tag_says_how_to_build_it() {
    let mut env = healthy();
    env.extra_config = String::new();
    env.write_config();
    let cfg = std::fs::read_to_string(env.root.join("claw.toml")).unwrap();
    let cfg = cfg.replace(
        &format!("image = \"{}\"", e2e::image()),
        "image = \"claw-agent:no-such-tag\"",
    );
    std::fs::write(env.root.join("claw.toml"), cfg).unwrap();
    let (ok, text, report) = doctor(&env, &[]);
    assert!(!ok);
    let c = check(&report, "image");
    assert_eq!(c["level"], "fail");
    assert_eq!(c["fix"], "claw image build --tag claw-agent:no-such-tag");
    // No probe is attempted without an image.
    assert!(!text.contains(" probe "), "{text}");
}

#[test]
fn malformed_allowlist_is_a_failure() {
    let env = healthy();
    std::fs::write(&env.allowlist, "{\"allowedRoots\": [ oops").unwrap();
    let (ok, _, report) = doctor(&env, &["--no-probe"]);
    assert!(!ok);
    let c = check(&report, "allowlist");
    assert_eq!(c["level"], "fail");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains(&env.allowlist.display().to_string())
    );
}

#[test]
fn stray_container_of_this_home_is_found_and_others_are_ignored() {
    let env = healthy();
    let tag = claw::infra::paths::Home::new(&env.root).tag();
    let ours = format!("claw-main-424242x{tag}");
    let other = "claw-main-424242x00000000".to_string();
    for name in [&ours, &other] {
        let st = Command::new(e2e::runtime())
            .args([
                "create",
                "--name",
                name,
                "--entrypoint",
                "/bin/true",
                &e2e::image(),
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let (ok, _, report) = doctor(&env, &["--no-probe"]);
    for name in [&ours, &other] {
        let _ = Command::new(e2e::runtime())
            .args(["rm", "-f", name])
            .output();
    }
    assert!(!ok);
    let c = check(&report, "containers");
    assert_eq!(c["level"], "fail");
    let msg = c["message"].as_str().unwrap();
    assert!(msg.contains(&ours), "{msg}");
    assert!(
        !msg.contains(&other),
        "another home's container must be left alone: {msg}"
    );
    assert_eq!(c["fix"], format!("{} rm -f {ours}", e2e::runtime()));
}

#[test]
fn extra_args_that_weaken_the_sandbox_are_a_failure() {
    let env = healthy();
    let cfg = std::fs::read_to_string(env.root.join("claw.toml")).unwrap();
    let cfg = cfg.replace(
        "extra_args = []",
        r#"extra_args = ["--privileged", "--ulimit", "nofile=1024:1024"]"#,
    );
    std::fs::write(env.root.join("claw.toml"), cfg).unwrap();
    let (ok, _, report) = doctor(&env, &["--no-probe"]);
    assert!(!ok);
    let c = check(&report, "extra-args");
    assert_eq!(c["level"], "fail");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains("--privileged") && !msg.contains("ulimit"),
        "{msg}"
    );
}

#[test]
fn missing_runtime_points_at_setup_runtime() {
    let env = healthy();
    let empty = env.dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let cfg = std::fs::read_to_string(env.root.join("claw.toml")).unwrap();
    std::fs::write(
        env.root.join("claw.toml"),
        cfg.replace(&format!("kind = \"{}\"", e2e::runtime()), "kind = \"auto\""),
    )
    .unwrap();
    let out = env
        .claw()
        .env("HOME", env.dir.path())
        .env("PATH", &empty)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = check(&report, "runtime");
    assert_eq!(c["level"], "fail");
    assert!(
        c["fix"].as_str().unwrap().starts_with("bin/setup-runtime"),
        "{c}"
    );
    // Without a runtime there is nothing to ask about images, strays or a probe.
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "probe")
    );
}

#[test]
fn image_older_than_the_agent_binary_beside_claw_is_flagged() {
    let env = healthy();
    // A copy of claw with a claw-agent beside it that is newer than any image built before.
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_claw"), bin.join("claw")).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(6));
    std::fs::write(bin.join("claw-agent"), b"newer agent").unwrap();
    let out = Command::new(bin.join("claw"))
        .env("CLAW_HOME", &env.root)
        .env("CLAW_MOUNT_ALLOWLIST", &env.allowlist)
        .env("HOME", env.dir.path())
        .args(["doctor", "--no-probe", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = check(&report, "image");
    assert_eq!(c["level"], "warn", "{c}");
    assert!(
        c["message"].as_str().unwrap().contains("is older than"),
        "{c}"
    );
    assert_eq!(c["fix"], format!("claw image build --tag {}", e2e::image()));
}
