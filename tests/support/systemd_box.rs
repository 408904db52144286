//! A real systemd as PID 1 in a podman container ("a box"), for tests that run claw's units under
//! a live service manager. The image is `container/systemd-test/Dockerfile`, built on first use
//! and tagged by a hash of that file, so reruns reuse it and an edit rebuilds it.
//!
//! How the box is started, and why (checked on this project's CI machines: a VM with cgroup v1
//! plus a cgroup2 mount, podman 4.3 with runc):
//! - `--systemd=always --privileged`: systemd as PID 1 with the mounts it wants, and the devices,
//!   capabilities and unmasked /proc that nested containers need.
//! - `--cgroupns=private`: without it the box sees the host's whole cgroup v1 tree, its own cgroup
//!   paths do not match what is mounted, and runc inside fails ("error mounting cgroup … no such
//!   file or directory").
//! - `--network host` (with a private UTS namespace and its own hostname): the fake model and fake
//!   Telegram servers run in the test process on the host's loopback, and the claw proxy inside
//!   reaches them there. The agent containers themselves still get `--network none`.
//! - tmpfs on the image stores: nested overlay on tmpfs works (rootless too) and is fast.
//!
//! Users inside run commands through `podman exec --user` with their session's environment
//! (`XDG_RUNTIME_DIR`, the user bus), which reaches the user manager that lingering started.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where the box image's Dockerfile lives, relative to the crate root.
pub const DOCKERFILE_DIR: &str = "container/systemd-test";
/// The image repository (tag = content hash) and the container name prefix.
pub const PREFIX: &str = "claw-systemd-test";
/// The label every box carries, so leftovers of a killed test run can be found.
const LABEL: &str = "claw-systemd-test";

fn podman() -> Command {
    Command::new("podman")
}

/// Run podman to completion; panic naming the command when it cannot start.
fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null());
    c.output().unwrap_or_else(|e| {
        panic!("cannot run {c:?}: {e} (is podman installed? run bin/setup-runtime)")
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// FNV-1a, 64 bits: a stable content hash for the image tag (std's hasher may change between
/// Rust versions; a changed tag would only cost one rebuild, but stable is simpler to reason about).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The box image, built once per content of its Dockerfile (progress goes to the test's stderr).
pub fn image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DOCKERFILE_DIR);
            let file = dir.join("Dockerfile");
            let body = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let tag = format!("{PREFIX}:{:016x}", fnv1a(&body));
            let mut inspect = podman();
            inspect.args(["image", "inspect", "--format", "{{.Id}}", &tag]);
            if run(inspect).status.success() {
                eprintln!("systemd box: image {tag} is cached");
                return tag;
            }
            eprintln!(
                "systemd box: building {tag} from {} (about a minute, once)",
                file.display()
            );
            let t0 = Instant::now();
            let status = podman()
                .args(["build", "--pull=never", "--network", "host", "--tag", &tag])
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()
                .expect("cannot run podman build: run bin/setup-runtime");
            assert!(
                status.success(),
                "podman build of {} failed (output above). It needs the base image \
                 docker.io/library/debian:bookworm-slim (bin/setup-runtime makes it) and Debian's \
                 package mirror",
                file.display()
            );
            eprintln!("systemd box: built {tag} in {:.0?}", t0.elapsed());
            tag
        })
        .clone()
}

/// A saved copy of a host image, for `podman load` inside a box: written once per image id under
/// cargo's test temp dir, so reruns with an unchanged agent image skip the save.
pub fn saved_image(image: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut inspect = podman();
    inspect.args(["image", "inspect", "--format", "{{.Id}}", image]);
    let out = run(inspect);
    assert!(
        out.status.success(),
        "image {image} is missing: run bin/test (it builds it) or `claw image build --tag {image}`"
    );
    let id = text(&out.stdout).trim().to_string();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("systemd-box");
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join(format!("image-{}.tar", &id[..id.len().min(16)]));
    if !tar.exists() {
        for old in std::fs::read_dir(&dir).unwrap().flatten() {
            let _ = std::fs::remove_file(old.path());
        }
        let part = tar.with_extension("part");
        let mut save = podman();
        save.args(["save", "--quiet", "--output"])
            .arg(&part)
            .arg(image);
        let out = run(save);
        assert!(
            out.status.success(),
            "podman save {image}: {}",
            text(&out.stderr)
        );
        std::fs::rename(&part, &tar).unwrap();
    }
    tar
}

/// Remove boxes left by test processes that no longer exist (a killed run cannot clean up, and a
/// leftover box keeps its timers firing).
fn remove_orphans() {
    let mut ps = podman();
    ps.args([
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        "{{.Names}}",
    ]);
    for name in text(&run(ps).stdout).lines() {
        let pid = name.strip_prefix(PREFIX).and_then(|r| r.split('-').nth(1));
        if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
            let mut rm = podman();
            rm.args(["rm", "--force", "--time", "0", name]);
            run(rm);
        }
    }
}

/// A user inside a box.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub home: String,
}

impl User {
    /// `ana`, uid 1000, made by the Dockerfile.
    pub fn ana() -> User {
        User {
            name: "ana".into(),
            uid: 1000,
            home: "/home/ana".into(),
        }
    }
    /// root.
    pub fn root() -> User {
        User {
            name: "root".into(),
            uid: 0,
            home: "/root".into(),
        }
    }
    /// Where a `claw` installed for this user lives.
    pub fn bin(&self) -> String {
        format!("{}/.local/bin", self.home)
    }
}

/// A running box; removed when dropped.
pub struct SystemdBox {
    pub name: String,
}

impl SystemdBox {
    /// Start a box from [`image`] with each (host file, box path) of `files` mounted read-only,
    /// and wait until systemd is up.
    pub fn start(label: &str, files: &[(PathBuf, &str)]) -> SystemdBox {
        remove_orphans();
        let image = image();
        let name = format!("{PREFIX}-{}-{label}", std::process::id());
        let mut rm = podman();
        rm.args(["rm", "--force", "--time", "0", &name]);
        run(rm);
        let mut c = podman();
        c.args(["run", "--detach", "--name", &name, "--label", LABEL])
            .args(["--systemd=always", "--privileged", "--cgroupns=private"])
            .args(["--network", "host", "--uts", "private", "--hostname", &name])
            .args(["--tmpfs", "/var/lib/containers"])
            .args(["--tmpfs", "/srv/containers"]);
        for (host, inside) in files {
            c.arg("--volume")
                .arg(format!("{}:{inside}:ro", host.display()));
        }
        c.arg(&image);
        let out = run(c);
        assert!(
            out.status.success(),
            "cannot start the systemd box {name}: {}\n(it needs rootful podman: a privileged \
             container with systemd as PID 1; CI runs the tests as root)",
            text(&out.stderr)
        );
        let b = SystemdBox { name };
        let state = b.wait_for("systemd to finish booting", Duration::from_secs(90), || {
            let o = b.root(&["systemctl", "is-system-running"]);
            let s = text(&o.stdout).trim().to_string();
            matches!(s.as_str(), "running" | "degraded").then_some(s)
        });
        if state == "degraded" {
            let failed = b.root(&["systemctl", "--failed", "--no-pager"]);
            panic!("systemd in the box is degraded:\n{}", text(&failed.stdout));
        }
        b
    }

    fn exec(&self, user: Option<&User>, stdin: Option<&[u8]>, argv: &[&str]) -> Output {
        let mut c = podman();
        c.arg("exec");
        if stdin.is_some() {
            c.arg("--interactive");
        }
        if let Some(u) = user {
            let run_dir = format!("/run/user/{}", u.uid);
            c.args(["--user", &u.name, "--workdir", &u.home])
                .args(["--env", &format!("HOME={}", u.home)])
                .args(["--env", &format!("USER={}", u.name)])
                .args(["--env", &format!("LOGNAME={}", u.name)])
                .args(["--env", &format!("XDG_RUNTIME_DIR={run_dir}")])
                .args([
                    "--env",
                    &format!("DBUS_SESSION_BUS_ADDRESS=unix:path={run_dir}/bus"),
                ])
                .args([
                    "--env",
                    &format!("PATH={}:/usr/local/bin:/usr/bin:/bin", u.bin()),
                ]);
        }
        c.arg(&self.name).args(argv);
        let Some(input) = stdin else {
            return run(c);
        };
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run podman exec: {e}"));
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Run argv as root in the box (no user session).
    pub fn root(&self, argv: &[&str]) -> Output {
        self.exec(None, None, argv)
    }

    /// Run argv as `user` with their session environment (user bus, runtime dir, ~/.local/bin).
    pub fn user(&self, user: &User, argv: &[&str]) -> Output {
        self.exec(Some(user), None, argv)
    }

    /// [`Self::user`], with `input` on stdin.
    pub fn user_stdin(&self, user: &User, input: &[u8], argv: &[&str]) -> Output {
        self.exec(Some(user), Some(input), argv)
    }

    /// [`Self::user`] that must succeed; returns stdout.
    pub fn user_ok(&self, user: &User, argv: &[&str]) -> String {
        let o = self.user(user, argv);
        assert!(
            o.status.success(),
            "as {} in the box: {argv:?} failed ({}):\n{}{}",
            user.name,
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// [`Self::root`] that must succeed; returns stdout.
    pub fn root_ok(&self, argv: &[&str]) -> String {
        let o = self.root(argv);
        assert!(
            o.status.success(),
            "as root in the box: {argv:?} failed ({}):\n{}{}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// `systemctl --user --no-pager ARGS` as `user`: its stdout, whatever the exit code (the
    /// list commands exit 1 when they list nothing).
    pub fn systemctl(&self, user: &User, args: &[&str]) -> String {
        let mut argv = vec!["systemctl", "--user", "--no-pager"];
        argv.extend_from_slice(args);
        text(&self.user(user, &argv).stdout)
    }

    /// Write a file as `user` (through `tee`, so it is theirs), with `mode`.
    pub fn write(&self, user: &User, path: &str, contents: &str, mode: &str) {
        let o = self.user_stdin(user, contents.as_bytes(), &["tee", path]);
        assert!(o.status.success(), "write {path}: {}", text(&o.stderr));
        self.user_ok(user, &["chmod", mode, path]);
    }

    /// Enable lingering for `user` and wait until their user manager answers on the user bus.
    pub fn start_user_manager(&self, user: &User) {
        self.root_ok(&["loginctl", "enable-linger", &user.name]);
        self.wait_for(
            &format!("the user manager of {}", user.name),
            Duration::from_secs(60),
            || {
                let o = self.user(user, &["systemctl", "--user", "is-system-running"]);
                let s = text(&o.stdout).trim().to_string();
                matches!(s.as_str(), "running" | "degraded").then_some(())
            },
        );
    }

    /// Copy `from` (a path in the box) to the user's ~/.local/bin, as that user would install it.
    pub fn install_bin(&self, user: &User, from: &str, name: &str) {
        let bin = user.bin();
        self.user_ok(user, &["mkdir", "-p", &bin]);
        self.user_ok(
            user,
            &["install", "-m", "755", from, &format!("{bin}/{name}")],
        );
    }

    /// One user unit's journal, read by its user as docs/OPERATIONS.md tells them to: a normal
    /// user has journal files of their own (`journalctl --user -u UNIT`); root's user units log
    /// into the system journal, read with `journalctl --user-unit UNIT`.
    pub fn journal(&self, user: &User, unit: &str) -> String {
        let o = if user.uid == 0 {
            self.user(user, &["journalctl", "--no-pager", "--user-unit", unit])
        } else {
            self.user(user, &["journalctl", "--user", "--no-pager", "-u", unit])
        };
        text(&o.stdout)
    }

    /// Poll `f` every 250 ms until it returns Some, or panic after `timeout` naming `what`.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
        self.poll(timeout, f).unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what} in box {}",
                self.name
            )
        })
    }

    /// Poll `f` every 250 ms until it returns Some, or None after `timeout`.
    pub fn poll<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let mut rm = podman();
        rm.args(["rm", "--force", "--time", "0", &self.name]);
        run(rm);
    }
}
