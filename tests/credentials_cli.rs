//! `claw secret`, `claw ca` and `claw group set --credential` as the owner uses them: values go
//! in through stdin and never come out; bad input is refused with a usage error and changes
//! nothing; the CA key stays 0600 and rotation replaces it.

#[path = "support/home.rs"]
mod home;

use home::TestHome;
use std::os::unix::fs::PermissionsExt;

fn out(c: &mut assert_cmd::Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn secrets_go_in_by_stdin_and_only_names_come_out() {
    let h = TestHome::init();
    let file = h.root.join("secrets.env");
    h.claw()
        .args(["secret", "set", "github"])
        .write_stdin("ghp_SECRET_1\n")
        .assert()
        .success();
    h.claw()
        .args(["secret", "set", "github"])
        .write_stdin("ghp_SECRET_2")
        .assert()
        .success();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("github=").count(), 1, "{text}");
    assert!(text.contains("ghp_SECRET_2") && !text.contains("ghp_SECRET_1"));

    let (code, list, _) = out(h.claw().args(["secret", "list"]));
    assert_eq!(code, 0);
    assert!(
        list.contains("github") && !list.contains("SECRET"),
        "{list}"
    );
    h.claw()
        .args(["group", "set", "main", "--credential"])
        .arg("github=api.github.com,uploads.github.com:Authorization:Bearer")
        .assert()
        .success();
    let (_, json, _) = out(h.claw().args(["secret", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"name": "github", "groups": ["main"]}])
    );

    // Bad input: refused with exit 2, the file unchanged.
    for (args, stdin) in [
        (vec!["secret", "set", "9bad"], "x"),
        (vec!["secret", "set", "a=b"], "x"),
        (vec!["secret", "set", "empty"], "\n"),
        (vec!["secret", "set", "two"], "line1\nline2\n"),
    ] {
        let (code, _, err) = out(h.claw().args(&args).write_stdin(stdin));
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let (code, _, err) = out(h.claw().args(["secret", "rm", "nope"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("claw secret list"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    h.claw().args(["secret", "rm", "github"]).assert().success();
    assert!(!std::fs::read_to_string(&file).unwrap().contains("github"));
    // The audit names the secret, never its value.
    let db = h.db();
    let details: Vec<String> = db
        .prepare("SELECT kind || ' ' || detail FROM audit WHERE kind LIKE 'secret.%' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(details.len(), 3, "{details:?}");
    assert!(details.iter().all(|d| !d.contains("SECRET")));
}

#[test]
fn credential_bindings_are_validated_shown_and_removed() {
    let h = TestHome::init();
    for bad in [
        "github",
        "github=api.github.com",
        "github=*.github.com:Authorization:Bearer",
        "github=api.github.com:443:Authorization:Bearer",
        "github=api.github.com:Host",
        "github=api.github.com:Authorization:Bearer token",
    ] {
        let (code, _, err) = out(h.claw().args(["group", "set", "main", "--credential", bad]));
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.contains("credential") || err.contains("secret name"),
            "{bad}: {err}"
        );
    }
    h.claw()
        .args([
            "group",
            "set",
            "main",
            "--credential",
            "github=api.github.com:Authorization:Bearer",
        ])
        .args(["--credential", "weather=api.weather.example:X-Api-Key"])
        .assert()
        .success();
    let (_, show, _) = out(h.claw().args(["group", "show", "main"]));
    assert!(
        show.contains("credential:       github=api.github.com:authorization:Bearer (container sees $GITHUB_TOKEN)"),
        "{show}"
    );
    assert!(
        show.contains("weather=api.weather.example:x-api-key (container sees $WEATHER_TOKEN)"),
        "{show}"
    );
    // Re-binding replaces; `NAME=` removes.
    h.claw()
        .args([
            "group",
            "set",
            "main",
            "--credential",
            "github=github.com:Authorization:Basic",
        ])
        .args(["--credential", "weather="])
        .assert()
        .success();
    let (_, json, _) = out(h.claw().args(["group", "show", "main", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["config"]["credentials"],
        serde_json::json!([{"name": "github", "hosts": ["github.com"], "header": "authorization", "scheme": "Basic"}])
    );
}

#[test]
fn the_ca_is_made_on_first_need_kept_private_and_rotated() {
    let h = TestHome::init();
    let (code, first, _) = out(h.claw().args(["ca", "show", "--json"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let key = std::path::PathBuf::from(v["key"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!first.contains("PRIVATE KEY"), "the key is never printed");
    let (_, again, _) = out(h.claw().args(["ca", "show", "--json"]));
    assert_eq!(first, again, "show does not replace the CA");
    h.claw().args(["ca", "rotate"]).assert().success();
    let (_, rotated, _) = out(h.claw().args(["ca", "show", "--json"]));
    let r: serde_json::Value = serde_json::from_str(&rotated).unwrap();
    assert_ne!(v["pem"], r["pem"]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = out(h.claw().args(["ca", "show"]));
    assert_ne!(code, 0);
    assert!(err.contains("chmod 600"), "{err}");
}
