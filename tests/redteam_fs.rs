//! Red team, end to end: a non-main group's agent plants links and FIFOs in the trees it can
//! write, and swaps a folder for a link to a host folder while the host prepares the next run.
//! The host must never create, write or chown anything outside the claw home, and runs must keep
//! working. Each attack runs for real inside the group's container (a probe script as the
//! entrypoint, or a second container of the same group started here with the same mounts).

#[path = "support/e2e.rs"]
mod e2e;

use e2e::{Env, PROBE_HEAD, image, probe_report, runtime};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Path, uid, gid, mode and content (files) of each entry.
type Print = Vec<(PathBuf, u32, u32, u32, Option<Vec<u8>>)>;

/// Owner, mode and content of everything at and under `p`, links not followed.
fn fingerprint(p: &Path) -> Print {
    let m = std::fs::symlink_metadata(p).unwrap();
    let content = m.is_file().then(|| std::fs::read(p).unwrap());
    let mut out = vec![(p.to_path_buf(), m.uid(), m.gid(), m.mode(), content)];
    if m.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            out.extend(fingerprint(&n));
        }
    }
    out
}

/// A host folder outside the claw home, with a file and a subfolder, owned by whoever runs the
/// test (root here), plus a host file beside it.
struct Victim {
    dir: PathBuf,
    file: PathBuf,
}

impl Victim {
    fn new(env: &Env) -> Victim {
        let dir = env.dir.path().join("host-dir");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("precious.txt"), "HOST DATA").unwrap();
        std::fs::write(dir.join("sub/deep.txt"), "DEEP").unwrap();
        let file = env.dir.path().join("host-file.txt");
        std::fs::write(&file, "ORIGINAL").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        Victim { dir, file }
    }
    fn state(&self) -> (Print, Print) {
        (fingerprint(&self.dir), fingerprint(&self.file))
    }
}

/// Install `body` as the group's probe, queue a message and run the group once.
fn run_probe(env: &mut Env, folder: &str, chat: &str, body: &str) -> serde_json::Value {
    env.install_probe(folder, &format!("{PROBE_HEAD}{body}\nfinish\n"));
    run_again(env, folder, chat)
}

/// Queue a message and run the group once more with the probe already installed.
fn run_again(env: &Env, folder: &str, chat: &str) -> serde_json::Value {
    let before = env.outbox(chat).len();
    env.say(chat, "probe");
    env.claw().args(["run-group", folder]).assert().success();
    assert_eq!(
        env.outbox(chat).len(),
        before + 1,
        "the run sent no result; logs:\n{}",
        env.all_logs()
    );
    probe_report(env, chat)
}

#[test]
fn a_memory_file_linked_to_a_host_path_is_never_written_through() {
    let mut env = Env::new();
    let victim = Victim::new(&env);
    let missing = env.dir.path().join("created-by-host");
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    env.add_group("tg:2", "beta", &["--no-trigger"]);
    let before = victim.state();
    // alpha points its memory at a host path that does not exist, beta at an existing host file.
    for (folder, chat, target) in [("alpha", "tg:1", &missing), ("beta", "tg:2", &victim.file)] {
        let r = run_probe(
            &mut env,
            folder,
            chat,
            &format!(
                r#"ln -sfn '{}' /workspace/group/AGENTS.md && report planted "$(readlink /workspace/group/AGENTS.md)""#,
                target.display()
            ),
        );
        assert_eq!(r["planted"], target.display().to_string(), "{r}");
    }
    // Everything that creates folders or memory files runs again.
    run_again(&env, "alpha", "tg:1");
    run_again(&env, "beta", "tg:2");
    env.add_group("tg:3", "gamma", &["--no-trigger"]);
    env.claw().arg("init").assert().success();
    env.claw().arg("ipc-apply").assert().success();

    assert!(
        std::fs::symlink_metadata(&missing).is_err(),
        "the host created {} through alpha's AGENTS.md link",
        missing.display()
    );
    assert_eq!(victim.state(), before, "a host file or folder changed");
    for folder in ["alpha", "beta"] {
        let m = std::fs::symlink_metadata(env.group_dir(folder).join("AGENTS.md")).unwrap();
        assert!(
            m.file_type().is_symlink(),
            "{folder}: the agent's link was touched"
        );
    }
    assert!(env.group_dir("gamma").join("AGENTS.md").is_file());
}

#[test]
fn planted_links_and_fifos_change_nothing_outside_and_runs_still_work() {
    let mut env = Env::new();
    let victim = Victim::new(&env);
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    let before = victim.state();
    let (h, f) = (victim.dir.display(), victim.file.display());
    let r = run_probe(
        &mut env,
        "alpha",
        "tg:1",
        &format!(
            r#"
H='{h}'; F='{f}'
report seen "$(for p in messages tasks replies current_tasks.json; do stat -c %F "/workspace/ipc/$p"; done | tr '\n' ,)"
# Counted as planted when the plant succeeded: run-group polls IPC every second and may displace
# a plant before a later `ls` could see it (that is the defence working, not a failed plant).
n=0
rm -rf /workspace/ipc/messages && ln -s "$H" /workspace/ipc/messages && n=$((n+1))
rm -rf /workspace/ipc/tasks && mkfifo /workspace/ipc/tasks && n=$((n+1))
rm -rf /workspace/ipc/replies && ln -s "$F" /workspace/ipc/replies && n=$((n+1))
rm -f /workspace/ipc/current_tasks.json && ln -s "$F" /workspace/ipc/current_tasks.json && n=$((n+1))
ln -sfn "$H" /home/agent/.claw/dirlink; mkfifo /home/agent/.claw/fifo 2>/dev/null
ln -sfn "$H" /workspace/group/dirlink; mkfifo /workspace/group/pipe 2>/dev/null
mkdir -p /workspace/group/sub && ln -sfn "$F" /workspace/group/sub/filelink
report planted "$n""#
        ),
    );
    let fresh = "directory,directory,directory,regular file,";
    assert_eq!(r["seen"], fresh, "{r}");
    assert_eq!(
        r["planted"], "4",
        "the probe could not plant everything: {r}"
    );
    env.claw().arg("ipc-apply").assert().success();
    // The next run prepares the same trees (folders, snapshots, ownership) and still works; the
    // agent finds real folders and a real snapshot again, and plants its links once more.
    let r = run_again(&env, "alpha", "tg:1");
    assert_eq!(
        r["seen"], fresh,
        "the host left a planted link or FIFO in place: {r}"
    );
    assert_eq!(r["planted"], "4", "{r}");
    env.claw().arg("ipc-apply").assert().success();
    assert_eq!(victim.state(), before, "a host file or folder changed");
    let (status, ..) = env.last_run("alpha");
    assert_eq!(status, "succeeded");
}

/// A second container of the group, started with the group's own mounts, that exchanges real
/// folders and links to a host folder (`renameat2(RENAME_EXCHANGE)`) as fast as it can. Removed
/// when dropped.
struct Swapper {
    name: String,
}

const SWAPPER: &str = r#"
import ctypes, os, sys
host = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
pairs = []
for base in ["/workspace/group/race", "/home/agent/.claw/race", "/workspace/ipc/race"]:
    for i in range(4):
        d, l = f"{base}/d{i}", f"{base}/l{i}"
        os.makedirs(d + "/inner", exist_ok=True)
        for j in range(20):
            open(f"{d}/f{j}", "w").close()
            open(f"{d}/inner/g{j}", "w").close()
        if not os.path.lexists(l):
            os.symlink(host, l)
        pairs.append((d.encode(), l.encode()))
open("/workspace/group/race-ready", "w").close()
n = 0
while True:
    for d, l in pairs:
        if libc.renameat2(-100, d, -100, l, 2) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")
    n += len(pairs)
    if n % (len(pairs) * 2000) == 0:
        with open("/workspace/group/race-count.tmp", "w") as f:
            f.write(str(n))
        os.rename("/workspace/group/race-count.tmp", "/workspace/group/race-count")
"#;

impl Swapper {
    fn start(env: &Env, folder: &str, host_dir: &Path) -> Swapper {
        let name = format!("redteam-swap-{}-{folder}", std::process::id());
        let h = &env.root;
        let v = |host: PathBuf, at: &str| format!("{}:{at}", host.display());
        let out = Command::new(runtime())
            .args(["run", "-d", "--rm", "--name", &name])
            .args(["--network", "none", "--user", "1000:1000", "--read-only"])
            .args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges"])
            .args(["--pids-limit", "32", "--memory", "128m"])
            .args(["-v", &v(h.join("groups").join(folder), "/workspace/group")])
            .args([
                "-v",
                &v(h.join("sessions").join(folder), "/home/agent/.claw"),
            ])
            .args(["-v", &v(h.join("ipc").join(folder), "/workspace/ipc")])
            .args(["--entrypoint", "python3", &image(), "-c", SWAPPER])
            .arg(host_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot start the swapper container: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sw = Swapper { name };
        let ready = env.group_dir(folder).join("race-ready");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the swapper never got ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        sw
    }

    fn running(&self) -> bool {
        let out = Command::new(runtime())
            .args(["inspect", "--format", "{{.State.Running}}", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = Command::new(runtime())
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

#[test]
fn swapping_a_folder_for_a_host_link_during_preparation_never_chowns_the_host() {
    if unsafe { libc::geteuid() } != 0 {
        panic!("run as root: run-group only changes ownership when it runs as root");
    }
    let mut env = Env::new();
    let victim = Victim::new(&env);
    env.add_group("tg:1", "alpha", &["--no-trigger"]);
    // Thirty runs in a row: lift the non-main runs-per-hour limit this test is not about.
    env.claw()
        .args(["group", "set", "alpha", "--runs-per-hour", "0"])
        .assert()
        .success();
    // A quick probe: every run prepares the trees (create, snapshot, chown) and exits at once.
    run_probe(&mut env, "alpha", "tg:1", "report ok yes");
    let before = victim.state();
    let swapper = Swapper::start(&env, "alpha", &victim.dir);
    // The old path-based walk lost this race in about one run in five here; thirty runs make a
    // miss of that bug unlikely (about 0.1%), while the descriptor walk cannot lose it at all.
    const RUNS: usize = 30;
    for i in 0..RUNS {
        assert!(swapper.running(), "the swapper died before run {i}");
        run_again(&env, "alpha", "tg:1");
        assert_eq!(
            victim.state(),
            before,
            "run {i}: the host folder changed owner or content while the agent swapped links"
        );
    }
    assert!(swapper.running(), "the swapper died during the runs");
    let count: u64 = std::fs::read_to_string(env.group_dir("alpha").join("race-count"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    drop(swapper);
    assert!(
        count >= 50_000,
        "the swapper made only {count} exchanges: the race was not really run"
    );
    assert_eq!(victim.state(), before);
    eprintln!("{RUNS} run-group preparations against {count}+ exchanges: host folder unchanged");
}
