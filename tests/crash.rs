//! The crash suite: power fails during every flash write of an update, of a rollback and of a
//! bootstrap, one cut per run, and after each the board must run one complete configuration.
//!
//! For a scenario: a clean run from the starting image counts its flash writes N (littlefs
//! programs and erases, across every boot of the run). Then for every k in 1..=N, on a fresh
//! copy of the starting image: power fails during write k (that write torn, the process
//! killed, RTC memory lost), the board boots on normally until it settles, and the invariant
//! is checked on the image itself (`mpfleet sim --inspect`):
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
//! (`MPFLEET_CRASH_THREADS`, default 2). Every cut runs twice: with the write in flight half
//! written, and lost (`MPFLEET_CRASH_TEAR=half|lost` for one only). `MPFLEET_CRASH_ONLY=k`
//! runs just cut k, `MPFLEET_CRASH_VERBOSE=1` shows the boards' output. Figures go to stderr
//! (`--nocapture`).

use crate::harness::{Fleet, ImageBoard, Router, Server, SimRun};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    // Each device's history is longer than the one before, so that generations differ
    // whether the store numbers them per device or globally.
    let steps: [(&str, Vec<Vec<String>>); 4] = [
        (D_OLD, vec![pins("1", "1", "1")]),
        (D_NEW, vec![pins("1", "1", "1"), pins("2", "2", "2")]),
        (
            D_LATER,
            vec![
                pins("1", "1", "1"),
                pins("2", "2", "2"),
                pins("3", "3", "3"),
            ],
        ),
        (
            D_BAD,
            vec![
                pins("1", "1", "1"),
                pins("2", "2", "2"),
                pins("3", "3", "3"),
                pins("2", "4", "2"),
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
    Setup {
        fleet: f,
        _server: server,
        router,
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
    let b = ImageBoard::new(dir.to_path_buf(), mac);
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

/// What a scenario showed.
#[derive(Debug, Default)]
pub struct Figures {
    pub writes: u64,
    pub runs: u64,
    pub cuts: u64,
    pub by_outcome: BTreeMap<i64, u64>,
}

pub fn threads() -> usize {
    std::env::var("MPFLEET_CRASH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// Runs scenario `name`: `start` is the starting image (and RTC memory); the board follows
/// `device` (`update`: an update is requested on its first boot); `outcomes` are the
/// configurations it may end up running.
fn scenario(
    s: &Setup,
    name: &str,
    id: u32,
    start: &ImageBoard,
    device: &str,
    update: bool,
    outcomes: &[&Target],
) -> Figures {
    let t0 = Instant::now();
    let all = [&s.old, &s.new, &s.later, &s.bad];
    let work = s.fleet.dir.path().join(format!("crash-{name}"));
    // The clean run: its writes are the points to cut at.
    let clean = start.copy_to(work.join("clean"), &mac(id, 0));
    s.router.route(&clean.mac, device);
    let run = clean.boot_with(&s.router.base, 16, update, None);
    let t = check(&clean, &run, outcomes, &all)
        .unwrap_or_else(|e| panic!("{name}, clean run: {e}\n{}", run.out));
    if std::env::var_os("MPFLEET_CRASH_VERBOSE").is_some() {
        eprintln!("{}", run.out);
    }
    let n = run.flash_writes();
    assert!(n > 0, "{}", run.out);
    eprintln!(
        "crash {name}: clean run: {n} flash writes, runs generation {}",
        t.generation
    );
    // Both ways a write in flight can end: half of it on flash, or none of it.
    let tears: &[&str] = match std::env::var("MPFLEET_CRASH_TEAR").as_deref() {
        Ok("half") => &["half"],
        Ok("lost") => &["lost"],
        _ => &["half", "lost"],
    };
    let mut figures = Figures {
        writes: n,
        ..Figures::default()
    };
    for tear in tears {
        // MPFLEET_CRASH_ONLY=k: just that cut (with MPFLEET_CRASH_VERBOSE, its output).
        let only: Option<u64> = std::env::var("MPFLEET_CRASH_ONLY")
            .ok()
            .and_then(|v| v.parse().ok());
        let n = only.unwrap_or(n);
        let next = AtomicU64::new(only.unwrap_or(1));
        let failed = AtomicBool::new(false);
        let results = Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            for _ in 0..threads() {
                sc.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k > n || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let mut b = start.copy_to(work.join(format!("{tear}-{k}")), &mac(id, k));
                    b.tear = tear;
                    s.router.route(&b.mac, device);
                    let run = b.boot_with(&s.router.base, 16, update, Some(k));
                    if std::env::var_os("MPFLEET_CRASH_VERBOSE").is_some() {
                        eprintln!("{}", run.out);
                    }
                    let outcome = check(&b, &run, outcomes, &all)
                        .map_err(|e| format!("{e}\n{}", run.out))
                        .and_then(|t| later_update(s, &b).map(|()| t.generation));
                    match outcome {
                        Ok(g) => {
                            results.lock().unwrap().push((k, run.power_cut(), g));
                            if std::env::var_os("MPFLEET_CRASH_KEEP").is_none() {
                                let _ = std::fs::remove_dir_all(&b.dir);
                            }
                        }
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            eprintln!("crash {name}: cut at write {k} ({tear}): {e}");
                            results.lock().unwrap().push((k, false, -1));
                        }
                    }
                });
            }
        });
        let results = results.into_inner().unwrap();
        let bad: Vec<u64> = results.iter().filter(|r| r.2 < 0).map(|r| r.0).collect();
        assert!(
            bad.is_empty(),
            "crash {name}: cut at write(s) {bad:?} ({tear}) broke the board (output above)"
        );
        for (_, cut, g) in results {
            figures.runs += 1;
            figures.cuts += u64::from(cut);
            *figures.by_outcome.entry(g).or_default() += 1;
        }
    }
    eprintln!(
        "FIGURES crash {name}: {n} write points, {} runs, {} cuts survived, outcomes by generation {:?} \
         (old {}, new {}), {:.1}s",
        figures.runs,
        figures.cuts,
        figures.by_outcome,
        s.old.generation,
        s.new.generation,
        t0.elapsed().as_secs_f64()
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
    let f = scenario(&s, "update", 1, &start, D_NEW, true, &[&s.old, &s.new]);
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
    let f = scenario(&s, "rollback", 2, &start, D_BAD, true, &[&s.old]);
    assert!(f.cuts + 2 >= f.runs, "{f:?}");
}

#[test]
fn power_cut_at_every_write_of_a_bootstrap() {
    let s = setup();
    // A blank (empty) image: the board formats it, then runs the bootstrap.
    let blank = ImageBoard::new(s.fleet.dir.path().join("blank"), &mac(3, 0xffff));
    std::fs::write(blank.image(), b"").unwrap();
    let f = scenario(&s, "bootstrap", 3, &blank, D_OLD, false, &[&s.old]);
    assert!(f.cuts + 2 >= f.runs, "{f:?}");
}
