//! `mpfleet provision PORT` against a simulated board on a serial port (`SerialPort`: the real
//! MicroPython unix port at its REPL behind a pseudo-terminal, the simulator's shims making
//! `network` and `machine` behave as on a board, its flash a directory): a blank board
//! becomes a device and boots into its app, then `mpfleet sim` boots that same flash into
//! the app again; a second run adopts the device (same key, no second device); a cable
//! pulled in the middle of the write, then a second run; and the clear errors: a port where
//! nothing answers, one where something else does, one that does not exist, one that is busy.

use crate::harness::{
    app_source, inspect, littlefs_image, output_within, Fleet, SerialPort, Server, SimBoard, BIN,
};
use std::process::Command;
use std::time::{Duration, Instant};

const MAC: &str = "0a1b2c3d4e5f";

/// A fleet with the test app and `sensorclass`, no device yet, and its server.
fn fleet() -> (Fleet, Server) {
    let f = Fleet::new();
    f.publish("app", app_source(), &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    let server = f.serve();
    (f, server)
}

/// Runs `mpfleet provision` as a user does (2 minutes at most): (exit code, stdout, stderr).
fn provision(f: &Fleet, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("provision")
        .args(args)
        .envs(f.env().iter().map(|(k, v)| (k, v)))
        .env("MPFLEET_DATA", f.data())
        .env_remove("RUST_LOG");
    let out = output_within(&mut cmd, "mpfleet provision", Duration::from_secs(120));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("--- mpfleet provision {args:?}:\n{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// Provisions the board on `port` and expects it to boot into its app.
fn provisioned(f: &Fleet, port: &SerialPort, server: &Server, extra: &[&str]) -> String {
    let base = format!("http://{}/", server.addr());
    // A board under a loaded machine may take a while to start its interpreter.
    let mut args = vec![port.path.as_str(), "--server", &base, "--timeout", "20"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = provision(f, &args);
    assert_eq!(
        code,
        0,
        "provision failed:\n{stderr}\nthe board said:\n{}",
        port.output()
    );
    assert!(
        stdout.contains(&format!("board {MAC} provisioned: it runs app")),
        "{stdout}"
    );
    stdout
}

/// What the board holds after a provisioning: its settings with the device's key, the
/// first stage, a configuration with the app, and no bootstrap (it holds the key) left.
fn assert_installed(f: &Fleet, sim: &SimBoard, base: &str) {
    let settings = sim.json("/ota.json");
    assert_eq!(settings["server"], base);
    assert_eq!(settings["key"], f.key(MAC).to_hex());
    assert!(sim.read("/main.py").is_some());
    assert_eq!(sim.json("/ota/primary.json")["app"], "app");
    let tmp = sim.ls("/ota/tmp");
    assert!(
        !tmp.iter().any(|n| n.starts_with("mpfleet_provision")),
        "{tmp:?}"
    );
}

#[test]
fn a_blank_board_becomes_a_device_and_boots_its_app() {
    let (f, server) = fleet();
    let sim = SimBoard::new(&f, MAC);
    let base = format!("http://{}/", server.addr());
    let port = SerialPort::board(MAC, &sim.flash, &sim.state, None);
    let secrets = f.file("secrets.json", r#"{"wifi": "hunter2"}"#);
    provisioned(
        &f,
        &port,
        &server,
        &[
            "--app",
            "app",
            "sensorclass=latest",
            "--secrets",
            secrets.to_str().unwrap(),
        ],
    );
    drop(port);
    assert_installed(&f, &sim, &base);
    assert_eq!(
        sim.json("/secrets.json"),
        serde_json::json!({"wifi": "hunter2"})
    );
    let devices = f.json(&["device", "list", "--json"]);
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
    assert_eq!(devices[0]["mac"], MAC);
    // The same flash, booted by the simulator as a board is at power-on: it runs the app.
    let run = sim.boot(&base, 3);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(run.last_app_line(), "APP one primary 1");
}

#[test]
fn twice_in_a_row_adopts_the_device_with_its_key() {
    let (f, server) = fleet();
    let sim = SimBoard::new(&f, MAC);
    let base = format!("http://{}/", server.addr());
    let port = SerialPort::board(MAC, &sim.flash, &sim.state, None);
    provisioned(&f, &port, &server, &["--app", "app", "sensorclass=latest"]);
    drop(port);
    let key = f.key(MAC);
    let generation = f.json(&["device", "show", MAC, "--json"])["generation"].clone();
    // Plugged in again: it runs its app; provision interrupts it and does it all again.
    let port = SerialPort::board(MAC, &sim.flash, &sim.state, None);
    let stdout = provisioned(&f, &port, &server, &[]);
    drop(port);
    assert!(stdout.contains("generation 1"), "{stdout}");
    assert_eq!(
        f.key(MAC).to_hex(),
        key.to_hex(),
        "a second run keeps the key"
    );
    let show = f.json(&["device", "show", MAC, "--json"]);
    assert_eq!(show["generation"], generation);
    assert_eq!(
        f.json(&["device", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_installed(&f, &sim, &base);
    let run = sim.boot(&base, 3);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(run.last_app_line(), "APP one primary 1");
}

#[test]
fn a_cable_pulled_during_the_write_then_a_second_run_works() {
    let (f, server) = fleet();
    let sim = SimBoard::new(&f, MAC);
    let base = format!("http://{}/", server.addr());
    // About 2 KB reach the board: its MAC is read, the bootstrap is a few pieces in.
    let port = SerialPort::board(MAC, &sim.flash, &sim.state, Some(2000));
    let (code, _, stderr) = provision(
        &f,
        &[
            &port.path,
            "--server",
            &base,
            "--app",
            "app",
            "sensorclass=latest",
            "--timeout",
            "20",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("stopped answering while writing /ota/tmp/mpfleet_provision.py"),
        "{stderr}"
    );
    assert!(!port.running());
    drop(port);
    // Half a bootstrap, never in its place; nothing installed.
    assert_eq!(sim.ls("/ota/tmp"), ["mpfleet_provision.py.part"]);
    assert!(sim.read("/main.py").is_none());
    // Plugged in again: the device exists (created before the write), provision adopts it.
    let port = SerialPort::board(MAC, &sim.flash, &sim.state, None);
    provisioned(&f, &port, &server, &[]);
    drop(port);
    assert_installed(&f, &sim, &base);
    let run = sim.boot(&base, 3);
    assert!(run.settled(), "{}", run.out);
    assert_eq!(run.last_app_line(), "APP one primary 1");
}

#[test]
fn a_board_that_does_not_answer_is_a_clear_error_soon() {
    let (f, _server) = fleet();
    let port = SerialPort::silent();
    let started = Instant::now();
    let (code, _, stderr) = provision(&f, &[&port.path, "--app", "app", "--timeout", "1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("does not answer"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(f.json(&["device", "list", "--json"]), serde_json::json!([]));
}

#[test]
fn a_port_without_micropython_is_a_clear_error() {
    let (f, _server) = fleet();
    let port = SerialPort::cat();
    let (code, _, stderr) = provision(&f, &[&port.path, "--app", "app", "--timeout", "1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not MicroPython's raw REPL"), "{stderr}");
}

#[test]
fn a_port_that_does_not_exist_is_not_a_tty_or_is_busy_is_a_clear_error() {
    let (f, _server) = fleet();
    let (code, _, stderr) = provision(&f, &["/dev/ttyNOSUCHPORT", "--app", "app"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no serial port at /dev/ttyNOSUCHPORT"),
        "{stderr}"
    );
    let (code, _, stderr) = provision(&f, &["/dev/null", "--app", "app"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("/dev/null is not a serial port"),
        "{stderr}"
    );
    let port = SerialPort::silent();
    let _held = mpfleet::provision::serial::Serial::open(&port.path).expect("opening it first");
    let (code, _, stderr) = provision(&f, &[&port.path, "--app", "app"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("is busy"), "{stderr}");
}

#[test]
fn a_full_flash_is_a_clear_error_and_gives_its_space_back() {
    let (f, server) = fleet();
    let base = format!("http://{}/", server.addr());
    let image = f.dir.path().join("full.img");
    // 16 blocks of 4 KiB, most of them taken by the user's own file.
    littlefs_image(&image, 16, &[("data.bin", &"x".repeat(36 * 1024))]);
    let port = SerialPort::board_on_image(MAC, &image, &f.dir.path().join("state"));
    let (code, _, stderr) = provision(
        &f,
        &[
            &port.path,
            "--server",
            &base,
            "--app",
            "app",
            "--timeout",
            "20",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("flash is full"),
        "{stderr}\n{}",
        port.output()
    );
    drop(port);
    let files = inspect(&image);
    let text = files.to_string();
    assert!(!text.contains("mpfleet_provision"), "{files:#}");
    assert!(text.contains("data.bin"), "{files:#}");
}

#[test]
fn micropython_before_1_22_is_refused_before_anything_is_written() {
    let (f, server) = fleet();
    let base = format!("http://{}/", server.addr());
    let sim = SimBoard::new(&f, MAC);
    let port = SerialPort::board_with_env(
        MAC,
        &sim.flash,
        &sim.state,
        &[("MPFLEET_PORT_VERSION", "1.21")],
    );
    let (code, _, stderr) = provision(
        &f,
        &[
            &port.path,
            "--server",
            &base,
            "--app",
            "app",
            "--timeout",
            "20",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("runs MicroPython 1.21.0; mpfleet needs 1.22 or newer"),
        "{stderr}"
    );
    assert!(sim.ls("/").is_empty(), "{:?}", sim.ls("/"));
    assert_eq!(f.json(&["device", "list", "--json"]), serde_json::json!([]));
}

#[test]
fn a_server_the_board_cannot_reach_is_a_clear_error_and_no_key_stays_behind() {
    let (f, server) = fleet();
    let sim = SimBoard::new(&f, MAC);
    drop(server);
    let nothing = "http://127.0.0.1:9/";
    let port = SerialPort::board(MAC, &sim.flash, &sim.state, None);
    let (code, _, stderr) = provision(
        &f,
        &[
            &port.path,
            "--server",
            nothing,
            "--app",
            "app",
            "--timeout",
            "20",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("the board cannot reach the server"),
        "{stderr}\n{}",
        port.output()
    );
    assert!(port.running(), "the board is left at its REPL");
    drop(port);
    // The bootstrap (it holds the key) is gone; the settings it wrote stay for the next run.
    let tmp = sim.ls("/ota/tmp");
    assert!(
        !tmp.iter().any(|n| n.starts_with("mpfleet_provision")),
        "{tmp:?}"
    );
    assert_eq!(sim.json("/ota.json")["server"], nothing);
    assert!(sim.read("/main.py").is_none());
}
