//! Simulated boards, driven through `mpfleet sim` exactly as a user runs it: [`SimBoard`]
//! (its flash a plain directory the test reads) and [`ImageBoard`] (its flash a littlefs2
//! image, so power can be cut at any write). Both boot through one implementation
//! ([`SimCommand`]), and every `mpfleet sim` run has a wall-clock deadline: past it, the run and
//! every interpreter it started are killed and the test fails naming the board.

use super::{Fleet, BIN};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one `mpfleet sim` run of a board may take, unless the board says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(240);

pub struct SimRun {
    pub code: i32,
    pub out: String,
}

impl SimRun {
    /// Lines the board printed (without the `[mac #n] ` prefix).
    pub fn said(&self) -> Vec<&str> {
        self.out
            .lines()
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
            .collect()
    }

    /// The app's `APP ...` lines.
    pub fn app_lines(&self) -> Vec<&str> {
        self.said()
            .into_iter()
            .filter(|l| l.starts_with("APP "))
            .collect()
    }

    pub fn last_app_line(&self) -> &str {
        self.app_lines()
            .last()
            .copied()
            .unwrap_or_else(|| panic!("the app never ran:\n{}", self.out))
    }

    pub fn settled(&self) -> bool {
        self.code == 0 && self.out.contains("settled after")
    }

    /// The flash writes of the whole run, from the run's last line.
    pub fn flash_writes(&self) -> u64 {
        self.out
            .lines()
            .find_map(|l| {
                l.strip_suffix(" flash writes")
                    .and_then(|l| l.rsplit("; ").next())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or_else(|| panic!("no flash writes count:\n{}", self.out))
    }

    /// Whether power was cut during the run.
    pub fn power_cut(&self) -> bool {
        self.out.contains("ended: PowerCut")
    }
}

/// One `mpfleet sim` run of one board: what every board kind passes, plus its own flash
/// arguments.
struct SimCommand<'a> {
    mac: &'a str,
    server: &'a str,
    heap: &'a str,
    boots: u32,
    settle: f64,
    port: Option<&'a str>,
    port_version: Option<&'a str>,
    /// The store whose key the board bootstraps with (`--data`; None: no store, no key).
    data: Option<&'a Path>,
    /// `--key KEY --store STORE` instead.
    key: Option<&'a (String, String)>,
    deadline: Duration,
    /// The board kind's own arguments (its flash, state, cuts...).
    extra: Vec<OsString>,
}

/// A run that passed its deadline: the output so far.
struct TimedOut {
    out: String,
}

impl SimCommand<'_> {
    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["sim", "--server", self.server, "--mac", self.mac])
            .args(["--boots", &self.boots.to_string()])
            .args(["--settle", &self.settle.to_string()]);
        // An empty heap: the simulator's default for the port, as a user runs it.
        if !self.heap.is_empty() {
            cmd.args(["--heap", self.heap]);
        }
        if let Some(p) = self.port {
            cmd.args(["--port", p]);
        }
        if let Some(v) = self.port_version {
            cmd.args(["--port-version", v]);
        }
        match self.data {
            Some(d) => cmd.arg("--data").arg(d),
            // Not the current directory's `mpfleet-data`: no store at all.
            None => cmd.args(["--data", "/nonexistent/mpfleet-data"]),
        };
        if let Some((key, store)) = self.key {
            cmd.args(["--key", key, "--store", store]);
        }
        cmd.args(&self.extra);
        cmd
    }

    /// Runs it to its end or its deadline. Stdout and stderr, in the order they came.
    fn run(&self) -> Result<SimRun, TimedOut> {
        let mut cmd = self.command();
        // Its own process group: at the deadline, the interpreters it started die with it.
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running mpfleet sim");
        let pgid = child.id() as i32;
        let kill_group = || unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        };
        let (tx, rx) = mpsc::channel::<String>();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + self.deadline;
        let mut out = String::new();
        let mut status = None;
        let mut exited_at = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                kill_group();
                let _ = child.wait();
                // What the readers still hold.
                while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                    out.push_str(&line);
                    out.push('\n');
                }
                return Err(TimedOut { out });
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(50))) {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                    continue;
                }
                // Both streams closed: the run is over once its process has exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let s = child.wait().expect("waiting for mpfleet sim");
                    status = Some(s);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if status.is_none() {
                status = child.try_wait().expect("waiting for mpfleet sim");
                if status.is_some() {
                    exited_at = Some(Instant::now());
                }
            }
            // Exited, but something it started still holds its output open.
            if exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
                kill_group();
            }
        }
        Ok(SimRun {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            out,
        })
    }

    /// Runs it; a run past its deadline fails the test, naming the board.
    fn run_or_fail(&self) -> SimRun {
        self.run().unwrap_or_else(|t| {
            panic!(
                "board {}: `mpfleet sim` still running after {:?} (its deadline), killed; \
                 output so far:\n{}",
                self.mac, self.deadline, t.out
            )
        })
    }
}

/// A board's flash as a plain directory, so tests can read what is on it.
pub struct SimBoard {
    pub mac: String,
    pub flash: PathBuf,
    pub state: PathBuf,
    pub heap: String,
    /// `--port`: the MicroPython port the board pretends to be (None: the simulator's default).
    pub port: Option<String>,
    /// `--port-version X.Y`.
    pub port_version: Option<String>,
    /// Wall-clock limit of one `mpfleet sim` run.
    pub deadline: Duration,
    /// The fleet's data directory: the board bootstraps with its device's key from there.
    pub data: PathBuf,
    /// A bootstrap to run as it is (`--bootstrap`: a `device bootstrap` output).
    pub bootstrap: Option<PathBuf>,
}

impl SimBoard {
    pub fn new(fleet: &Fleet, mac: &str) -> Self {
        let root = fleet.dir.path().join(format!("board-{mac}"));
        Self {
            mac: mac.to_owned(),
            flash: root.join("flash"),
            state: root.join("state"),
            heap: "96k".into(),
            port: None,
            port_version: None,
            deadline: DEFAULT_DEADLINE,
            data: fleet.data(),
            bootstrap: None,
        }
    }

    /// Boots the board until it settles (at most `boots` boots).
    pub fn boot(&self, server: &str, boots: u32) -> SimRun {
        let mut extra: Vec<OsString> = vec!["--flash-dir".into(), self.flash.clone().into()];
        extra.extend(["--state".into(), self.state.clone().into()]);
        if let Some(b) = &self.bootstrap {
            extra.extend(["--bootstrap".into(), b.clone().into()]);
        }
        let run = SimCommand {
            mac: &self.mac,
            server,
            heap: &self.heap,
            boots,
            settle: 1.0,
            port: self.port.as_deref(),
            port_version: self.port_version.as_deref(),
            data: Some(&self.data),
            key: None,
            deadline: self.deadline,
            extra,
        }
        .run_or_fail();
        eprintln!("--- mpfleet sim {}:\n{}", self.mac, run.out);
        run
    }

    /// Asks for an update the way application code does: our test app sees this file,
    /// calls `config.set('update')` and resets.
    pub fn ask_for_update(&self) {
        std::fs::write(self.flash.join("request_update"), "").unwrap();
    }

    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.flash.join(path.trim_start_matches('/'))).ok()
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(
            &self
                .read(path)
                .unwrap_or_else(|| panic!("{path} missing on flash")),
        )
        .unwrap()
    }

    /// The board's boot flags (its RTC memory).
    pub fn rtc(&self) -> serde_json::Value {
        let path = self.state.join(format!("{}.rtc", self.mac));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    pub fn ls(&self, path: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.flash.join(path.trim_start_matches('/')))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A board whose flash is a littlefs2 image (`dir/flash.img`, RTC memory in `dir/flash.rtc`),
/// so power can be cut at any flash write; `inspect` reads the image.
#[derive(Clone)]
pub struct ImageBoard {
    pub mac: String,
    pub dir: PathBuf,
    pub heap: String,
    pub flash_blocks: u32,
    /// What reaches the flash of the write a cut interrupts (`--cut-tear`).
    pub tear: &'static str,
    /// The watchdog timeout (seconds) the board gets when it bootstraps (`--watchdog`).
    pub watchdog: Option<f64>,
    /// The updater's socket timeout (seconds) the board gets when it bootstraps
    /// (`--timeout`; default 10).
    pub timeout: Option<f64>,
    /// `--settle` seconds.
    pub settle: f64,
    /// `--port`: the MicroPython port the board pretends to be (None: the simulator's default).
    pub port: Option<String>,
    /// `--port-version X.Y`.
    pub port_version: Option<String>,
    /// Wall-clock limit of one `mpfleet sim` run.
    pub deadline: Duration,
    /// The fleet's data directory: a board that bootstraps gets its device's key from there
    /// (None: no key, unless `key` is set).
    pub data: Option<PathBuf>,
    /// (key, store) to bootstrap with instead: a board routed to another device's manifest.
    pub key: Option<(String, String)>,
}

impl ImageBoard {
    pub fn new(dir: PathBuf, mac: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            mac: mac.to_owned(),
            dir,
            heap: "96k".into(),
            flash_blocks: 256,
            tear: "half",
            watchdog: None,
            timeout: None,
            settle: 1.0,
            port: None,
            port_version: None,
            deadline: DEFAULT_DEADLINE,
            data: None,
            key: None,
        }
    }

    pub fn image(&self) -> PathBuf {
        self.dir.join("flash.img")
    }

    pub fn rtc(&self) -> PathBuf {
        self.dir.join("flash.rtc")
    }

    /// A copy of this board's flash and RTC memory in `dir`, as board `mac`, with the same
    /// settings.
    pub fn copy_to(&self, dir: PathBuf, mac: &str) -> ImageBoard {
        let b = ImageBoard::new(dir, mac);
        std::fs::copy(self.image(), b.image()).unwrap();
        let _ = std::fs::remove_file(b.rtc());
        if self.rtc().exists() {
            std::fs::copy(self.rtc(), b.rtc()).unwrap();
        }
        ImageBoard {
            mac: b.mac,
            dir: b.dir,
            ..self.clone()
        }
    }

    fn command<'a>(
        &'a self,
        server: &'a str,
        boots: u32,
        update: bool,
        cut: Option<u64>,
    ) -> SimCommand<'a> {
        let mut extra: Vec<OsString> = vec!["--flash".into(), self.image().into()];
        extra.extend(["--state".into(), self.dir.clone().into()]);
        extra.extend([
            "--flash-blocks".into(),
            self.flash_blocks.to_string().into(),
        ]);
        if update {
            extra.push("--update".into());
        }
        if let Some(t) = self.timeout {
            extra.extend(["--timeout".into(), t.to_string().into()]);
        }
        if let Some(w) = self.watchdog {
            extra.extend(["--watchdog".into(), w.to_string().into()]);
        }
        if let Some(k) = cut {
            extra.extend(["--cut-after-writes".into(), k.to_string().into()]);
            extra.extend(["--cut-tear".into(), self.tear.into()]);
        }
        SimCommand {
            mac: &self.mac,
            server,
            heap: &self.heap,
            boots,
            settle: self.settle,
            port: self.port.as_deref(),
            port_version: self.port_version.as_deref(),
            data: self.data.as_deref(),
            key: self.key.as_ref(),
            deadline: self.deadline,
            extra,
        }
    }

    /// Boots until the board settles (at most `boots` boots); `update` asks for an update on
    /// the first boot; `cut` cuts power during that flash write of the run. Quiet: the output
    /// is in the returned run. A run past the board's deadline fails the test.
    pub fn boot_with(&self, server: &str, boots: u32, update: bool, cut: Option<u64>) -> SimRun {
        self.command(server, boots, update, cut).run_or_fail()
    }

    /// As [`boot_with`](Self::boot_with), but a run past the deadline is an `Err` holding
    /// the output so far, for tests that probe limits (a heap too small may hang a board).
    pub fn try_boot_with(
        &self,
        server: &str,
        boots: u32,
        update: bool,
        cut: Option<u64>,
    ) -> Result<SimRun, String> {
        self.command(server, boots, update, cut)
            .run()
            .map_err(|t| t.out)
    }

    /// The image's files and directories (`mpfleet sim --inspect`).
    pub fn inspect(&self) -> serde_json::Value {
        inspect(&self.image())
    }
}

/// What a littlefs2 image holds (`mpfleet sim --inspect`).
pub fn inspect(image: &Path) -> serde_json::Value {
    let out = super::process::output_within(
        Command::new(BIN).args(["sim", "--inspect"]).arg(image),
        &format!("mpfleet sim --inspect {}", image.display()),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "inspect failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect JSON")
}

/// The test application: prints what it runs, asks for an update when told to.
pub fn app_source() -> &'static str {
    "import os\n\
     import config\n\
     import machine\n\
     import sensorclass\n\
     print('APP', sensorclass.VALUE, 'primary' if config.primary else 'alternate', config.generation)\n\
     config.set('reboots', 0)\n\
     try:\n\
     \x20   os.stat('/request_update')\n\
     \x20   os.remove('/request_update')\n\
     \x20   print('APP asks for an update')\n\
     \x20   config.set('update')\n\
     \x20   machine.reset()\n\
     except OSError:\n\
     \x20   pass\n"
}

/// A fleet with `app` (the test app) and `sensorclass` 1, and `mac` assigned to it.
pub fn fleet_with_board(mac: &str, extra: &[&str]) -> Fleet {
    with_board(Fleet::new(), mac, extra)
}

/// `fleet_with_board` on a fleet of your own (e.g. [`Fleet::without_mpy_cross`]).
pub fn with_board(f: Fleet, mac: &str, extra: &[&str]) -> Fleet {
    f.publish("app", app_source(), &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    let mut args = vec!["device", "set", mac, "--app", "app"];
    if !extra.iter().any(|e| e.starts_with("sensorclass=")) {
        args.push("sensorclass=latest");
    }
    args.extend_from_slice(extra);
    f.ok(&args);
    f
}

/// `{module: version}` of a board's configuration file (`/ota/primary.json`,
/// `/ota/alternate.json`), whose modules are `[version, file, sha256]`.
pub fn config_versions(cfg: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    cfg["modules"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v[0].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Fault, FaultProxy};

    /// A board that cannot finish (its server never answers) is killed at its deadline, with
    /// every interpreter it started, and the run says what it printed so far.
    #[test]
    fn a_board_past_its_deadline_is_killed() {
        let f = Fleet::new();
        let proxy = FaultProxy::start("http://127.0.0.1:9/");
        proxy.set(Fault::Stall, "");
        let mut b = ImageBoard::new(f.dir.path().join("board"), "0a0b0c0d0e0f");
        b.deadline = Duration::from_secs(3);
        let started = Instant::now();
        let err = b
            .try_boot_with(&proxy.base, 3, false, None)
            .err()
            .expect("a board whose server stalls cannot settle within 3 s");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(err.contains("mpfleet: board 0a0b0c0d0e0f"), "{err}");
    }
}
