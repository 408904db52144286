use super::*;

fn spec() -> ContainerSpec {
    ContainerSpec {
        name: "claw-main-42".into(),
        image: "claw-agent:latest".into(),
        mounts: vec![
            Mount {
                host: "/h/groups/main".into(),
                container: "/workspace/group".into(),
                readonly: false,
            },
            Mount {
                host: "/h/skills".into(),
                container: "/workspace/skills".into(),
                readonly: true,
            },
        ],
        user: "1001:1001".into(),
        memory: "512m".into(),
        cpus: "1".into(),
        pids_limit: 128,
        tmp_size: "64m".into(),
        env: vec![("TZ".into(), "UTC".into())],
        workdir: Some("/workspace/group".into()),
        extra_args: vec![],
        command: vec![],
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn run_args_per_runtime() {
    let common = "run --rm -i --name claw-main-42 --pull=never --network none --cap-drop ALL \
        --security-opt no-new-privileges --read-only \
        --tmpfs /tmp:rw,nosuid,nodev,size=64m,mode=1777 --pids-limit 128 --memory 512m --cpus 1 \
        --user 1001:1001";
    let mounts = "-v /h/groups/main:/workspace/group -v /h/skills:/workspace/skills:ro \
        -e TZ=UTC -w /workspace/group claw-agent:latest";
    let cases = [
        (RuntimeKind::Docker, false, format!("{common} {mounts}"), 0),
        (RuntimeKind::Podman, false, format!("{common} {mounts}"), 0),
        (
            RuntimeKind::Podman,
            true,
            format!("{common} --userns=keep-id {mounts}"),
            0,
        ),
        (
            RuntimeKind::AppleContainer,
            false,
            "run --rm -i --name claw-main-42 --tmpfs /tmp --memory 512m --cpus 1 --user 1001:1001 \
             --mount type=bind,source=/h/groups/main,target=/workspace/group \
             --mount type=bind,source=/h/skills,target=/workspace/skills,readonly \
             -e TZ=UTC -w /workspace/group claw-agent:latest"
                .to_string(),
            6,
        ),
    ];
    for (kind, rootless, want, ngaps) in cases {
        let got = run_args(Runtime { kind, rootless }, &spec());
        assert_eq!(got.args, words(&want), "{kind} rootless={rootless}");
        assert_eq!(got.gaps.len(), ngaps, "{kind}: {:?}", got.gaps);
    }
}

#[test]
fn apple_gaps_name_each_missing_flag() {
    let got = run_args(
        Runtime {
            kind: RuntimeKind::AppleContainer,
            rootless: false,
        },
        &spec(),
    );
    for flag in [
        "--network none",
        "--cap-drop",
        "no-new-privileges",
        "--read-only",
        "--pids-limit 128",
        "tmpfs size",
    ] {
        assert!(
            got.gaps.iter().any(|g| g.contains(flag)),
            "no gap mentions {flag}: {:?}",
            got.gaps
        );
        assert!(!got.args.iter().any(|a| a.contains("pids") || a == "ALL"));
    }
}

#[test]
fn command_and_extra_args_surround_the_image() {
    let mut s = spec();
    s.extra_args = vec!["--label".into(), "claw=1".into()];
    s.command = vec!["sh".into(), "-c".into(), "echo a b".into()];
    let rt = Runtime {
        kind: RuntimeKind::Docker,
        rootless: false,
    };
    let args = run_args(rt, &s).args;
    let img = args.iter().position(|a| a == "claw-agent:latest").unwrap();
    assert_eq!(&args[img - 2..img], ["--label", "claw=1"]);
    // The command stays one argument per element: no shell splitting.
    assert_eq!(&args[img + 1..], ["sh", "-c", "echo a b"]);
}

#[test]
fn lifecycle_args_per_runtime() {
    use RuntimeKind::*;
    let cases: [(RuntimeKind, Vec<String>, &str); 9] = [
        (
            Docker,
            stop_args(Docker, "claw-a-1", 5),
            "stop -t 5 claw-a-1",
        ),
        (
            Podman,
            stop_args(Podman, "claw-a-1", 5),
            "stop -t 5 claw-a-1",
        ),
        (
            AppleContainer,
            stop_args(AppleContainer, "claw-a-1", 5),
            "stop -t 5 claw-a-1",
        ),
        (Docker, kill_args(Docker, "claw-a-1"), "kill claw-a-1"),
        (Podman, rm_args(Podman, "claw-a-1"), "rm -f claw-a-1"),
        (
            AppleContainer,
            rm_args(AppleContainer, "claw-a-1"),
            "delete --force claw-a-1",
        ),
        (
            Podman,
            list_args(Podman, "claw-"),
            "ps -a --filter name=claw- --format {{.Names}}",
        ),
        (
            Docker,
            list_args(Docker, "claw-"),
            "ps -a --filter name=claw- --format {{.Names}}",
        ),
        (
            AppleContainer,
            list_args(AppleContainer, "claw-"),
            "list --all --quiet",
        ),
    ];
    for (kind, got, want) in cases {
        assert_eq!(got, words(want), "{kind}");
    }
}

#[test]
fn parse_list_keeps_only_valid_claw_names() {
    let out = "claw-main-42\n  claw-team_a-7  \nother\nclaw-Bad-1\nclaw-x-\n\nclaw-dev-team-9\n";
    assert_eq!(
        parse_list(out, "claw-"),
        ["claw-main-42", "claw-team_a-7", "claw-dev-team-9"]
    );
    assert_eq!(parse_list(out, "claw-main-"), ["claw-main-42"]);
}

#[test]
fn names() {
    let cases = [
        ("main", "42", Ok("claw-main-42")),
        ("team-a", "1a2b", Ok("claw-team-a-1a2b")),
        ("team_a", "7", Ok("claw-team_a-7")),
        ("Main", "1", Err("folder")),
        ("", "1", Err("folder")),
        ("a b", "1", Err("folder")),
        ("a;rm", "1", Err("folder")),
        ("../x", "1", Err("folder")),
        ("main", "", Err("id")),
        ("main", "4-2", Err("id")),
        ("main", "x y", Err("id")),
    ];
    for (folder, id, want) in cases {
        let got = container_name(folder, id);
        match want {
            Ok(n) => assert_eq!(got.as_deref(), Ok(n), "{folder} {id}"),
            Err(part) => {
                let e = got.expect_err(&format!("{folder} {id} must be refused"));
                assert!(e.0.contains(part), "{e}");
            }
        }
    }
    assert_eq!(parse_name("claw-team-a-9"), Some(("team-a", "9")));
    assert_eq!(parse_name("docker-main-9"), None);
}

#[test]
fn user_choice() {
    let cases = [
        (0, 0, "1000:1000"),
        (1001, 100, "1001:100"),
        (1000, 1000, "1000:1000"),
    ];
    for (uid, gid, want) in cases {
        assert_eq!(container_user(uid, gid), want);
    }
}

#[test]
fn parse_choice() {
    assert_eq!(RuntimeKind::parse("auto"), Ok(None));
    assert_eq!(
        RuntimeKind::parse(" Podman "),
        Ok(Some(RuntimeKind::Podman))
    );
    assert_eq!(
        RuntimeKind::parse("container"),
        Ok(Some(RuntimeKind::AppleContainer))
    );
    assert!(RuntimeKind::parse("lxc").unwrap_err().0.contains("lxc"));
}

#[test]
fn causes_name_the_fix() {
    for (err, fix) in [
        (
            "cannot start docker: No such file or directory (os error 2); is the container runtime installed?",
            "claw doctor",
        ),
        (
            "the container runtime could not start the container (Error: claw-agent:latest: image not known)",
            "claw image build",
        ),
        ("cannot start the proxy: address in use", "claw logs"),
        ("something odd", "claw doctor"),
    ] {
        assert!(super::start_failure(err).1.contains(fix), "{err}");
    }
}
