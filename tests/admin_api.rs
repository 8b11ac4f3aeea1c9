//! The admin side of `serve`: the admin token (created on first start, private, rotated
//! without a restart), the admin API (`/admin/api/v1/`, 401 without the token, device paths
//! still open), the CLI against a remote server giving the same output as on the local data
//! dir, and `/metrics`.

use crate::harness::Fleet;

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

/// Every route of the admin API with its path fields filled in (`{mac}` and `{name}` with
/// what the test fleet has; any other field with `x`), and whether those fields name
/// something that exists.
fn admin_routes() -> Vec<(&'static str, String, bool)> {
    mpfleet::ops::routes()
        .into_iter()
        .map(|r| {
            let mut path = r
                .path
                .replace("{mac}", "deadbeef1234")
                .replace("{name}", "sensorclass");
            let known = !path.contains('{');
            while let (Some(a), Some(b)) = (path.find('{'), path.find('}')) {
                path.replace_range(a..=b, "x");
            }
            (r.verb.as_str(), format!("admin/api/v1{path}"), known)
        })
        .collect()
}

#[test]
fn every_admin_request_needs_the_token_and_device_paths_do_not() {
    let f = Fleet::smartcharger();
    f.ok(&["device", "set", "deadbeef1234", "--app", "smartcharger"]);
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
    routes.push(("GET", "admin/".into(), false));
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
    s = mask(&s, "\"published_at\": ", digits);
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

#[test]
fn the_remote_cli_prints_what_the_local_cli_prints() {
    // One store with a device that reported and an unknown MAC that asked...
    let local = Fleet::smartcharger();
    local.ok(&["device", "set", "deadbeef1234", "--app", "smartcharger"]);
    // A group (its commands are local only), so that devices in groups go through the API.
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
    let remote = Fleet::new();
    let copied = std::process::Command::new("cp")
        .args(["-a"])
        .arg(local.data())
        .arg(remote.data())
        .status()
        .unwrap();
    assert!(copied.success());
    let server = remote.serve();
    let token = server.token();
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
    for args in &commands {
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
    // The same commands changed the two stores the same way.
    assert_eq!(
        local.ok(&["device", "export"]),
        remote.ok(&["device", "export"])
    );
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
