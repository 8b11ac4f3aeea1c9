//! `mpfleet device ...` as a user runs it.

use crate::harness::Fleet;
use serde_json::json;

#[test]
fn every_mac_form_is_normalised() {
    let f = Fleet::smartcharger();
    for form in [
        "deadbeef1234",
        "DEADBEEF1234",
        "DE:AD:BE:EF:12:34",
        "de-ad-be-ef-12-34",
        "dead.beef.1234",
    ] {
        f.ok(&["device", "set", form, "--app", "smartcharger"]);
        let list = f.json(&["device", "list", "--json"]);
        assert_eq!(list.as_array().unwrap().len(), 1, "{form}");
        assert_eq!(list[0]["mac"], "deadbeef1234", "{form}");
    }
}

#[test]
fn bad_macs_are_refused() {
    let f = Fleet::smartcharger();
    for bad in [
        "deadbeef123",
        "deadbeef12345",
        "gg:ad:be:ef:12:34",
        "../../etc",
        "de:adbe:ef1234",
        "",
    ] {
        let err = f.fails(&["device", "set", bad, "--app", "smartcharger"]);
        assert!(err.contains("invalid MAC address"), "{bad}: {err}");
    }
    assert_eq!(f.json(&["device", "list", "--json"]), json!([]));
}

#[test]
fn set_adds_app_and_runtime_and_names_missing_modules() {
    let f = Fleet::smartcharger();
    f.ok(&[
        "device",
        "set",
        "deadbeef1234",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(
        show["desired"],
        json!({"name": "smartcharger", "smartcharger": "latest", "sensorclass": "1",
               "config": "latest", "updater": "latest", "updater_trust": "latest", "reporter": "latest",
               "updater_io": "latest", "installer": "latest", "updater_delta": "latest"})
    );
    assert_eq!(show["resolved"]["modules"]["sensorclass"]["version"], "1");
    for (pair, error) in [
        ("mqttclass=latest", "module mqttclass is not published"),
        ("sensorclass=7", "sensorclass has no version 7"),
        ("sensorclass", "MODULE=VERSION"),
        ("../x=1", "invalid module name"),
        ("sensorclass=../1", "invalid version"),
    ] {
        let err = f.fails(&[
            "device",
            "set",
            "deadbeef1234",
            "--app",
            "smartcharger",
            pair,
        ]);
        assert!(err.contains(error), "{pair}: {err}");
    }
    // The failed sets changed nothing.
    let after = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(after["desired"], show["desired"]);
    assert_eq!(after["generation"], show["generation"]);
}

#[test]
fn list_show_and_rm() {
    let f = Fleet::smartcharger();
    f.ok(&["device", "set", "aabbccddeeff", "--app", "smartcharger"]);
    let table = f.ok(&["device", "list"]);
    assert!(
        table.contains("aabbccddeeff") && table.contains("smartcharger"),
        "{table}"
    );
    let show = f.ok(&["device", "show", "AA:BB:CC:DD:EE:FF"]);
    assert!(show.contains("no reports yet"), "{show}");
    assert!(f.ok(&["device", "rm", "aabbccddeeff"]).contains("removed"));
    assert_eq!(f.json(&["device", "list", "--json"]), json!([]));
    let err = f.fails(&["device", "rm", "aabbccddeeff"]);
    assert!(err.contains("unknown device"), "{err}");
    let err = f.fails(&["device", "show", "aabbccddeeff"]);
    assert!(err.contains("unknown device"), "{err}");
}

#[test]
fn generation_grows_exactly_when_resolved_content_changes() {
    let f = Fleet::smartcharger();
    f.publish("other", "y = 1\n", &[]);
    let g = |f: &Fleet| {
        f.json(&["device", "show", "deadbeef1234", "--json"])["generation"]
            .as_i64()
            .unwrap()
    };
    f.ok(&[
        "device",
        "set",
        "deadbeef1234",
        "--app",
        "smartcharger",
        "sensorclass=latest",
    ]);
    let g1 = g(&f);
    // Same manifest again: same generation.
    f.ok(&[
        "device",
        "set",
        "deadbeef1234",
        "--app",
        "smartcharger",
        "sensorclass=latest",
    ]);
    assert_eq!(g(&f), g1);
    // Pinning the version latest already resolves to: same content, same generation.
    f.ok(&[
        "device",
        "set",
        "deadbeef1234",
        "--app",
        "smartcharger",
        "sensorclass=2",
    ]);
    assert_eq!(g(&f), g1);
    f.ok(&[
        "device",
        "set",
        "deadbeef1234",
        "--app",
        "smartcharger",
        "sensorclass=latest",
    ]);
    // A module the device does not use: same generation.
    f.publish("other", "y = 2\n", &[]);
    assert_eq!(g(&f), g1);
    // A new latest of a module it tracks: grows.
    f.publish("sensorclass", "x = 3\n", &[]);
    let g2 = g(&f);
    assert!(g2 > g1);
    // Published without moving latest: same.
    f.publish("sensorclass", "x = 4\n", &["--no-latest"]);
    assert_eq!(g(&f), g2);
    // Moving latest back: grows again (never back to an old number).
    f.ok(&["module", "latest", "sensorclass", "1"]);
    assert!(g(&f) > g2);
}

/// A bad MAC, module name, version or MODULE=VERSION pair is a usage error from the command
/// line parser (exit 2, clap's style, naming the argument), before any store is opened.
#[test]
fn bad_values_are_usage_errors() {
    let f = Fleet::new();
    for (args, argument, message) in [
        (
            vec!["device", "show", "nothex"],
            "'<MAC>'",
            "invalid MAC address \"nothex\"",
        ),
        (
            vec!["device", "rm", "de:ad:be:ef:12"],
            "'<MAC>'",
            "invalid MAC address",
        ),
        (
            vec!["device", "set", "deadbeef1234", "--app", "../../x"],
            "'--app <APP>'",
            "invalid module name \"../../x\"",
        ),
        (
            vec!["device", "set", "deadbeef1234", "--app", "a", "../../x=1"],
            "MODULES",
            "invalid module name \"../../x\"",
        ),
        (
            vec![
                "device",
                "set",
                "deadbeef1234",
                "--app",
                "a",
                "sensorclass=../1",
            ],
            "MODULES",
            "invalid version \"../1\"",
        ),
        (
            vec!["device", "set", "deadbeef1234", "--group", "../g"],
            "'--group <GROUP>'",
            "invalid group name",
        ),
        (
            vec!["module", "show", "../../x"],
            "'<NAME>'",
            "invalid module name \"../../x\"",
        ),
        (
            vec!["module", "latest", "sensorclass", "../1"],
            "'<VERSION>'",
            "invalid version \"../1\"",
        ),
        (
            vec!["rollout", "start", "g", "--to", "sensorclass"],
            "'--to <MODULE=VERSION>'",
            "is not MODULE=VERSION",
        ),
    ] {
        let r = f.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        let first = r.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: invalid value") && first.contains(argument),
            "{args:?}: {}",
            r.stderr
        );
        assert!(first.contains(message), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    assert!(!f.data().exists(), "a refused command created the store");
}
