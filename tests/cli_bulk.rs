//! `mpfleet device import` and `device export`: many devices at once, all or nothing.

use crate::harness::Fleet;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

/// Every device as `device list --json` and `device show --json` see it: mac, desired,
/// generation and key fingerprint.
fn devices(f: &Fleet) -> Vec<Value> {
    f.json(&["device", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let mac = d["mac"].as_str().unwrap();
            let s = f.json(&["device", "show", mac, "--json"]);
            json!({"mac": mac, "desired": s["desired"], "generation": s["generation"],
                   "key": s["key"]})
        })
        .collect()
}

/// Runs `mpfleet device import -` with `input` on stdin; returns (exit code, stdout, stderr).
fn import_stdin(f: &Fleet, input: &str) -> (i32, String, String) {
    let mut child = Command::new(crate::harness::BIN)
        .args(["device", "import", "-"])
        .env("MPFLEET_DATA", f.data())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn csv_import_creates_devices_with_generations_and_keys() {
    let f = Fleet::smartcharger();
    let file = f.file(
        "devices.csv",
        "mac,app,modules\n\
         DE:AD:BE:EF:12:34,smartcharger,sensorclass=1\n\
         \n\
         aabbccddeeff,smartcharger,\n\
         a0b1c2d3e4f5,smartcharger,sensorclass=latest smartcharger=1\n",
    );
    let out = f.ok(&["device", "import", file.to_str().unwrap()]);
    assert!(out.contains("3 created, 0 updated, 0 unchanged"), "{out}");
    let all = devices(&f);
    assert_eq!(all.len(), 3);
    for d in &all {
        assert!(d["generation"].as_i64().unwrap() > 0, "{d}");
        assert_eq!(d["key"].as_str().unwrap().len(), 8, "{d}");
    }
    let keys: std::collections::HashSet<_> = all.iter().map(|d| d["key"].clone()).collect();
    assert_eq!(keys.len(), 3, "every device has its own key");
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(
        show["desired"],
        json!({"name": "smartcharger", "smartcharger": "latest", "sensorclass": "1",
               "config": "latest", "updater": "latest", "updater_trust": "latest", "reporter": "latest",
               "updater_io": "latest", "installer": "latest", "updater_delta": "latest"})
    );
    assert_eq!(show["resolved"]["modules"]["sensorclass"]["version"], "1");
    let show = f.json(&["device", "show", "a0b1c2d3e4f5", "--json"]);
    assert_eq!(show["resolved"]["modules"]["sensorclass"]["version"], "2");
    assert_eq!(show["resolved"]["modules"]["smartcharger"]["version"], "1");
}

#[test]
fn json_lines_import_from_stdin() {
    let f = Fleet::smartcharger();
    let (code, out, err) = import_stdin(
        &f,
        "{\"mac\": \"de:ad:be:ef:12:34\", \"app\": \"smartcharger\", \"modules\": {\"sensorclass\": \"2\"}}\n\
         {\"mac\": \"aabbccddeeff\", \"app\": \"smartcharger\"}\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 created"), "{out}");
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(show["desired"]["sensorclass"], "2");
    assert!(show["generation"].as_i64().unwrap() > 0);
    assert_eq!(show["key"].as_str().unwrap().len(), 8);
    let show = f.json(&["device", "show", "aabbccddeeff", "--json"]);
    assert_eq!(show["desired"]["smartcharger"], "latest");
}

#[test]
fn an_error_on_any_line_names_it_and_writes_nothing() {
    let f = Fleet::smartcharger();
    f.ok(&["device", "set", "020000000001", "--app", "smartcharger"]);
    let before = devices(&f);
    let good = "020000000001,smartcharger,sensorclass=2\n020000000002,smartcharger,\n";
    for (bad, error) in [
        ("nothex123456,smartcharger,", "invalid MAC address"),
        (
            "020000000003,smartcharger,mqttclass=1",
            "module mqttclass is not published",
        ),
        (
            "020000000003,smartcharger,sensorclass=9",
            "sensorclass has no version 9",
        ),
        (
            "020000000003,nosuchapp,",
            "module nosuchapp is not published",
        ),
        (
            "02:00:00:00:00:02,smartcharger,",
            "device 020000000002 is already on line 3",
        ),
        (
            "020000000003,smartcharger,sensorclass",
            "is not MODULE=VERSION",
        ),
        ("020000000003,smartcharger,a=1,b=2", "4 fields"),
        ("020000000003,smartcharger,../x=1", "invalid module name"),
    ] {
        let file = f.file(
            "bad.csv",
            &format!("mac,app,modules\n{good}{bad}\n030000000000,smartcharger,\n"),
        );
        let err = f.fails(&["device", "import", file.to_str().unwrap()]);
        assert!(err.contains("line 4"), "{bad}: {err}");
        assert!(err.contains(error), "{bad}: {err}");
        assert!(err.contains("nothing imported"), "{bad}: {err}");
        assert_eq!(devices(&f), before, "{bad}: the store changed");
    }
    // JSON lines: a malformed line, a module list that is too long.
    let many: serde_json::Map<String, Value> =
        (0..70).map(|i| (format!("m{i}"), json!("1"))).collect();
    for (bad, error) in [
        (
            "{\"mac\": \"020000000003\", \"app\": ".to_owned(),
            "not a JSON object",
        ),
        (
            "{\"mac\": \"020000000003\", \"ap\": \"smartcharger\"}".to_owned(),
            "not a JSON object",
        ),
        (
            json!({"mac": "020000000003", "app": "smartcharger", "modules": many}).to_string(),
            "a board runs at most 64",
        ),
    ] {
        let input = format!(
            "{}\n{}\n\n{bad}\n",
            json!({"mac": "020000000001", "app": "smartcharger", "modules": {"sensorclass": "2"}}),
            json!({"mac": "020000000002", "app": "smartcharger"}),
        );
        let (code, _, err) = import_stdin(&f, &input);
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains("line 4"), "{bad}: {err}");
        assert!(err.contains(error), "{bad}: {err}");
        assert_eq!(devices(&f), before, "{bad}: the store changed");
    }
    // Neither CSV nor JSON.
    let (code, _, err) = import_stdin(&f, "\nmac;app;modules\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("line 2") && err.contains("CSV header"),
        "{err}"
    );
}

#[test]
fn reimport_updates_and_keeps_keys() {
    let f = Fleet::smartcharger();
    let file = f.file(
        "devices.csv",
        "mac,app,modules\n020000000001,smartcharger,sensorclass=1\n020000000002,smartcharger,\n",
    );
    f.ok(&["device", "import", file.to_str().unwrap()]);
    let before = devices(&f);
    let file = f.file(
        "devices.csv",
        "mac,app,modules\n020000000001,smartcharger,sensorclass=2\n\
         020000000002,smartcharger,\n020000000003,smartcharger,\n",
    );
    let out = f.ok(&["device", "import", file.to_str().unwrap()]);
    assert!(out.contains("1 created, 1 updated, 1 unchanged"), "{out}");
    let after = devices(&f);
    assert_eq!(after.len(), 3);
    for i in 0..2 {
        assert_eq!(after[i]["key"], before[i]["key"], "the key is kept");
    }
    assert_eq!(after[0]["desired"]["sensorclass"], "2");
    assert!(after[0]["generation"].as_i64() > before[0]["generation"].as_i64());
    assert_eq!(after[1], before[1], "an unchanged device is untouched");
    // Its key is the one its bootstrap carries.
    assert_eq!(
        f.key("020000000001").fingerprint(),
        after[0]["key"].as_str().unwrap()
    );
}

#[test]
fn export_round_trips_through_import() {
    let f = Fleet::smartcharger();
    f.ok(&[
        "device",
        "set",
        "020000000001",
        "--app",
        "smartcharger",
        "sensorclass=1",
        "config=latest",
    ]);
    f.ok(&["device", "set", "020000000002", "--app", "smartcharger"]);
    let before = devices(&f);
    let export = f.ok(&["device", "export"]);
    assert_eq!(export.lines().count(), 2, "{export}");
    assert!(!export.contains("key"), "{export}");
    let first: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"mac": "020000000001", "app": "smartcharger",
               "modules": {"smartcharger": "latest", "sensorclass": "1", "config": "latest",
                           "updater": "latest", "updater_trust": "latest", "reporter": "latest", "updater_io": "latest",
                           "installer": "latest", "updater_delta": "latest"}})
    );
    let (code, out, err) = import_stdin(&f, &export);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 created, 0 updated, 2 unchanged"), "{out}");
    assert_eq!(devices(&f), before);
    // Into another store: the same devices, with keys of their own.
    let g = Fleet::smartcharger();
    let (code, _, err) = import_stdin(&g, &export);
    assert_eq!(code, 0, "{err}");
    assert_eq!(g.ok(&["device", "export"]), export);
}

#[test]
fn a_few_thousand_devices() {
    let f = Fleet::smartcharger();
    let n = 3000;
    let mut csv = String::from("mac,app,modules\n");
    for i in 0..n {
        let m = if i % 2 == 0 {
            "sensorclass=1"
        } else {
            "sensorclass=latest"
        };
        csv.push_str(&format!("02{i:010x},smartcharger,{m}\n"));
    }
    let file = f.file("many.csv", &csv);
    let out = f.ok(&["device", "import", file.to_str().unwrap()]);
    assert!(out.contains(&format!("{n} created")), "{out}");
    let list = f.json(&["device", "list", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), n);
    assert!(
        list.iter().all(|d| d["generation"].as_i64().unwrap() > 0),
        "every device has a generation"
    );
    let show = f.json(&["device", "show", "020000000bb6", "--json"]);
    assert_eq!(show["resolved"]["modules"]["sensorclass"]["version"], "1");
    let show = f.json(&["device", "show", "020000000bb7", "--json"]);
    assert_eq!(show["resolved"]["modules"]["sensorclass"]["version"], "2");
    // The export holds them all, and importing it again changes nothing.
    let export = f.ok(&["device", "export"]);
    assert_eq!(export.lines().count(), n);
    let (code, out, err) = import_stdin(&f, &export);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{n} unchanged")), "{out}");
    // A new latest reaches the imported devices that track it.
    let before = f.json(&["device", "show", "020000000001", "--json"])["generation"].clone();
    f.publish("sensorclass", "x = 3\n", &[]);
    let after = f.json(&["device", "show", "020000000001", "--json"])["generation"].clone();
    assert!(after.as_i64() > before.as_i64());
}
