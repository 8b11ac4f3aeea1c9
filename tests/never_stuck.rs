//! The board never gets stuck and never loses good code: each case here was a way a board
//! got stuck, lost its last good configuration, or installed unchecked bytes (issue 7),
//! reproduced on the real MicroPython port against the real server.

use crate::harness::{
    config_versions, eventually, Fault, FaultProxy, Fleet, ImageBoard, Server, SimBoard,
};
use serde_json::Value;
use std::time::Duration;

const MAC: &str = "deadbeef57ac";

fn reports(f: &Fleet, mac: &str) -> Vec<Value> {
    f.json(&["device", "show", mac, "--json"])["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"].clone())
        .collect()
}

fn generation(s: &Server, mac: &str) -> i64 {
    s.get(&format!("v1/{mac}.json")).json()["generation"]
        .as_i64()
        .unwrap()
}

/// Publishes `source` as the next version of `name` and waits until `mac`'s manifest has it.
fn publish(f: &Fleet, s: &Server, mac: &str, name: &str, source: &str) -> i64 {
    let before = generation(s, mac);
    f.publish(name, source, &[]);
    s.wait_get(&format!("v1/{mac}.json"), |r| {
        r.json()["generation"].as_i64() != Some(before)
    });
    generation(s, mac)
}

/// The app: dies while `/poison` exists, says what it runs, and says it is healthy unless
/// `confirm` is false.
fn app(confirm: bool) -> String {
    format!(
        "import os\n\
         import config\n\
         import sensorclass\n\
         try:\n\
         \x20   os.stat('/poison')\n\
         \x20   poisoned = True\n\
         except OSError:\n\
         \x20   poisoned = False\n\
         if poisoned:\n\
         \x20   raise RuntimeError('poisoned')\n\
         print('APP', sensorclass.VALUE, 'primary' if config.primary else 'alternate', config.generation)\n\
         {}\n",
        if confirm {
            "config.set('reboots', 0)"
        } else {
            "pass"
        }
    )
}

/// Publishes `app_src` as the app and sensorclass 'one', and assigns the board to them.
fn assign(f: &Fleet, app_src: &str) {
    f.publish("app", app_src, &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    f.ok(&["device", "set", MAC, "--app", "app", "sensorclass=latest"]);
}

/// A served fleet whose board (a littlefs image) runs `app` and sensorclass 'one'.
fn installed(app_src: &str) -> (Fleet, Server, ImageBoard) {
    let f = Fleet::new();
    assign(&f, app_src);
    let s = f.serve();
    let mut b = ImageBoard::new(f.dir.path().join("board"), MAC);
    b.data = Some(f.data());
    // An app that never says it is healthy is reset at this boot deadline.
    b.watchdog = Some(3.0);
    let run = b.boot_with(&s.base, 6, false, None);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    (f, s, b)
}

fn image_json(b: &ImageBoard, path: &str) -> Option<Value> {
    let image = b.inspect();
    let text = image["files"][path]["text"].as_str()?.to_owned();
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
}

fn manifest_requests(s: &Server, from: usize) -> usize {
    s.requests()[from..]
        .iter()
        .filter(|l| l.starts_with(&format!("GET /v1/{MAC}.json")))
        .count()
}

#[test]
fn a_fallback_that_crashes_too_asks_the_server_until_a_fix_comes() {
    let (f, s, b) = installed(&app(true));
    let good = generation(&s, MAC);
    // Generation 2 poisons the flash: its own app dies, and so does generation 1's.
    let bad = publish(
        &f,
        &s,
        MAC,
        "sensorclass",
        "open('/poison', 'w').close()\nVALUE = 'two'\n",
    );
    // 14 boots: the update's three, the bad app's loop, the alternate's loop, then the check
    // (boot 5 of the alternate) and its report (a boot of its own).
    let run = b.boot_with(&s.base, 14, true, None);
    assert!(!run.settled(), "{}", run.out);
    assert!(
        run.out
            .contains(&format!("rolled back from generation {bad}")),
        "{}",
        run.out
    );
    // Stuck on the alternate, it asked the server and said so.
    let stuck = eventually("a boot-loop report", Duration::from_secs(10), || {
        reports(&f, MAC).into_iter().find(|r| {
            r["event"] == "update_failed" && r["error"].as_str().unwrap_or("").contains("boot loop")
        })
    });
    assert_eq!(stuck["generation"], good, "{stuck}");
    // A fix is published: the board takes it at its next check, however long it looped.
    let fix = publish(
        &f,
        &s,
        MAC,
        "sensorclass",
        "import os\ntry:\n    os.remove('/poison')\nexcept OSError:\n    pass\nVALUE = 'three'\n",
    );
    let mark = s.mark();
    let run = b.boot_with(&s.base, 30, false, None);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(
        run.last_app_line(),
        format!("APP three primary {fix}"),
        "{}",
        run.out
    );
    // With backoff: not a request per boot.
    let boots = run.out.matches("--- boot ").count();
    let asked = manifest_requests(&s, mark);
    assert!(
        asked >= 1 && asked * 3 <= boots,
        "{asked} manifest requests in {boots} boots"
    );
    // The generation that poisoned the flash stays blacklisted; the good one is the alternate.
    let bad_list = image_json(&b, "/ota/bad.json").unwrap();
    assert!(
        bad_list.as_array().unwrap().contains(&bad.into()),
        "{bad_list}"
    );
    assert_eq!(
        image_json(&b, "/ota/alternate.json").unwrap()["generation"],
        good
    );
}

#[test]
fn only_a_confirmed_configuration_becomes_the_alternate() {
    let (f, s, b) = installed(&app(true));
    let good = generation(&s, MAC);
    // Its app said it is healthy: config.py wrote its generation down as confirmed.
    assert_eq!(image_json(&b, "/ota/confirmed.json"), Some(good.into()));
    // Generation 2's app runs but never says it is healthy: the watchdog resets it at its
    // boot deadline (four boots: the update's three, then the app once).
    let unconfirmed = publish(&f, &s, MAC, "app", &app(false));
    let run = b.boot_with(&s.base, 4, true, None);
    assert!(run.out.contains("ended: Watchdog"), "{}", run.out);
    assert!(
        run.last_app_line()
            .starts_with(&format!("APP one primary {unconfirmed}")),
        "{}",
        run.out
    );
    let primary = image_json(&b, "/ota/primary.json").unwrap();
    assert_eq!(primary["generation"], unconfirmed);
    assert_eq!(primary["confirmed"], false, "{primary}");
    assert_eq!(
        image_json(&b, "/ota/confirmed.json"),
        None,
        "nothing is confirmed"
    );
    // Generation 3 is installed from the unconfirmed generation 2: the alternate stays 1.
    let third = publish(&f, &s, MAC, "sensorclass", "VALUE = 'three'\n");
    let run = b.boot_with(&s.base, 4, true, None);
    assert_eq!(
        run.last_app_line(),
        format!("APP three primary {third}"),
        "{}",
        run.out
    );
    let alternate = image_json(&b, "/ota/alternate.json").unwrap();
    assert_eq!(alternate["generation"], good, "{alternate}");
    // Generation 3 runs generation 2's app, which never says it is healthy: not confirmed.
    assert_eq!(image_json(&b, "/ota/confirmed.json"), None);
}

#[test]
fn an_updater_out_of_memory_is_retried_not_blamed() {
    let (f, s, b) = installed(&app(true));
    let good = generation(&s, MAC);
    // Generation 2 ships an updater that runs out of memory when imported.
    let updater = s.get("updater.py").text();
    let oom = publish(
        &f,
        &s,
        MAC,
        "updater",
        &format!("{updater}\nraise MemoryError('simulated: no heap for the updater')\n"),
    );
    // Five boots: the one-line change comes as a delta, in a boot of its own.
    let run = b.boot_with(&s.base, 5, true, None);
    assert_eq!(
        run.last_app_line(),
        format!("APP one primary {oom}"),
        "{}",
        run.out
    );
    // Asked to update, its updater fails: retried twice on a fresh heap, then the app runs
    // on, on the same generation; nothing is blacklisted and nothing rolls back.
    publish(&f, &s, MAC, "sensorclass", "VALUE = 'three'\n");
    let run = b.boot_with(&s.base, 8, true, None);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(
        run.last_app_line(),
        format!("APP one primary {oom}"),
        "{}",
        run.out
    );
    assert_eq!(
        run.out.matches("simulated: no heap").count(),
        3,
        "one try and two retries:\n{}",
        run.out
    );
    assert!(!run.out.contains("rolled back"), "{}", run.out);
    let bad = image_json(&b, "/ota/bad.json").unwrap_or(Value::Array(vec![]));
    assert!(!bad.as_array().unwrap().contains(&oom.into()), "{bad}");
    let flags: Value = serde_json::from_slice(&std::fs::read(b.rtc()).unwrap()).unwrap();
    assert_eq!(flags["update_failed"], true, "{flags}");
    assert!(
        flags["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("MemoryError"),
        "{flags}"
    );
    assert_eq!(
        image_json(&b, "/ota/alternate.json").unwrap()["generation"],
        good
    );
}

#[test]
fn newcomer_path_without_mpy_cross_reaches_the_app_and_updates() {
    // The README: `mpfleet serve` on a fresh machine (no mpy-cross), then `mpfleet sim` as
    // shown, at its default heap and port.
    let f = Fleet::without_mpy_cross();
    assign(&f, &app(true));
    let s = f.serve();
    let mut b = SimBoard::new(&f, MAC);
    b.heap = String::new();
    let run = b.boot(&s.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    // The runtime came precompiled all the same: the binary carries it.
    for m in mpfleet::manifest::RUNTIME_MODULES {
        let files = b.ls(&format!("ota/m/{m}"));
        assert!(
            files.len() == 1 && files[0].ends_with(".mpy"),
            "{m}: {files:?}"
        );
    }
    assert!(
        b.ls("ota").contains(&"mpfleet.mpy".to_owned()),
        "{:?}",
        b.ls("ota")
    );
    let next = publish(&f, &s, MAC, "sensorclass", "VALUE = 'two'\n");
    request_update(&b);
    let run = b.boot(&s.base, 6);
    assert_eq!(
        run.last_app_line(),
        format!("APP two primary {next}"),
        "{}",
        run.out
    );
}

#[test]
fn a_manifest_of_64_modules_installs_and_65_is_refused() {
    let f = Fleet::new();
    f.publish("app", &app(true), &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    // 55 more modules, published at once: with app, sensorclass and the runtime's seven
    // (config, updater, updater_trust, reporter, updater_io, installer, updater_delta), 64.
    let files: Vec<String> = (0..56)
        .map(|i| {
            f.file(&format!("extra{i:02}.py"), &format!("N = {i}\n"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec!["module", "publish"];
    args.extend(files.iter().map(String::as_str));
    f.ok(&args);
    let mut set = vec!["device", "set", MAC, "--app", "app", "sensorclass=latest"];
    let pins: Vec<String> = (0..56).map(|i| format!("extra{i:02}=latest")).collect();
    set.extend(pins[..55].iter().map(String::as_str));
    f.ok(&set);
    // One more is more than a board takes: refused, and the device is as it was.
    let mut too_many = set.clone();
    too_many.push(&pins[55]);
    let err = f.fails(&too_many);
    assert!(err.contains("at most 64"), "{err}");
    let s = f.serve();
    let manifest = s.get(&format!("v1/{MAC}.json"));
    assert_eq!(manifest.json()["modules"].as_object().unwrap().len(), 64);
    assert!(manifest.body.len() > 4096 * 4, "{}", manifest.body.len());
    // A blank board bootstraps from it and runs; then takes an update of one module.
    let mut b = ImageBoard::new(f.dir.path().join("board"), MAC);
    b.data = Some(f.data());
    let run = b.boot_with(&s.base, 6, false, None);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    // The update of one module takes no more heap than with four modules: the budget.
    let next = publish(&f, &s, MAC, "sensorclass", "VALUE = 'two'\n");
    b.heap = (crate::heap::floor() + crate::heap::UPDATE_MPY_BUDGET).to_string();
    let run = b.boot_with(&s.base, 6, true, None);
    assert_eq!(
        run.last_app_line(),
        format!("APP two primary {next}"),
        "{}",
        run.out
    );
    let primary = image_json(&b, "/ota/primary.json").unwrap();
    assert_eq!(config_versions(&primary).len(), 64);
}

#[test]
fn bootstrap_refuses_a_truncated_main_py_and_completes_later() {
    let f = Fleet::new();
    assign(&f, &app(true));
    let s = f.serve();
    let proxy = FaultProxy::start(&s.base);
    proxy.set(Fault::Truncate, "m/main/");
    let b = SimBoard::new(&f, MAC);
    let run = b.boot(&proxy.base, 2);
    assert!(run.out.contains("mpfleet: bootstrap failed"), "{}", run.out);
    assert!(!run.out.contains("Traceback"), "{}", run.out);
    assert!(
        b.read("main.py").is_none(),
        "a truncated /main.py was installed"
    );
    proxy.set(Fault::None, "");
    let run = b.boot(&proxy.base, 6);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    assert_eq!(b.read("main.py").unwrap(), s.get("main.py").text());
}

#[test]
fn a_version_reused_with_other_bytes_is_installed_by_its_sha256() {
    let f = Fleet::new();
    assign(&f, &app(true));
    let s = f.serve();
    let b = SimBoard::new(&f, MAC);
    let run = b.boot(&s.base, 6);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    // The store is re-created: the same version of sensorclass, other bytes, same size.
    let g = Fleet::new();
    g.publish("app", &app(true), &[]);
    g.publish("sensorclass", "VALUE = 'uno'\n", &[]);
    g.publish("sensorclass", "VALUE = 'dos'\n", &[]);
    g.ok(&["device", "set", MAC, "--app", "app", "sensorclass=2"]);
    g.ok(&["device", "set", MAC, "--app", "app", "sensorclass=1"]);
    let t = g.serve();
    assert_ne!(generation(&t, MAC), generation(&s, MAC));
    // The board moves to the new server and its store, as running that store's bootstrap for
    // it would (its settings on flash: server, key, store; its trust record starts afresh),
    // and is asked to update.
    let mut settings: Value = serde_json::from_str(&b.read("ota.json").unwrap()).unwrap();
    settings["server"] = t.base.clone().into();
    settings["key"] = g.key(MAC).to_hex().into();
    settings["store"] = t.get(&format!("v1/{MAC}.json")).json()["store"].clone();
    std::fs::write(b.flash.join("ota.json"), settings.to_string()).unwrap();
    std::fs::write(b.flash.join("ota/trust.json"), "{}").unwrap();
    request_update(&b);
    let run = b.boot(&t.base, 6);
    assert_eq!(
        run.last_app_line(),
        format!("APP uno primary {}", generation(&t, MAC)),
        "{}",
        run.out
    );
}

#[test]
fn rtc_memory_that_is_not_an_object_is_ignored() {
    // An app that uses RTC memory itself: the runtime starts afresh, it does not crash.
    let f = Fleet::new();
    assign(&f, &app(true));
    let s = f.serve();
    let b = SimBoard::new(&f, MAC);
    assert!(b.boot(&s.base, 6).settled());
    let rtc = b.state.join(format!("{MAC}.rtc"));
    for junk in ["[1, 2]", "7", "\"x\"", "not json"] {
        std::fs::write(&rtc, junk).unwrap();
        let run = b.boot(&s.base, 3);
        assert!(run.settled(), "{junk}: {}", run.out);
        assert!(
            run.last_app_line().starts_with("APP one primary"),
            "{junk}: {}",
            run.out
        );
        assert!(!run.out.contains("Traceback"), "{junk}: {}", run.out);
    }
}

#[test]
fn bootstrap_refuses_micropython_before_1_22() {
    let f = Fleet::new();
    assign(&f, &app(true));
    let s = f.serve();
    let mut b = SimBoard::new(&f, MAC);
    b.port = Some("esp32".into());
    b.port_version = Some("1.21".into());
    let run = b.boot(&s.base, 2);
    assert!(
        run.out.contains("needs MicroPython 1.22 or newer"),
        "{}",
        run.out
    );
    assert!(b.read("main.py").is_none());
    assert!(b.ls("ota/m").is_empty(), "{:?}", b.ls("ota/m"));
    b.port_version = Some("1.22".into());
    let run = b.boot(&s.base, 6);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
}

/// Sets the board's `update` flag, as an app does before `machine.reset()`.
fn request_update(b: &SimBoard) {
    let path = b.state.join(format!("{}.rtc", b.mac));
    let mut flags: Value = std::fs::read(&path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    flags["update"] = true.into();
    std::fs::write(path, serde_json::to_vec(&flags).unwrap()).unwrap();
}
