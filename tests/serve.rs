//! `mpfleet serve`: every device-facing path, ETags, unknown MACs, reports.

use crate::harness::{eventually, Fleet};
use serde_json::json;
use std::time::Duration;

/// The seed's example: `deadbeef1234` running `smartcharger`.
fn seed_fleet() -> Fleet {
    let f = Fleet::smartcharger();
    f.publish("testmain", "t = 1\n", &[]);
    f.publish("mqttclass", "m = 1\n", &[]);
    f.ok(&[
        "device",
        "set",
        "deadbeef1234",
        "--app",
        "smartcharger",
        "smartcharger=1",
        "sensorclass=2",
        "testmain=latest",
        "mqttclass=latest",
        "updater=latest",
    ]);
    f
}

#[test]
fn seed_example_is_served_in_the_seed_format() {
    let f = seed_fleet();
    let s = f.serve();
    let r = s.get("deadbeef1234");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        r#"{"name":"smartcharger","smartcharger":"1","sensorclass":"2","testmain":"latest","mqttclass":"latest","updater":"latest","config":"latest","updater_trust":"latest","reporter":"latest","updater_io":"latest","installer":"latest","updater_delta":"latest"}"#
    );
    let latest = s.get("latestversions").json();
    assert_eq!(latest["sensorclass"], "2");
    assert_eq!(latest["smartcharger"], "1");
    assert_eq!(s.get("sensorclass.py").text(), "x = 2\n");
    assert_eq!(s.get("m/sensorclass/1.py").text(), "x = 1\n");
    assert!(s.get("updater.py").status == 200 && s.get("config.py").status == 200);
}

#[test]
fn resolved_manifest_has_sizes_hashes_and_urls() {
    let f = seed_fleet();
    let s = f.serve();
    let r = s.get("v1/deadbeef1234.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let m = r.json();
    assert_eq!(m["device"], "deadbeef1234");
    assert_eq!(m["app"], "smartcharger");
    assert!(m["generation"].as_i64().unwrap() >= 1);
    let modules = m["modules"].as_object().unwrap();
    let names: Vec<_> = modules.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "config",
            "installer",
            "mqttclass",
            "reporter",
            "sensorclass",
            "smartcharger",
            "testmain",
            "updater",
            "updater_delta",
            "updater_io",
            "updater_trust"
        ]
    );
    for (name, entry) in modules {
        let url = entry["url"].as_str().unwrap();
        assert_eq!(
            url,
            format!("m/{name}/{}.py", entry["version"].as_str().unwrap())
        );
        let file = s.get(url);
        assert_eq!(file.status, 200, "{url}");
        assert_eq!(
            file.body.len() as u64,
            entry["size"].as_u64().unwrap(),
            "{url}"
        );
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file.body));
        assert_eq!(sha, entry["sha256"].as_str().unwrap(), "{url}");
    }
    let mut sensorclass = modules["sensorclass"].clone();
    // The precompiled variant, when mpy-cross is installed, is checked in cli_module.
    sensorclass.as_object_mut().unwrap().remove("mpy");
    assert_eq!(
        sensorclass,
        json!({
            "version": "2", "size": 6,
            "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"x = 2\n")),
            "url": "m/sensorclass/2.py"
        })
    );
}

#[test]
fn etag_and_304_on_every_device_path() {
    let f = seed_fleet();
    let s = f.serve();
    for path in [
        "deadbeef1234",
        "v1/deadbeef1234.json",
        "latestversions",
        "sensorclass.py",
        "m/sensorclass/1.py",
    ] {
        let r = s.get(path);
        let etag = r
            .etag
            .clone()
            .unwrap_or_else(|| panic!("no ETag on {path}"));
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let again = s.get_if_none_match(path, &etag);
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        assert_eq!(s.get_if_none_match(path, "\"stale\"").status, 200, "{path}");
    }
}

#[test]
fn served_state_follows_cli_changes_and_generation() {
    let f = seed_fleet();
    let s = f.serve();
    let before = s.get("v1/deadbeef1234.json");
    let g1 = before.json()["generation"].as_i64().unwrap();
    // A new latest of a module the device tracks: new generation, new ETag.
    f.publish("mqttclass", "m = 2\n", &[]);
    let after = s.wait_get("v1/deadbeef1234.json", |r| {
        r.json()["modules"]["mqttclass"]["version"] == "2"
    });
    assert!(after.json()["generation"].as_i64().unwrap() > g1);
    assert_ne!(after.etag, before.etag);
    assert_eq!(
        s.get_if_none_match("v1/deadbeef1234.json", before.etag.as_deref().unwrap())
            .status,
        200
    );
    // A new version of sensorclass, which the device pins: manifest unchanged.
    let pinned = s.get("v1/deadbeef1234.json");
    f.publish("sensorclass", "x = 3\n", &[]);
    s.wait_get("sensorclass.py", |r| r.text() == "x = 3\n");
    assert_eq!(s.get("v1/deadbeef1234.json").body, pinned.body);
}

#[test]
fn unknown_mac_gets_json_404_and_is_recorded() {
    let f = seed_fleet();
    let s = f.serve();
    let r = s.get("v1/a0b1c2d3e4f5.json");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("unknown device a0b1c2d3e4f5"));
    let r = s.get("a0b1c2d3e4f5");
    assert_eq!(r.status, 404);
    let unknown = eventually(
        "the unknown MAC to be recorded",
        Duration::from_secs(10),
        || {
            let v = f.json(&["device", "list", "--unknown", "--json"]);
            (v.as_array().unwrap().len() == 1 && v[0]["requests"] == 2).then_some(v)
        },
    );
    assert_eq!(unknown[0]["mac"], "a0b1c2d3e4f5");
    assert!(unknown[0]["last_seen"].as_i64().unwrap() > 0);
    assert!(f
        .ok(&["device", "list", "--unknown"])
        .contains("a0b1c2d3e4f5"));
    // Adopting it removes it from the unknown list.
    f.ok(&["device", "set", "a0b1c2d3e4f5", "--app", "smartcharger"]);
    assert_eq!(
        f.json(&["device", "list", "--unknown", "--json"]),
        json!([])
    );
    s.wait_get("v1/a0b1c2d3e4f5.json", |r| r.status == 200);
}

#[test]
fn report_is_stored_and_shown() {
    let f = seed_fleet();
    let s = f.serve();
    let report = json!({"n": 1, "event": "updated", "generation": 7, "config": "primary",
        "modules": {"sensorclass": "2", "updater": "1"}, "flags": {"reboots": 1},
        "error": null, "mem_free": 21344, "micropython": "1.24.1", "mpy": 2822});
    let key = f.key("deadbeef1234");
    let r = s.report("deadbeef1234", &key, report.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    // Stored before the reply: visible at once.
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(show["last_report"], report);
    assert_eq!(show["reports"][0]["report"], report);
    assert!(show["last_seen"].as_i64().is_some());
    let table = f.ok(&["device", "list"]);
    assert!(table.contains("updated"), "{table}");
}

#[test]
fn report_history_is_bounded() {
    let f = seed_fleet();
    let s = f.serve();
    let key = f.key("deadbeef1234");
    for i in 0..60 {
        let body = json!({"n": i + 1, "event": "boot", "generation": i});
        assert_eq!(
            s.report("deadbeef1234", &key, body.to_string().as_bytes())
                .status,
            200
        );
    }
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(show["last_report"]["generation"], 59);
    let db = rusqlite::Connection::open(f.data().join("mpfleet.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 50);
}

#[test]
fn bad_reports_are_refused_with_json_errors() {
    let f = seed_fleet();
    let s = f.serve();
    let key = f.key("deadbeef1234");
    for (body, status) in [
        (&b"not json"[..], 400),
        (b"[1,2]", 400),
        (b"{\"generation\": 1}", 400),
        (b"{\"event\": \"exploded\", \"n\": 1}", 400),
        (b"{\"event\": 5, \"n\": 1}", 400),
        (b"{\"event\": \"boot\"}", 400),
        (b"{\"event\": \"boot\", \"n\": 0}", 400),
        (b"{\"event\": \"boot\", \"n\": 1, \"high\": \"x\"}", 400),
    ] {
        let r = s.report("deadbeef1234", &key, body);
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(body));
        assert!(r.json()["error"].is_string());
    }
    let big = format!("{{\"event\":\"boot\",\"pad\":\"{}\"}}", "a".repeat(20_000));
    let r = s.post("v1/deadbeef1234/report", big.as_bytes());
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].is_string());
    let r = s.post("v1/not-a-mac/report", b"{\"event\":\"boot\"}");
    assert_eq!(r.status, 400);
    let r = s.post("v1/0000000000aa/report", b"{\"event\":\"boot\"}");
    assert_eq!(r.status, 404);
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(show["reports"], json!([]), "nothing bad was stored");
}

#[test]
fn path_traversal_and_odd_paths_are_404() {
    let f = seed_fleet();
    let s = f.serve();
    for path in [
        "../mpfleet.db",
        "..%2fmpfleet.db",
        "m/../../mpfleet.db",
        "m/sensorclass/../../blobs",
        "blobs",
        "mpfleet.db",
        "m/sensorclass/9.py",
        "v1/",
        "%2e%2e/%2e%2e/etc/passwd",
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
    }
    let r = crate::harness::Server::post(&s, "latestversions", b"{}");
    assert_eq!(r.status, 405);
}

/// Polls the unknown list until `mac` is in it: a flush of the sightings just happened.
fn wait_until_unknown(f: &Fleet, mac: &str) -> serde_json::Value {
    eventually(
        &format!("{mac} to be listed as unknown"),
        Duration::from_secs(10),
        || {
            let v = f.json(&["device", "list", "--unknown", "--json"]);
            v.as_array()
                .unwrap()
                .iter()
                .any(|u| u["mac"] == mac)
                .then_some(v)
        },
    )
}

/// A MAC that asks just before `device set` must not stay listed as unknown once the sighting
/// `serve` buffered for it is written (after the device row exists).
#[test]
fn mac_that_asked_just_before_device_set_is_not_unknown() {
    let f = seed_fleet();
    let s = f.serve();
    // Right after a flush, so the next one is about a second away.
    assert_eq!(s.get("v1/0a0000000001.json").status, 404);
    wait_until_unknown(&f, "0a0000000001");
    // The board asks while unknown; it is assigned before that sighting is written.
    assert_eq!(s.get("v1/a0b1c2d3e4f5.json").status, 404);
    f.ok(&["device", "set", "a0b1c2d3e4f5", "--app", "smartcharger"]);
    // Another unknown MAC asks after; once it is listed, the sighting before it is written.
    assert_eq!(s.get("v1/0a0000000002.json").status, 404);
    let unknown = wait_until_unknown(&f, "0a0000000002");
    let macs: Vec<&str> = unknown
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["mac"].as_str().unwrap())
        .collect();
    assert!(!macs.contains(&"a0b1c2d3e4f5"), "{unknown}");
    assert!(!f
        .ok(&["device", "list", "--unknown"])
        .contains("a0b1c2d3e4f5"));
    s.wait_get("v1/a0b1c2d3e4f5.json", |r| r.status == 200);
}

#[test]
fn access_log_has_one_line_per_request() {
    let f = seed_fleet();
    let s = f.serve();
    s.get("latestversions");
    s.get("m/sensorclass/1.py");
    let lines = eventually("two access log lines", Duration::from_secs(5), || {
        let l = s.requests();
        (l.len() >= 2).then_some(l)
    });
    assert!(lines[0].starts_with("GET /latestversions 200"), "{lines:?}");
    assert!(
        lines[1].starts_with("GET /m/sensorclass/1.py 200"),
        "{lines:?}"
    );
}

#[test]
fn sigterm_writes_pending_sightings_before_exit() {
    let f = seed_fleet();
    let s = f.serve();
    assert_eq!(s.get("v1/a0b1c2d3e4f5.json").status, 404);
    // Sightings are flushed once a second; stopping at once must not lose this one.
    assert_eq!(s.terminate(), 0);
    let unknown = f.json(&["device", "list", "--unknown", "--json"]);
    assert_eq!(unknown[0]["mac"], "a0b1c2d3e4f5", "{unknown}");
}
