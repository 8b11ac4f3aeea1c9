//! One simulated board: boots the real MicroPython on its flash until it settles.
//!
//! A boot is one `micropython` process running `board.py`. Exit code 42 is `machine.reset()`
//! (RTC memory kept, boot again); death by SIGKILL after a requested cut is a power cut (RTC
//! memory lost, boot again); a watchdog deadline that passes is a watchdog reset; death by
//! SIGTERM is `machine.reset()` from a Timer callback (RTC memory kept). A boot that returns,
//! or keeps running quietly, has settled. Each boot is told why it started
//! (`MPFLEET_RESET_CAUSE`), which `machine.reset_cause()` answers in the port's terms.

use crate::out::outln;
use anyhow::{Context, Result};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The exit code `machine.reset()` ends a simulated board's process with.
pub const RESET_EXIT: i32 = 42;

/// What `main.py` prints just before it imports the application.
const APP_STARTS: &str = "mpfleet: running ";

/// A boot that has not reached its app by then (and has no watchdog) is stuck.
const HUNG: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub enum Flash {
    /// A littlefs2 image file (created and formatted when missing).
    Image(PathBuf),
    /// A plain host directory.
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BoardOptions {
    pub micropython: PathBuf,
    pub shims: PathBuf,
    pub server: String,
    pub mac: crate::names::Mac,
    pub flash: Flash,
    pub flash_blocks: u32,
    pub rtc: PathBuf,
    pub heap: u64,
    /// The MicroPython port and release the board behaves as (`sim/ports.py`).
    pub port: super::Port,
    pub port_version: super::PortVersion,
    pub settle: Duration,
    /// What reaches the flash of the write a power cut interrupts: `half` or `lost`.
    pub cut_tear: String,
    /// Replaces bootstrap.py's `WATCHDOG` (seconds) when the board bootstraps.
    pub watchdog: Option<f64>,
    /// Replaces bootstrap.py's `TIMEOUT` (seconds) when the board bootstraps.
    pub timeout: Option<f64>,
    /// The server's data directory: a board that bootstraps gets the key of its device there
    /// (and the store's identity), as `mpfleet device bootstrap` would fill them in.
    pub data: PathBuf,
    /// (key, store) to bootstrap with instead of the data directory's (`--key`, `--store`).
    pub key: Option<(String, String)>,
    /// A bootstrap file to run as it is (`--bootstrap`), with its own key.
    pub bootstrap: Option<PathBuf>,
    /// Print each line the board says, prefixed with its MAC and boot number.
    pub echo: bool,
    /// Also append each such line to this file (`mpfleet demo` keeps one log per board).
    pub log: Option<PathBuf>,
}

/// Why a boot started: env `MPFLEET_RESET_CAUSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Power-on, and after a power cut (RTC memory lost).
    PowerOn,
    /// `machine.reset()`.
    Reset,
    /// The watchdog expired.
    Watchdog,
}

impl Cause {
    fn as_env(self) -> &'static str {
        match self {
            Self::PowerOn => "power",
            Self::Reset => "reset",
            Self::Watchdog => "watchdog",
        }
    }
}

/// How one boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    Reset,
    PowerCut {
        writes: u64,
    },
    Watchdog,
    Settled,
    Crashed {
        code: i32,
    },
    /// Never reached its app and never reset: a real board would hang here.
    Hung,
}

/// How the whole run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Settled { boots: u32 },
    OutOfBoots { boots: u32 },
    Crashed { boots: u32, code: i32 },
    Hung { boots: u32 },
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Settled { boots } => write!(f, "settled after {boots} boot(s)"),
            Self::OutOfBoots { boots } => write!(f, "did not settle in {boots} boot(s)"),
            Self::Hung { boots } => {
                write!(f, "hung at boot {boots}: no app, no reset, no watchdog")
            }
            Self::Crashed { boots, code } => {
                write!(
                    f,
                    "stopped at boot {boots}: the interpreter exited with {code}"
                )
            }
        }
    }
}

pub struct Board {
    pub options: BoardOptions,
    /// `options.log`, opened for appending (None when it cannot be: the board runs on).
    log: Option<std::sync::Mutex<std::fs::File>>,
}

/// The watchdog deadline a board wrote (Unix ms), if it has one.
/// The watchdog deadline the board wrote (sim/machine.py's `WDT.feed`): the same number
/// twice, written in place; `None` until it is there, or when the two copies differ (read
/// while the board was writing: the next poll reads it again).
fn read_deadline(path: &std::path::Path) -> Option<u128> {
    let s = std::fs::read_to_string(path).ok()?;
    let (a, b) = s.trim().split_once(' ')?;
    (a == b).then(|| a.parse().ok())?
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Board {
    pub fn new(options: BoardOptions) -> Self {
        let log = options.log.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(std::sync::Mutex::new)
        });
        Self { options, log }
    }

    /// Whether the app said it is healthy: `reboots` is 0 in its RTC memory.
    fn said_healthy(&self) -> bool {
        std::fs::read(&self.options.rtc)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|f| f["reboots"] == 0)
    }

    fn wdt_path(&self) -> PathBuf {
        self.options.rtc.with_extension("wdt")
    }

    /// Sets the `update` boot flag, as application code does before `machine.reset()`.
    pub fn request_update(&self) -> Result<()> {
        let mut flags: serde_json::Map<String, serde_json::Value> =
            std::fs::read(&self.options.rtc)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
        flags.insert("update".into(), true.into());
        std::fs::write(
            &self.options.rtc,
            serde_json::Value::Object(flags).to_string(),
        )
        .with_context(|| format!("writing {}", self.options.rtc.display()))
    }

    /// Boots until the board settles, crashes, or `max_boots` boots have run. Returns how it
    /// ended and the flash writes (progs and erases) of the whole run.
    ///
    /// `cut`: power fails during the K-th flash write of the run, counted across resets: that
    /// write is torn (see `cut_tear`), the process dies at once, RTC memory is lost, and the
    /// board boots again. A boot killed by its watchdog reports no count, so its writes are
    /// not counted (a cut still pending moves later).
    ///
    /// `cause`: why the first boot starts (the RTC file is kept whatever it is).
    pub fn run(&self, max_boots: u32, cut: Option<u64>, cause: Cause) -> Result<(Ending, u64)> {
        let mut pending = cut;
        let mut total = 0u64;
        let mut cause = cause;
        for n in 1..=max_boots {
            let (boot, writes) = self.boot(n, pending, cause)?;
            total += writes;
            self.say(n, &format!("--- boot {n} ended: {boot:?}"))?;
            pending = match (pending, &boot) {
                (_, Boot::PowerCut { .. }) | (None, _) => None,
                (Some(k), _) => Some(k.saturating_sub(writes).max(1)),
            };
            match boot {
                Boot::Settled => return Ok((Ending::Settled { boots: n }, total)),
                Boot::Crashed { code } => return Ok((Ending::Crashed { boots: n, code }, total)),
                Boot::Hung => return Ok((Ending::Hung { boots: n }, total)),
                Boot::PowerCut { .. } => {
                    let _ = std::fs::remove_file(&self.options.rtc);
                    cause = Cause::PowerOn;
                }
                Boot::Reset => cause = Cause::Reset,
                Boot::Watchdog => cause = Cause::Watchdog,
            }
        }
        Ok((Ending::OutOfBoots { boots: max_boots }, total))
    }

    /// Echoes a board's line (and logs it); fails only when stdout does (see `crate::out`).
    fn say(&self, boot: u32, line: &str) -> Result<()> {
        if let Some(log) = &self.log {
            use std::io::Write;
            if let Ok(mut f) = log.lock() {
                let _ = writeln!(f, "[{} #{boot}] {line}", self.options.mac);
            }
        }
        if self.options.echo {
            outln!("[{} #{boot}] {line}", self.options.mac)?;
        }
        Ok(())
    }

    /// The board's key, the store's identity and its last report counter, from the data
    /// directory, if the board is a device there (read at each boot: it may be added later).
    fn trust(&self) -> Result<Option<(String, String, i64)>> {
        let o = &self.options;
        if o.bootstrap.is_some() {
            return Ok(None); // it has its own
        }
        if let Some((key, store)) = &o.key {
            return Ok(Some((key.clone(), store.clone(), 0)));
        }
        if !o.data.join("mpfleet.db").exists() {
            return Ok(None);
        }
        let store = crate::store::Store::open_read_only(&o.data)?;
        let Some(d) = store.device(&o.mac)? else {
            return Ok(None);
        };
        Ok(Some((d.key.to_hex(), store.store_id()?, d.report_counter)))
    }

    /// One boot: one interpreter process. Returns how it ended and its flash writes (0 when
    /// it did not say: killed by the watchdog or as hung).
    pub fn boot(&self, n: u32, cut: Option<u64>, cause: Cause) -> Result<(Boot, u64)> {
        let o = &self.options;
        let wdt = self.wdt_path();
        let _ = std::fs::remove_file(&wdt);
        let mut cmd = Command::new(&o.micropython);
        cmd.arg("-X")
            .arg(format!("heapsize={}", o.heap))
            .arg(o.shims.join("board.py"))
            .env("MICROPYPATH", &o.shims)
            .env("MPFLEET_MAC", o.mac.as_str())
            .env("MPFLEET_RTC", &o.rtc)
            .env("MPFLEET_WDT", &wdt)
            .env("MPFLEET_SERVER", &o.server)
            .env(
                "MPFLEET_BOOTSTRAP",
                o.bootstrap
                    .clone()
                    .unwrap_or_else(|| o.shims.join("bootstrap.py")),
            )
            .env("MPFLEET_COUNT_WRITES", "1")
            .env("MPFLEET_FLASH_BLOCKS", o.flash_blocks.to_string())
            .env("MPFLEET_PORT", o.port.as_str())
            .env("MPFLEET_PORT_VERSION", o.port_version.to_string())
            .env("MPFLEET_RESET_CAUSE", cause.as_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &o.flash {
            Flash::Image(p) => cmd.env("MPFLEET_FLASH_IMG", p),
            Flash::Dir(d) => {
                std::fs::create_dir_all(d)?;
                cmd.env("MPFLEET_FLASH_DIR", d)
            }
        };
        if let Some(t) = o.timeout {
            cmd.env("MPFLEET_TIMEOUT", t.to_string());
        }
        if let Some((key, store, counter)) = self.trust()? {
            cmd.env("MPFLEET_KEY", key)
                .env("MPFLEET_STORE", store)
                .env("MPFLEET_COUNTER", counter.to_string());
        }
        if let Some(w) = o.watchdog {
            cmd.env("MPFLEET_WATCHDOG", w.to_string());
        }
        if let Some(k) = cut {
            cmd.env("MPFLEET_CUT_AFTER_WRITES", k.to_string())
                .env("MPFLEET_CUT_TEAR", &o.cut_tear);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", o.micropython.display()))?;
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let started = Instant::now();
        let mut last_line = Instant::now();
        let mut writes = 0u64;
        let mut streams_open = true;
        // Set once main.py says it starts the app: only then can the board settle.
        let mut app_started: Option<Instant> = None;
        // The watchdog's deadline when the app started: a board that has not fed it since
        // has not settled (the watchdog will have its say first).
        let mut wdt_at_app: Option<u128> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    last_line = Instant::now();
                    if let Some(w) = line.strip_prefix("writes=") {
                        writes = w.trim().parse().unwrap_or(0);
                    }
                    if line.starts_with(APP_STARTS) && app_started.is_none() {
                        app_started = Some(Instant::now());
                        wdt_at_app = read_deadline(&wdt);
                    }
                    if let Err(e) = self.say(n, &line) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => streams_open = false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = child.try_wait()? {
                // Drain what is left of its output.
                if streams_open {
                    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
                        if let Some(w) = line.strip_prefix("writes=") {
                            writes = w.trim().parse().unwrap_or(0);
                        }
                        self.say(n, &line)?;
                    }
                }
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    if let (Some(9), Some(k)) = (status.signal(), cut) {
                        return Ok((Boot::PowerCut { writes: k }, k));
                    }
                    if status.signal() == Some(libc::SIGTERM) {
                        return Ok((Boot::Reset, writes));
                    }
                }
                let boot = match status.code() {
                    Some(RESET_EXIT) => Boot::Reset,
                    Some(0) => Boot::Settled,
                    Some(code) => Boot::Crashed { code },
                    None => {
                        #[cfg(unix)]
                        {
                            use std::os::unix::process::ExitStatusExt;
                            // Killed by a signal: reported as minus its number.
                            Boot::Crashed {
                                code: -status.signal().unwrap_or(1),
                            }
                        }
                        #[cfg(not(unix))]
                        Boot::Crashed { code: -1 }
                    }
                };
                return Ok((boot, writes));
            }
            if let Some(deadline) = read_deadline(&wdt) {
                if now_ms() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok((Boot::Watchdog, 0));
                }
            }
            if let Some(app) = app_started {
                let quiet = last_line.elapsed() >= o.settle;
                // With a watchdog running, an app that has not said it is healthy is reset
                // at its boot deadline: it has not settled until it says so.
                let watchdog_content =
                    wdt_at_app.is_none() || self.said_healthy() || app.elapsed() >= HUNG;
                if watchdog_content
                    && ((quiet && app.elapsed() >= o.settle) || app.elapsed() >= o.settle * 4)
                {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok((Boot::Settled, writes));
                }
            } else if started.elapsed() >= HUNG {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((Boot::Hung, 0));
            }
        }
    }
}
