//! `mpfleet group ...` and devices in groups, as a user runs them: a device runs its group's
//! manifest with its own pins over it, and changing the group gives a new generation to
//! exactly the members whose resolved manifest changes.

use crate::harness::Fleet;
use serde_json::{json, Value};

const A: &str = "aaaaaaaaaaa1";
const B: &str = "aaaaaaaaaaa2";
const C: &str = "bbbbbbbbbbb1";

fn show(f: &Fleet, mac: &str) -> Value {
    f.json(&["device", "show", mac, "--json"])
}

fn generation(f: &Fleet, mac: &str) -> i64 {
    show(f, mac)["generation"].as_i64().unwrap()
}

/// The version of `module` in the manifest `mac` is served.
fn resolved(f: &Fleet, mac: &str, module: &str) -> String {
    show(f, mac)["resolved"]["modules"][module]["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// smartcharger 1, sensorclass 1 and 2, group `greenhouse` at sensorclass 1 with A (no pins
/// of its own) and B (sensorclass=2), and C outside any group.
fn greenhouse() -> Fleet {
    let f = Fleet::smartcharger();
    let out = f.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    assert!(out.contains("group greenhouse:"), "{out}");
    f.ok(&["device", "set", A, "--group", "greenhouse"]);
    let out = f.ok(&["device", "set", B, "--group", "greenhouse", "sensorclass=2"]);
    assert!(
        out.contains("group greenhouse, own pins: sensorclass=2"),
        "{out}"
    );
    f.ok(&["device", "set", C, "--app", "smartcharger", "sensorclass=1"]);
    f
}

#[test]
fn members_run_the_group_and_their_own_pins_win() {
    let f = greenhouse();
    assert_eq!(resolved(&f, A, "sensorclass"), "1");
    assert_eq!(resolved(&f, B, "sensorclass"), "2");
    assert_eq!(show(&f, A)["desired"]["name"], "smartcharger");
    assert_eq!(
        show(&f, B)["group"],
        json!({"name": "greenhouse", "own_pins": {"sensorclass": "2"}})
    );
    assert_eq!(show(&f, C)["group"], Value::Null);
    let list = f.json(&["device", "list", "--json"]);
    let groups: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["group"])
        .collect();
    assert_eq!(
        groups,
        [&json!("greenhouse"), &json!("greenhouse"), &Value::Null]
    );

    // The group moves to sensorclass 2: A changes, B (pinned there already) and C do not.
    let before: Vec<i64> = [A, B, C].iter().map(|m| generation(&f, m)).collect();
    f.ok(&["group", "set", "greenhouse", "sensorclass=2"]);
    let after: Vec<i64> = [A, B, C].iter().map(|m| generation(&f, m)).collect();
    assert!(after[0] > before[0], "{before:?} {after:?}");
    assert_eq!(after[1..], before[1..]);
    assert_eq!(resolved(&f, A, "sensorclass"), "2");
    // The group set kept the app.
    assert_eq!(show(&f, A)["desired"]["name"], "smartcharger");

    // Back to 1: A follows, B's own pin holds it at 2.
    f.ok(&["group", "set", "greenhouse", "sensorclass=1"]);
    assert_eq!(resolved(&f, A, "sensorclass"), "1");
    assert_eq!(resolved(&f, B, "sensorclass"), "2");
    assert_eq!(generation(&f, B), before[1]);

    // The same pins again: nobody moves.
    let same: Vec<i64> = [A, B, C].iter().map(|m| generation(&f, m)).collect();
    f.ok(&["group", "set", "greenhouse", "sensorclass=1"]);
    let again: Vec<i64> = [A, B, C].iter().map(|m| generation(&f, m)).collect();
    assert_eq!(same, again);

    // `latest` in the group: a new version moves A (following the group), not B.
    f.ok(&["group", "set", "greenhouse", "sensorclass=latest"]);
    let g = generation(&f, B);
    f.publish("sensorclass", "x = 3\n", &[]);
    assert_eq!(resolved(&f, A, "sensorclass"), "3");
    assert_eq!(resolved(&f, B, "sensorclass"), "2");
    assert_eq!(generation(&f, B), g);

    // Leaving the group: `device set` without --group.
    f.ok(&["device", "set", A, "--app", "smartcharger", "sensorclass=1"]);
    assert_eq!(show(&f, A)["group"], Value::Null);
    let g = f.json(&["group", "show", "greenhouse", "--json"]);
    let members: Vec<&str> = g["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mac"].as_str().unwrap())
        .collect();
    assert_eq!(members, [B]);
}

#[test]
fn list_show_and_delete() {
    let f = greenhouse();
    let table = f.ok(&["group", "list"]);
    assert!(
        table.starts_with("GROUP       APP           DEVICES  PINS\n"),
        "{table}"
    );
    assert!(
        table.contains("greenhouse  smartcharger  2        sensorclass=1"),
        "{table}"
    );
    let list = f.json(&["group", "list", "--json"]);
    assert_eq!(
        list,
        json!([{"name": "greenhouse", "pins": {"name": "smartcharger", "sensorclass": "1"},
                "devices": 2, "created_at": list[0]["created_at"]}])
    );
    let text = f.ok(&["group", "show", "greenhouse"]);
    assert!(text.contains(&format!("{B}  sensorclass=2")), "{text}");
    let g = f.json(&["group", "show", "greenhouse", "--json"]);
    assert_eq!(g["desired"]["sensorclass"], "1");
    assert_eq!(g["devices"].as_array().unwrap().len(), 2);

    let err = f.fails(&["group", "delete", "greenhouse"]);
    assert!(
        err.contains("group greenhouse has 2 device(s)") && err.contains(A),
        "{err}"
    );
    f.ok(&["device", "rm", A]);
    f.ok(&["device", "set", B, "--app", "smartcharger"]);
    assert_eq!(
        f.ok(&["group", "delete", "greenhouse"]).trim(),
        "deleted group greenhouse"
    );
    assert_eq!(f.json(&["group", "list", "--json"]), json!([]));
    let err = f.fails(&["group", "show", "greenhouse"]);
    assert!(err.contains("unknown group greenhouse"), "{err}");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let f = greenhouse();
    let state = |f: &Fleet| {
        (
            f.json(&["group", "show", "greenhouse", "--json"]),
            [A, B, C].map(|m| show(f, m)),
        )
    };
    let before = state(&f);
    for (args, error) in [
        (
            vec!["device", "set", C, "--group", "nope"],
            "unknown group nope: create it with `mpfleet group create nope --app APP`",
        ),
        (vec!["device", "set", C], "--app"),
        (
            vec!["device", "set", C, "--group", "../x"],
            "invalid group name",
        ),
        (
            vec!["device", "set", A, "--group", "greenhouse", "sensorclass=9"],
            "no version 9",
        ),
        (
            vec!["group", "set", "nope", "sensorclass=1"],
            "unknown group nope",
        ),
        (
            vec!["group", "create", "greenhouse", "--app", "smartcharger"],
            "group greenhouse already exists",
        ),
        (
            vec!["group", "create", "new", "--app", "nothere"],
            "module nothere is not published",
        ),
        (
            vec!["group", "create", "123", "--app", "smartcharger"],
            "not only digits",
        ),
        (
            vec!["group", "set", "greenhouse", "sensorclass=9"],
            "no version 9",
        ),
        (
            vec!["group", "set", "greenhouse", "sensorclass"],
            "MODULE=VERSION",
        ),
        (
            vec![
                "group",
                "set",
                "greenhouse",
                "sensorclass=1",
                "sensorclass=2",
            ],
            "listed twice",
        ),
        (vec!["group", "delete", "nope"], "unknown group nope"),
    ] {
        let err = f.fails(&args);
        assert!(err.contains(error), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(state(&f), before);
}

#[test]
fn import_takes_a_group_column_and_export_round_trips() {
    let f = greenhouse();
    let csv = f.file(
        "devices.csv",
        &format!(
            "mac,app,modules,group\n\
             {A},,sensorclass=2,greenhouse\n\
             cccccccccccc,,,greenhouse\n\
             dddddddddddd,smartcharger,,\n"
        ),
    );
    let out = f.ok(&["device", "import", csv.to_str().unwrap()]);
    assert!(out.contains("2 created, 1 updated, 0 unchanged"), "{out}");
    assert_eq!(resolved(&f, A, "sensorclass"), "2");
    assert_eq!(resolved(&f, "cccccccccccc", "sensorclass"), "1");
    assert_eq!(show(&f, "cccccccccccc")["group"]["name"], "greenhouse");
    assert_eq!(show(&f, "dddddddddddd")["group"], Value::Null);
    // Devices imported into a group follow it.
    f.ok(&["group", "set", "greenhouse", "sensorclass=2"]);
    assert_eq!(resolved(&f, "cccccccccccc", "sensorclass"), "2");

    let export = f.ok(&["device", "export"]);
    assert!(
        export.contains(&format!(
            "{{\"mac\":\"{B}\",\"modules\":{{\"sensorclass\":\"2\"}},\"group\":\"greenhouse\"}}"
        )),
        "{export}"
    );
    let file = f.file("export.jsonl", &export);
    let out = f.ok(&["device", "import", file.to_str().unwrap()]);
    assert!(out.contains("0 created, 0 updated, 5 unchanged"), "{out}");

    // An unknown group names its line, and nothing is imported.
    let bad = f.file(
        "bad.csv",
        "mac,app,modules,group\neeeeeeeeeeee,smartcharger,,\nffffffffffff,,,nope\n",
    );
    let err = f.fails(&["device", "import", bad.to_str().unwrap()]);
    assert!(
        err.contains("nothing imported")
            && err.contains("line 3")
            && err.contains("unknown group nope"),
        "{err}"
    );
    assert!(f.run(&["device", "show", "eeeeeeeeeeee"]).code != 0);
}

#[test]
fn the_served_manifest_is_the_group_s_with_the_device_s_pins() {
    let f = greenhouse();
    let s = f.serve();
    let manifest = |mac: &str| s.get(&format!("v1/{mac}.json")).json();
    assert_eq!(manifest(A)["modules"]["sensorclass"]["version"], "1");
    assert_eq!(manifest(B)["modules"]["sensorclass"]["version"], "2");
    assert_eq!(s.get(A).json()["sensorclass"], "1");
    f.ok(&["group", "set", "greenhouse", "sensorclass=2"]);
    let m = s.wait_get(&format!("v1/{A}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
    assert_eq!(m.json()["generation"], generation(&f, A));
}
