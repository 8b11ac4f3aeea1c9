//! The admin side of `serve`: the admin token (created on first start, private, rotated
//! without a restart), the admin API (`/admin/api/v1/`, 401 without the token, device paths
//! still open; groups and rollouts over HTTP), the CLI against a remote server giving the
//! same output as on the local data dir (rollouts started remotely run by `serve`'s engine),
//! and `/metrics`.

use crate::harness::{eventually, Fleet, Server};
use serde_json::{json, Value};
use std::time::Duration;

fn token_file(f: &Fleet) -> std::path::PathBuf {
    f.data().join("admin-token")
}

#[test]
fn serve_creates_a_private_token_and_says_where_not_what() {
    let f = Fleet::smartcharger();
    assert!(!token_file(&f).exists(), "no token before serve");
    let server = f.serve();
    let token = std::fs::read_to_string(token_file(&f)).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(token_file(&f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let log = server.log().join("\n");
    assert!(log.contains("admin-token"), "serve says where:\n{log}");
    assert!(!log.contains(token), "the token itself is never logged");
    assert_eq!(f.ok(&["token", "show"]).trim(), token);
    drop(server);

    // A second start keeps the token, and does not announce a creation again.
    let server = f.serve();
    assert_eq!(
        std::fs::read_to_string(token_file(&f)).unwrap().trim(),
        token
    );
    assert_eq!(server.log_count("created the admin token"), 0);
}

#[test]
fn token_show_and_rotate() {
    let f = Fleet::new();
    let first = f.ok(&["token", "show"]);
    let first = first.trim();
    assert_eq!(first.len(), 64);
    assert_eq!(
        f.ok(&["token", "show"]).trim(),
        first,
        "show does not change it"
    );
    let said = f.ok(&["token", "rotate"]);
    assert!(said.contains("admin-token"), "{said}");
    assert!(!said.contains(first));
    let second = f.ok(&["token", "show"]);
    assert_ne!(second.trim(), first);
    assert_eq!(second.trim().len(), 64);
    // A token file that is not a token is an error that says how to fix it, not a panic.
    std::fs::write(token_file(&f), "not a token\n").unwrap();
    let err = f.fails(&["token", "show"]);
    assert!(err.contains("token rotate"), "{err}");
}

/// Every route of the admin API with its path fields filled in (`{mac}`, `{name}`, `{group}`
/// and `{rollout}` with what the test fleet has; any other field with `x`), and whether those
/// fields name something that exists.
fn admin_routes() -> Vec<(&'static str, String, bool)> {
    mpfleet::ops::routes()
        .into_iter()
        .map(|r| {
            let mut path = r
                .path
                .replace("{mac}", "deadbeef1234")
                .replace("{name}", "sensorclass")
                .replace("{group}", "greenhouse")
                .replace("{rollout}", "greenhouse");
            let known = !path.contains('{');
            while let (Some(a), Some(b)) = (path.find('{'), path.find('}')) {
                path.replace_range(a..=b, "x");
            }
            (r.verb.as_str(), format!("admin/api/v1{path}"), known)
        })
        .collect()
}

#[test]
fn the_docs_list_every_route() {
    let docs = include_str!("../docs/admin-api.md");
    for r in mpfleet::ops::routes() {
        let row = format!("| {} | `{}` |", r.verb.as_str(), r.path);
        assert!(docs.contains(&row), "docs/admin-api.md has no row {row}");
    }
}

#[test]
fn every_admin_request_needs_the_token_and_device_paths_do_not() {
    let f = Fleet::smartcharger();
    f.ok(&["device", "set", "deadbeef1234", "--app", "smartcharger"]);
    f.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    f.ok(&["device", "set", "deadbeef5678", "--group", "greenhouse"]);
    f.ok(&["rollout", "start", "greenhouse", "--to", "sensorclass=2"]);
    let groups_and_rollouts = |f: &Fleet| {
        (
            f.json(&["group", "list", "--json"]),
            f.json(&["group", "show", "greenhouse", "--json"]),
            f.json(&["rollout", "show", "greenhouse", "--json"]),
        )
    };
    let before = groups_and_rollouts(&f);
    assert_eq!(before.2["state"], "running");
    let server = f.serve();
    let token = server.token();
    let wrong = "0".repeat(64);
    let mut routes = admin_routes();
    routes.push((
        "POST",
        "admin/api/v1/modules/sensorclass/versions".into(),
        false,
    ));
    routes.push(("GET", "admin/api/v1/no/such/thing".into(), false));
    // `/admin/` is the dashboard (open to view: tests/dashboard.rs); the rest of `/admin`
    // is not.
    routes.push(("GET", "admin/nothing".into(), false));
    routes.push(("GET", "admin".into(), false));
    routes.push(("GET", "metrics".into(), false));
    for (method, path, known) in &routes {
        for (what, t) in [
            ("no token", None),
            ("a wrong token", Some(wrong.as_str())),
            ("an empty token", Some("")),
            (
                "the token with a character changed",
                Some(&*format!("{}0", &token[..63])),
            ),
        ] {
            let body = (*method == "POST" || *method == "PUT").then_some("{}");
            let r = server.admin(method, path, t, body);
            assert_eq!(r.status, 401, "{method} /{path} with {what}: {}", r.text());
            assert!(
                r.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("token")),
                "{method} /{path}: {}",
                r.text()
            );
        }
        if *method == "GET" && *known {
            let r = server.admin(method, path, Some(&token), None);
            assert_eq!(r.status, 200, "GET /{path} with the token: {}", r.text());
        }
    }
    // Nothing was changed by the refused writes.
    assert!(f.ok(&["device", "list"]).contains("deadbeef1234"));
    assert_eq!(groups_and_rollouts(&f), before);
    assert_eq!(
        f.ok(&["module", "show", "sensorclass", "--json"])
            .matches("\"version\"")
            .count(),
        2
    );
    // Device paths need no token.
    assert_eq!(server.get("v1/deadbeef1234.json").status, 200);
    assert_eq!(server.get("latestversions").status, 200);
    assert_eq!(server.get("sensorclass.py").status, 200);
    // The scheme is case-insensitive; a Basic header is not a bearer token.
    let r = server.admin("GET", "admin/api/v1/devices", Some(&token), None);
    assert_eq!(r.status, 200);
    let raw = |auth: &str| {
        ureq::get(&format!("{}admin/api/v1/devices", server.base))
            .set("Authorization", auth)
            .call()
            .map(|r| r.status())
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(s, _) => s,
                e => panic!("{e}"),
            })
    };
    assert_eq!(raw(&format!("bearer {token}")), 200);
    assert_eq!(raw(&format!("Basic {token}")), 401);
}

#[test]
fn a_rotated_token_takes_effect_without_a_restart() {
    let f = Fleet::smartcharger();
    let server = f.serve();
    let old = server.token();
    assert_eq!(
        server
            .admin("GET", "admin/api/v1/modules", Some(&old), None)
            .status,
        200
    );
    f.ok(&["token", "rotate"]);
    let new = server.token();
    assert_ne!(new, old);
    assert_eq!(
        server
            .admin("GET", "admin/api/v1/modules", Some(&old), None)
            .status,
        401
    );
    assert_eq!(
        server
            .admin("GET", "admin/api/v1/modules", Some(&new), None)
            .status,
        200
    );
    // The CLI with the old token says what to do.
    let r = f.run_env(
        &["--remote", &server.base, "module", "list"],
        &[("MPFLEET_TOKEN", &old)],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("MPFLEET_TOKEN"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
}

#[test]
fn the_admin_api_speaks_json() {
    let f = Fleet::smartcharger();
    let server = f.serve();
    let token = server.token();
    let t = Some(token.as_str());
    let r = server.admin(
        "PUT",
        "admin/api/v1/devices/DE:AD:BE:EF:12:34",
        t,
        Some(r#"{"app": "smartcharger", "modules": {"sensorclass": "1"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["mac"], "deadbeef1234");
    assert_eq!(r.json()["generation"], 1);
    assert_eq!(r.json()["desired"]["sensorclass"], "1");
    let r = server.admin("GET", "admin/api/v1/devices/deadbeef1234", t, None);
    assert_eq!(
        r.json()["resolved"]["modules"]["sensorclass"]["version"],
        "1"
    );
    // A publish with the file's bytes as the body.
    let r = ureq::post(&format!(
        "{}admin/api/v1/modules/sensorclass/versions?version=7",
        server.base
    ))
    .set("Authorization", &format!("Bearer {token}"))
    .send_bytes(b"x = 7\n")
    .unwrap();
    let published: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(published[0]["version"], "7", "{published}");
    assert_eq!(published[0]["latest"], true);
    assert!(f.ok(&["module", "show", "sensorclass"]).contains("\n7 "));
    // Errors: what does not exist is 404, what is malformed 400, each with a JSON message.
    for (method, path, body, status) in [
        ("GET", "admin/api/v1/devices/aabbccddeeff", None, 404),
        ("GET", "admin/api/v1/modules/nosuch", None, 404),
        ("GET", "admin/api/v1/devices/not-a-mac", None, 400),
        ("PUT", "admin/api/v1/devices/aabbccddeeff", Some("[1]"), 400),
        ("PUT", "admin/api/v1/devices/aabbccddeeff", Some("{"), 400),
        (
            "PUT",
            "admin/api/v1/devices/aabbccddeeff",
            Some(r#"{"app": 3}"#),
            400,
        ),
        (
            "PUT",
            "admin/api/v1/devices/aabbccddeeff",
            Some(r#"{"app": "nosuch"}"#),
            400,
        ),
        ("DELETE", "admin/api/v1/devices/aabbccddeeff", None, 404),
        ("GET", "admin/api/v1/nothing", None, 404),
    ] {
        let r = server.admin(method, path, t, body);
        assert_eq!(r.status, status, "{method} /{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
    }
    assert!(server.log().iter().all(|l| !l.contains("panicked")));
}

/// `s` with every run of `chars` right after `after` replaced by `#`.
fn mask(s: &str, after: &str, chars: fn(char) -> bool) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(after) {
        out.push_str(&rest[..i + after.len()]);
        rest = &rest[i + after.len()..];
        let n = rest.find(|c| !chars(c)).unwrap_or(rest.len());
        if n > 0 {
            out.push('#');
        }
        rest = &rest[n..];
    }
    out.push_str(rest);
    out
}

/// What may differ between two stores that ran the same commands: new keys, times.
fn normalize(s: &str) -> String {
    let digits = |c: char| c.is_ascii_digit();
    let hex = |c: char| c.is_ascii_hexdigit();
    let mut s = mask(s, "key ", hex);
    s = mask(&s, "key        ", hex);
    s = mask(&s, "\"key\": \"", hex);
    for field in ["published_at", "created_at", "updated_at"] {
        s = mask(&s, &format!("\"{field}\": "), digits);
    }
    // "12s ago" -> "#s ago": the digits before "s ago".
    let mut masked = String::new();
    let mut chunks = s.split("s ago").peekable();
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_some() {
            masked.push_str(chunk.trim_end_matches(|c: char| c.is_ascii_digit()));
            masked.push_str("#s ago");
        } else {
            masked.push_str(chunk);
        }
    }
    masked
}

/// A new fleet with a copy of `f`'s store.
fn copy(f: &Fleet) -> Fleet {
    let copy = Fleet::new();
    let copied = std::process::Command::new("cp")
        .args(["-a"])
        .arg(f.data())
        .arg(copy.data())
        .status()
        .unwrap();
    assert!(copied.success());
    copy
}

/// Runs each command on `local`'s data dir and, with `--remote`, on `server` (serving
/// `remote`'s): same exit code, stdout and stderr (up to keys and times), no panic.
fn same_output(local: &Fleet, remote: &Fleet, server: &Server, commands: &[Vec<&str>]) {
    let token = server.token();
    for args in commands {
        let here = local.run(args);
        let mut remote_args = vec!["--remote", server.base.as_str()];
        remote_args.extend_from_slice(args);
        let there = remote.run_env(&remote_args, &[("MPFLEET_TOKEN", &token)]);
        assert_eq!(
            here.code, there.code,
            "exit code of {args:?}\nlocal: {}\nremote: {}",
            here.stderr, there.stderr
        );
        assert_eq!(
            normalize(&here.stdout),
            normalize(&there.stdout),
            "stdout of {args:?}"
        );
        assert_eq!(
            normalize(&here.stderr),
            normalize(&there.stderr),
            "stderr of {args:?}"
        );
        assert!(
            !there.stderr.contains("panicked"),
            "{args:?}: {}",
            there.stderr
        );
    }
}

#[test]
fn the_remote_cli_prints_what_the_local_cli_prints() {
    // One store with a device that reported and an unknown MAC that asked...
    let local = Fleet::smartcharger();
    local.ok(&["device", "set", "deadbeef1234", "--app", "smartcharger"]);
    // A group, so that devices in groups go through the API.
    local.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    {
        let server = local.serve();
        let key = local.key("deadbeef1234");
        let r = server.report(
            "deadbeef1234",
            &key,
            br#"{"event": "updated", "generation": 1, "config": "primary", "n": 1, "modules": {"sensorclass": "2"}}"#,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(server.get("v1/aabbccddee01.json").status, 404);
        assert_eq!(server.terminate(), 0);
    }
    // ...and its copy, served: every command runs on the first locally and on the copy
    // through the admin API.
    let remote = copy(&local);
    let server = remote.serve();
    let good = local.file("mqttclass.py", "y = 1\n");
    let bad = local.dir.path().join("src/binary.py");
    std::fs::write(&bad, b"\xff\xfe").unwrap();
    let csv = local.file(
        "devices.csv",
        "mac,app,modules\naa:bb:cc:dd:ee:02,smartcharger,sensorclass=1\ndeadbeef1234,smartcharger,\n",
    );
    let bad_csv = local.file("bad.csv", "mac,app,modules\nzz,smartcharger,\n");
    let group_csv = local.file(
        "group.csv",
        "mac,app,modules,group\naabbccddee05,,sensorclass=2,greenhouse\naabbccddee06,smartcharger,,\n",
    );
    let secrets = local.file("secrets.json", r#"{"wifi": "pw"}"#);
    let (good, bad, csv, bad_csv, group_csv, secrets) = (
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        csv.to_str().unwrap(),
        bad_csv.to_str().unwrap(),
        group_csv.to_str().unwrap(),
        secrets.to_str().unwrap(),
    );
    let commands: Vec<Vec<&str>> = vec![
        vec!["module", "list"],
        vec!["module", "list", "--json"],
        vec!["module", "show", "sensorclass"],
        vec!["module", "show", "sensorclass", "--json"],
        vec!["module", "show", "nosuch"],
        vec!["module", "show", "not-a-name"],
        vec!["module", "publish", good],
        vec!["module", "publish", good],
        vec!["module", "publish", bad],
        vec!["module", "publish", good, bad],
        vec!["module", "publish", "--version", "bad version", good],
        vec![
            "module",
            "publish",
            "--name",
            "other",
            "--version",
            "v2",
            "--no-latest",
            good,
        ],
        vec!["module", "latest", "sensorclass", "1"],
        vec!["module", "latest", "sensorclass", "1"],
        vec!["module", "latest", "sensorclass", "99"],
        vec!["device", "list"],
        vec!["device", "list", "--json"],
        vec!["device", "list", "--unknown"],
        vec!["device", "list", "--unknown", "--json"],
        vec!["device", "show", "deadbeef1234"],
        vec!["device", "show", "DE:AD:BE:EF:12:34", "--json"],
        vec!["device", "show", "aabbccddeeff"],
        vec![
            "device",
            "set",
            "aa:bb:cc:dd:ee:01",
            "--app",
            "smartcharger",
            "sensorclass=2",
            "mqttclass=latest",
        ],
        vec!["device", "set", "aabbccddee01", "--app", "nosuch"],
        vec![
            "device",
            "set",
            "aabbccddee01",
            "--app",
            "smartcharger",
            "sensorclass=99",
        ],
        vec!["device", "set", "not-a-mac", "--app", "smartcharger"],
        vec![
            "device",
            "set",
            "aabbccddee01",
            "--app",
            "smartcharger",
            "sensorclass",
        ],
        vec!["device", "set", "aabbccddee03", "--group", "greenhouse"],
        vec![
            "device",
            "set",
            "aabbccddee03",
            "--group",
            "greenhouse",
            "sensorclass=2",
        ],
        vec!["device", "set", "aabbccddee04", "--group", "nosuch"],
        vec!["device", "set", "aabbccddee04"],
        vec!["device", "show", "aabbccddee03"],
        vec!["device", "show", "aabbccddee03", "--json"],
        vec!["device", "import", csv],
        vec!["device", "import", group_csv],
        vec!["device", "import", bad_csv],
        vec!["device", "list"],
        vec!["device", "export"],
        vec![
            "device",
            "bootstrap",
            "deadbeef1234",
            "--server",
            "http://192.0.2.1:8080/",
        ],
        vec![
            "device",
            "bootstrap",
            "deadbeef1234",
            "--server",
            "http://192.0.2.1:8080/",
            "--secrets",
            secrets,
        ],
        vec![
            "device",
            "bootstrap",
            "deadbeef1234",
            "--server",
            "https://x/",
        ],
        vec!["device", "bootstrap", "aabbccddeeff"],
        vec!["device", "key", "deadbeef1234"],
        vec!["device", "key", "deadbeef1234", "--rotate"],
        vec!["device", "key", "aabbccddeeff"],
        vec!["device", "show", "aabbccddee01"],
        vec!["device", "rm", "aabbccddee02"],
        vec!["device", "rm", "aabbccddee02"],
        vec!["device", "list"],
        vec!["module", "show", "sensorclass"],
        vec!["module", "show", "mqttclass", "--json"],
    ];
    same_output(&local, &remote, &server, &commands);
    // The same commands changed the two stores the same way.
    assert_eq!(
        local.ok(&["device", "export"]),
        remote.ok(&["device", "export"])
    );
}

/// Four MACs for the group `greenhouse`.
const GREENHOUSE: [&str; 4] = [
    "aabbccddee01",
    "aabbccddee02",
    "aabbccddee03",
    "aabbccddee04",
];

#[test]
fn group_and_rollout_commands_print_the_same_remotely() {
    // Two copies of one store: every command runs on the first locally and on the second
    // through the admin API (whose `serve` also runs its rollout engine: nothing here waits
    // on time or reports, so it has nothing to do that the local side would not).
    let local = Fleet::smartcharger();
    let remote = copy(&local);
    let server = remote.serve();
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["group", "list"],
        vec!["group", "list", "--json"],
        vec![
            "group",
            "create",
            "greenhouse",
            "--app",
            "smartcharger",
            "sensorclass=1",
        ],
        vec!["group", "create", "greenhouse", "--app", "smartcharger"],
        vec!["group", "create", "new", "--app", "nothere"],
        vec!["group", "create", "123", "--app", "smartcharger"],
        vec![
            "group",
            "create",
            "new",
            "--app",
            "smartcharger",
            "sensorclass=1",
            "sensorclass=2",
        ],
        vec![
            "group",
            "create",
            "new",
            "--app",
            "smartcharger",
            "sensorclass",
        ],
        vec!["group", "create", "empty", "--app", "smartcharger"],
    ];
    for mac in GREENHOUSE {
        commands.push(vec!["device", "set", mac, "--group", "greenhouse"]);
    }
    commands.extend([
        vec![
            "device",
            "set",
            GREENHOUSE[1],
            "--group",
            "greenhouse",
            "sensorclass=2",
        ],
        vec!["group", "show", "greenhouse"],
        vec!["group", "show", "greenhouse", "--json"],
        vec!["group", "show", "nosuch"],
        vec!["group", "show", "../x"],
        vec!["group", "set", "greenhouse", "sensorclass=2"],
        vec!["group", "set", "greenhouse", "sensorclass=1"],
        vec!["group", "set", "greenhouse", "--app", "nosuch"],
        vec!["group", "set", "greenhouse", "sensorclass=9"],
        vec!["group", "set", "nope", "sensorclass=1"],
        vec!["group", "list"],
        vec!["group", "list", "--json"],
        vec!["group", "delete", "empty"],
        vec!["group", "delete", "empty"],
        vec!["group", "delete", "greenhouse"],
        vec!["rollout", "list"],
        vec!["rollout", "list", "--json"],
        vec!["rollout", "show", "greenhouse"],
        vec!["rollout", "start", "nope", "--to", "sensorclass=2"],
        vec!["rollout", "start", "greenhouse", "--to", "sensorclass=9"],
        vec![
            "rollout",
            "start",
            "greenhouse",
            "--to",
            "sensorclass=latest",
        ],
        vec!["rollout", "start", "greenhouse", "--to", "sensorclass"],
        vec![
            "rollout",
            "start",
            "greenhouse",
            "--to",
            "sensorclass=2",
            "--steps",
            "50%,25%,100%",
        ],
        vec![
            "rollout",
            "start",
            "greenhouse",
            "--to",
            "sensorclass=2",
            "--max-failures",
            "x",
        ],
        vec![
            "rollout",
            "start",
            "greenhouse",
            "--to",
            "sensorclass=2",
            "--healthy-after",
            "soon",
        ],
        vec![
            "rollout",
            "start",
            "greenhouse",
            "--to",
            "sensorclass=2",
            "--steps",
            "25%,100%",
            "--max-failures",
            "1",
        ],
        vec!["rollout", "start", "greenhouse", "--to", "sensorclass=2"],
        vec!["rollout", "list"],
        vec!["rollout", "list", "--json"],
        vec!["rollout", "show", "1"],
        vec!["rollout", "show", "greenhouse", "--json"],
        vec!["rollout", "show", "7"],
        vec!["rollout", "show", "../x"],
        vec!["device", "show", GREENHOUSE[0]],
        vec!["device", "list"],
        vec!["group", "delete", "greenhouse"],
        vec!["rollout", "pause", "1"],
        vec!["rollout", "pause", "1"],
        vec!["rollout", "show", "1"],
        vec!["rollout", "resume", "greenhouse"],
        vec!["rollout", "resume", "greenhouse"],
        vec!["rollout", "abort", "1"],
        vec!["rollout", "abort", "1"],
        vec!["rollout", "pause", "7"],
        vec!["rollout", "show", "1", "--json"],
        vec![
            "rollout",
            "start",
            "greenhouse",
            "--to",
            "sensorclass=2",
            "--steps",
            "100%",
        ],
        vec!["rollout", "list"],
        vec!["rollout", "show", "greenhouse"],
        vec!["group", "show", "greenhouse"],
        vec!["device", "list"],
    ]);
    same_output(&local, &remote, &server, &commands);
    // The same commands changed the two stores the same way.
    assert_eq!(
        local.ok(&["device", "export"]),
        remote.ok(&["device", "export"])
    );
    for args in [
        ["group", "list", "--json"].as_slice(),
        &["group", "show", "greenhouse", "--json"],
        &["rollout", "list", "--json"],
    ] {
        assert_eq!(
            normalize(&local.ok(args)),
            normalize(&remote.ok(args)),
            "{args:?}"
        );
    }
    let rollouts = remote.json(&["rollout", "list", "--json"]);
    let states: Vec<&str> = rollouts
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "aborted"], "{rollouts}");
}

#[test]
fn the_group_and_rollout_api_speaks_json_and_refuses_bad_input() {
    let f = Fleet::smartcharger();
    let server = f.serve();
    let token = server.token();
    let t = Some(token.as_str());
    let ok = |method: &str, path: &str, body: Option<&str>| -> Value {
        let r = server.admin(method, &format!("admin/api/v1/{path}"), t, body);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()
    };
    let g = ok(
        "POST",
        "groups",
        Some(r#"{"name": "greenhouse", "app": "smartcharger", "modules": {"sensorclass": "1"}}"#),
    );
    assert_eq!(g["name"], "greenhouse");
    assert_eq!(g["desired"]["name"], "smartcharger");
    assert_eq!(g["desired"]["sensorclass"], "1");
    for mac in &GREENHOUSE[..2] {
        ok(
            "PUT",
            &format!("devices/{mac}"),
            Some(r#"{"group": "greenhouse"}"#),
        );
    }
    let list = ok("GET", "groups", None);
    assert_eq!(list[0]["name"], "greenhouse");
    assert_eq!(list[0]["devices"], 2);
    // `set` keeps the app when it names none.
    let g = ok(
        "PUT",
        "groups/greenhouse",
        Some(r#"{"modules": {"sensorclass": "2"}}"#),
    );
    assert_eq!(g["desired"]["name"], "smartcharger", "{g}");
    assert_eq!(g["desired"]["sensorclass"], "2");
    ok(
        "PUT",
        "groups/greenhouse",
        Some(r#"{"modules": {"sensorclass": "1"}}"#),
    );
    let g = ok("GET", "groups/greenhouse", None);
    assert_eq!(
        g["pins"],
        json!({"name": "smartcharger", "sensorclass": "1"})
    );
    assert_eq!(g["devices"].as_array().unwrap().len(), 2);

    // A rollout over HTTP, the defaults filled in.
    let started = ok(
        "POST",
        "rollouts",
        Some(r#"{"group": "greenhouse", "to": {"sensorclass": "2"}, "steps": "50%,100%"}"#),
    );
    let r = &started["rollout"];
    assert_eq!(r["id"], 1, "{started}");
    assert_eq!(r["state"], "running");
    assert_eq!(r["step"], 1);
    assert_eq!(r["steps"], json!([50, 100]));
    assert_eq!(r["to"], json!({"sensorclass": "2"}));
    assert_eq!(r["max_failures"], "0");
    assert_eq!(r["healthy_after"], 600);
    assert_eq!(r["deadline"], 86400);
    assert!(
        started["said"][0]
            .as_str()
            .unwrap()
            .contains("moved 1 board(s)"),
        "{started}"
    );
    let shown = ok("GET", "rollouts/1", None);
    assert_eq!(shown["boards"], 2, "{shown}");
    assert_eq!(shown["moved"], 1);
    assert_eq!(shown["waiting"], 1);
    assert_eq!(shown["devices"][0]["status"], "waiting");
    assert_eq!(ok("GET", "rollouts/greenhouse", None)["id"], 1);

    // Bad input: a clear JSON error with the right status, and nothing changed.
    let state = || {
        [
            "groups",
            "groups/greenhouse",
            "rollouts",
            "rollouts/1",
            "devices/export",
        ]
        .map(|p| ok("GET", p, None))
    };
    let before = state();
    let rollout =
        |extra: &str| format!(r#"{{"group": "greenhouse", "to": {{"sensorclass": "2"}}{extra}}}"#);
    for (method, path, body, status, error) in [
        (
            "POST",
            "groups",
            Some(r#"{"name": "new"}"#.to_owned()),
            400,
            "missing field `app`",
        ),
        (
            "POST",
            "groups",
            Some(r#"{"name": "greenhouse", "app": "smartcharger"}"#.into()),
            400,
            "group greenhouse already exists",
        ),
        (
            "POST",
            "groups",
            Some(
                r#"{"name": "new", "app": "smartcharger", "modules": {"sensorclass": "9"}}"#.into(),
            ),
            400,
            "no version 9",
        ),
        (
            "POST",
            "groups",
            Some(r#"{"name": "new", "app": "smartcharger", "modules": {"sensorclass": 2}}"#.into()),
            400,
            "version of sensorclass is not a string",
        ),
        (
            "POST",
            "groups",
            Some(r#"{"name": "../x", "app": "smartcharger"}"#.into()),
            400,
            "invalid group name",
        ),
        (
            "POST",
            "groups",
            Some("[]".into()),
            400,
            "not a JSON object",
        ),
        (
            "PUT",
            "groups/nope",
            Some(r#"{"modules": {}}"#.into()),
            404,
            "cannot set group nope: unknown group nope",
        ),
        (
            "PUT",
            "groups/greenhouse",
            Some(r#"{"modules": {"sensorclass": "9"}}"#.into()),
            400,
            "no version 9",
        ),
        (
            "PUT",
            "groups/greenhouse",
            Some(r#"{"app": "nosuch"}"#.into()),
            400,
            "module nosuch is not published",
        ),
        ("GET", "groups/nope", None, 404, "unknown group nope"),
        ("GET", "groups/..%2Fx", None, 400, "invalid group name"),
        ("DELETE", "groups/nope", None, 404, "unknown group nope"),
        (
            "DELETE",
            "groups/greenhouse",
            None,
            400,
            "group greenhouse has 2 device(s)",
        ),
        (
            "POST",
            "rollouts",
            Some(r#"{"group": "nope", "to": {"sensorclass": "2"}}"#.into()),
            404,
            "unknown group nope",
        ),
        (
            "POST",
            "rollouts",
            Some(rollout("")),
            400,
            "has rollout 1 under way",
        ),
        (
            "POST",
            "rollouts",
            Some(rollout(r#", "steps": "50%""#)),
            400,
            "the last step must be 100%",
        ),
        (
            "POST",
            "rollouts",
            Some(rollout(r#", "steps": "150%,100%""#)),
            400,
            "a percentage from 1% to 100%",
        ),
        (
            "POST",
            "rollouts",
            Some(rollout(r#", "max_failures": "lots""#)),
            400,
            "invalid --max-failures",
        ),
        (
            "POST",
            "rollouts",
            Some(rollout(r#", "healthy_after": "soon""#)),
            400,
            "invalid duration",
        ),
        (
            "POST",
            "rollouts",
            Some(r#"{"group": "greenhouse"}"#.into()),
            400,
            "missing field `to`",
        ),
        (
            "POST",
            "rollouts",
            Some(r#"{"group": "greenhouse", "to": {}}"#.into()),
            400,
            "nothing to roll out",
        ),
        (
            "POST",
            "rollouts",
            Some(r#"{"group": "greenhouse", "to": {"sensorclass": "latest"}}"#.into()),
            400,
            "not `latest`",
        ),
        ("GET", "rollouts/7", None, 404, "no rollout 7"),
        (
            "GET",
            "rollouts/nope",
            None,
            404,
            "group nope has no rollout",
        ),
        (
            "GET",
            "rollouts/..%2Fx",
            None,
            400,
            "is neither a rollout number nor a group",
        ),
        ("POST", "rollouts/7/pause", None, 404, "no rollout 7"),
        (
            "POST",
            "rollouts/1/resume",
            None,
            400,
            "only a paused rollout can be resumed",
        ),
        ("POST", "rollouts/7/abort", None, 404, "no rollout 7"),
    ] {
        let r = server.admin(method, &format!("admin/api/v1/{path}"), t, body.as_deref());
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let message = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(error), "{method} {path}: {message}");
        assert!(!message.contains("panicked"), "{message}");
    }
    assert_eq!(state(), before);

    // Pause, resume (by the group's name), abort.
    let r = ok("POST", "rollouts/1/pause", None);
    assert_eq!(
        (r["state"].as_str(), r["reason"].as_str()),
        (Some("paused"), Some("paused by the user"))
    );
    let r = ok("POST", "rollouts/greenhouse/resume", None);
    assert_eq!(r["rollout"]["state"], "running", "{r}");
    let r = ok("POST", "rollouts/1/abort", None);
    assert_eq!(r["state"], "aborted");
    assert_eq!(r["reason"], "aborted by the user");
    assert_eq!(ok("GET", "rollouts", None)[0]["state"], "aborted");
    // The group goes when its devices have left.
    for mac in &GREENHOUSE[..2] {
        ok("DELETE", &format!("devices/{mac}"), None);
    }
    assert_eq!(
        ok("DELETE", "groups/greenhouse", None),
        json!({"name": "greenhouse"})
    );
    assert_eq!(ok("GET", "groups", None), json!([]));
    assert!(server.log().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn a_rollout_started_remotely_is_run_by_serve() {
    let mut f = Fleet::smartcharger();
    f.set_env("MPFLEET_ROLLOUT_TICK", "200ms");
    f.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    for mac in GREENHOUSE {
        f.ok(&["device", "set", mac, "--group", "greenhouse"]);
    }
    let keys: Vec<_> = GREENHOUSE.iter().map(|m| (*m, f.key(m))).collect();
    let server = f.serve();
    let token = server.token();
    let remote = |args: &[&str]| {
        let mut all = vec!["--remote", server.base.as_str()];
        all.extend_from_slice(args);
        let r = f.run_env(&all, &[("MPFLEET_TOKEN", &token)]);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        r.stdout
    };
    let out = remote(&[
        "rollout",
        "start",
        "greenhouse",
        "--to",
        "sensorclass=2",
        "--steps",
        "50%,100%",
        "--healthy-after",
        "1s",
    ]);
    assert!(out.contains("moved 2 board(s)"), "{out}");
    // The boards play their part: each moved board reports `updated` for its new
    // generation, once. Only the engine of `serve` moves the rollout on from here.
    let mut reported = std::collections::BTreeSet::new();
    let done = eventually(
        "the remotely started rollout done",
        Duration::from_secs(30),
        || {
            let r: Value =
                serde_json::from_str(&remote(&["rollout", "show", "greenhouse", "--json"]))
                    .unwrap();
            for d in r["devices"].as_array().unwrap() {
                let mac = d["mac"].as_str().unwrap();
                if reported.insert(mac.to_owned()) {
                    let body = json!({"n": 1, "event": "updated", "config": "primary",
                                      "generation": d["generation"]});
                    let (_, key) = keys.iter().find(|(m, _)| *m == mac).unwrap();
                    let rep = server.report(mac, key, body.to_string().as_bytes());
                    assert_eq!(rep.status, 200, "{}", rep.text());
                }
            }
            (r["state"] == "done").then_some(r)
        },
    );
    assert_eq!(done["healthy"], 4, "{done}");
    let steps: Vec<i64> = done["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 1, 2, 2], "{done}");
    // What the remote CLI shows is what the local one shows on the server's store.
    for args in [
        ["rollout", "show", "greenhouse"].as_slice(),
        &["rollout", "show", "1", "--json"],
        &["rollout", "list"],
        &["group", "show", "greenhouse", "--json"],
    ] {
        assert_eq!(normalize(&remote(args)), normalize(&f.ok(args)), "{args:?}");
    }
    let g = f.json(&["group", "show", "greenhouse", "--json"]);
    assert_eq!(g["pins"]["sensorclass"], "2", "{g}");
    for mac in GREENHOUSE {
        server.wait_get(&format!("v1/{mac}.json"), |r| {
            r.json()["modules"]["sensorclass"]["version"] == "2"
        });
    }
}

#[test]
fn remote_needs_a_token_and_a_reachable_server() {
    let f = Fleet::smartcharger();
    let r = f.run_env(
        &["--remote", "http://127.0.0.1:9/", "module", "list"],
        &[("MPFLEET_TOKEN", "")],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("MPFLEET_TOKEN"), "{}", r.stderr);
    let r = f.run_env(
        &["--remote", "http://127.0.0.1:9/", "module", "list"],
        &[("MPFLEET_TOKEN", "x")],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);
    // `group` and `rollout` go to the server too; the others refuse --remote.
    for args in [["group", "list"], ["rollout", "list"]] {
        let mut all = vec!["--remote", "http://127.0.0.1:9/"];
        all.extend(args);
        let r = f.run_env(&all, &[("MPFLEET_TOKEN", "x")]);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(r.stderr.contains("cannot reach"), "{args:?}: {}", r.stderr);
    }
    for args in [vec!["serve"], vec!["export", "out"], vec!["token", "show"]] {
        let mut all = vec!["--remote", "http://127.0.0.1:9/"];
        all.extend(args.iter());
        let r = f.run_env(&all, &[("MPFLEET_TOKEN", "x")]);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(
            r.stderr.contains("local data directory only"),
            "{}",
            r.stderr
        );
    }
}

/// One sample line of the Prometheus text format: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses `/metrics` line by line as the Prometheus text format (0.0.4), failing the test on
/// any line that is not a `# HELP`, a `# TYPE` or a sample of a family typed before it.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (kind, name, what) = (words.next(), words.next(), words.next());
            let name = name.unwrap_or_else(|| panic!("bad comment: {line}"));
            assert!(name_ok(name), "{line}");
            match kind {
                Some("HELP") => assert!(what.is_some_and(|w| !w.is_empty()), "{line}"),
                Some("TYPE") => {
                    let t = what.unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "{name} typed twice"
                    );
                }
                _ => panic!("bad comment: {line}"),
            }
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with(' '),
            "bad line: {line:?}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = inner
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label: {line}"));
                        assert!(name_ok(k), "{line}");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label value: {line}"));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(name_ok(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .2
}

#[test]
fn metrics_parse_and_count_what_happened() {
    let f = Fleet::smartcharger();
    f.ok(&["device", "set", "deadbeef1234", "--app", "smartcharger"]);
    f.ok(&["device", "set", "deadbeef5678", "--app", "smartcharger"]);
    f.ok(&["device", "set", "deadbeef9abc", "--app", "smartcharger"]);
    let key = f.key("deadbeef1234");
    let key2 = f.key("deadbeef5678");
    let server = f.serve();
    let token = server.token();
    assert_eq!(server.admin("GET", "metrics", None, None).status, 401);
    assert_eq!(
        server
            .admin("GET", "metrics", Some(&"0".repeat(64)), None)
            .status,
        401
    );

    // Three polls (one answered 304), one by a MAC that is not a device, two reports taken,
    // one forged, one replayed, one malformed.
    let first = server.get("v1/deadbeef1234.json");
    assert_eq!(first.status, 200);
    assert_eq!(server.get("deadbeef5678").status, 200);
    let etag = first.etag.unwrap();
    assert_eq!(
        server
            .get_if_none_match("v1/deadbeef1234.json", &etag)
            .status,
        304
    );
    assert_eq!(server.get("v1/aabbccddeeff.json").status, 404);
    assert_eq!(server.get("latestversions").status, 200);
    let report = |n: u32, event: &str| {
        format!(r#"{{"event": "{event}", "generation": 1, "config": "primary", "n": {n}}}"#)
    };
    assert_eq!(
        server
            .report("deadbeef1234", &key, report(1, "boot").as_bytes())
            .status,
        200
    );
    assert_eq!(
        server
            .report("deadbeef1234", &key, report(2, "updated").as_bytes())
            .status,
        200
    );
    assert_eq!(
        server
            .report("deadbeef5678", &key2, report(1, "rolled_back").as_bytes())
            .status,
        200
    );
    assert_eq!(
        server
            .report("deadbeef1234", &key, report(2, "updated").as_bytes())
            .status,
        409
    );
    assert_eq!(
        server
            .report("deadbeef1234", &key2, report(3, "updated").as_bytes())
            .status,
        401
    );
    assert_eq!(
        server
            .report("deadbeef1234", &key, br#"{"event": "exploded", "n": 4}"#)
            .status,
        400
    );

    let r = server.admin("GET", "metrics", Some(&token), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.content_type
    );
    let text = r.text();
    eprintln!("{text}");
    let s = parse_metrics(&text);
    assert_eq!(sample(&s, "mpfleet_polls_total", &[]), 3.0);
    assert_eq!(sample(&s, "mpfleet_unknown_polls_total", &[]), 1.0);
    for (event, n) in [
        ("boot", 1.0),
        ("updated", 1.0),
        ("rolled_back", 1.0),
        ("update_failed", 0.0),
        ("server_failed", 0.0),
    ] {
        assert_eq!(
            sample(&s, "mpfleet_reports_total", &[("event", event)]),
            n,
            "{event}"
        );
    }
    for (reason, n) in [
        ("unsigned", 1.0),
        ("replayed", 1.0),
        ("malformed", 1.0),
        ("unknown_device", 0.0),
    ] {
        assert_eq!(
            sample(&s, "mpfleet_reports_refused_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    for (state, n) in [
        ("updated", 1.0),
        ("rolled_back", 1.0),
        ("none", 1.0),
        ("boot", 0.0),
    ] {
        assert_eq!(
            sample(&s, "mpfleet_boards", &[("state", state)]),
            n,
            "{state}"
        );
    }
    // Histograms: buckets cumulative, +Inf equal to the count; every request so far counted
    // (11 device requests, 2 refused scrapes on the admin side, the scrape itself not yet).
    for (side, requests) in [("device", 11.0), ("admin", 2.0)] {
        let buckets: Vec<f64> = s
            .iter()
            .filter(|(n, l, _)| {
                n == "mpfleet_request_duration_seconds_bucket"
                    && l.iter().any(|(k, v)| k == "side" && v == side)
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(buckets.len() > 5, "{side}");
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "{side}: {buckets:?}"
        );
        let count = sample(
            &s,
            "mpfleet_request_duration_seconds_count",
            &[("side", side)],
        );
        assert_eq!(*buckets.last().unwrap(), count);
        assert_eq!(count, requests, "{side}");
        assert!(
            sample(
                &s,
                "mpfleet_request_duration_seconds_sum",
                &[("side", side)]
            ) > 0.0
        );
    }
    // The unknown MAC is listed once the recorder has flushed it.
    crate::harness::eventually(
        "the unknown MAC in /metrics",
        std::time::Duration::from_secs(10),
        || {
            let text = server.admin("GET", "metrics", Some(&token), None).text();
            (sample(&parse_metrics(&text), "mpfleet_unknown_boards", &[]) == 1.0).then_some(())
        },
    );
}

#[test]
fn the_metrics_checker_refuses_what_is_not_the_format() {
    for bad in [
        "mpfleet_x 1\n",                                // no TYPE
        "# TYPE mpfleet_x counter\nmpfleet_x one\n",    // not a number
        "# TYPE mpfleet_x counter\nmpfleet_x{a=b} 1\n", // unquoted label
        "# TYPE mpfleet_x counter\nmpfleet_x 1",        // no final newline
        "# TYPE mpfleet_x countr\nmpfleet_x 1\n",       // unknown type
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_metrics(bad)).is_err(),
            "{bad:?}"
        );
    }
}
