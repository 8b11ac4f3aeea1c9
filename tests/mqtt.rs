//! Push, not only poll: `serve --mqtt` against a real Mosquitto, with simulated boards running
//! `device/mpfleet_push.py`. Their app would poll only once an hour, so a board that takes a
//! new generation within the test's minute took it from the push.

use crate::harness::{free_port, mosquitto, Fleet, Mosquitto, Server, SimBoard, Subscriber};
use std::time::{Duration, Instant};

const MAC: &str = "deadbeef1234";
const UPDATE: &str = "mpfleet/deadbeef1234/update";
const STATE: &str = "mpfleet/deadbeef1234/state";

/// Long enough for a board to bootstrap or update under load; far shorter than its poll.
const BOARD: Duration = Duration::from_secs(120);

/// The app: says what it runs, is healthy, then waits for pushes (polling once an hour).
fn app(broker_port: u16) -> String {
    format!(
        "import config\n\
         import sensorclass\n\
         print('APP', sensorclass.VALUE, config.generation)\n\
         config.set('reboots', 0)\n\
         import mpfleet_push\n\
         mpfleet_push.run('127.0.0.1', port={broker_port}, poll=3600)\n"
    )
}

/// A fleet whose board `MAC` runs [`app`] with `mpfleet_push`, and a server pushing to `port`.
fn fleet(broker_port: u16) -> (Fleet, Server) {
    let f = Fleet::new();
    f.publish("app", &app(broker_port), &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    f.publish(
        "mpfleet_push",
        include_str!("../device/mpfleet_push.py"),
        &[],
    );
    f.ok(&[
        "device",
        "set",
        MAC,
        "--app",
        "app",
        "sensorclass=latest",
        "mpfleet_push=latest",
    ]);
    let server = Server::start_env(
        &f.data(),
        &[("MPFLEET_MQTT".into(), mosquitto::url(broker_port))],
    );
    (f, server)
}

fn generation(f: &Fleet) -> i64 {
    f.json(&["device", "show", MAC, "--json"])["generation"]
        .as_i64()
        .unwrap()
}

/// A board whose app polls once an hour takes a new generation within seconds of
/// `module publish`: serve publishes it, retained, on mpfleet/{mac}/update, the board's
/// `mpfleet_push` sets the update flag and resets. Its reports are mirrored to
/// mpfleet/{mac}/state.
#[test]
fn push_updates_a_board_before_its_poll() {
    let broker = Mosquitto::start();
    let (f, server) = fleet(broker.port);
    let sub = Subscriber::connect(broker.port);
    let board = SimBoard::new(&f, MAC).start(&server.base);
    board.wait_said("APP one", BOARD);
    board.wait_said("push: subscribed to mpfleet/deadbeef1234/update", BOARD);
    let first = generation(&f);
    let m = sub.wait(UPDATE, BOARD, |m| mosquitto::generation(m) == Some(first));
    assert!(m.payload.starts_with('{'), "{m:?}");
    // The bootstrap's report, mirrored as stored.
    let state = sub.wait(STATE, BOARD, |m| m.payload.contains("\"updated\""));
    let state: serde_json::Value = serde_json::from_str(&state.payload).unwrap();
    assert_eq!(state["generation"], first, "{state}");

    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    let published = Instant::now();
    let second = generation(&f);
    assert!(second > first);
    sub.wait(UPDATE, BOARD, |m| mosquitto::generation(m) == Some(second));
    board.wait_said(&format!("push: generation {second} announced"), BOARD);
    board.wait_said(&format!("APP two {second}"), BOARD);
    let took = published.elapsed();
    assert!(took < BOARD, "{took:?}");
    eprintln!("published to running the new generation: {took:?}");
    let state = sub.wait(STATE, BOARD, |m| {
        m.payload.contains("\"updated\"") && m.payload.contains(&format!("\"generation\":{second}"))
    });
    assert!(state.retain || sub.on(STATE).len() > 1, "{state:?}");
    // Asked once: the update flag is not set again for the generation it runs.
    let out = board.stop();
    assert_eq!(out.matches("announced; updating").count(), 1, "{out}");
}

/// A board that is off when the generation changes gets the retained message when it comes
/// back, and updates without waiting for its poll.
#[test]
fn a_board_offline_at_publish_time_gets_the_retained_message() {
    let broker = Mosquitto::start();
    let (f, server) = fleet(broker.port);
    let board = SimBoard::new(&f, MAC);
    let running = board.start(&server.base);
    running.wait_said("APP one", BOARD);
    running.wait_said("push: subscribed", BOARD);
    running.stop();

    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    let second = generation(&f);
    // Published while no board listened: only the retained message can tell it.
    let sub = Subscriber::connect(broker.port);
    sub.wait(UPDATE, BOARD, |m| mosquitto::generation(m) == Some(second));
    let late = Subscriber::connect(broker.port);
    late.wait(UPDATE, BOARD, |m| {
        m.retain && mosquitto::generation(m) == Some(second)
    });

    let running = board.start(&server.base);
    running.wait_said(&format!("push: generation {second} announced"), BOARD);
    running.wait_said(&format!("APP two {second}"), BOARD);
    let out = running.stop();
    // It came back on the old generation (no update flag, no poll), then the push.
    let first_app = out
        .find("APP one")
        .expect("booted on the old generation first");
    assert!(first_app < out.find("announced").unwrap(), "{out}");
}

/// No broker: serve serves boards and takes changes as ever, says it cannot reach the
/// broker, and once a broker comes up there, publishes every current generation. A broker
/// that restarts (losing its retained messages) gets them again.
#[test]
fn serve_keeps_serving_when_the_broker_is_not_there() {
    let port = free_port();
    let (f, server) = fleet(port);
    let first = generation(&f);
    for _ in 0..20 {
        let started = Instant::now();
        let r = server.get(&format!("v1/{MAC}.json"));
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    crate::harness::eventually("the broker failure logged", Duration::from_secs(20), || {
        (server.log_count("MQTT: cannot reach mqtt://127.0.0.1") > 0).then_some(())
    });
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    let second = generation(&f);
    assert!(second > first);
    server.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["generation"].as_i64() == Some(second)
    });

    // The broker comes up: serve connects at its next try (backoff at most 30 s).
    let broker = Mosquitto::start_on(port);
    let sub = Subscriber::connect(port);
    sub.wait(UPDATE, Duration::from_secs(60), |m| {
        mosquitto::generation(m) == Some(second)
    });
    assert!(server.log_count("MQTT: connected to mqtt://127.0.0.1") > 0);

    // It restarts without persistence: serve reconnects and publishes again.
    drop(sub);
    drop(broker);
    crate::harness::eventually("the lost broker logged", Duration::from_secs(60), || {
        (server.log_count("MQTT: lost mqtt://127.0.0.1") > 0).then_some(())
    });
    assert_eq!(server.get(&format!("v1/{MAC}.json")).status, 200);
    let _broker = Mosquitto::start_on(port);
    let sub = Subscriber::connect(port);
    sub.wait(UPDATE, Duration::from_secs(60), |m| {
        mosquitto::generation(m) == Some(second)
    });
    let late = Subscriber::connect(port);
    late.wait(UPDATE, Duration::from_secs(10), |m| {
        m.retain && mosquitto::generation(m) == Some(second)
    });
}

/// A bad --mqtt URL stops serve before it listens, with a clear message.
#[test]
fn serve_refuses_a_bad_mqtt_url() {
    let f = Fleet::new();
    for (url, says) in [
        ("http://127.0.0.1:1883", "expected mqtt://"),
        ("mqtts://127.0.0.1", "TLS is not supported"),
        ("mqtt://127.0.0.1:http", "is not a port"),
    ] {
        let out = f.fails(&["serve", "--listen", "127.0.0.1:0", "--mqtt", url]);
        assert!(out.contains(says), "{url}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
}

/// A report as large as serve takes is mirrored whole, and the connection stays up for the
/// next one.
#[test]
fn reports_up_to_the_largest_are_mirrored() {
    let broker = Mosquitto::start();
    let (f, server) = fleet(broker.port);
    let sub = Subscriber::connect(broker.port);
    sub.wait(UPDATE, Duration::from_secs(30), |_| true);
    let key = f.key(MAC);
    let pad = "x".repeat(mpfleet::http::MAX_REPORT - 100);
    let big = format!("{{\"event\":\"boot\",\"n\":1,\"error\":\"{pad}\"}}");
    assert_eq!(server.report(MAC, &key, big.as_bytes()).status, 200);
    let m = sub.wait(STATE, Duration::from_secs(30), |m| m.payload.contains(&pad));
    let got: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
    assert_eq!(got["event"], "boot");
    let small = "{\"event\":\"updated\",\"n\":2,\"generation\":1}";
    assert_eq!(server.report(MAC, &key, small.as_bytes()).status, 200);
    sub.wait(STATE, Duration::from_secs(30), |m| {
        m.payload.contains("\"n\":2")
    });
    assert_eq!(server.log_count("MQTT: lost"), 0);
}

/// A pushed generation whose code crashes: the board rolls back, and the retained message,
/// still announcing that generation, does not send it into the update again (it asked once).
#[test]
fn a_generation_rolled_back_from_is_not_asked_for_again() {
    let broker = Mosquitto::start();
    let (f, server) = fleet(broker.port);
    let board = SimBoard::new(&f, MAC).start(&server.base);
    board.wait_said("APP one", BOARD);
    board.wait_said("push: subscribed", BOARD);

    f.publish("sensorclass", "raise RuntimeError('boom')\n", &[]);
    let bad = generation(&f);
    board.wait_said(&format!("push: generation {bad} announced"), BOARD);
    board.wait_said(&format!("rolled back from generation {bad}"), BOARD);
    board.wait_said(&format!("push: generation {bad} already asked for"), BOARD);
    let out = board.stop();
    assert_eq!(out.matches("announced; updating").count(), 1, "{out}");
    let after = &out[out.find("rolled back from").unwrap()..];
    assert!(after.contains("APP one"), "{out}");
}
