//! Real-container tests of the hardening in `runtime::run_args`: each test starts a container with
//! exactly the arguments claw uses and a shell script as the workload, then tries to cross one
//! boundary. They need a working runtime and the base image (`bin/setup-runtime` provides both);
//! without them they fail with that instruction rather than skip, so CI cannot pass vacuously.
//!
//! CLAW_TEST_RUNTIME picks the runtime (default podman); CLAW_TEST_IMAGE the image (default the
//! Debian base image, which has sh, bash and perl but no claw-agent entrypoint).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use claw::infra::runtime::{
    self, ContainerSpec, Mount, Runtime, RuntimeKind, container_name, run_args,
};

const PIDS_LIMIT: u32 = 48;

fn runtime() -> Runtime {
    let choice = std::env::var("CLAW_TEST_RUNTIME").unwrap_or_else(|_| "podman".into());
    let kind = RuntimeKind::parse(&choice)
        .expect("CLAW_TEST_RUNTIME")
        .unwrap_or(RuntimeKind::Podman);
    let rt = runtime::check(kind).unwrap_or_else(|e| {
        panic!("sandbox tests need a real container runtime: {e}. Run `bin/setup-runtime` as root.")
    });
    let image = image();
    assert!(
        claw::ops::image::image_exists(kind, &image),
        "image {image} is missing for {kind}: run `bin/setup-runtime` (it pulls or builds it offline)"
    );
    rt
}

fn image() -> String {
    std::env::var("CLAW_TEST_IMAGE")
        .unwrap_or_else(|_| "docker.io/library/debian:bookworm-slim".into())
}

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    container_name("sandboxtest", &id).unwrap()
}

fn spec(script: &str, mounts: Vec<Mount>) -> ContainerSpec {
    ContainerSpec {
        name: unique_name(),
        image: image(),
        mounts,
        user: runtime::current_container_user(),
        memory: "256m".into(),
        cpus: "1".into(),
        pids_limit: PIDS_LIMIT,
        tmp_size: "16m".into(),
        env: vec![("LC_ALL".into(), "C".into())],
        workdir: Some("/tmp".into()),
        // The agent image's entrypoint is claw-agent; these probes are plain shell scripts.
        extra_args: vec!["--entrypoint".into(), "sh".into()],
        command: vec!["-c".into(), script.into()],
    }
}

/// Runs the script in a hardened container and returns its output; the script's own exit code
/// is checked by the caller through `out.status`.
fn run(script: &str, mounts: Vec<Mount>) -> Output {
    let rt = runtime();
    let args = run_args(rt, &spec(script, mounts)).args;
    Command::new(rt.kind.program())
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", rt.kind.program()))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn expect_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "container failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

#[test]
fn runs_as_non_root_without_capabilities() {
    let out = expect_ok(&run(
        "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status",
        vec![],
    ));
    let lines: Vec<&str> = out.lines().collect();
    let want_user = runtime::current_container_user();
    assert_eq!(format!("{}:{}", lines[0], lines[1]), want_user);
    assert_ne!(lines[0], "0", "the agent must not run as root");
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        let line = lines.iter().find(|l| l.starts_with(cap)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn has_no_network() {
    // A service on the host's loopback: the container must not reach it either.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "for t in 1.1.1.1/53 127.0.0.1/{port} 10.0.2.2/53; do \
           if timeout 3 bash -c \"exec 3<>/dev/tcp/${{t%/*}}/${{t#*/}}\" 2>/dev/null; \
           then echo \"reached $t\"; else echo \"refused $t\"; fi; \
         done; \
         echo routes $(tail -n +2 /proc/net/route | wc -l); \
         echo ifaces $(ls /sys/class/net | tr '\\n' ' ')"
    );
    let out = expect_ok(&run(&script, vec![]));
    assert!(!out.contains("reached"), "{out}");
    assert_eq!(out.matches("refused").count(), 3, "{out}");
    assert!(out.contains("routes 0"), "a default route exists: {out}");
    assert!(
        out.lines().any(|l| l == "ifaces lo"),
        "interfaces besides lo: {out}"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
}

#[test]
fn root_filesystem_is_read_only_and_tmp_is_a_small_tmpfs() {
    let script = "touch /etc/x 2>/dev/null && echo wrote-etc; \
                  touch /x 2>/dev/null && echo wrote-root; \
                  echo hi > /tmp/a && cat /tmp/a; \
                  dd if=/dev/zero of=/tmp/big bs=1M count=32 2>/dev/null || echo tmp-full; \
                  true";
    let out = expect_ok(&run(script, vec![]));
    assert!(!out.contains("wrote-"), "{out}");
    assert!(out.contains("hi\n"), "/tmp is not writable: {out}");
    assert!(
        out.contains("tmp-full"),
        "tmpfs size limit did not hold: {out}"
    );
}

#[test]
fn read_only_mount_cannot_be_written_and_rw_mount_is_owned_by_the_user() {
    let ro = tempfile::tempdir().unwrap();
    let rw = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("skill.md"), "read me\n").unwrap();
    // The container user is not the test's uid when the test runs as root.
    for d in [ro.path(), rw.path()] {
        chmod_777(d);
    }
    let mounts = vec![
        Mount {
            host: ro.path().into(),
            container: "/workspace/skills".into(),
            readonly: true,
        },
        Mount {
            host: rw.path().into(),
            container: "/workspace/group".into(),
            readonly: false,
        },
    ];
    let script = "cat /workspace/skills/skill.md; \
                  echo x > /workspace/skills/new 2>/dev/null && echo wrote-ro; \
                  rm /workspace/skills/skill.md 2>/dev/null && echo deleted-ro; \
                  echo out > /workspace/group/result && echo wrote-rw";
    let out = expect_ok(&run(script, mounts));
    assert!(out.contains("read me"), "{out}");
    assert!(
        !out.contains("wrote-ro") && !out.contains("deleted-ro"),
        "{out}"
    );
    assert!(out.contains("wrote-rw"), "{out}");
    assert!(!ro.path().join("new").exists());
    let meta = std::fs::metadata(rw.path().join("result")).unwrap();
    let want = runtime::current_container_user();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(format!("{}:{}", meta.uid(), meta.gid()), want);
}

fn chmod_777(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
}

#[test]
fn pids_limit_bounds_a_fork_bomb() {
    // perl's fork returns undef at once when the limit is hit (bash would retry for seconds).
    let script = "perl -e 'my $n = 0; for (1..500) { my $p = fork(); last unless defined $p; \
                  if ($p == 0) { sleep 20; exit 0 } $n++ } print \"forked $n\\n\"'";
    let started = Instant::now();
    let out = expect_ok(&run(script, vec![]));
    let n: u32 = out
        .trim()
        .strip_prefix("forked ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {out}"));
    assert!(n >= 10, "forking did not work at all: {n}");
    assert!(
        n < PIDS_LIMIT,
        "forked {n} processes past --pids-limit {PIDS_LIMIT}"
    );
    // Leftover sleepers die with the container instead of keeping the run alive.
    assert!(started.elapsed().as_secs() < 15, "{:?}", started.elapsed());
}

#[test]
fn container_start_time_median_of_ten() {
    let rt = runtime();
    let mut times = Vec::new();
    for _ in 0..10 {
        let args = run_args(rt, &spec("true", vec![])).args;
        let t = Instant::now();
        let st = Command::new(rt.kind.program())
            .args(&args)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        times.push(t.elapsed());
        assert!(st.success());
    }
    times.sort();
    let median = (times[4] + times[5]) / 2;
    eprintln!(
        "{} run --rm with claw's flags: median {:.0} ms, min {:.0} ms, max {:.0} ms",
        rt.kind,
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[9].as_secs_f64() * 1e3
    );
    // Generous: the target is 0.5 s; this only catches a runtime that is badly misconfigured.
    assert!(median.as_secs_f64() < 3.0, "median start {median:?}");
}

#[test]
fn stray_container_is_listed_by_prefix_and_stopped() {
    let rt = runtime();
    let s = spec("sleep 60", vec![]);
    let name = s.name.clone();
    let mut child = Command::new(rt.kind.program())
        .args(run_args(rt, &s).args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let list = || {
        let out = Command::new(rt.kind.program())
            .args(runtime::list_args(rt.kind, "claw-sandboxtest-"))
            .output()
            .unwrap();
        runtime::parse_list(&String::from_utf8_lossy(&out.stdout), "claw-sandboxtest-")
    };
    let started = Instant::now();
    while !list().contains(&name) {
        assert!(started.elapsed().as_secs() < 10, "{name} never listed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let st = Command::new(rt.kind.program())
        .args(runtime::stop_args(rt.kind, &name, 1))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let exit = child.wait().unwrap();
    assert!(!exit.success(), "stopped container reported success");
    assert!(started.elapsed().as_secs() < 15);
    // --rm removed it; rm -f of a missing container must not be needed but must not hang either.
    let _ = Command::new(rt.kind.program())
        .args(runtime::rm_args(rt.kind, &name))
        .stderr(Stdio::null())
        .status();
    assert!(!list().contains(&name));
}
