use super::*;
use std::fs;
use std::os::unix::fs::symlink;

struct Env {
    _dir: tempfile::TempDir,
    home: PathBuf,
    host: HostContext,
}

/// A fake owner home with projects, a .ssh dir, a claw home and symlinks between them.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().canonicalize().unwrap();
    for d in [
        "projects/app",
        "projects/my:app",
        "projects/api-credentials",
        "shared/docs",
        "other",
        ".ssh",
        ".claw/groups/main",
    ] {
        fs::create_dir_all(home.join(d)).unwrap();
    }
    symlink(home.join(".ssh"), home.join("projects/keys")).unwrap();
    symlink(home.join("other"), home.join("projects/escape")).unwrap();
    symlink(home.join("projects/app"), home.join("other/app-link")).unwrap();
    symlink(home.join(".claw"), home.join("projects/clawhome")).unwrap();
    // What an agent could plant in its group folder, pointing at an allowed root.
    symlink(
        home.join("projects/app"),
        home.join(".claw/groups/main/planted"),
    )
    .unwrap();
    let host = HostContext {
        user_home: home.clone(),
        protected: vec![home.join(".claw")],
        allowlist_error: None,
    };
    Env {
        _dir: dir,
        home,
        host,
    }
}

fn allowlist(non_main_ro: bool) -> Allowlist {
    serde_json::from_value(serde_json::json!({
        "allowedRoots": [
            {"path": "~/projects", "allowReadWrite": true, "description": "code"},
            {"path": "~/shared", "description": "read only"},
            {"path": "~", "allowReadWrite": false},
        ],
        "blockedPatterns": ["secret-stuff"],
        "nonMainReadOnly": non_main_ro,
    }))
    .unwrap()
}

fn req(path: &str, name: Option<&str>, readonly: bool) -> ExtraMountRequest {
    ExtraMountRequest {
        host_path: path.into(),
        name: name.map(String::from),
        readonly,
    }
}

fn fixed(e: &Env) -> FixedPaths {
    FixedPaths::for_home(
        &e.home.join(".claw"),
        "team",
        &e.home.join(".claw/skills"),
        &e.home.join("run"),
    )
}

#[test]
fn fixed_mounts_main_and_other() {
    let p = FixedPaths::for_home(Path::new("/h"), "team", Path::new("/s"), Path::new("/r"));
    let want = |global_ro| {
        vec![
            ("/h/groups/team", "/workspace/group", false),
            ("/h/groups/global", "/workspace/global", global_ro),
            ("/h/sessions/team", "/home/agent/.claw", false),
            ("/h/ipc/team", "/workspace/ipc", false),
            ("/s", "/workspace/skills", true),
            ("/r", "/run/claw", true),
        ]
    };
    for (is_main, global_ro) in [(true, false), (false, true)] {
        let got: Vec<_> = fixed_mounts(&p, is_main)
            .into_iter()
            .map(|m| {
                (
                    m.host.to_string_lossy().into_owned(),
                    m.container,
                    m.readonly,
                )
            })
            .collect();
        let want: Vec<_> = want(global_ro)
            .into_iter()
            .map(|(h, c, r)| (h.to_string(), c.to_string(), r))
            .collect();
        assert_eq!(got, want, "main={is_main}");
    }
}

#[test]
fn extra_mount_table() {
    let e = env();
    let h = |p: &str| e.home.join(p).to_string_lossy().into_owned();
    // (request, is_main, nonMainReadOnly, Ok(readonly) or Err(reason fragment))
    let cases: Vec<(ExtraMountRequest, bool, bool, Result<bool, &str>)> = vec![
        (req("~/projects/app", None, true), false, true, Ok(true)),
        (req("~/projects/app", None, false), true, true, Ok(false)),
        (req("~/projects/app", None, false), false, true, Ok(true)),
        (req("~/projects/app", None, false), false, false, Ok(false)),
        (req("~/shared/docs", None, false), true, true, Ok(true)),
        (
            req(&h("projects/app"), Some("code"), true),
            false,
            true,
            Ok(true),
        ),
        // symlink into .ssh: the request looks harmless, the target is not
        (
            req("~/projects/keys", None, true),
            true,
            true,
            Err("`.ssh`"),
        ),
        (req("~/.ssh", Some("k"), true), true, true, Err("`.ssh`")),
        (
            req("~/projects/api-credentials", None, true),
            true,
            true,
            Err("`credentials`"),
        ),
        (
            req("~/projects/app/../../.ssh", Some("x"), true),
            true,
            true,
            Err("`.ssh`"),
        ),
        // a symlink out of an allowed root lands under the `~` root: read-only
        (
            req("~/projects/escape", Some("o"), false),
            true,
            true,
            Ok(true),
        ),
        (
            req("~/other/app-link", Some("a"), false),
            true,
            true,
            Ok(false),
        ),
        (
            req("~/projects/clawhome", Some("c"), true),
            true,
            true,
            Err("claw's own files"),
        ),
        (
            req("~", Some("all"), true),
            true,
            true,
            Err("claw's own files"),
        ),
        (
            req("~/projects/missing", None, true),
            true,
            true,
            Err("cannot resolve"),
        ),
        (
            req("projects/app", Some("rel"), true),
            true,
            true,
            Err("not absolute"),
        ),
        (
            req("/etc", Some("etc"), true),
            true,
            true,
            Err("under no allowed root"),
        ),
        (
            req("~/projects/my:app", Some("m"), true),
            true,
            true,
            Err("`:`"),
        ),
        (
            req("~/projects/app", Some(""), true),
            true,
            true,
            Err("empty"),
        ),
        (
            req("~/projects/app", Some("../x"), true),
            true,
            true,
            Err("`..`"),
        ),
        (
            req("~/projects/app", Some("/abs"), true),
            true,
            true,
            Err("starts with `/`"),
        ),
        (
            req("~/projects/app", Some("a:b"), true),
            true,
            true,
            Err("':'"),
        ),
        (
            req("~/projects/app", Some("a,readonly=false"), true),
            true,
            true,
            Err("','"),
        ),
        (
            req("~/projects/secret-stuff", None, true),
            true,
            true,
            Err("`secret-stuff`"),
        ),
        (
            req("~/.claw/groups/main/planted", Some("p"), true),
            true,
            true,
            Err("passes through"),
        ),
    ];
    for (r, is_main, non_main_ro, want) in cases {
        let allow = allowlist(non_main_ro);
        let got = plan(
            &fixed(&e),
            is_main,
            std::slice::from_ref(&r),
            Some(&allow),
            &e.host,
        );
        let extra: Vec<_> = got.mounts[6..].to_vec();
        match want {
            Ok(ro) => {
                assert!(got.refusals.is_empty(), "{r:?}: {:?}", got.refusals);
                assert_eq!(extra.len(), 1, "{r:?}");
                assert_eq!(extra[0].readonly, ro, "{r:?} main={is_main}");
                assert!(extra[0].container.starts_with("/workspace/extra/"));
                assert!(!extra[0].host.to_string_lossy().contains(".ssh"));
            }
            Err(frag) => {
                assert!(extra.is_empty(), "{r:?} must be refused, got {extra:?}");
                assert_eq!(got.refusals.len(), 1);
                assert!(
                    got.refusals[0].reason.contains(frag),
                    "{r:?}: reason {:?} lacks {frag}",
                    got.refusals[0].reason
                );
            }
        }
    }
}

#[test]
fn symlink_resolved_before_mounting() {
    let e = env();
    let allow = allowlist(true);
    let got = plan(
        &fixed(&e),
        true,
        &[req("~/other/app-link", Some("a"), true)],
        Some(&allow),
        &e.host,
    );
    // The runtime gets the real path, so a later swap of the link cannot redirect the mount.
    assert_eq!(got.mounts[6].host, e.home.join("projects/app"));
}

#[test]
fn no_allowlist_means_no_extras_but_fixed_stay() {
    let e = env();
    let got = plan(
        &fixed(&e),
        true,
        &[req("~/projects/app", None, true)],
        None,
        &e.host,
    );
    assert_eq!(got.mounts.len(), 6);
    assert!(got.refusals[0].reason.contains("no mount allowlist"));
    // A file that exists but is malformed says so, not that there is none.
    let host = HostContext {
        allowlist_error: Some("mount allowlist /x.json is malformed: expected value".into()),
        ..e.host.clone()
    };
    let got = plan(
        &fixed(&e),
        true,
        &[req("~/projects/app", None, true)],
        None,
        &host,
    );
    assert!(
        got.refusals[0].reason.contains("is malformed"),
        "{:?}",
        got.refusals
    );
}

#[test]
fn duplicate_names_refused() {
    let e = env();
    let allow = allowlist(true);
    let got = plan(
        &fixed(&e),
        true,
        &[
            req("~/projects/app", Some("x"), true),
            req("~/shared/docs", Some("x"), true),
        ],
        Some(&allow),
        &e.host,
    );
    assert_eq!(got.mounts.len(), 7);
    assert!(got.refusals[0].reason.contains("already uses"));
}

#[test]
fn allowlist_file_loading() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mount-allowlist.json");
    assert_eq!(load_allowlist(&p), Ok(None));
    fs::write(&p, r#"{"allowedRoots":[{"path":"~/p"}]}"#).unwrap();
    let a = load_allowlist(&p).unwrap().unwrap();
    assert!(a.non_main_read_only, "defaults to read-only for non-main");
    assert!(!a.allowed_roots[0].allow_read_write);
    fs::write(&p, "{not json").unwrap();
    assert!(load_allowlist(&p).unwrap_err().contains("is malformed"));
}
