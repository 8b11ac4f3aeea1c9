//! Bad code: a new version that raises on import, has a syntax error, resets the board at
//! import, or loops forever (caught by the watchdog). Each time the board must be back on the
//! alternate within 5 boots of the update, report `rolled_back`, never reinstall the failed
//! generation, and move on once a fixed version is published. And the watchdog must leave a
//! healthy long-running app alone.

use crate::harness::{eventually, Fleet, ImageBoard, Server, SimRun};
use serde_json::Value;
use std::time::{Duration, Instant};

const MAC: &str = "deadbeef0bad";
/// The watchdog timeout the board is bootstrapped with, in seconds.
const WATCHDOG: f64 = 3.0;

/// The app: says what it runs; `extra` runs after it said it is healthy.
fn app(extra: &str) -> String {
    format!(
        "import config\n\
         import sensorclass\n\
         print('APP', sensorclass.VALUE, 'primary' if config.primary else 'alternate', config.generation)\n\
         config.set('reboots', 0)\n{extra}"
    )
}

fn reports(f: &Fleet) -> Vec<Value> {
    f.json(&["device", "show", MAC, "--json"])["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"].clone())
        .collect()
}

fn generation(s: &Server) -> i64 {
    s.get(&format!("v1/{MAC}.json")).json()["generation"]
        .as_i64()
        .unwrap()
}

/// A fleet whose board runs `app` and sensorclass 1, bootstrapped, with a 3 s watchdog.
fn installed(port: &str, app_src: &str) -> (Fleet, Server, ImageBoard) {
    let f = Fleet::new();
    f.publish("app", app_src, &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    f.ok(&["device", "set", MAC, "--app", "app", "sensorclass=latest"]);
    let s = f.serve();
    let mut b = ImageBoard::new(f.dir.path().join("board"), MAC);
    b.data = Some(f.data());
    b.port = Some(port.to_owned());
    b.watchdog = Some(WATCHDOG);
    let run = b.boot_with(&s.base, 6, false, None);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    (f, s, b)
}

/// Boots of the run (`--- boot N ended` lines).
fn boots(run: &SimRun) -> usize {
    run.out.matches("--- boot ").count()
}

fn publishes(f: &Fleet, s: &Server, name: &str, source: &str, version: &str) {
    let r = f.run(&[
        "module",
        "publish",
        f.file(&format!("{name}.py"), source).to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "publish {name}: {}{}", r.stdout, r.stderr);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"][name]["version"] == version
    });
}

/// Installs a broken sensorclass 2 and checks the whole story.
fn rolls_back(port: &str, broken: &str, watchdog_expected: bool) {
    let (f, s, b) = installed(port, &app(""));
    let good = generation(&s);
    publishes(&f, &s, "sensorclass", broken, "2");
    let bad = generation(&s);
    let t0 = Instant::now();
    let run = b.boot_with(&s.base, 10, true, None);
    eprintln!("{}", run.out);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(
        run.last_app_line(),
        format!("APP one alternate {good}"),
        "{}",
        run.out
    );
    // The update's three boots (check, install, report), then at most 5 boots to be back on
    // the alternate.
    assert!(boots(&run) <= 8, "took {} boots:\n{}", boots(&run), run.out);
    assert_eq!(
        run.out.contains("ended: Watchdog"),
        watchdog_expected,
        "{}",
        run.out
    );
    eprintln!(
        "FIGURES bad code: back on the alternate after {} boots, {:.1}s",
        boots(&run) - 3,
        t0.elapsed().as_secs_f64()
    );
    let rolled = eventually("a rolled_back report", Duration::from_secs(10), || {
        reports(&f)
            .into_iter()
            .find(|r| r["event"] == "rolled_back")
    });
    assert_eq!(rolled["generation"], good, "{rolled}");
    assert!(
        rolled["error"]
            .as_str()
            .unwrap_or("")
            .contains(&bad.to_string()),
        "{rolled}"
    );
    // Asked again, it does not reinstall the generation it rolled back from.
    let mark = s.mark();
    let run = b.boot_with(&s.base, 6, true, None);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(run.last_app_line(), format!("APP one alternate {good}"));
    let fetched: Vec<String> = s.requests()[mark..]
        .iter()
        .filter(|l| l.starts_with("GET /m/"))
        .cloned()
        .collect();
    assert!(fetched.is_empty(), "{fetched:?}");
    assert!(run.out.contains("was rolled back from"), "{}", run.out);
    // After a power-off it stays on the alternate.
    std::fs::remove_file(b.rtc()).unwrap();
    let run = b.boot_with(&s.base, 6, false, None);
    assert_eq!(run.last_app_line(), format!("APP one alternate {good}"));
    // A fixed version moves it on.
    publishes(&f, &s, "sensorclass", "VALUE = 'three'\n", "3");
    let run = b.boot_with(&s.base, 6, true, None);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP three primary"),
        "{}",
        run.out
    );
}

fn raising_on_import_rolls_back(port: &str) {
    rolls_back(port, "raise RuntimeError('broken sensor')\n", false);
}

fn syntax_error_rolls_back(port: &str) {
    rolls_back(port, "VALUE = 'two'\ndef broken(:\n    pass\n", false);
}

fn reset_at_import_rolls_back(port: &str) {
    rolls_back(port, "import machine\nmachine.reset()\n", false);
}

fn infinite_loop_at_import_is_reset_by_the_watchdog_and_rolls_back(port: &str) {
    rolls_back(port, "VALUE = 'two'\nwhile True:\n    pass\n", true);
}

fn config_that_hangs_at_import_rolls_back(port: &str) {
    let (f, s, b) = installed(port, &app(""));
    let good = generation(&s);
    let hang = format!(
        "{}\nwhile True:\n    pass\n",
        include_str!("../device/config.py")
    );
    let r = f.run(&[
        "module",
        "publish",
        f.file("config.py", &hang).to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["generation"].as_i64() != Some(good)
    });
    let run = b.boot_with(&s.base, 10, true, None);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(run.last_app_line(), format!("APP one alternate {good}"));
    // The update's boots (three, four with a delta boot: config changed by three lines has a
    // delta), then at most 5.
    let update = if run.out.contains(".from-") { 4 } else { 3 };
    assert!(boots(&run) <= update + 5, "{}", run.out);
    assert!(run.out.contains("ended: Watchdog"), "{}", run.out);
}

fn healthy_app_outlives_the_watchdog(port: &str) {
    // Runs 6 s (twice the watchdog's 3 s) without ever feeding it: once it said it is
    // healthy, the board feeds the watchdog in the background.
    let (_f, _s, mut b) = installed(
        port,
        &app("import time\nfor i in range(30):\n    time.sleep(0.2)\nprint('APP done')\n"),
    );
    b.settle = 10.0;
    let run = b.boot_with(&_s.base, 2, false, None);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(boots(&run), 1, "{}", run.out);
    assert!(run.out.contains("APP done"), "{}", run.out);
}

fn app_that_feeds_then_hangs_is_reset(port: &str) {
    // An app that feeds the watchdog itself owns it: when it stops feeding, the board resets.
    let (f, s, mut b) = installed(port, &app(""));
    let feeds = app(
        "import time\nfor i in range(10):\n    config.feed()\n    time.sleep(0.5)\n\
         print('APP hangs')\nwhile True:\n    pass\n",
    );
    publishes(&f, &s, "app", &feeds, "2");
    b.settle = 10.0;
    let run = b.boot_with(&s.base, 5, true, None);
    assert!(run.out.contains("APP hangs"), "{}", run.out);
    assert!(run.out.contains("ended: Watchdog"), "{}", run.out);
}

/// Every test above, once per port profile: each port's watchdog, timer and RTC rules.
macro_rules! on_ports {
    ($($test:ident),* $(,)?) => {
        mod esp8266 {
            $(#[test]
            fn $test() {
                super::$test("esp8266");
            })*
        }
        mod esp32 {
            $(#[test]
            fn $test() {
                super::$test("esp32");
            })*
        }
    };
}

on_ports!(
    raising_on_import_rolls_back,
    syntax_error_rolls_back,
    reset_at_import_rolls_back,
    infinite_loop_at_import_is_reset_by_the_watchdog_and_rolls_back,
    config_that_hangs_at_import_rolls_back,
    healthy_app_outlives_the_watchdog,
    app_that_feeds_then_hangs_is_reset,
);
