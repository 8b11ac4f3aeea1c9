//! Port profiles (`mpfleet sim --port`): the simulated board refuses what the real port
//! refuses, so a call that fails on a board fails here. One test per rule of PORTS.md; each
//! runs a small probe as the board's `/main.py` (its flash a host directory) and reads what
//! it printed. Self-contained: only the `mpfleet` binary and its `sim` command.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mpfleet");

/// Wall-clock limit of one `mpfleet sim` run.
const DEADLINE: Duration = Duration::from_secs(60);

/// What every probe starts with: `say` prints a line the test reads, `attempt` says whether a
/// call worked or which exception it raised, `boot` counts boots on the flash.
const PRELUDE: &str = "\
import machine, sys, time
def say(*a):
    print('P', *a)
def attempt(label, f):
    try:
        f()
        say(label, 'ok')
    except Exception as e:
        say(label, type(e).__name__)
def boot():
    try:
        with open('/boots') as f:
            n = int(f.read())
    except OSError:
        n = 0
    with open('/boots', 'w') as f:
        f.write(str(n + 1))
    return n + 1
";

struct Probe {
    out: String,
}

impl Probe {
    /// Boots a board running `PRELUDE + body` as `/main.py` at most `boots` times with
    /// `mpfleet sim ARGS`, under [`DEADLINE`].
    fn run(args: &[&str], boots: u32, body: &str) -> Probe {
        let dir = tempfile::tempdir().unwrap();
        let flash = dir.path().join("flash");
        std::fs::create_dir_all(&flash).unwrap();
        std::fs::write(flash.join("main.py"), format!("{PRELUDE}{body}")).unwrap();
        Probe::run_in(dir.path(), args, boots)
    }

    fn run_in(dir: &Path, args: &[&str], boots: u32) -> Probe {
        let mut child = Command::new(BIN)
            .args([
                "sim",
                "--server",
                "http://127.0.0.1:9/",
                "--mac",
                "02000000beef",
            ])
            .arg("--flash-dir")
            .arg(dir.join("flash"))
            .arg("--state")
            .arg(dir.join("state"))
            .args(["--boots", &boots.to_string(), "--settle", "1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mpfleet sim");
        let (tx, rx) = mpsc::channel();
        for mut stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = stream.read_to_string(&mut s);
                let _ = tx.send(s);
            });
        }
        let mut out = String::new();
        for _ in 0..2 {
            match rx.recv_timeout(DEADLINE) {
                Ok(s) => out.push_str(&s),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("mpfleet sim {args:?} ran past {DEADLINE:?}:\n{out}");
                }
            }
        }
        let _ = child.wait();
        Probe { out }
    }

    /// What boot `n` said with `say`, one string per line.
    fn said(&self, n: u32) -> Vec<String> {
        let prefix = format!(" #{n}] P ");
        self.out
            .lines()
            .filter_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
            .collect()
    }

    /// The value boot `n` said for `label` (`say(label, value)`).
    fn value(&self, n: u32, label: &str) -> String {
        let key = format!("{label} ");
        self.said(n)
            .iter()
            .find_map(|l| l.strip_prefix(&key).map(str::to_owned))
            .unwrap_or_else(|| panic!("boot {n} never said {label}:\n{}", self.out))
    }

    /// How each boot ended (`Watchdog`, `Reset`, `Settled`, ...).
    fn endings(&self) -> Vec<String> {
        self.out
            .lines()
            .filter_map(|l| l.split_once("ended: ").map(|(_, e)| e.to_owned()))
            .collect()
    }

    /// The largest `alive MS` a boot said before it ended.
    fn last_alive(&self, n: u32) -> u64 {
        self.said(n)
            .iter()
            .filter_map(|l| l.strip_prefix("alive ")?.parse().ok())
            .max()
            .unwrap_or_else(|| panic!("boot {n} never said alive:\n{}", self.out))
    }
}

/// Says `alive MS` (since the watchdog started) every 50 ms, never feeding it.
const STARVE: &str = "
t0 = time.ticks_ms()
while True:
    say('alive', time.ticks_diff(time.ticks_ms(), t0))
    time.sleep_ms(50)
";

#[test]
fn the_default_profile_is_esp8266_and_the_run_says_so() {
    let p = Probe::run(&[], 1, "say('platform', sys.platform)\n");
    let first = p.out.lines().next().unwrap_or_default();
    assert!(
        first.contains("esp8266 1.28 profile, heap 90k, 763 flash blocks"),
        "{}",
        p.out
    );
    assert_eq!(p.value(1, "platform"), "esp8266");
}

#[test]
fn esp8266_wdt_takes_only_a_timeout_of_5000() {
    let p = Probe::run(
        &["--port", "esp8266"],
        1,
        "attempt('t3000', lambda: machine.WDT(timeout=3000))
attempt('t6000', lambda: machine.WDT(timeout=6000))
attempt('id1', lambda: machine.WDT(1))
attempt('t5000', lambda: machine.WDT(timeout=5000))
attempt('positional', lambda: machine.WDT(0, 5000))
attempt('deinit', lambda: machine.WDT().deinit())
",
    );
    assert_eq!(p.value(1, "t3000"), "ValueError");
    assert_eq!(p.value(1, "t6000"), "ValueError");
    assert_eq!(p.value(1, "id1"), "ValueError");
    assert_eq!(p.value(1, "t5000"), "ok");
    assert_eq!(p.value(1, "positional"), "ok");
    assert_eq!(p.value(1, "deinit"), "AttributeError");
}

#[test]
fn esp8266_wdt_before_1_22_takes_no_keywords() {
    let body = "attempt('kw', lambda: machine.WDT(timeout=5000))
attempt('bare', lambda: machine.WDT())
";
    let old = Probe::run(&["--port", "esp8266", "--port-version", "1.21"], 1, body);
    assert_eq!(old.value(1, "kw"), "TypeError");
    assert_eq!(old.value(1, "bare"), "ok");
    let new = Probe::run(&["--port", "esp8266", "--port-version", "1.22"], 1, body);
    assert_eq!(new.value(1, "kw"), "ok");
}

#[test]
fn esp8266_watchdog_resets_the_board_1_6_s_after_the_last_feed() {
    let p = Probe::run(
        &["--port", "esp8266"],
        1,
        &format!("machine.WDT(timeout=5000)\n{STARVE}"),
    );
    assert_eq!(p.endings(), ["Watchdog"], "{}", p.out);
    let alive = p.last_alive(1);
    assert!(
        (1000..2500).contains(&alive),
        "reset {alive} ms after the last feed, not about 1600:\n{}",
        p.out
    );
}

#[test]
fn esp32_watchdog_resets_after_its_timeout_and_a_second_wdt_reconfigures_it() {
    let p = Probe::run(
        &["--port", "esp32"],
        1,
        &format!("machine.WDT(timeout=300)\nmachine.WDT(timeout=2500)\n{STARVE}"),
    );
    assert_eq!(p.endings(), ["Watchdog"], "{}", p.out);
    let alive = p.last_alive(1);
    assert!(
        (2000..3500).contains(&alive),
        "reset {alive} ms after the last feed, not about 2500:\n{}",
        p.out
    );
}

#[test]
fn esp32_1_20_wdt_counts_whole_seconds() {
    let body = "attempt('t500', lambda: machine.WDT(timeout=500))\n";
    let p = Probe::run(&["--port", "esp32", "--port-version", "1.20"], 1, body);
    assert_eq!(p.value(1, "t500"), "ValueError");
    let p = Probe::run(&["--port", "esp32", "--port-version", "1.21"], 1, body);
    assert_eq!(p.value(1, "t500"), "ok");
}

#[test]
fn esp8266_timer_takes_one_id_and_is_configured_by_init() {
    let p = Probe::run(
        &["--port", "esp8266"],
        1,
        "attempt('keywords', lambda: machine.Timer(-1, period=100, callback=print))
attempt('no_id', lambda: machine.Timer())
def init(t):
    t.init(period=100, callback=lambda t: None)
    t.deinit()
attempt('init', lambda: init(machine.Timer(-1)))
attempt('any_id', lambda: init(machine.Timer('x')))
",
    );
    assert_eq!(p.value(1, "keywords"), "TypeError");
    assert_eq!(p.value(1, "no_id"), "TypeError");
    assert_eq!(p.value(1, "init"), "ok");
    assert_eq!(p.value(1, "any_id"), "ok");
}

#[test]
fn esp32_timer_minus_one_is_refused_from_1_25_and_is_timer_3_before() {
    let body = "attempt('minus1', lambda: machine.Timer(-1))
attempt('four', lambda: machine.Timer(4))
attempt('no_id', lambda: machine.Timer())
attempt('three', lambda: machine.Timer(3))
attempt('keywords', lambda: machine.Timer(0, period=100, callback=print).deinit())
attempt('hard', lambda: machine.Timer(0).init(period=100, callback=print, hard=True))
";
    let new = Probe::run(&["--port", "esp32", "--port-version", "1.28"], 1, body);
    assert_eq!(new.value(1, "minus1"), "ValueError");
    assert_eq!(new.value(1, "four"), "ValueError");
    assert_eq!(new.value(1, "no_id"), "TypeError");
    assert_eq!(new.value(1, "three"), "ok");
    assert_eq!(new.value(1, "keywords"), "ok");
    assert_eq!(new.value(1, "hard"), "ValueError");
    let old = Probe::run(&["--port", "esp32", "--port-version", "1.24"], 1, body);
    assert_eq!(old.value(1, "minus1"), "ok");
    assert_eq!(old.value(1, "four"), "ok");
    assert_eq!(old.value(1, "hard"), "TypeError");
}

#[test]
fn periodic_timer_callbacks_keep_running_while_the_board_sleeps_computes_or_waits() {
    // Something that accepts connections and never answers: the board's recv times out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = Probe::run(
        &["--port", "esp8266"],
        1,
        &format!(
            "import socket
n = [0]
def tick(t):
    n[0] += 1
t = machine.Timer(-1)
t.init(period=100, callback=tick)
time.sleep(1)
say('sleeping', n[0])
n[0] = 0
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 1000:
    pass
say('computing', n[0])
n[0] = 0
s = socket.socket()
s.settimeout(1)
s.connect(socket.getaddrinfo('127.0.0.1', {port})[0][-1])
attempt('recv', lambda: s.recv(10))
say('waiting', n[0])
t.deinit()
"
        ),
    );
    drop(listener);
    // About 10 in 1 s; a wait that blocked in C would let at most the queue's 4 through.
    for label in ["sleeping", "computing", "waiting"] {
        let n: u32 = p.value(1, label).parse().unwrap();
        assert!(n >= 7, "{n} callbacks while {label} for 1 s:\n{}", p.out);
    }
    assert_eq!(p.value(1, "recv"), "OSError");
}

#[test]
fn callbacks_that_pile_up_beyond_the_schedulers_queue_are_dropped() {
    // select.poll on the unix port blocks in C, where no callback runs, as long C work does
    // on a board. 50 fires pile up; the queue keeps 4 (ESP8266) or 8 (ESP32).
    let body = "import select
n = [0]
def tick(t):
    n[0] += 1
t = machine.Timer(0)
t.init(period=10, callback=tick)
time.sleep_ms(50)
n[0] = 0
select.poll().poll(500)
for i in range(3):
    pass
say('ran', n[0])
t.deinit()
";
    for (port, depth) in [("esp8266", 4), ("esp32", 8)] {
        let p = Probe::run(&["--port", port], 1, body);
        let ran: u32 = p.value(1, "ran").parse().unwrap();
        assert!(
            (depth..depth + 3).contains(&ran),
            "{port}: {ran} callbacks ran after a 500 ms stall, not {depth}:\n{}",
            p.out
        );
    }
}

#[test]
fn machine_reset_in_a_timer_callback_resets_the_board() {
    let p = Probe::run(
        &["--port", "esp8266"],
        2,
        "if boot() == 1:
    machine.Timer(0).init(mode=machine.Timer.ONE_SHOT, period=50, callback=lambda t: machine.reset())
    time.sleep(5)
    say('not reset')
else:
    say('cause', machine.reset_cause())
",
    );
    assert_eq!(p.endings(), ["Reset", "Settled"], "{}", p.out);
    assert_eq!(p.value(2, "cause"), "4");
}

#[test]
fn rtc_memory_holds_492_bytes_on_esp8266_and_2048_on_esp32() {
    let body = "r = machine.RTC()
for n in (492, 493, 2048, 2049):
    attempt(n, lambda: r.memory(bytes(n)))
";
    let p = Probe::run(&["--port", "esp8266"], 1, body);
    assert_eq!(p.value(1, "492"), "ok");
    assert_eq!(p.value(1, "493"), "ValueError");
    let p = Probe::run(&["--port", "esp32"], 1, body);
    assert_eq!(p.value(1, "2048"), "ok");
    assert_eq!(p.value(1, "2049"), "ValueError");
}

#[test]
fn esp32_up_to_1_21_loses_rtc_memory_on_machine_reset_and_watchdog_resets() {
    let body = "n = boot()
say('rtc', machine.RTC().memory())
machine.RTC().memory(b'kept')
if n == 1:
    machine.reset()
if n == 2:
    machine.WDT(timeout=200)
    time.sleep(5)
";
    let old = Probe::run(&["--port", "esp32", "--port-version", "1.21"], 3, body);
    assert_eq!(
        old.endings(),
        ["Reset", "Watchdog", "Settled"],
        "{}",
        old.out
    );
    assert_eq!(old.value(2, "rtc"), "b''", "after machine.reset()");
    assert_eq!(old.value(3, "rtc"), "b''", "after a watchdog reset");
    let new = Probe::run(&["--port", "esp32", "--port-version", "1.22"], 3, body);
    assert_eq!(new.value(2, "rtc"), "b'kept'");
    assert_eq!(new.value(3, "rtc"), "b'kept'");
}

/// Boot 1 resets, boot 2 starves the watchdog, boot 3 returns; each says its reset cause.
fn reset_causes(port: &str, timeout: u32) -> Probe {
    let p = Probe::run(
        &["--port", port],
        3,
        &format!(
            "n = boot()
say('cause', machine.reset_cause())
say('constants', machine.PWRON_RESET, machine.HARD_RESET, machine.WDT_RESET, machine.SOFT_RESET)
if n == 1:
    machine.reset()
if n == 2:
    machine.WDT(timeout={timeout})
    time.sleep(5)
"
        ),
    );
    assert_eq!(p.endings(), ["Reset", "Watchdog", "Settled"], "{}", p.out);
    p
}

#[test]
fn esp8266_reset_cause_is_4_after_machine_reset_and_3_without_a_constant_after_the_wdt() {
    let p = reset_causes("esp8266", 5000);
    let causes: Vec<String> = (1..=3).map(|n| p.value(n, "cause")).collect();
    assert_eq!(causes, ["0", "4", "3"]);
    // PWRON_RESET HARD_RESET WDT_RESET SOFT_RESET: WDT_RESET is the hardware watchdog's.
    assert_eq!(p.value(1, "constants"), "0 6 1 4");
}

#[test]
fn esp32_reset_cause_is_hard_reset_after_machine_reset() {
    let p = reset_causes("esp32", 300);
    let causes: Vec<String> = (1..=3).map(|n| p.value(n, "cause")).collect();
    assert_eq!(causes, ["1", "2", "3"]);
    assert_eq!(p.value(1, "constants"), "1 2 3 5");
}

#[test]
fn unix_has_no_wdt_timer_or_reset_cause() {
    let p = Probe::run(
        &["--port", "unix"],
        1,
        "attempt('wdt', lambda: machine.WDT)
attempt('timer', lambda: machine.Timer)
attempt('reset_cause', lambda: machine.reset_cause)
attempt('rtc', lambda: machine.RTC().memory(bytes(2048)))
say('platform', sys.platform)
",
    );
    assert_eq!(p.value(1, "wdt"), "AttributeError");
    assert_eq!(p.value(1, "timer"), "AttributeError");
    assert_eq!(p.value(1, "reset_cause"), "AttributeError");
    assert_eq!(p.value(1, "rtc"), "ok");
    assert_eq!(p.value(1, "platform"), "linux");
}

#[test]
fn sys_implementation_is_the_simulated_release() {
    let p = Probe::run(
        &["--port", "esp32", "--port-version", "1.22"],
        1,
        "from sys import implementation as i
say('impl', sys.platform, i.name, i.version[:3], i._mpy)
",
    );
    assert_eq!(p.value(1, "impl"), "esp32 micropython (1, 22, 0) 10758");
}
