//! Hostile clients against a real `mpfleet serve`: slow-loris connections, a trickled body, a
//! half-sent request at SIGTERM, ten thousand random MACs, more connections than the cap.
//! Each test fails when the defence it names is taken out (see docs/security.md).
//!
//! The servers here run with short timeouts (the `MPFLEET_*_MS` test overrides of
//! `src/http/limits.rs`) so the suite takes seconds; the production values are consts there.

use crate::harness::{eventually, Fleet, Server};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `deadbeef1234` running `smartcharger`, with `env` for its servers.
fn fleet(env: &[(&str, &str)]) -> Fleet {
    let mut f = Fleet::smartcharger();
    f.ok(&["device", "set", "deadbeef1234", "--app", "smartcharger"]);
    for (k, v) in env {
        f.set_env(k, v);
    }
    f
}

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.addr()).expect("connecting to serve");
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    c
}

/// Reads `c` until the server closes it; what it sent, or `None` if still open at `deadline`.
fn closed_by(c: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(got), // reset: closed too
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Reads one response (header and `Content-Length` body) from `c`, by `deadline`.
fn response_by(c: &mut TcpStream, deadline: Instant) -> Option<(u16, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return Some((status, body));
            }
        }
        match c.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

const HALF_HEADER: &[u8] = b"GET /v1/deadbeef1234.json HTTP/1.1\r\nHost: x\r\nX-Slow: ";

/// The head of a report's POST, signed with `key` when the body is known.
fn report_head(length: usize, signed: Option<(&mpfleet::store::DeviceKey, &str)>) -> String {
    let hmac = signed.map_or(String::new(), |(key, body)| {
        format!(
            "{}: {}\r\n",
            mpfleet::sign::REPORT_HMAC,
            mpfleet::sign::hmac_hex(key, body.as_bytes())
        )
    });
    format!(
        "POST /v1/deadbeef1234/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         {hmac}Content-Length: {length}\r\n\r\n"
    )
}

/// Fifty connections that send half a header and stall, one that sends a report's header and
/// stalls its body, one left idle after a request: a normal board is still answered at once,
/// the server closes every stalled one within its timeouts, and SIGTERM still stops it.
#[test]
fn slow_loris_is_cut_off_while_others_are_served() {
    let header = Duration::from_millis(3000);
    let body = Duration::from_millis(3000);
    let f = fleet(&[
        ("MPFLEET_HEADER_TIMEOUT_MS", "3000"),
        ("MPFLEET_BODY_TIMEOUT_MS", "3000"),
        ("MPFLEET_SHUTDOWN_GRACE_MS", "1000"),
    ]);
    let mut s = f.serve();
    let start = Instant::now();
    let mut loris: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(HALF_HEADER).unwrap();
            c
        })
        .collect();
    let mut trickle = connect(&s);
    trickle
        .write_all(report_head(100, None).as_bytes())
        .unwrap();
    trickle.write_all(b"{\"event\":").unwrap();
    let mut idle = connect(&s);
    idle.write_all(b"GET /latestversions HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (status, _) = response_by(&mut idle, start + header).expect("a response on `idle`");
    assert_eq!(status, 200);

    // A board is served while all of them hang, well before any of them is cut off.
    let asked = Instant::now();
    let r = s.get("v1/deadbeef1234.json");
    assert_eq!(r.status, 200);
    assert!(
        asked.elapsed() < header / 2,
        "a normal request took {:?} beside the slow clients",
        asked.elapsed()
    );

    // Every stalled connection is closed by the server within its timeout (with slack for a
    // loaded machine).
    let cut = start + header + Duration::from_secs(5);
    for (i, c) in loris.iter_mut().enumerate() {
        closed_by(c, cut).unwrap_or_else(|| {
            panic!(
                "half-header connection {i} still open {:?} after it stalled",
                start.elapsed()
            )
        });
    }
    closed_by(&mut idle, cut).expect("an idle keep-alive connection still open");
    let got = closed_by(&mut trickle, start + body + Duration::from_secs(5))
        .expect("a stalled report body still open after the body timeout");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request body not received"), "{got}");
    assert_eq!(s.get("v1/deadbeef1234.json").status, 200);

    // New slow clients, then SIGTERM: the server still stops, within its grace and slack.
    let _more: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(HALF_HEADER).unwrap();
            c
        })
        .collect();
    let stop = Instant::now();
    s.sigterm();
    let code = s
        .exit_within(Duration::from_secs(6))
        .expect("serve still running 6s after SIGTERM");
    assert_eq!(code, 0);
    eprintln!("stopped {:?} after SIGTERM", stop.elapsed());
    // Nothing the stalled report sent was stored.
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(show["reports"], serde_json::json!([]));
}

/// A half-sent request and a report whose body is still coming when SIGTERM arrives, with
/// timeouts far longer than the shutdown grace: the report in progress is finished and
/// written, and the half-sent request does not hold the server past its grace.
#[test]
fn sigterm_stops_within_the_grace_and_keeps_accepted_reports() {
    let grace = Duration::from_millis(1500);
    let f = fleet(&[
        ("MPFLEET_HEADER_TIMEOUT_MS", "120000"),
        ("MPFLEET_BODY_TIMEOUT_MS", "120000"),
        ("MPFLEET_SHUTDOWN_GRACE_MS", "1500"),
    ]);
    let mut s = f.serve();
    let idle = open_sockets(s.pid());
    let key = f.key("deadbeef1234");
    let before = r#"{"n":1,"event":"boot","generation":1}"#;
    assert_eq!(
        s.report("deadbeef1234", &key, before.as_bytes()).status,
        200
    );
    let mut half = connect(&s);
    half.write_all(HALF_HEADER).unwrap();
    let in_flight = r#"{"n":2,"event":"updated","generation":2}"#;
    let mut report = connect(&s);
    report
        .write_all(report_head(in_flight.len(), Some((&key, in_flight))).as_bytes())
        .unwrap();
    report.write_all(&in_flight.as_bytes()[..5]).unwrap();
    // Both connections accepted (and the one of the POST above gone) before the signal.
    eventually("the server to take both", Duration::from_secs(10), || {
        (open_sockets(s.pid()) == idle + 2).then_some(())
    });

    let stop = Instant::now();
    s.sigterm();
    eventually("serve to begin stopping", Duration::from_secs(10), || {
        (s.log_count("stopping: no new connections") == 1).then_some(())
    });
    report.write_all(&in_flight.as_bytes()[5..]).unwrap();
    let (status, body) =
        response_by(&mut report, stop + grace).expect("the in-flight report was not answered");
    assert_eq!(status, 200, "{body}");

    let code = s
        .exit_within(grace + Duration::from_secs(4))
        .unwrap_or_else(|| panic!("serve still running {:?} after SIGTERM", stop.elapsed()));
    assert_eq!(code, 0);
    assert!(stop.elapsed() >= grace, "stopped before its grace");
    assert_eq!(
        s.log_count("still open after the shutdown grace"),
        1,
        "the half-sent request was dropped"
    );
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(show["reports"][0]["report"]["generation"], 2, "{show}");
    assert_eq!(show["reports"][1]["report"]["generation"], 1, "{show}");
}

/// A client that keeps one connection busy with request after request (so neither the header
/// nor the body timeout ever fires) is still cut off at the connection's deadline.
#[test]
fn a_busy_connection_ends_at_its_deadline() {
    let deadline = Duration::from_millis(2000);
    let f = fleet(&[
        ("MPFLEET_CONNECTION_DEADLINE_MS", "2000"),
        ("MPFLEET_HEADER_TIMEOUT_MS", "60000"),
    ]);
    let s = f.serve();
    // Before connecting: the server's clock for this connection starts at its accept.
    let start = Instant::now();
    let mut c = connect(&s);
    let mut answered = 0;
    let closed_after = loop {
        let sent = c.write_all(b"GET /latestversions HTTP/1.1\r\nHost: x\r\n\r\n");
        match sent
            .ok()
            .and_then(|_| response_by(&mut c, Instant::now() + deadline))
        {
            Some((200, _)) => answered += 1,
            Some((status, body)) => panic!("{status} {body}"),
            None => break start.elapsed(),
        }
        assert!(
            start.elapsed() < deadline + Duration::from_secs(5),
            "still served after {answered} requests in {:?}",
            start.elapsed()
        );
    };
    assert!(answered > 1, "only {answered} requests answered");
    assert!(closed_after >= deadline, "closed after {closed_after:?}");
    assert_eq!(s.get("latestversions").status, 200);
}

/// Sockets the process `pid` holds open (the listener, its connections, and a few of the
/// runtime's own).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The most rows `unknown_devices` keeps (`MAX_UNKNOWN_DEVICES` in src/store/reports.rs).
const MAX_UNKNOWN_DEVICES: i64 = 1000;

/// How much the server's resident memory may grow over the ten thousand requests (it grows
/// by well under 1 MiB), and the most it may hold after them.
const RSS_GROWTH_KIB: u64 = 8 * 1024;
const RSS_MAX_KIB: u64 = 64 * 1024;

/// Ten thousand requests for random MACs: the table of unknown MACs stays at its cap, and the
/// server's memory stays bounded.
#[test]
fn ten_thousand_random_macs_leave_bounded_rows_and_memory() {
    let f = fleet(&[]);
    let s = f.serve();
    for i in 0..200u64 {
        assert_eq!(s.get(&format!("v1/{:012x}.json", i + 1)).status, 404);
    }
    let before = rss_kib(s.pid());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                // A xorshift per thread: distinct, random-looking MACs.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                for _ in 0..1250 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let url = format!("{base}v1/{:012x}.json", x & 0xffff_ffff_ffff);
                    match agent.get(&url).call() {
                        Err(ureq::Error::Status(404, _)) => {}
                        other => panic!("{url}: {:?}", other.map(|r| r.status())),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Once this one is listed, everything asked before it has been flushed.
    let db = rusqlite::Connection::open(f.data().join("mpfleet.db")).unwrap();
    eventually(
        "a MAC asked last to be listed",
        Duration::from_secs(20),
        || {
            s.get("v1/fedcba987654.json");
            let n: i64 = db
                .query_row(
                    "SELECT count(*) FROM unknown_devices WHERE mac = 'fedcba987654'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            (n == 1).then_some(())
        },
    );
    let rows: i64 = db
        .query_row("SELECT count(*) FROM unknown_devices", [], |r| r.get(0))
        .unwrap();
    assert!(
        (1..=MAX_UNKNOWN_DEVICES).contains(&rows),
        "{rows} unknown MACs kept"
    );
    let listed = f.json(&["device", "list", "--unknown", "--json"]);
    assert!(listed.as_array().unwrap().len() as i64 <= MAX_UNKNOWN_DEVICES);
    let after = rss_kib(s.pid());
    eprintln!("serve's RSS: {before} KiB before, {after} KiB after 10000 random MACs");
    assert!(
        after <= before + RSS_GROWTH_KIB && after <= RSS_MAX_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(s.get("v1/deadbeef1234.json").status, 200);
}

/// Three times as many connections as the cap, each idle: the server holds only the cap,
/// says so once in its log, a board that connects meanwhile waits and is served as soon as
/// they go away.
#[test]
fn connection_cap_holds_and_serving_resumes() {
    let cap = 16;
    let f = fleet(&[
        ("MPFLEET_MAX_CONNECTIONS", "16"),
        ("MPFLEET_HEADER_TIMEOUT_MS", "60000"),
    ]);
    let s = f.serve();
    let baseline = open_sockets(s.pid());
    assert_eq!(s.get("v1/deadbeef1234.json").status, 200);
    eventually(
        "the GET's connection to close",
        Duration::from_secs(10),
        || (open_sockets(s.pid()) == baseline).then_some(()),
    );
    let hogs: Vec<TcpStream> = (0..3 * cap).map(|_| connect(&s)).collect();
    eventually("the cap to be hit", Duration::from_secs(10), || {
        (s.log_count("the most served at once") == 1).then_some(())
    });
    let held = open_sockets(s.pid()) - baseline;
    assert_eq!(held, cap, "connections held at the cap");

    // A board arriving now waits in the backlog...
    let mut board = connect(&s);
    board
        .write_all(b"GET /v1/deadbeef1234.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        response_by(&mut board, Instant::now() + Duration::from_millis(500)).is_none(),
        "a connection past the cap was served"
    );
    assert_eq!(open_sockets(s.pid()) - baseline, cap);
    // ...and is served once the others go away.
    drop(hogs);
    let (status, _) = response_by(&mut board, Instant::now() + Duration::from_secs(10))
        .expect("the waiting board was not served after the hogs left");
    assert_eq!(status, 200);
    assert_eq!(s.get("v1/deadbeef1234.json").status, 200);
    assert_eq!(s.log_count("the most served at once"), 1, "logged once");
}

/// A report full of terminal escapes (a compromised board's): the tables of
/// `device list` and `device show` show them as text, `--json` keeps them as they were.
#[test]
fn report_strings_cannot_steer_the_terminal() {
    let f = fleet(&[]);
    let s = f.serve();
    let config = "\u{1b}[2J\u{1b}]0;owned\u{7}primary\r\u{8}\u{202e}yrammirp";
    let report = serde_json::json!({"n": 1, "event": "boot", "generation": 1, "config": config,
        "modules": {"smartcharger": "1\u{1b}[31m\u{9b}"}});
    let key = f.key("deadbeef1234");
    let r = s.report("deadbeef1234", &key, report.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    for args in [&["device", "list"][..], &["device", "show", "deadbeef1234"]] {
        let out = f.ok(args);
        let bad: Vec<char> = out
            .chars()
            .filter(|&c| (c.is_control() && c != '\n') || c == '\u{202e}')
            .collect();
        assert!(bad.is_empty(), "{args:?} printed {bad:?}:\n{out}");
        // Shown, escaped (a table's `\x1b`, or JSON's own `\u001b` in a report line).
        assert!(
            out.contains("\\x1b[2J") || out.contains("\\u001b[2J"),
            "{args:?}:\n{out}"
        );
    }
    assert!(f
        .ok(&["device", "show", "deadbeef1234"])
        .contains("1\\x1b[31m\\u{009b}"));
    let show = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(show["last_report"]["config"], config);
}

/// SIGHUP (a closed terminal, `systemctl reload`) neither stops `serve` nor drops anything:
/// it says so and goes on serving.
#[test]
fn sighup_reloads_nothing_and_stops_nothing() {
    let f = fleet(&[]);
    let mut s = f.serve();
    s.signal("HUP");
    eventually("the SIGHUP to be logged", Duration::from_secs(10), || {
        (s.log_count("SIGHUP: nothing to reload") == 1).then_some(())
    });
    assert_eq!(s.get("v1/deadbeef1234.json").status, 200);
    assert!(s.exit_within(Duration::from_millis(300)).is_none());
    s.sigterm();
    assert_eq!(s.exit_within(Duration::from_secs(10)), Some(0));
}
