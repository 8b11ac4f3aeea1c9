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

/// Boards played by the test: reports signed with each device's key and counted, exactly as a
/// board sends them, so the engine's rules can be driven fast and precisely.
struct Reporter<'a> {
    f: &'a Fleet,
    s: &'a Server,
    n: std::cell::Cell<i64>,
}

impl Reporter<'_> {
    fn send(&self, mac: &str, event: &str, generation: i64) {
        self.n.set(self.n.get() + 1);
        let body = serde_json::json!({"n": self.n.get(), "event": event, "generation": generation,
                                      "config": "primary"});
        let r = self
            .s
            .report(mac, &self.f.key(mac), body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// The moved boards with a generation to install, and that generation (a board whose own
/// pins hold the rollout's module has none).
fn to_install(r: &Value) -> Vec<(String, i64)> {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| Some((d["mac"].as_str()?.to_owned(), d["generation"].as_i64()?)))
        .collect()
}

#[test]
fn failures_within_the_threshold_silence_joiners_and_resume() {
    let mut f = Fleet::new();
    f.set_env("MPFLEET_ROLLOUT_TICK", "200ms");
    f.publish("app", "x = 1\n", &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
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
    // Its own pin holds this one at 1 whatever the rollout says.
    const PINNED: &str = "0b0000000001";
    f.ok(&[
        "device",
        "set",
        PINNED,
        "--group",
        "greenhouse",
        "sensorclass=1",
    ]);
    let s = f.serve();
    let boards = Reporter {
        f: &f,
        s: &s,
        n: 0.into(),
    };
    // Five boards: the first step moves two; one failure (20% of 5) is tolerated.
    let out = f.ok(&[
        "rollout",
        "start",
        "greenhouse",
        "--to",
        "sensorclass=2",
        "--steps",
        "40%,100%",
        "--max-failures",
        "20%",
        "--healthy-after",
        "1s",
        "--deadline",
        "8s",
    ]);
    assert!(out.contains("moved 2 board(s)"), "{out}");
    let err = f.fails(&["rollout", "start", "greenhouse", "--to", "sensorclass=2"]);
    assert!(err.contains("has rollout 1 under way"), "{err}");
    let err = f.fails(&["group", "delete", "greenhouse"]);
    assert!(err.contains("greenhouse has"), "{err}");

    // Step 1: the first board to install fails, the other is updated: one failure is
    // within the threshold, so the step advances once the other has been healthy for 1 s.
    let r = rollout(&f);
    let first = to_install(&r);
    for (i, (mac, g)) in first.iter().enumerate() {
        boards.send(mac, if i == 0 { "update_failed" } else { "updated" }, *g);
    }
    let failed_first = first[0].0.clone();
    let show = f.json(&["device", "show", &failed_first, "--json"]);
    assert_eq!(
        show["rollout"],
        serde_json::json!({"id": 1, "state": "running", "step": 1})
    );
    let text = f.ok(&["device", "show", &failed_first]);
    assert!(
        text.contains("rollout    1 (running) moved it at step 1"),
        "{text}"
    );
    let r = at_step(&f, 2, 5);
    assert!(
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["mac"] == failed_first.as_str() && d["status"] == "failed: update_failed"),
        "{r}"
    );

    // A board joining the group during the last step is moved too.
    const JOINER: &str = "0c0000000001";
    f.ok(&["device", "set", JOINER, "--group", "greenhouse"]);
    let r = at_step(&f, 2, 6);
    assert!(moved(&r).contains(JOINER), "{r}");
    wait_served(&s, JOINER, "2");
    assert_eq!(served(&s, PINNED), "1");

    // Every new board but one reports `updated`; that one stays silent past the deadline:
    // a second failure, more than 20% of six, pauses the rollout.
    let done: BTreeSet<String> = first.iter().map(|(m, _)| m.clone()).collect();
    let fresh: Vec<(String, i64)> = to_install(&r)
        .into_iter()
        .filter(|(m, _)| !done.contains(m))
        .collect();
    let (silent, _) = fresh[0].clone();
    for (mac, g) in &fresh[1..] {
        boards.send(mac, "updated", *g);
    }
    let r = eventually("the rollout paused", ENGINE, || {
        let r = rollout(&f);
        (r["state"] == "paused").then_some(r)
    });
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{silent} no `updated` report within 8s"))
            && reason.contains(&format!("{failed_first} update_failed"))
            && reason.contains("2 failed, more than the 1 tolerated"),
        "{r}"
    );

    // Resume forgives both: the rest are healthy, so it completes and the group takes 2.
    let out = f.ok(&["rollout", "resume", "greenhouse"]);
    assert!(out.contains("rollout 1"), "{out}");
    let r = eventually("the rollout done", ENGINE, || {
        let r = rollout(&f);
        (r["state"] == "done").then_some(r)
    });
    assert_eq!(r["failed"], 2, "{r}");
    let g = f.json(&["group", "show", "greenhouse", "--json"]);
    assert_eq!(g["pins"]["sensorclass"], "2", "{g}");
    assert_eq!(served(&s, PINNED), "1");
    let show = f.json(&["device", "show", &failed_first, "--json"]);
    assert_eq!(show["rollout"], Value::Null);
    for mac in MACS.iter().chain([&JOINER]) {
        assert_eq!(served(&s, mac), "2", "{mac}");
    }
    // Nothing left to pause, resume or abort.
    let err = f.fails(&["rollout", "abort", "1"]);
    assert!(err.contains("rollout 1 is done"), "{err}");
    let err = f.fails(&["rollout", "show", "7"]);
    assert!(err.contains("no rollout 7"), "{err}");
}

#[test]
fn bad_rollout_input_is_refused() {
    let f = Fleet::new();
    f.publish("app", "x = 1\n", &[]);
    f.ok(&["group", "create", "greenhouse", "--app", "app"]);
    for (args, error) in [
        (vec!["--to", "app=9"], "app has no version 9"),
        (vec!["--to", "app=latest"], "not `latest`"),
        (vec!["--to", "app"], "MODULE=VERSION"),
        (
            vec!["--to", "app=1", "--steps", "50%,25%,100%"],
            "must grow",
        ),
        (
            vec!["--to", "app=1", "--steps", "5%,25%"],
            "the last step must be 100%",
        ),
        (
            vec!["--to", "app=1", "--max-failures", "x"],
            "invalid --max-failures",
        ),
        (
            vec!["--to", "app=1", "--healthy-after", "soon"],
            "invalid duration",
        ),
    ] {
        let mut all = vec!["rollout", "start", "greenhouse"];
        all.extend(args.iter().copied());
        let err = f.fails(&all);
        assert!(err.contains(error), "{args:?}: {err}");
    }
    let err = f.fails(&["rollout", "start", "nope", "--to", "app=1"]);
    assert!(err.contains("unknown group nope"), "{err}");
    assert_eq!(
        f.json(&["rollout", "list", "--json"]),
        serde_json::json!([])
    );
    let err = f.fails(&["rollout", "show", "greenhouse"]);
    assert!(err.contains("group greenhouse has no rollout"), "{err}");
}
