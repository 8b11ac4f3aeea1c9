//! Attacks on the trust between boards and the server (docs/security.md), each a test that
//! fails when its defence is removed: forged, misdirected, unsigned and replayed manifests,
//! tampered files at bootstrap, forged and replayed reports, keys that leak, and a server
//! restored from an old backup (which must not strand its boards).

use crate::harness::{eventually, fleet_with_board, Fleet, Server, SimBoard, StaticFiles, Tamper};
use mpfleet::sign::seal;
use mpfleet::store::DeviceKey;
use serde_json::{json, Value};
use std::time::Duration;

const MAC: &str = "deadbeef1234";
const OTHER: &str = "aabbccddeeff";

/// The manifest inside a sealed body (everything after the envelope line).
fn inside(body: &[u8]) -> String {
    let text = std::str::from_utf8(body).unwrap();
    let (line, manifest) = text.split_once('\n').unwrap();
    assert!(line.starts_with("{\"hmac\":\""), "not sealed: {text}");
    manifest.to_owned()
}

fn last_report(f: &Fleet) -> Value {
    f.json(&["device", "show", MAC, "--json"])["last_report"].clone()
}

/// A fleet with MAC installed through a tampering proxy (passing everything for now), and a
/// second device OTHER.
fn installed() -> (Fleet, Server, Tamper, SimBoard) {
    let f = fleet_with_board(MAC, &[]);
    f.ok(&["device", "set", OTHER, "--app", "app"]);
    let s = f.serve();
    let t = Tamper::start(&s.base);
    let b = SimBoard::new(&f, MAC);
    let run = b.boot(&t.base, 6);
    assert!(run.settled(), "{}", run.out);
    runs(&run, "APP one primary");
    (f, s, t, b)
}

/// The board asks for an update through the tampering proxy: it must refuse with `reason`,
/// keep running what it ran, and report `update_failed` with that reason.
fn refuses(f: &Fleet, t: &Tamper, b: &SimBoard, reason: &str) {
    refuses_quietly(t, b, reason);
    let report = eventually("the refusal's report", Duration::from_secs(10), || {
        let r = last_report(f);
        (r["error"].as_str().is_some_and(|e| e.contains(reason))).then_some(r)
    });
    assert_eq!(report["event"], "update_failed", "{report}");
}

#[test]
fn forged_unsigned_and_misdirected_manifests_are_refused() {
    let (f, s, t, b) = installed();
    // Something new to take, so only the defence stands between the board and the attack.
    f.publish("sensorclass", "VALUE = 'evil'\n", &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
    let path = format!("v1/{MAC}.json");
    let (mine, other) = (f.key(MAC), f.key(OTHER));

    // One byte of the manifest changed under its seal.
    t.set(&path, |body| {
        String::from_utf8_lossy(body)
            .replacen("m/sensorclass/", "m/sensorclasz/", 1)
            .into_bytes()
    });
    refuses(&f, &t, &b, "not signed with this board's key");

    // No seal at all: the manifest as an older server sent it.
    t.set(&path, |body| inside(body).into_bytes());
    refuses(&f, &t, &b, "manifest is not signed");

    // Sealed with another board's key (a board that knows its own key attacks this one).
    let theirs = inside(&s.get(&path).body);
    let k = other.clone();
    t.set(&path, move |_| seal(&k, &theirs).into_bytes());
    refuses(&f, &t, &b, "not signed with this board's key");

    // Sealed with this board's key but naming another device, or another store: what a
    // stolen key of one store could be replayed to elsewhere.
    let for_other = inside(&s.get(&format!("v1/{OTHER}.json")).body);
    let k = mine.clone();
    t.set(&path, move |_| seal(&k, &for_other).into_bytes());
    refuses(&f, &t, &b, &format!("manifest of device {OTHER}"));
    let store = s.get(&path).json()["store"].as_str().unwrap().to_owned();
    let elsewhere = inside(&s.get(&path).body).replace(&store, &"0".repeat(32));
    let k = mine.clone();
    t.set(&path, move |_| seal(&k, &elsewhere).into_bytes());
    refuses(&f, &t, &b, "manifest of another store");

    // With the attacker gone the board takes the real update.
    t.clear();
    let run = update(&b, &t.base);
    runs(&run, "APP evil primary");
}

#[test]
fn a_replayed_older_manifest_cannot_bring_old_code_back() {
    let (f, s, t, b) = installed();
    let path = format!("v1/{MAC}.json");
    let old = s.get(&path).body;
    let old_generation = s.get(&path).json()["generation"].as_i64().unwrap();
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    s.wait_get(&path, |r| {
        r.json()["generation"].as_i64() > Some(old_generation)
    });
    let run = update(&b, &t.base);
    runs(&run, "APP two primary");
    assert!(b.json("ota/trust.json")["gen"].as_i64() > Some(old_generation));
    // The old manifest is validly signed for this board: only its generation gives it away.
    t.set(&path, move |_| old.clone());
    let run = update(&b, &t.base);
    assert!(run.out.contains("is older than"), "{}", run.out);
    runs(&run, "APP two primary");
}

#[test]
fn a_tampered_main_py_at_bootstrap_is_not_installed() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let t = Tamper::start(&s.base);
    t.set("m/main/", |body| {
        // The gzip copy is tampered with as a whole: valid gzip of other bytes.
        let gz = body.starts_with(&[0x1f, 0x8b]);
        let mut b = body.to_vec();
        if gz {
            b.clear();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut b).unwrap();
        }
        b[0] ^= 0x20;
        if gz {
            b = mpfleet::compress::gzip(&b).unwrap();
        }
        b
    });
    let b = SimBoard::new(&f, MAC);
    let run = b.boot(&t.base, 2);
    assert!(run.out.contains("sha256 mismatch"), "{}", run.out);
    assert!(b.read("main.py").is_none(), "{}", run.out);
    assert!(run.app_lines().is_empty(), "{}", run.out);
    // The same board, the attacker gone: the bootstrap is safe to run again.
    t.clear();
    let run = b.boot(&t.base, 6);
    runs(&run, "APP one primary");
}

#[test]
fn forged_and_replayed_reports_are_refused_and_counted() {
    let f = fleet_with_board(MAC, &[]);
    f.ok(&["device", "set", OTHER, "--app", "app"]);
    let s = f.serve();
    let (mine, other) = (f.key(MAC), f.key(OTHER));
    let body = |n: i64| json!({"n": n, "event": "boot", "generation": 1}).to_string();
    assert_eq!(s.report(MAC, &mine, body(1).as_bytes()).status, 200);
    // Replayed: the same bytes, or any counter not above the last.
    assert_eq!(s.report(MAC, &mine, body(1).as_bytes()).status, 409);
    // Forged: no HMAC, another device's key, or a body changed under its HMAC.
    let r = s.post(&format!("v1/{MAC}/report"), body(2).as_bytes());
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(s.report(MAC, &other, body(3).as_bytes()).status, 401);
    let hmac = mpfleet::sign::hmac_hex(&mine, body(4).as_bytes());
    let r = ureq::post(&format!("{}v1/{MAC}/report", s.base))
        .set(mpfleet::sign::REPORT_HMAC, &hmac)
        .send_bytes(body(5).as_bytes());
    assert_eq!(
        r.map_or_else(|e| e.into_response().unwrap().status(), |r| r.status()),
        401
    );
    assert_eq!(s.report(MAC, &mine, body(2).as_bytes()).status, 200);
    let show = eventually("the refusals counted", Duration::from_secs(10), || {
        let show = f.json(&["device", "show", MAC, "--json"]);
        (show["forged_reports"] == 3).then_some(show)
    });
    assert_eq!(show["replayed_reports"], 1, "{show}");
    assert_eq!(show["report_counter"], 2, "{show}");
    assert_eq!(show["reports"].as_array().unwrap().len(), 2, "{show}");
    let table = f.ok(&["device", "show", MAC]);
    assert!(table.contains("refused 3 forged, 1 replayed"), "{table}");
}

#[test]
fn keys_never_appear_in_served_files_logs_or_show() {
    let f = fleet_with_board(MAC, &[]);
    let key = f.key(MAC).to_hex();
    let s = f.serve();
    let body = s.get(&format!("v1/{MAC}.json")).text();
    assert!(!body.contains(&key));
    let out = f.dir.path().join("www");
    f.ok(&["export", out.to_str().unwrap()]);
    for entry in walk(&out) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&key),
            "{} holds the key",
            entry.display()
        );
    }
    let show = f.ok(&["device", "show", MAC]) + &f.ok(&["device", "show", MAC, "--json"]);
    assert!(!show.contains(&key), "{show}");
    assert!(show.contains(&DeviceKey::from_hex(&key).unwrap().fingerprint()));
    let log = s.log().join("\n");
    assert!(log.contains("GET /v1/"), "the access log is on: {log}");
    assert!(!log.contains(&key), "{log}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_rotated_key_locks_the_board_out_until_it_is_provisioned_again() {
    let (f, s, t, b) = installed();
    let before = f.key(MAC);
    let sealed = s.get(&format!("v1/{MAC}.json")).body;
    let out = f.ok(&["device", "key", MAC, "--rotate"]);
    assert!(out.contains("mpfleet device bootstrap"), "{out}");
    assert_ne!(f.key(MAC), before);
    // Served sealed under the new key once the server has seen the change.
    s.wait_get(&format!("v1/{MAC}.json"), |r| r.body != sealed);
    refuses_quietly(&t, &b, "not signed with this board's key");
    // Its reports, signed with the old key, are refused as forged.
    let show = eventually("the forged reports", Duration::from_secs(10), || {
        let show = f.json(&["device", "show", MAC, "--json"]);
        (show["forged_reports"].as_i64() > Some(0)).then_some(show)
    });
    assert_eq!(show["replayed_reports"], 0, "{show}");
}

/// The board asks for an update through `t` and refuses it with `reason`, still running
/// what it ran.
fn refuses_quietly(t: &Tamper, b: &SimBoard, reason: &str) {
    let run = update(b, &t.base);
    assert!(
        run.out.contains(reason),
        "expected {reason:?}:\n{}",
        run.out
    );
    runs(&run, "APP one primary");
}

#[test]
fn a_store_restored_from_an_older_backup_does_not_strand_its_boards() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let listen = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let b = SimBoard::new(&f, MAC);
    assert!(b
        .boot(&s.base, 6)
        .last_app_line()
        .starts_with("APP one primary"));
    // The backup: the data directory copied while the server is stopped.
    s.terminate();
    let backup = f.dir.path().join("backup");
    copy_dir(&f.data(), &backup);
    let s = Server::start_at(&f.data(), &listen, &[]);
    // Two changes after the backup: the board accepts a generation the backup never saw.
    for value in ["two", "three"] {
        f.publish("sensorclass", &format!("VALUE = '{value}'\n"), &[]);
    }
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "3"
    });
    let run = update(&b, &s.base);
    runs(&run, "APP three primary");
    let high = b.json("ota/trust.json")["gen"].as_i64().unwrap();
    // Disaster: the store is restored from the backup, on the same address.
    s.terminate();
    std::fs::remove_dir_all(f.data()).unwrap();
    copy_dir(&backup, &f.data());
    let s = Server::start_at(&f.data(), &listen, &[]);
    let restored = s.get(&format!("v1/{MAC}.json")).json()["generation"]
        .as_i64()
        .unwrap();
    assert!(
        restored < high,
        "the backup's generation {restored} is below {high}"
    );
    // The board refuses the restored generation and says which one it has; the server moves
    // the device above it, and the next update goes through: back to what the backup says.
    let run = update(&b, &s.base);
    assert!(run.out.contains("is older than"), "{}", run.out);
    let moved = s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["generation"].as_i64() > Some(high)
    });
    assert_eq!(moved.json()["modules"]["sensorclass"]["version"], "1");
    let run = update(&b, &s.base);
    runs(&run, "APP one primary");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_board_installs_updates_and_refuses_forgeries_from_a_static_export() {
    let f = fleet_with_board(MAC, &[]);
    let www = f.dir.path().join("www");
    let export = |f: &Fleet| f.ok(&["export", www.to_str().unwrap()]);
    export(&f);
    let web = StaticFiles::start(www.clone());
    let b = SimBoard::new(&f, MAC);
    let run = b.boot(&web.base, 6);
    runs(&run, "APP one primary");
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    export(&f);
    let run = update(&b, &web.base);
    runs(&run, "APP two primary");
    // Someone with write access to the web server's files, but not the store, edits a manifest.
    f.publish("sensorclass", "VALUE = 'three'\n", &[]);
    export(&f);
    let manifest = www.join(format!("v1/{MAC}.json"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("m/sensorclass/3", "m/sensorclass/1"),
    )
    .unwrap();
    let run = update(&b, &web.base);
    assert!(
        run.out.contains("not signed with this board's key"),
        "{}",
        run.out
    );
    runs(&run, "APP two primary");
}

#[test]
fn secrets_reach_the_board_in_its_bootstrap_only_and_updates_keep_them() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let secrets = f.file("secrets.json", r#"{"wifi": "hunter2 \u00e9\"'\\", "n": 3}"#);
    let text = f.ok(&[
        "device",
        "bootstrap",
        MAC,
        "--server",
        &s.base,
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(text.contains("hunter2"));
    let mut b = SimBoard::new(&f, MAC);
    b.bootstrap = Some(f.file("bootstrap.py", &text));
    let run = b.boot(&s.base, 6);
    runs(&run, "APP one primary");
    let want = json!({"wifi": "hunter2 \u{e9}\"'\\", "n": 3});
    assert_eq!(b.json("secrets.json"), want);
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
    let run = update(&b, &s.base);
    runs(&run, "APP two primary");
    assert_eq!(b.json("secrets.json"), want);
    let www = f.dir.path().join("www");
    f.ok(&["export", www.to_str().unwrap()]);
    for file in walk(&www) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("hunter2"));
    }
    // Not a JSON object: refused, with the file named.
    let bad = f.file("bad.json", "[1]");
    let err = f.fails(&[
        "device",
        "bootstrap",
        MAC,
        "--secrets",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("not a JSON object"), "{err}");
}

#[test]
fn a_new_data_directory_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let f = fleet_with_board(MAC, &[]);
    let mode = std::fs::metadata(f.data()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// The board asks for an update, then boots (at most 6 boots: the update takes three) from `base`.
fn update(b: &SimBoard, base: &str) -> crate::harness::SimRun {
    b.ask_for_update();
    b.boot(base, 6)
}

/// The run ended in the app, saying `prefix` first.
fn runs(run: &crate::harness::SimRun, prefix: &str) {
    assert!(run.last_app_line().starts_with(prefix), "{}", run.out);
}
