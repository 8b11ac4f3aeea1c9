//! The crash suite: power fails during the flash writes of an update, of a rollback and of a
//! bootstrap, and after each the board must run one complete configuration.
//!
//! For a scenario: a clean run from the starting image counts its flash writes N (littlefs
//! programs and erases, across every boot of the run; the last boot, killed once its app has
//! settled, reports none, so the writes it makes are found by cutting past N until no cut
//! happens). Then, on a fresh copy of the starting image each time:
//!
//! - one cut (`power_cut_at_every_write_of_*`): for every k in 1..=N, power fails during write
//!   k (that write torn, the process killed, RTC memory lost), the board boots on normally
//!   until it settles (once per write by default; every write with both tears:
//!   `MPFLEET_CRASH_TEAR=both`);
//! - two cuts (`second_power_cut_during_recovery_from_*`): for sampled k (evenly spaced over
//!   1..=N, about one in ten drawn at random), the run stops with the boot the cut ends; a
//!   clean recovery from that image (checked) counts its own writes M; then for sampled j
//!   over the recovery (its last write, and one drawn from each stretch before it), power
//!   fails again during write j of the recovery, and the board boots on until it settles.
//!
//! After each, the invariant is checked on the image itself (`mpfleet sim --inspect`):
//!   - the board runs its app, and the app runs the complete configuration of one of the
//!     scenario's allowed outcomes (what it prints, and every module file's SHA-256 on flash
//!     matching that generation's manifest);
//!   - `/ota/primary.json` and `/ota/alternate.json` each name a known generation whose files
//!     are all on flash, intact;
//!   - `/ota/tmp` is empty;
//!   - a later update (to a third generation) completes.
//!
//! The boards share one store and server: a `Router` serves each simulated board the manifest
//! of the device standing for the step it is at. Iterations run in parallel threads
//! (`MPFLEET_CRASH_THREADS`, default 4). A single cut leaves the write in flight half written
//! at odd writes and lost at even ones (`MPFLEET_CRASH_TEAR=both`: every write both ways;
//! `half|lost`: that tear only); each cut of a pair draws its tear. Knobs:
//! `MPFLEET_CRASH_ONLY=k` runs just single cut k;
//! `MPFLEET_CRASH_PAIRS` (default 12) is the number of pairs per scenario (first cuts: a
//! third of it), `MPFLEET_CRASH_SEED` (default 1) draws them, `MPFLEET_CRASH_PAIR=K:T,J:T`
//! runs just one pair; `MPFLEET_CRASH_ALL=1` goes on after a broken board and lists every
//! one; `MPFLEET_CRASH_VERBOSE=1` shows the boards' output. Figures go to stderr
//! (`--nocapture`, lines starting `FIGURES`).

use crate::harness::{Fleet, ImageBoard, Router, Server, SimRun};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const CONFIG: &str = include_str!("../device/config.py");
const UPDATER: &str = include_str!("../device/updater.py");

/// Devices standing for the steps a board goes through (their manifests are what the
/// `Router` serves a board).
const D_OLD: &str = "00000000d001";
const D_NEW: &str = "00000000d002";
const D_LATER: &str = "00000000d003";
const D_BAD: &str = "00000000d004";

/// What the test app prints: `APP <sensorclass.VALUE> <config mark> <primary|alternate> <gen>`.
fn app(n: u32) -> String {
    format!(
        "import config\n\
         import sensorclass\n\
         print('APP', sensorclass.VALUE, getattr(config, 'MARK', 'c1'), \
         'primary' if config.primary else 'alternate', config.generation)\n\
         config.set('reboots', 0)\n\
         # app version {n}\n"
    )
}

/// One resolved manifest the board may end up running.
#[derive(Clone, Debug)]
pub struct Target {
    pub generation: i64,
    /// What the app prints before `primary|alternate`, e.g. `APP two c2`.
    pub says: String,
    pub manifest: Value,
}

impl Target {
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.manifest["modules"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["version"].as_str().unwrap().to_owned()))
            .collect()
    }
}

/// A store with every version the scenarios need and one device per step.
pub struct Setup {
    pub fleet: Fleet,
    pub _server: Server,
    pub router: Router,
    /// The store's identity, which routed boards bootstrap with.
    pub store: String,
    pub old: Target,
    pub new: Target,
    pub later: Target,
    pub bad: Target,
}

fn pins(app: &str, sensor: &str, runtime: &str) -> Vec<String> {
    vec![
        format!("app={app}"),
        format!("sensorclass={sensor}"),
        format!("config={runtime}"),
        format!("updater={runtime}"),
    ]
}

pub fn setup() -> Setup {
    let f = Fleet::new();
    for n in 1..=3 {
        f.publish("app", &app(n), &[]);
    }
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    f.publish("sensorclass", "VALUE = 'two'\n", &[]);
    f.publish("sensorclass", "VALUE = 'three'\n", &[]);
    f.publish("sensorclass", "raise RuntimeError('broken sensor')\n", &[]);
    // Opening the store publishes the runtime as version 1; 2 and 3 are marked copies.
    f.ok(&["module", "list"]);
    for n in 2..=3 {
        f.publish("config", &format!("{CONFIG}\nMARK = 'c{n}'\n"), &[]);
        f.publish(
            "updater",
            &format!("{UPDATER}\n# updater version {n}\n"),
            &[],
        );
    }
    // Each device's history is longer than the one before, so that generations grow in this
    // order whether the store numbers them per device or globally: a board refuses a
    // generation below one it accepted, and a board that rolled back from `bad` then takes
    // `later`.
    let steps: [(&str, Vec<Vec<String>>); 4] = [
        (D_OLD, vec![pins("1", "1", "1")]),
        (D_NEW, vec![pins("1", "1", "1"), pins("2", "2", "2")]),
        (
            D_BAD,
            vec![
                pins("1", "1", "1"),
                pins("2", "2", "2"),
                pins("3", "3", "3"),
                pins("2", "4", "2"),
            ],
        ),
        (
            D_LATER,
            vec![
                pins("1", "1", "1"),
                pins("2", "2", "2"),
                pins("3", "3", "3"),
                pins("2", "4", "2"),
                pins("3", "3", "3"),
            ],
        ),
    ];
    for (device, history) in &steps {
        for p in history {
            let mut args = vec!["device", "set", device, "--app", "app"];
            args.extend(p.iter().map(String::as_str));
            f.ok(&args);
        }
    }
    let server = f.serve();
    let router = Router::start(&server.base);
    let target = |device: &str, says: &str| {
        let manifest = server.get(&format!("v1/{device}.json")).json();
        Target {
            generation: manifest["generation"].as_i64().unwrap(),
            says: says.to_owned(),
            manifest,
        }
    };
    let old = target(D_OLD, "APP one c1");
    let new = target(D_NEW, "APP two c2");
    let later = target(D_LATER, "APP three c3");
    let bad = target(D_BAD, "never runs");
    let gens = [
        old.generation,
        new.generation,
        later.generation,
        bad.generation,
    ];
    for (i, g) in gens.iter().enumerate() {
        assert!(!gens[..i].contains(g), "generations collide: {gens:?}");
    }
    let store = old.manifest["store"].as_str().unwrap().to_owned();
    Setup {
        fleet: f,
        _server: server,
        router,
        store,
        old,
        new,
        later,
        bad,
    }
}

/// The MAC of the board of iteration `i` of scenario `s`.
fn mac(s: u32, i: u64) -> String {
    format!("02{s:02x}{i:08x}")
}

/// Boots `b` as a blank board routed to `device` until it runs it; returns it.
pub fn bootstrapped(s: &Setup, dir: &Path, mac: &str, device: &str) -> ImageBoard {
    let mut b = ImageBoard::new(dir.to_path_buf(), mac);
    b.key = Some(Router::key(&s.store));
    s.router.route(mac, device);
    let run = b.boot_with(&s.router.base, 8, false, None);
    assert!(run.settled(), "{}", run.out);
    b
}

/// Checks that every module of `t` is on flash, intact; `files` from `--inspect`.
fn complete(t: &Target, files: &serde_json::Map<String, Value>) -> Result<(), String> {
    for (name, entry) in t.manifest["modules"].as_object().unwrap() {
        let version = entry["version"].as_str().unwrap();
        let mut found = 0;
        for ext in ["py", "mpy"] {
            let want = if ext == "py" {
                &entry["sha256"]
            } else {
                &entry["mpy"]["sha256"]
            };
            let Some(sha) = want.as_str() else {
                continue;
            };
            // Installed files are named by version and SHA-256.
            let path = format!("/ota/m/{name}/{version}-{}.{ext}", &sha[..12]);
            let Some(file) = files.get(&path) else {
                continue;
            };
            if &file["sha256"] != want {
                return Err(format!("{path} is not generation {}'s bytes", t.generation));
            }
            found += 1;
        }
        if found == 0 {
            return Err(format!(
                "generation {}: {name} {version} missing",
                t.generation
            ));
        }
    }
    Ok(())
}

/// The invariant after a run: returns the target the board runs.
pub fn check<'a>(
    b: &ImageBoard,
    run: &SimRun,
    running: &[&'a Target],
    known: &[&Target],
) -> Result<&'a Target, String> {
    if !run.settled() {
        return Err("the board did not settle".into());
    }
    let line = run
        .app_lines()
        .last()
        .copied()
        .ok_or("the app never ran")?
        .to_owned();
    let (says, rest) = line
        .rsplit_once(' ')
        .and_then(|(a, g)| a.rsplit_once(' ').map(|(s, w)| (s, (w, g))))
        .ok_or_else(|| format!("odd app line {line:?}"))?;
    let (which, generation) = rest;
    let t = running
        .iter()
        .find(|t| t.generation.to_string() == generation)
        .ok_or_else(|| format!("runs generation {generation}, not an allowed one: {line}"))?;
    if says != t.says {
        return Err(format!(
            "app says {line:?}, generation {generation} says {:?}",
            t.says
        ));
    }
    let image = b.inspect();
    let files = image["files"].as_object().unwrap();
    if let Some(f) = files.keys().find(|f| f.starts_with("/ota/tmp/")) {
        return Err(format!("{f} left in /ota/tmp"));
    }
    complete(t, files)?;
    for name in ["primary", "alternate"] {
        let Some(file) = files.get(&format!("/ota/{name}.json")) else {
            if name == "primary" {
                return Err("no /ota/primary.json".into());
            }
            continue;
        };
        let cfg: Value = serde_json::from_str(file["text"].as_str().unwrap_or(""))
            .map_err(|e| format!("{name}.json unreadable: {e}"))?;
        let g = cfg["generation"].as_i64();
        let k = known
            .iter()
            .find(|k| Some(k.generation) == g)
            .ok_or_else(|| format!("{name}.json names an unknown generation: {cfg}"))?;
        let versions = crate::harness::config_versions(&cfg);
        if versions != k.versions() {
            return Err(format!("{name}.json is not generation {g:?}: {cfg}"));
        }
        complete(k, files)?;
        if name == which && k.generation != t.generation {
            return Err(format!(
                "runs {which} but {name}.json is another generation"
            ));
        }
    }
    Ok(t)
}

/// A later update (to `later`) completes from wherever the board ended.
fn later_update(s: &Setup, b: &ImageBoard) -> Result<(), String> {
    s.router.route(&b.mac, D_LATER);
    let run = b.boot_with(&s.router.base, 6, true, None);
    let all = [&s.old, &s.new, &s.later, &s.bad];
    let t =
        check(b, &run, &[&s.later], &all).map_err(|e| format!("later update: {e}\n{}", run.out))?;
    if !run.app_lines().last().unwrap().contains(" primary ") || t.generation != s.later.generation
    {
        return Err(format!("later update did not land:\n{}", run.out));
    }
    Ok(())
}

/// Boards run at once (`MPFLEET_CRASH_THREADS`, default 4). A board spends most of a run
/// waiting (its app must stay quiet for a second to have settled), so more boards than
/// cores keep the cores busy (on 2 cores, the update scenario's lost-write pass took 211 s
/// with 2 threads and 99 s with 6).
pub fn threads() -> usize {
    std::env::var("MPFLEET_CRASH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn verbose() -> bool {
    std::env::var_os("MPFLEET_CRASH_VERBOSE").is_some()
}

/// `MPFLEET_CRASH_ALL=1`: run every cut even after one broke the board, and list them all.
fn keep_going() -> bool {
    std::env::var("MPFLEET_CRASH_ALL").is_ok_and(|v| v == "1")
}

/// The tears a pair draws from (`MPFLEET_CRASH_TEAR=half|lost` for one only).
fn tears() -> &'static [&'static str] {
    match std::env::var("MPFLEET_CRASH_TEAR").as_deref() {
        Ok("half") => &["half"],
        Ok("lost") => &["lost"],
        _ => &["half", "lost"],
    }
}

/// The passes over every write of a scenario. By default one (`alternate`): each write cut
/// once, torn in half at odd writes and lost at even ones, so both tears are tried and the
/// suite stays short; `MPFLEET_CRASH_TEAR=both`: each write twice, once with each tear (the
/// full sweep whose figures docs/reliability.md gives); `half` or `lost`: that tear only.
fn passes() -> &'static [&'static str] {
    match std::env::var("MPFLEET_CRASH_TEAR").as_deref() {
        Ok("both") => &["half", "lost"],
        Ok("half") => &["half"],
        Ok("lost") => &["lost"],
        _ => &["alternate"],
    }
}

/// The tear of single cut k in a pass (`alternate`: half at odd writes, lost at even ones).
fn tear_of(pass: &str, k: u64) -> &'static str {
    match pass {
        "alternate" if k.is_multiple_of(2) => "lost",
        "alternate" => "half",
        t => tear_name(t),
    }
}

fn tear_name(tear: &str) -> &'static str {
    if tear == "lost" {
        "lost"
    } else {
        "half"
    }
}

/// xorshift64*: small, seeded, the same on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `job` on every item, on `threads()` threads. After the first `Err` no new item
/// starts, unless `MPFLEET_CRASH_ALL=1`. Returns what ran: (index, result), in index order.
fn pool<T: Sync, R: Send>(
    items: &[T],
    job: impl Fn(&T) -> Result<R, String> + Sync,
) -> Vec<(usize, Result<R, String>)> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..threads().max(1) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() || (failed.load(Ordering::SeqCst) && !keep_going()) {
                    break;
                }
                let r = job(&items[i]);
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    results
}

/// The boot of `run` whose line says `--- boot N ended: {what}...`, the last one.
fn boot_that_ended(run: &SimRun, what: &str) -> Option<u32> {
    run.said().iter().rev().find_map(|l| {
        let rest = l.strip_prefix("--- boot ")?;
        let (n, end) = rest.split_once(" ended: ")?;
        end.starts_with(what).then(|| n.parse().ok()).flatten()
    })
}

/// The number of boots `run` went through.
fn boots_of(run: &SimRun) -> u32 {
    boot_that_ended(run, "").unwrap_or(0)
}

/// One scenario: a starting image (and RTC memory), the device the board follows, whether an
/// update is asked for on the first boot, and the configurations it may end up running.
struct Scenario<'a> {
    s: &'a Setup,
    name: &'a str,
    id: u32,
    start: &'a ImageBoard,
    device: &'a str,
    update: bool,
    outcomes: Vec<&'a Target>,
    work: PathBuf,
    macs: AtomicU64,
}

/// A clean run from the starting image.
struct Clean {
    /// The flash writes the run counts (every boot but the last, which is killed once it has
    /// settled and reports none).
    counted: u64,
    /// Every write of the run, the settled boot's included (`Scenario::writes_to_the_end`).
    total: u64,
    boots: u32,
}

impl<'a> Scenario<'a> {
    fn new(
        s: &'a Setup,
        name: &'a str,
        id: u32,
        start: &'a ImageBoard,
        device: &'a str,
        update: bool,
        outcomes: &[&'a Target],
    ) -> Self {
        Scenario {
            s,
            name,
            id,
            start,
            device,
            update,
            outcomes: outcomes.to_vec(),
            work: s.fleet.dir.path().join(format!("crash-{name}")),
            macs: AtomicU64::new(1),
        }
    }

    /// A copy of `from` (the starting image, or an image after a cut) as a new board routed
    /// to the scenario's device, in a directory named after `tag`.
    fn board(&self, from: &ImageBoard, tag: &str, tear: &str) -> ImageBoard {
        let i = self.macs.fetch_add(1, Ordering::SeqCst);
        let mut b = from.copy_to(self.work.join(format!("{tag}-{i}")), &mac(self.id, i));
        b.tear = tear_name(tear);
        self.s.router.route(&b.mac, self.device);
        b
    }

    fn run(&self, b: &ImageBoard, boots: u32, update: bool, cut: Option<u64>) -> SimRun {
        let run = b.boot_with(&self.s.router.base, boots, update, cut);
        if verbose() {
            eprintln!("{}", run.out);
        }
        run
    }

    fn done_with(&self, b: &ImageBoard) {
        if std::env::var_os("MPFLEET_CRASH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&b.dir);
        }
    }

    /// The invariant after `run` of `b`, then a later update: the generation it ran.
    fn verify(&self, b: &ImageBoard, run: &SimRun) -> Result<i64, String> {
        let all = [&self.s.old, &self.s.new, &self.s.later, &self.s.bad];
        let t = check(b, run, &self.outcomes, &all).map_err(|e| format!("{e}\n{}", run.out))?;
        later_update(self.s, b)?;
        Ok(t.generation)
    }

    /// Whether a run from `from` with a cut at `k` is cut (the run makes k writes).
    fn cut_happens(&self, from: &ImageBoard, update: bool, k: u64) -> bool {
        let b = self.board(from, "probe", "lost");
        let run = self.run(&b, 16, update, Some(k));
        self.done_with(&b);
        run.power_cut()
    }

    /// The clean run: its writes are the points to cut at.
    fn clean(&self) -> Clean {
        let b = self.board(self.start, "clean", "half");
        let run = self.run(&b, 16, self.update, None);
        let all = [&self.s.old, &self.s.new, &self.s.later, &self.s.bad];
        let t = check(&b, &run, &self.outcomes, &all)
            .unwrap_or_else(|e| panic!("{}, clean run: {e}\n{}", self.name, run.out));
        let counted = run.flash_writes();
        assert!(counted > 0, "{}", run.out);
        let total = self.writes_to_the_end(self.start, self.update, counted, true);
        eprintln!(
            "crash {}: clean run: {counted} flash writes counted, {total} with the settled \
             boot's, {} boots, runs generation {}",
            self.name,
            boots_of(&run),
            t.generation
        );
        self.done_with(&b);
        Clean {
            counted,
            total,
            boots: boots_of(&run),
        }
    }

    /// The writes of a whole run from `from` whose count said `counted`, the last boot's
    /// included: that boot is killed once its app has settled and reports no count, but it
    /// writes (the first stage empties `/ota/tmp` and writes the rollback marker there, the
    /// app's `set('reboots', 0)` confirms the configuration), so the last k at which a cut
    /// still happens is searched for: cuts at counted + 1, + 2, + 4, ... until one is not cut
    /// (`parallel`: all at once), then bisection.
    fn writes_to_the_end(
        &self,
        from: &ImageBoard,
        update: bool,
        counted: u64,
        parallel: bool,
    ) -> u64 {
        let steps: Vec<u64> = (0..8).map(|i| 1u64 << i).collect();
        let first_uncut = if parallel {
            pool(&steps, |&d| {
                Ok::<_, String>(self.cut_happens(from, update, counted + d))
            })
            .into_iter()
            .position(|(_, r)| !r.unwrap())
        } else {
            steps
                .iter()
                .position(|&d| !self.cut_happens(from, update, counted + d))
        };
        let Some(first_uncut) = first_uncut else {
            panic!(
                "{}: a cut at write {} still happens: the last boot writes that much?",
                self.name,
                counted + steps[steps.len() - 1]
            );
        };
        // The last write is in [lo, hi): a cut at lo happens (or lo = counted), at hi not.
        let mut lo = if first_uncut == 0 {
            counted
        } else {
            counted + steps[first_uncut - 1]
        };
        let mut hi = counted + steps[first_uncut];
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.cut_happens(from, update, mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// What the single-cut scenario showed.
#[derive(Debug, Default)]
pub struct Figures {
    pub writes: u64,
    pub runs: u64,
    pub cuts: u64,
    pub by_outcome: BTreeMap<i64, u64>,
}

/// Runs scenario `sc` with one cut at every write of its clean run, each tear.
fn every_write(sc: &Scenario) -> Figures {
    let t0 = Instant::now();
    let clean = sc.clean();
    let n = clean.total;
    let mut figures = Figures {
        writes: n,
        ..Figures::default()
    };
    // MPFLEET_CRASH_ONLY=k: just that cut (with MPFLEET_CRASH_VERBOSE, its output).
    let cuts: Vec<u64> = match env_u64("MPFLEET_CRASH_ONLY") {
        Some(k) => vec![k],
        None => (1..=n).collect(),
    };
    let mut broken = Vec::new();
    for pass in passes() {
        let results = pool(&cuts, |&k| {
            let tear = tear_of(pass, k);
            let b = sc.board(sc.start, tear, tear);
            let run = sc.run(&b, 16, sc.update, Some(k));
            let cut = run.power_cut();
            let g = sc.verify(&b, &run).map_err(|e| {
                eprintln!("crash {}: cut at write {k} ({tear}): {e}", sc.name);
                e
            })?;
            sc.done_with(&b);
            Ok((cut, g))
        });
        for (i, r) in results {
            match r {
                Ok((cut, g)) => {
                    figures.runs += 1;
                    figures.cuts += u64::from(cut);
                    *figures.by_outcome.entry(g).or_default() += 1;
                }
                Err(_) => broken.push(format!("{} ({})", cuts[i], tear_of(pass, cuts[i]))),
            }
        }
        if !keep_going() && !broken.is_empty() {
            break;
        }
    }
    eprintln!(
        "FIGURES crash {}: {n} write points ({} counted + {} in the settled boot), {} runs, \
         {} cuts survived, {} broke the board, outcomes by generation {:?} (old {}, new {}), {:.1}s",
        sc.name,
        clean.counted,
        n - clean.counted,
        figures.runs,
        figures.cuts,
        broken.len(),
        figures.by_outcome,
        sc.s.old.generation,
        sc.s.new.generation,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        broken.is_empty(),
        "crash {}: cut at write(s) {broken:?} broke the board (output above); one alone: \
         MPFLEET_CRASH_ONLY=K MPFLEET_CRASH_TEAR=T MPFLEET_CRASH_VERBOSE=1",
        sc.name
    );
    figures
}

#[test]
fn power_cut_at_every_write_of_an_update() {
    let s = setup();
    let start = bootstrapped(
        &s,
        &s.fleet.dir.path().join("start"),
        &mac(1, 0xffff),
        D_OLD,
    );
    let sc = Scenario::new(&s, "update", 1, &start, D_NEW, true, &[&s.old, &s.new]);
    let f = every_write(&sc);
    assert!(f.cuts + 2 >= f.runs, "{f:?}");
    // Cuts early in the update leave the old generation, late ones the new one.
    assert!(f.runs < f.writes || f.by_outcome.len() == 2, "{f:?}");
}

#[test]
fn power_cut_at_every_write_of_a_rollback() {
    let s = setup();
    // Updating to a generation whose sensorclass raises: the update, the boot loop, the
    // switch to the alternate and the rollback marker, every write of it cut in turn.
    let start = bootstrapped(
        &s,
        &s.fleet.dir.path().join("start"),
        &mac(2, 0xffff),
        D_OLD,
    );
    let sc = Scenario::new(&s, "rollback", 2, &start, D_BAD, true, &[&s.old]);
    let f = every_write(&sc);
    assert!(f.cuts + 2 >= f.runs, "{f:?}");
}

#[test]
fn power_cut_at_every_write_of_a_bootstrap() {
    let s = setup();
    // A blank (empty) image: the board formats it, then runs the bootstrap.
    let mut blank = ImageBoard::new(s.fleet.dir.path().join("blank"), &mac(3, 0xffff));
    blank.key = Some(Router::key(&s.store));
    std::fs::write(blank.image(), b"").unwrap();
    let sc = Scenario::new(&s, "bootstrap", 3, &blank, D_OLD, false, &[&s.old]);
    let f = every_write(&sc);
    assert!(f.cuts + 2 >= f.runs, "{f:?}");
}

// ---------------------------------------------------------------------------------------
// A second power cut during the recovery boot.

/// `count` points evenly spaced over 1..=n, both ends included.
fn spread(n: u64, count: u64) -> Vec<u64> {
    if count == 0 || n == 0 {
        return Vec::new();
    }
    if count >= n {
        return (1..=n).collect();
    }
    if count == 1 {
        return vec![n];
    }
    let mut v: Vec<u64> = (0..count)
        .map(|i| 1 + (i * (n - 1) + (count - 1) / 2) / (count - 1))
        .collect();
    v.dedup();
    v
}

/// The first cuts: `count` points over 1..=n, about 9 in 10 evenly spaced and the rest
/// drawn from `rng`, each with a tear drawn from `rng` (or the one `MPFLEET_CRASH_TEAR` names).
fn first_cuts(n: u64, count: u64, rng: &mut Rng) -> Vec<(u64, &'static str)> {
    let count = count.min(n);
    let random = if count >= 4 { count.div_ceil(10) } else { 0 };
    let mut ks = spread(n, count - random);
    while (ks.len() as u64) < count {
        let k = 1 + rng.below(n);
        if !ks.contains(&k) {
            ks.push(k);
        }
    }
    ks.sort_unstable();
    ks.into_iter().map(|k| (k, draw_tear(rng))).collect()
}

fn draw_tear(rng: &mut Rng) -> &'static str {
    let t = tears();
    t[rng.below(t.len() as u64) as usize]
}

/// The second cuts of one recovery run of `m` writes: its last write (where an update
/// commits), and `count - 1` drawn one from each equal stretch of the writes before it.
fn second_cuts(m: u64, count: u64, rng: &mut Rng) -> Vec<u64> {
    if count == 0 || m == 0 {
        return Vec::new();
    }
    if count >= m {
        return (1..=m).collect();
    }
    let strata = count - 1;
    let mut js = vec![m];
    for i in 0..strata {
        let lo = 1 + i * (m - 1) / strata;
        let hi = 1 + (i + 1) * (m - 1) / strata;
        js.push(lo + rng.below((hi - lo).max(1)));
    }
    js.sort_unstable();
    js.dedup();
    js
}

/// A cut: the write it tears, and how (`half` or `lost`).
type Cut = (u64, &'static str);

/// `MPFLEET_CRASH_PAIR=K:TEAR,J:TEAR`: just that pair.
fn only_pair() -> Option<(Cut, Cut)> {
    let v = std::env::var("MPFLEET_CRASH_PAIR").ok()?;
    let parse = |p: &str| {
        let (k, t) = p.split_once(':').unwrap_or((p, "half"));
        let k: u64 = k.trim().parse().expect("MPFLEET_CRASH_PAIR=K:TEAR,J:TEAR");
        (k, tear_name(t.trim()))
    };
    let (a, b) = v.split_once(',').expect("MPFLEET_CRASH_PAIR=K:TEAR,J:TEAR");
    Some((parse(a), parse(b)))
}

/// A board on the image a first cut (at `k`, torn `tear`) left: the run from the starting
/// image stops with the boot the cut ends, so the image is as the power left it (RTC memory
/// lost). `cum[b]`: writes of the clean run's boots 1..=b+1. `None`: there is no write k.
fn after_a_cut(sc: &Scenario, k: u64, tear: &str, cum: &[u64]) -> Option<ImageBoard> {
    let mut boots = cum
        .iter()
        .position(|&c| c >= k)
        .map_or(cum.len(), |i| i + 1) as u32;
    for _ in 0..4 {
        let b = sc.board(sc.start, &format!("first-{k}-{tear}"), tear);
        let run = sc.run(&b, boots, sc.update, Some(k));
        match boot_that_ended(&run, "PowerCut") {
            Some(c) if c == boots => return Some(b),
            // Cut in an earlier boot than the clean run said: stop there.
            Some(c) => boots = c,
            None => boots += 1,
        }
        sc.done_with(&b);
        if boots > 16 {
            break;
        }
    }
    None
}

/// What the second-cut scenario showed.
#[derive(Debug, Default)]
pub struct PairFigures {
    pub first: u64,
    pub first_uncut: u64,
    pub recovery_writes: (u64, u64),
    pub pairs: u64,
    pub second_cuts: u64,
    pub by_outcome: BTreeMap<i64, u64>,
}

/// Two cuts: power fails at write k of the scenario (sampled), the board boots again and
/// power fails at write j of that recovery (sampled over the recovery's own writes), then it
/// boots on until its app runs; the invariant, and a later update, after each pair.
fn two_cuts(sc: &Scenario) -> PairFigures {
    let t0 = Instant::now();
    let pairs = env_u64("MPFLEET_CRASH_PAIRS").unwrap_or(12).max(1);
    let seed = env_u64("MPFLEET_CRASH_SEED").unwrap_or(1);
    let mut rng = Rng::seeded(seed ^ u64::from(sc.id) << 32);
    let clean = sc.clean();
    let n = clean.total;
    // The clean run's writes after each boot (the runs stop after boot b).
    let bs: Vec<u32> = (1..clean.boots).collect();
    let mut cum: Vec<u64> = pool(&bs, |&b| {
        let board = sc.board(sc.start, "boots", "half");
        let run = sc.run(&board, b, sc.update, None);
        sc.done_with(&board);
        Ok::<_, String>(run.flash_writes())
    })
    .into_iter()
    .map(|(_, r)| r.unwrap())
    .collect();
    cum.push(n);

    let only = only_pair();
    let mut figures = PairFigures {
        recovery_writes: (u64::MAX, 0),
        ..PairFigures::default()
    };
    // Phase 1: the image each first cut leaves, and a clean recovery from it (checked), which
    // counts the recovery's writes. First cuts: a third of the pairs asked for, and more
    // (drawn at random) while their recoveries have fewer writes in all than pairs asked for.
    let phase1 = |firsts: &[Cut]| {
        pool(firsts, |&(k, tear)| {
            let Some(post) = after_a_cut(sc, k, tear, &cum) else {
                return Ok(None);
            };
            let b = sc.board(&post, &format!("recovery-{k}-{tear}"), tear);
            let run = sc.run(&b, 16, false, None);
            let all = [&sc.s.old, &sc.s.new, &sc.s.later, &sc.s.bad];
            check(&b, &run, &sc.outcomes, &all).map_err(|e| {
                let e = format!("cut at write {k} ({tear}), recovery: {e}\n{}", run.out);
                eprintln!("crash {} (two cuts): {e}", sc.name);
                e
            })?;
            sc.done_with(&b);
            // Its writes, the settled boot's included (most of a recovery's are there).
            let m = sc.writes_to_the_end(&post, false, run.flash_writes(), false);
            Ok(Some((post, m)))
        })
    };
    let mut firsts: Vec<Cut> = match only {
        Some((k, _)) => vec![k],
        None => first_cuts(n, pairs.div_ceil(3), &mut rng),
    };
    let mut broken: Vec<String> = Vec::new();
    // (first cut, its image, its recovery's writes)
    let mut recovered: Vec<(Cut, ImageBoard, u64)> = Vec::new();
    let mut batch = firsts.clone();
    loop {
        for (i, r) in phase1(&batch) {
            let (k, tear) = batch[i];
            match r {
                Err(_) => broken.push(format!("{k}:{tear} (its recovery)")),
                Ok(None) => figures.first_uncut += 1,
                Ok(Some((post, m))) => recovered.push(((k, tear), post, m)),
            }
        }
        let room: u64 = recovered.iter().map(|r| r.2).sum();
        let left = n - firsts.len() as u64;
        if only.is_some() || room >= pairs || left == 0 || !(broken.is_empty() || keep_going()) {
            break;
        }
        // More first cuts, as many as the recoveries so far say the missing pairs need.
        let per = (room / recovered.len().max(1) as u64).max(1);
        let more = (pairs - room).div_ceil(per).min(left);
        batch.clear();
        while (batch.len() as u64) < more {
            let k = 1 + rng.below(n);
            if !firsts.iter().any(|f| f.0 == k) {
                batch.push((k, draw_tear(&mut rng)));
                firsts.push(*batch.last().unwrap());
            }
        }
    }
    figures.first = firsts.len() as u64;
    eprintln!(
        "crash {} (two cuts): first cuts {:?}, seed {seed}",
        sc.name,
        {
            let mut f = firsts.clone();
            f.sort_unstable();
            f
        }
    );
    // The pairs: shared out one at a time over the first cuts, none more than its recovery's
    // writes, then drawn (second_cuts) for each.
    recovered.sort_by_key(|r| r.0);
    let mut counts = vec![0u64; recovered.len()];
    let mut given = 0;
    while given < pairs {
        let before = given;
        for (c, r) in counts.iter_mut().zip(&recovered) {
            if given < pairs && *c < r.2 {
                *c += 1;
                given += 1;
            }
        }
        if given == before {
            break;
        }
    }
    let mut work = Vec::new();
    for ((first, post, m), count) in recovered.iter().zip(counts) {
        figures.recovery_writes.0 = figures.recovery_writes.0.min(*m);
        figures.recovery_writes.1 = figures.recovery_writes.1.max(*m);
        let seconds: Vec<Cut> = match only {
            Some((_, j)) => vec![j],
            None => second_cuts(*m, count, &mut rng)
                .into_iter()
                .map(|j| (j, draw_tear(&mut rng)))
                .collect(),
        };
        for second in seconds {
            work.push((post.clone(), *first, second));
        }
    }
    // Phase 2: every pair, from its first cut's image.
    let results = if broken.is_empty() || keep_going() {
        pool(&work, |(post, (k, tear), (j, tear2))| {
            let b = sc.board(post, &format!("pair-{k}{tear}-{j}{tear2}"), tear2);
            let run = sc.run(&b, 16, false, Some(*j));
            let cut = run.power_cut();
            let g = sc.verify(&b, &run).map_err(|e| {
                let e = format!("cuts at write {k} ({tear}) then {j} ({tear2}): {e}");
                eprintln!("crash {} (two cuts): {e}", sc.name);
                e
            })?;
            sc.done_with(&b);
            Ok((cut, g))
        })
    } else {
        Vec::new()
    };
    for (i, r) in results {
        let (_, (k, tear), (j, tear2)) = &work[i];
        match r {
            Ok((cut, g)) => {
                figures.pairs += 1;
                figures.second_cuts += u64::from(cut);
                *figures.by_outcome.entry(g).or_default() += 1;
            }
            Err(_) => broken.push(format!("{k}:{tear},{j}:{tear2}")),
        }
    }
    for (_, post, _) in &recovered {
        sc.done_with(post);
    }
    eprintln!(
        "FIGURES crash {} two cuts: {n} write points, {} first cuts (seed {seed}; {} not reached), \
         recovery runs of {}..{} writes, {} pairs survived, {} second cuts, \
         {} broke the board, outcomes by generation {:?}, {:.1}s",
        sc.name,
        figures.first,
        figures.first_uncut,
        figures.recovery_writes.0.min(figures.recovery_writes.1),
        figures.recovery_writes.1,
        figures.pairs,
        figures.second_cuts,
        broken.len(),
        figures.by_outcome,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        broken.is_empty(),
        "crash {} two cuts: {broken:?} broke the board (output above); one alone: \
         MPFLEET_CRASH_PAIR=K:TEAR,J:TEAR MPFLEET_CRASH_VERBOSE=1",
        sc.name
    );
    figures
}

#[test]
fn second_power_cut_during_recovery_from_an_update() {
    let s = setup();
    let start = bootstrapped(
        &s,
        &s.fleet.dir.path().join("start"),
        &mac(4, 0xffff),
        D_OLD,
    );
    let sc = Scenario::new(&s, "update", 4, &start, D_NEW, true, &[&s.old, &s.new]);
    let f = two_cuts(&sc);
    assert!(f.pairs > 0 && f.second_cuts > 0, "{f:?}");
}

#[test]
fn second_power_cut_during_recovery_from_a_rollback() {
    let s = setup();
    let start = bootstrapped(
        &s,
        &s.fleet.dir.path().join("start"),
        &mac(5, 0xffff),
        D_OLD,
    );
    let sc = Scenario::new(&s, "rollback", 5, &start, D_BAD, true, &[&s.old]);
    let f = two_cuts(&sc);
    assert!(f.pairs > 0 && f.second_cuts > 0, "{f:?}");
}

#[test]
fn second_power_cut_during_recovery_from_a_bootstrap() {
    let s = setup();
    let mut blank = ImageBoard::new(s.fleet.dir.path().join("blank"), &mac(6, 0xffff));
    blank.key = Some(Router::key(&s.store));
    std::fs::write(blank.image(), b"").unwrap();
    let sc = Scenario::new(&s, "bootstrap", 6, &blank, D_OLD, false, &[&s.old]);
    let f = two_cuts(&sc);
    assert!(f.pairs > 0 && f.second_cuts > 0, "{f:?}");
}

#[cfg(test)]
mod sampling {
    use super::*;

    #[test]
    fn spread_covers_both_ends() {
        assert_eq!(spread(10, 1), vec![10]);
        assert_eq!(spread(10, 2), vec![1, 10]);
        assert_eq!(spread(10, 4), vec![1, 4, 7, 10]);
        assert_eq!(spread(3, 5), vec![1, 2, 3]);
        let v = spread(107, 40);
        assert_eq!((v.len(), v[0], v[39]), (40, 1, 107));
    }

    #[test]
    fn cuts_are_distinct_and_in_range() {
        let mut rng = Rng::seeded(1);
        let k = first_cuts(107, 44, &mut rng);
        assert_eq!(k.len(), 44);
        assert!(
            k.windows(2).all(|w| w[0].0 < w[1].0) && k[43].0 <= 107,
            "{k:?}"
        );
        let j = second_cuts(30, 4, &mut rng);
        assert!(j.contains(&30) && j.len() == 4 && j.iter().all(|&j| (1..=30).contains(&j)));
        assert_eq!(second_cuts(3, 5, &mut rng), vec![1, 2, 3]);
    }
}
