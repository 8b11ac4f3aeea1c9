//! Rollouts end to end: a real `serve` running the rollout engine, simulated boards on the
//! real MicroPython port reporting what they did. A good version reaches 100% step by step;
//! a bad one pauses the rollout at its first step with the rest of the group untouched, and
//! abort takes the moved board back; a restart of `serve` mid-rollout carries on.

use crate::harness::{app_source, eventually, Fleet, Server, SimBoard, SimRun};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const MACS: [&str; 4] = [
    "0a0000000001",
    "0a0000000002",
    "0a0000000003",
    "0a0000000004",
];

/// How long the engine may take to act on what the boards reported: its tick is 200 ms here,
/// plus `--healthy-after`, plus a slow machine.
const ENGINE: Duration = Duration::from_secs(30);

/// A group `greenhouse` of four boards running `app` with sensorclass 1 ('one'), each
/// bootstrapped, and the server (its rollout engine ticking every 200 ms).
fn greenhouse() -> (Fleet, Server, Vec<SimBoard>) {
    let mut f = Fleet::new();
    f.set_env("MPFLEET_ROLLOUT_TICK", "200ms");
    f.publish("app", app_source(), &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    f.ok(&[
        "group",
        "create",
        "greenhouse",
        "--app",
        "app",
        "sensorclass=1",
    ]);
    for mac in MACS {
        f.ok(&["device", "set", mac, "--group", "greenhouse"]);
    }
    let s = f.serve();
    let boards: Vec<SimBoard> = MACS.iter().map(|m| SimBoard::new(&f, m)).collect();
    for run in boot_all(&boards.iter().collect::<Vec<_>>(), &s, false, 6) {
        assert!(
            run.last_app_line().starts_with("APP one primary"),
            "{}",
            run.out
        );
    }
    (f, s, boards)
}

/// Boots boards at once (asking each for an update first if `update`); each must settle.
fn boot_all(boards: &[&SimBoard], s: &Server, update: bool, boots: u32) -> Vec<SimRun> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = boards
            .iter()
            .map(|b| {
                scope.spawn(move || {
                    if update {
                        b.ask_for_update();
                    }
                    b.boot(&s.base, boots)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| {
                let run = r.join().unwrap();
                assert!(run.settled(), "{}", run.out);
                run
            })
            .collect()
    })
}

fn rollout(f: &Fleet) -> Value {
    f.json(&["rollout", "show", "greenhouse", "--json"])
}

/// The boards the rollout has moved.
fn moved(r: &Value) -> BTreeSet<String> {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mac"].as_str().unwrap().to_owned())
        .collect()
}

/// The version of sensorclass the server gives `mac`.
fn served(s: &Server, mac: &str) -> String {
    s.get(&format!("v1/{mac}.json")).json()["modules"]["sensorclass"]["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn generation(f: &Fleet, mac: &str) -> i64 {
    f.json(&["device", "show", mac, "--json"])["generation"]
        .as_i64()
        .unwrap()
}

fn board<'a>(boards: &'a [SimBoard], mac: &str) -> &'a SimBoard {
    boards.iter().find(|b| b.mac == mac).unwrap()
}

/// Waits until the rollout is at `step` (1-based) with `count` boards moved.
fn at_step(f: &Fleet, step: u64, count: usize) -> Value {
    eventually(
        &format!("rollout at step {step} with {count} boards moved"),
        ENGINE,
        || {
            let r = rollout(f);
            (r["step"] == step && moved(&r).len() == count && r["state"] == "running").then_some(r)
        },
    )
}

/// Waits for the served manifest of `mac` to give sensorclass `version` (the snapshot
/// follows the store within a second).
fn wait_served(s: &Server, mac: &str, version: &str) {
    s.wait_get(&format!("v1/{mac}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == version
    });
}

#[test]
fn a_good_version_reaches_every_board_step_by_step() {
    let (f, s, boards) = greenhouse();
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    let out = f.ok(&[
        "rollout",
        "start",
        "greenhouse",
        "--to",
        "sensorclass=2",
        "--steps",
        "25%,50%,100%",
        "--healthy-after",
        "2s",
    ]);
    assert!(out.contains("step 1/3 (25%)"), "{out}");
    let mut done: BTreeSet<String> = BTreeSet::new();
    for (step, count) in [(1, 1), (2, 2), (3, 4)] {
        let r = at_step(&f, step, count);
        let now = moved(&r);
        assert!(now.is_superset(&done), "{r}");
        // Until they report, the new boards hold the step: it cannot advance.
        for d in r["devices"].as_array().unwrap() {
            if !done.contains(d["mac"].as_str().unwrap()) {
                assert_eq!(d["status"], "waiting", "{r}");
            }
        }
        // The boards not moved yet are served what they run.
        for mac in MACS.iter().filter(|m| !now.contains(**m)) {
            assert_eq!(served(&s, mac), "1", "{mac} at step {step}");
        }
        let fresh: Vec<&SimBoard> = now
            .difference(&done)
            .map(|m| {
                wait_served(&s, m, "2");
                board(&boards, m)
            })
            .collect();
        for run in boot_all(&fresh, &s, true, 6) {
            assert!(
                run.last_app_line().starts_with("APP two primary"),
                "{}",
                run.out
            );
        }
        done = now;
    }
    let r = eventually("the rollout done", ENGINE, || {
        let r = rollout(&f);
        (r["state"] == "done").then_some(r)
    });
    assert_eq!(r["healthy"], 4, "{r}");
    assert_eq!(r["reason"], Value::Null);
    // The group itself runs the new version now; a board that joins gets it.
    let g = f.json(&["group", "show", "greenhouse", "--json"]);
    assert_eq!(g["pins"]["sensorclass"], "2", "{g}");
    f.ok(&["device", "set", "0a0000000005", "--group", "greenhouse"]);
    assert_eq!(
        f.json(&["device", "show", "0a0000000005", "--json"])["resolved"]["modules"]["sensorclass"]
            ["version"],
        "2"
    );
    let list = f.ok(&["rollout", "list"]);
    assert!(list.contains("greenhouse  sensorclass=2  done"), "{list}");
}

#[test]
fn a_bad_version_pauses_at_the_first_step_and_abort_takes_it_back() {
    let (f, s, boards) = greenhouse();
    f.publish("sensorclass", "raise RuntimeError('broken sensor')\n", &[]);
    let before: Vec<i64> = MACS.iter().map(|m| generation(&f, m)).collect();
    // The board reports `updated` before the new code first runs and `rolled_back` five
    // crashing boots later: --healthy-after must be longer than that, or the step would
    // count it healthy in between.
    f.ok(&[
        "rollout",
        "start",
        "greenhouse",
        "--to",
        "sensorclass=2",
        "--steps",
        "25%,50%,100%",
        "--healthy-after",
        "1m",
    ]);
    let r = at_step(&f, 1, 1);
    let bad = moved(&r).into_iter().next().unwrap();
    wait_served(&s, &bad, "2");
    // The moved board installs it, crashes at every boot, and goes back by itself.
    let runs = boot_all(&[board(&boards, &bad)], &s, true, 10);
    assert!(
        runs[0].last_app_line().starts_with("APP one alternate"),
        "{}",
        runs[0].out
    );
    let r = eventually("the rollout paused", ENGINE, || {
        let r = rollout(&f);
        (r["state"] == "paused").then_some(r)
    });
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{bad} rolled_back")) && reason.contains("--max-failures 0"),
        "{r}"
    );
    assert_eq!(r["step"], 1, "{r}");
    assert_eq!(moved(&r).len(), 1, "{r}");
    let text = f.ok(&["rollout", "show", "greenhouse"]);
    assert!(
        text.contains("state    paused") && text.contains("reason   1 failed"),
        "{text}"
    );
    assert!(text.contains("3 untouched"), "{text}");

    // The rest of the group is untouched: same generation, same version, and asked to
    // update they install nothing.
    let others: Vec<&SimBoard> = boards.iter().filter(|b| b.mac != bad).collect();
    for b in &others {
        let i = MACS.iter().position(|m| *m == b.mac).unwrap();
        assert_eq!(generation(&f, &b.mac), before[i], "{}", b.mac);
        assert_eq!(served(&s, &b.mac), "1", "{}", b.mac);
    }
    for run in boot_all(&others, &s, true, 6) {
        assert!(
            run.last_app_line().starts_with("APP one primary"),
            "{}",
            run.out
        );
    }
    // Still paused, still one board moved.
    let r = rollout(&f);
    assert_eq!(
        (r["state"].as_str(), moved(&r).len()),
        (Some("paused"), 1),
        "{r}"
    );

    // Abort: the moved board goes back to the group's version as a new generation.
    let g = generation(&f, &bad);
    let out = f.ok(&["rollout", "abort", "greenhouse"]);
    assert!(out.contains("aborted"), "{out}");
    assert!(generation(&f, &bad) > g);
    wait_served(&s, &bad, "1");
    let runs = boot_all(&[board(&boards, &bad)], &s, true, 6);
    assert!(
        runs[0].last_app_line().starts_with("APP one primary"),
        "{}",
        runs[0].out
    );
    let r = rollout(&f);
    assert_eq!(r["state"], "aborted");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("it had paused: 1 failed"),
        "{r}"
    );
    // The group never took the bad version.
    let g = f.json(&["group", "show", "greenhouse", "--json"]);
    assert_eq!(g["pins"]["sensorclass"], "1", "{g}");
}

#[test]
fn a_restart_of_serve_mid_rollout_carries_on() {
    let (f, s, boards) = greenhouse();
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    f.ok(&[
        "rollout",
        "start",
        "greenhouse",
        "--to",
        "sensorclass=2",
        "--steps",
        "50%,100%",
        "--healthy-after",
        "2s",
    ]);
    let first = moved(&at_step(&f, 1, 2));
    let fresh: Vec<&SimBoard> = first
        .iter()
        .map(|m| {
            wait_served(&s, m, "2");
            board(&boards, m)
        })
        .collect();
    boot_all(&fresh, &s, true, 6);
    at_step(&f, 2, 4);

    // serve stops (killed) and starts again on the same address: the boards' server.
    let addr = s.addr();
    drop(s);
    let s = Server::start_at(&f.data(), &addr, f.env());
    let rest: Vec<&SimBoard> = boards.iter().filter(|b| !first.contains(&b.mac)).collect();
    for b in &rest {
        wait_served(&s, &b.mac, "2");
    }
    for run in boot_all(&rest, &s, true, 6) {
        assert!(
            run.last_app_line().starts_with("APP two primary"),
            "{}",
            run.out
        );
    }
    let r = eventually("the rollout done after the restart", ENGINE, || {
        let r = rollout(&f);
        (r["state"] == "done").then_some(r)
    });
    assert_eq!(r["healthy"], 4, "{r}");
}
