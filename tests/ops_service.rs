//! `claw service`: the units it writes are accepted by `systemd-analyze verify` (when it is
//! installed) and the plists are well-formed property lists; install and uninstall work where
//! no service manager is reachable, saying what to run later.

use std::path::{Path, PathBuf};
use std::process::Command;

struct T {
    dir: tempfile::TempDir,
}

impl T {
    fn new() -> T {
        let t = T {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(t.user()).unwrap();
        std::fs::create_dir_all(t.empty_path()).unwrap();
        t.claw().arg("init").assert().success();
        t
    }
    fn user(&self) -> PathBuf {
        self.dir.path().join("user")
    }
    fn xdg(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }
    fn home(&self) -> PathBuf {
        self.dir.path().join("claw home")
    }
    /// A PATH with no systemctl, launchctl or container runtime in it.
    fn empty_path(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn claw(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("claw").unwrap();
        c.env("CLAW_HOME", self.home())
            .env("HOME", self.user())
            .env("XDG_CONFIG_HOME", self.xdg())
            .env_remove("CLAW_LOG");
        c
    }
    fn claw_no_manager(&self) -> assert_cmd::Command {
        let mut c = self.claw();
        c.env("PATH", self.empty_path());
        c
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Splits `--dry-run` output into (file path, contents).
fn dry_run_files(out: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = vec![];
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("# would write ") {
            files.push((PathBuf::from(p), String::new()));
        } else if line.starts_with("# would run: ") {
            continue;
        } else if let Some((_, c)) = files.last_mut() {
            c.push_str(line);
            c.push('\n');
        }
    }
    files
}

/// Runs `systemd-analyze verify` on the unit files in `dir` (templates instantiated as `telegram`).
/// Returns false when systemd-analyze is not installed.
fn verify_systemd(dir: &Path) -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: only the structure was checked");
        return false;
    }
    let mut units = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if !p.is_file() {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let target = if name.contains("@.") {
            let inst = dir.join(name.replace("@.", "@telegram."));
            std::fs::copy(&p, &inst).unwrap();
            inst
        } else {
            p
        };
        units.push(target);
    }
    units.sort();
    units.dedup();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{err}"
    );
    for bad in [
        "Unknown key",
        "Unknown section",
        "Failed to parse",
        "Ignoring",
        "not executable",
    ] {
        assert!(
            !err.contains(bad),
            "systemd-analyze complained ({bad}):\n{err}"
        );
    }
    true
}

/// Structure every unit must have, whether or not systemd-analyze is here.
fn check_structure(files: &[(PathBuf, String)], claw_home: &Path) {
    let claw = std::fs::canonicalize(env!("CARGO_BIN_EXE_claw")).unwrap();
    for (path, text) in files {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            !text.contains("@CLAW") && !text.contains("@HARDENING@") && !text.contains("@ENV_"),
            "{name}: placeholder left:\n{text}"
        );
        if name.ends_with(".service") {
            assert!(text.contains("[Service]"), "{name}");
            let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
            assert!(exec.contains(&claw.display().to_string()), "{exec}");
            assert!(
                text.contains(&format!(
                    "Environment=\"CLAW_HOME={}\"",
                    claw_home.display()
                )),
                "{name}: CLAW_HOME with its space must be quoted:\n{text}"
            );
        }
        if name.ends_with(".timer") {
            assert!(
                text.contains("[Timer]")
                    && text.contains("AccuracySec=1s")
                    && text.contains("WantedBy=timers.target"),
                "{name}"
            );
        }
    }
}

#[test]
fn dry_run_writes_nothing_and_prints_verifiable_units() {
    let t = T::new();
    // Whatever runtime this machine has decides the hardening; podman or docker give the full set.
    let out = t
        .claw()
        .args([
            "service",
            "install",
            "--dry-run",
            "--channels",
            "telegram,signal,whatsapp",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let files = dry_run_files(&text);
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(
        names,
        [
            "claw-tick.service",
            "claw-tick.timer",
            "claw-ingest@.service",
            "claw-ingest@.timer",
            "claw-whatsapp.service"
        ]
    );
    assert!(
        files
            .iter()
            .all(|(p, _)| p.starts_with(t.xdg().join("systemd/user")))
    );
    assert!(text.contains("# would run: systemctl --user enable --now claw-tick.timer claw-ingest@telegram.timer claw-ingest@signal.timer claw-whatsapp.service"), "{text}");
    assert!(!t.xdg().join("systemd").exists(), "dry run wrote files");
    check_structure(&files, &t.home());
    let whatsapp = &files[4].1;
    assert!(whatsapp.contains("Restart=always"));

    let dir = t.dir.path().join("verify");
    std::fs::create_dir_all(&dir).unwrap();
    for (p, c) in &files {
        std::fs::write(dir.join(p.file_name().unwrap()), c).unwrap();
    }
    verify_systemd(&dir);
}

#[test]
fn install_without_a_service_manager_writes_units_and_says_what_to_run() {
    let t = T::new();
    let out = t
        .claw_no_manager()
        .args([
            "service",
            "install",
            "--platform",
            "systemd",
            "--channels",
            "telegram",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("the service manager is not on PATH"),
        "{text}"
    );
    assert!(
        text.contains("systemctl --user enable --now claw-tick.timer claw-ingest@telegram.timer"),
        "{text}"
    );
    let dir = t.xdg().join("systemd/user");
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    check_structure(&files, &t.home());
    // No runtime was found on this PATH: no sandboxing that could break it, and it says so.
    assert!(
        files
            .iter()
            .any(|(_, c)| c.contains("No runtime was detected"))
    );
    verify_systemd(&dir);

    let st = t
        .claw_no_manager()
        .args(["service", "status", "--platform", "systemd", "--json"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["service"]["units"][0]["unit"], "claw-tick.timer");
    assert_eq!(v["service"]["units"][0]["installed"], true);
    assert_eq!(v["service"]["manager_available"], false);
    assert!(v["recent_runs"].as_array().unwrap().is_empty());

    let un = t
        .claw_no_manager()
        .args(["service", "uninstall", "--platform", "systemd"])
        .output()
        .unwrap();
    assert!(un.status.success());
    assert!(stdout(&un).contains("removed"), "{}", stdout(&un));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

/// A minimal XML well-formedness check: declaration, balanced tags, no stray `&`.
fn well_formed_xml(text: &str) -> Result<(), String> {
    let body = text
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .ok_or("no XML declaration")?;
    let mut stack: Vec<String> = vec![];
    let mut rest = body;
    while let Some(i) = rest.find('<') {
        let text_part = &rest[..i];
        for (j, _) in text_part.match_indices('&') {
            let ent = &text_part[j..];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| ent.starts_with(e))
            {
                return Err(format!("bare & in {text_part:?}"));
            }
        }
        let end = rest[i..].find('>').ok_or("unclosed tag")? + i;
        let tag = &rest[i + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> without opening"))?;
            if open != name {
                return Err(format!("<{open}> closed by </{name}>"));
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed: {stack:?}"))
    }
}

#[test]
fn launchd_plists_are_well_formed_property_lists() {
    let t = T::new();
    let out = t
        .claw_no_manager()
        .args([
            "service",
            "install",
            "--platform",
            "launchd",
            "--channels",
            "telegram,whatsapp",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("launchctl bootstrap gui/"),
        "{}",
        stdout(&out)
    );
    let dir = t.user().join("Library/LaunchAgents");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "claw.ingest.telegram.plist",
            "claw.tick.plist",
            "claw.whatsapp.plist"
        ]
    );
    for n in &names {
        let p = dir.join(n);
        let text = std::fs::read_to_string(&p).unwrap();
        well_formed_xml(&text).unwrap_or_else(|e| panic!("{n}: {e}\n{text}"));
        assert!(
            text.contains(&format!("<string>{}</string>", t.home().display())),
            "{n}"
        );
        for tool in [
            ("plutil", vec!["-lint"]),
            (
                "python3",
                vec![
                    "-c",
                    "import plistlib,sys; d=plistlib.load(open(sys.argv[1],'rb')); assert d['Label'] and d['ProgramArguments']",
                ],
            ),
        ] {
            if let Ok(o) = Command::new(tool.0).args(&tool.1).arg(&p).output() {
                assert!(
                    o.status.success(),
                    "{} rejects {n}: {}",
                    tool.0,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
    let tick = std::fs::read_to_string(dir.join("claw.tick.plist")).unwrap();
    assert!(
        tick.contains("<key>StartInterval</key>\n\t<integer>2</integer>"),
        "{tick}"
    );
    let wa = std::fs::read_to_string(dir.join("claw.whatsapp.plist")).unwrap();
    assert!(wa.contains("<key>KeepAlive</key>\n\t<true/>"), "{wa}");

    let un = t
        .claw_no_manager()
        .args(["service", "uninstall", "--platform", "launchd"])
        .output()
        .unwrap();
    assert!(un.status.success());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn unknown_channel_is_a_usage_error() {
    let t = T::new();
    t.claw()
        .args(["service", "install", "--dry-run", "--channels", "irc"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "channel `irc` has no service unit",
        ));
}
