//! Random faults: many updates in a row on one board (a littlefs image), each with a fault
//! drawn from a seeded PRNG: a power cut at a random flash write, the server dying mid-body,
//! a byte flipped in transit, a 500 on the manifest, a stalled connection that must time out,
//! an update too big for the flash, or none. After each, the board must run one complete
//! configuration (the one before, or the new one where that is possible), with `/ota/tmp`
//! empty, and the flag the fault calls for.
//!
//! The run goes twice, as an ESP8266 (seed 1) and as an ESP32 (seed 2), each at its port's
//! default heap. `MPFLEET_FAULT_SEED` (both tests) and `MPFLEET_FAULT_COUNT` (default 14)
//! choose the run; `MPFLEET_FAULT_LONG=1` makes it 2000 updates, with the updater's socket
//! timeout at 2 s (`MPFLEET_FAULT_TIMEOUT` seconds, any run; the runtime's default is 10 s)
//! so a stall costs 2 s, a board settled after 0.5 s of quiet app (`MPFLEET_FAULT_SETTLE`;
//! 1 s otherwise), and a progress line every 50 updates. Figures go to stderr (`--nocapture`).

use crate::crash::{check, Rng, Target};
use crate::harness::{Fault, FaultProxy, Fleet, ImageBoard, Server};
use std::collections::BTreeMap;
use std::time::Instant;

const MAC: &str = "deadbeeffa17";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PowerCut,
    ServerDiesMidBody,
    FlippedByte,
    Manifest500,
    Stall,
    FlashFull,
    NoFault,
}

const KINDS: [Kind; 7] = [
    Kind::PowerCut,
    Kind::ServerDiesMidBody,
    Kind::FlippedByte,
    Kind::Manifest500,
    Kind::Stall,
    Kind::FlashFull,
    Kind::NoFault,
];

fn app() -> &'static str {
    "import config\n\
     import sensorclass\n\
     print('APP', sensorclass.VALUE, 'primary' if config.primary else 'alternate', config.generation)\n\
     config.set('reboots', 0)\n"
}

fn target(s: &Server, value: &str) -> Target {
    let manifest = s.get(&format!("v1/{MAC}.json")).json();
    Target {
        generation: manifest["generation"].as_i64().unwrap(),
        says: format!("APP {value}"),
        manifest,
    }
}

fn rtc_flags(b: &ImageBoard) -> serde_json::Value {
    std::fs::read(b.rtc())
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

/// What one random-fault run showed.
#[derive(Debug, Default)]
struct Tally {
    /// Updates by fault, survived.
    survived: BTreeMap<Kind, u64>,
    /// Wall time by fault (the update's boots and checks), seconds.
    time: BTreeMap<Kind, f64>,
    /// Power cuts that happened (a cut past the update's last write does not).
    cuts: u64,
    /// Where each update ended: on the new generation, or on the one before (as primary or
    /// as alternate).
    landed: u64,
    kept_primary: u64,
    kept_alternate: u64,
    boots: u64,
    max_boots: u32,
    /// Publishing each new version and waiting for the server to serve it, seconds.
    publish: f64,
}

/// The boots of a run (`--- boot N ended` lines).
fn boots_of(run: &crate::harness::SimRun) -> u32 {
    run.said()
        .iter()
        .filter(|l| l.starts_with("--- boot ") && l.contains(" ended: "))
        .count() as u32
}

/// Waits until the server serves a manifest of another generation than `was` whose
/// `sensorclass` has `size` bytes (the server picks up the store by polling; a store of
/// thousands of versions on a loaded machine can take longer than `Server::wait_get`'s 10 s).
fn wait_for_manifest(s: &Server, was: i64, size: u64) {
    crate::harness::eventually(
        "the server to serve the new version",
        std::time::Duration::from_secs(120),
        || {
            let m = s.get(&format!("v1/{MAC}.json")).json();
            (m["generation"].as_i64() != Some(was)
                && m["modules"]["sensorclass"]["size"].as_u64() == Some(size))
            .then_some(())
        },
    );
}

fn random_faults(port: &str, default_seed: u64) {
    let seed = env_u64("MPFLEET_FAULT_SEED").unwrap_or(default_seed);
    let long = std::env::var("MPFLEET_FAULT_LONG").is_ok_and(|v| v == "1");
    let count = env_u64("MPFLEET_FAULT_COUNT").unwrap_or(if long { 2000 } else { 14 });
    // The updater's socket timeout: a stall costs this much (runtime default 10 s).
    let timeout = std::env::var("MPFLEET_FAULT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .or(long.then_some(2.0));
    // How long a board's app must run quietly to have settled: shorter in the long run (the
    // app prints once, says it is healthy and sits), longer than any write it then makes.
    let settle = std::env::var("MPFLEET_FAULT_SETTLE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .or(long.then_some(0.5));
    let mut rng = Rng::seeded(seed);
    let t0 = Instant::now();
    let reproduce = |round: u64| {
        format!(
            "MPFLEET_FAULT_SEED={seed} MPFLEET_FAULT_COUNT={round}{}{} \
             ./test.sh faults::random_faults_in_a_row_{port} -- --nocapture",
            if long { " MPFLEET_FAULT_LONG=1" } else { "" },
            ["MPFLEET_FAULT_TIMEOUT", "MPFLEET_FAULT_SETTLE"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| format!(" {k}={v}")))
                .collect::<String>()
        )
    };

    let f = Fleet::new();
    f.publish("app", app(), &[]);
    f.publish("sensorclass", "VALUE = 'v0'\n", &[]);
    f.ok(&["device", "set", MAC, "--app", "app", "sensorclass=latest"]);
    let s = f.serve();
    let proxy = FaultProxy::start(&s.base);
    let mut b = ImageBoard::new(f.dir.path().join("board"), MAC);
    b.data = Some(f.data());
    b.port = Some(port.to_owned());
    b.heap = String::new(); // the port's default heap, as a user runs it
    b.flash_blocks = 80; // 320 KiB: room for the runtime and a few versions, not much more
    b.timeout = timeout;
    if let Some(settle) = settle {
        b.settle = settle;
    }
    let run = b.boot_with(&proxy.base, 6, false, None);
    let mut running = target(&s, "v0");
    check(&b, &run, &[&running], &[&running])
        .unwrap_or_else(|e| panic!("{port}: bootstrap: {e}\n{}", run.out));
    // Every generation the board may hold as primary or alternate.
    let mut known: Vec<Target> = vec![running.clone()];
    let mut tally = Tally::default();
    let figures = |tally: &Tally, done: u64, end: &str| {
        format!(
            "FIGURES faults {port}: seed {seed}, {done} updates in a row{}, {end}: survived by \
             fault {:?}; {} power cuts happened; ended on the new generation {}, kept the one \
             before {} (as alternate {}); {} boots (at most {} in one update); seconds by fault \
             {:?}, publishing {:.0}; {:.1}s",
            timeout.map_or(String::new(), |t| format!(" (socket timeout {t} s)")),
            tally.survived,
            tally.cuts,
            tally.landed,
            tally.kept_primary + tally.kept_alternate,
            tally.kept_alternate,
            tally.boots,
            tally.max_boots,
            tally
                .time
                .iter()
                .map(|(k, t)| (*k, (t * 10.0).round() / 10.0))
                .collect::<BTreeMap<_, _>>(),
            tally.publish,
            t0.elapsed().as_secs_f64()
        )
    };

    let mut last_progress = (0.0, 0.0);
    // The version too big for the flash, once published: (version, size).
    let mut big: Option<(String, u64)> = None;
    for round in 1..=count {
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let value = format!("v{round}");
        // A new sensorclass of a random size (up to 8 KiB), or one too big for the flash (a string
        // constant: it stays in the precompiled .mpy too).
        let pad = if kind == Kind::FlashFull {
            400 * 1024
        } else {
            rng.below(8 * 1024) as usize
        };
        let source = format!("VALUE = '{value}'\nPAD = '{}'\n", "x".repeat(pad));
        let published = Instant::now();
        let size = match (&big, kind) {
            // The version too big for the flash, published once and made latest again after:
            // the server rebuilds its tree from every version at each change, so a store of
            // hundreds of 400 KB versions makes every later round slow.
            (Some((version, size)), Kind::FlashFull) => {
                f.run(&["module", "latest", "sensorclass", version]);
                *size
            }
            _ => {
                let out = f.publish("sensorclass", &source, &[]);
                if kind == Kind::FlashFull {
                    // "published sensorclass N (...)"
                    let version = out.split_whitespace().nth(2).unwrap().to_owned();
                    big = Some((version, source.len() as u64));
                }
                source.len() as u64
            }
        };
        wait_for_manifest(&s, running.generation, size);
        tally.publish += published.elapsed().as_secs_f64();
        let new = target(&s, &value);
        known.push(new.clone());
        let started = Instant::now();
        let free_before = (kind == Kind::FlashFull).then(|| b.inspect()["free"].as_u64().unwrap());
        let mut cut = None;
        match kind {
            Kind::PowerCut => cut = Some(1 + rng.below(60)),
            Kind::ServerDiesMidBody => proxy.set(Fault::Truncate, "m/"),
            Kind::FlippedByte => proxy.set(Fault::FlipByte, "m/"),
            Kind::Manifest500 => proxy.set(Fault::Status500, "v1/"),
            Kind::Stall => proxy.set(Fault::Stall, "m/"),
            Kind::FlashFull | Kind::NoFault => proxy.set(Fault::None, ""),
        }
        let run = b.boot_with(&proxy.base, 8, true, cut);
        proxy.set(Fault::None, "");
        let known_refs: Vec<&Target> = known.iter().collect();
        let allowed: Vec<&Target> = match kind {
            Kind::PowerCut => vec![&running, &new],
            Kind::NoFault => vec![&new],
            _ => vec![&running],
        };
        let outcome = check(&b, &run, &allowed, &known_refs).and_then(|t| {
            let flags = rtc_flags(&b);
            let flag = match kind {
                Kind::Manifest500 => Some("server_failed"),
                Kind::ServerDiesMidBody | Kind::FlippedByte | Kind::Stall | Kind::FlashFull => {
                    Some("update_failed")
                }
                _ => None,
            };
            if let Some(flag) = flag {
                if flags[flag] != true {
                    return Err(format!("no {flag} flag: {flags}"));
                }
            }
            if kind == Kind::FlashFull {
                if !run.out.contains("no room on flash") {
                    return Err("flash full: no \"no room on flash\"".into());
                }
                let free_after = b.inspect()["free"].as_u64().unwrap();
                let free_before = free_before.unwrap_or(0);
                if free_after < free_before {
                    return Err(format!(
                        "flash full left {free_after} free blocks, had {free_before}"
                    ));
                }
            }
            Ok(t.generation)
        });
        let generation = match outcome {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{}", figures(&tally, round - 1, "then a failure"));
                panic!(
                    "{port}, seed {seed}, round {round} ({kind:?}, cut {cut:?}): {e}\n{}\n\
                     reproduce: {}",
                    run.out,
                    reproduce(round)
                );
            }
        };
        *tally.survived.entry(kind).or_default() += 1;
        *tally.time.entry(kind).or_default() += started.elapsed().as_secs_f64();
        tally.cuts += u64::from(run.power_cut());
        let boots = boots_of(&run);
        tally.boots += u64::from(boots);
        tally.max_boots = tally.max_boots.max(boots);
        if generation == new.generation {
            tally.landed += 1;
            running = new;
        } else if run.last_app_line().contains(" alternate ") {
            tally.kept_alternate += 1;
        } else {
            tally.kept_primary += 1;
        }
        if long && round % 50 == 0 {
            eprintln!(
                "faults {port}: {round}/{count} updates, {:.0}s; the last 50: {:.1}s, {:.1}s of \
                 it publishing",
                t0.elapsed().as_secs_f64(),
                t0.elapsed().as_secs_f64() - last_progress.0,
                tally.publish - last_progress.1,
            );
            last_progress = (t0.elapsed().as_secs_f64(), tally.publish);
        }
    }
    eprintln!("{}", figures(&tally, count, "every one survived"));
}

#[test]
fn random_faults_in_a_row_esp8266() {
    random_faults("esp8266", 1);
}

#[test]
fn random_faults_in_a_row_esp32() {
    random_faults("esp32", 2);
}

/// A fleet whose device runs `app` and sensorclass v0, served, and its board on a littlefs
/// image of `blocks` blocks, not booted yet.
fn small_flash_board(blocks: u32) -> (Fleet, Server, ImageBoard) {
    let f = Fleet::new();
    f.publish("app", app(), &[]);
    f.publish("sensorclass", "VALUE = 'v0'\n", &[]);
    f.ok(&["device", "set", MAC, "--app", "app", "sensorclass=latest"]);
    let s = f.serve();
    let mut b = ImageBoard::new(f.dir.path().join("board"), MAC);
    b.data = Some(f.data());
    b.flash_blocks = blocks;
    (f, s, b)
}

#[test]
fn update_too_big_for_the_flash_is_refused_before_anything_is_replaced() {
    // 288 KB: the runtime and the app, with room for a small update only.
    let (f, s, b) = small_flash_board(72);
    let run = b.boot_with(&s.base, 6, false, None);
    let old = target(&s, "v0");
    check(&b, &run, &[&old], &[&old]).unwrap_or_else(|e| panic!("{e}\n{}", run.out));
    let before = b.inspect();
    let source = format!("VALUE = 'big'\nPAD = '{}'\n", "x".repeat(400 * 1024));
    f.publish("sensorclass", &source, &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["generation"].as_i64() != Some(old.generation)
    });
    let big = target(&s, "big");
    let mark = s.mark();
    let run = b.boot_with(&s.base, 6, true, None);
    check(&b, &run, &[&old], &[&old, &big]).unwrap_or_else(|e| panic!("{e}\n{}", run.out));
    assert!(run.out.contains("no room on flash"), "{}", run.out);
    assert_eq!(rtc_flags(&b)["update_failed"], true);
    // Refused before a byte was downloaded or replaced: the same files, the same room.
    let fetched: Vec<String> = s.requests()[mark..]
        .iter()
        .filter(|l| l.starts_with("GET /m/"))
        .cloned()
        .collect();
    assert!(fetched.is_empty(), "{fetched:?}");
    // Only the trust record moved: the generation was authentic (accepted, so nothing older
    // will be) and the report took the next counter.
    let (mut after, mut before) = (b.inspect(), before);
    let trust = after["files"]["/ota/trust.json"]["text"].clone();
    let trust: serde_json::Value = serde_json::from_str(trust.as_str().unwrap()).unwrap();
    assert_eq!(trust["gen"].as_i64(), Some(big.generation), "{trust}");
    for files in [&mut after["files"], &mut before["files"]] {
        files.as_object_mut().unwrap().remove("/ota/trust.json");
    }
    assert_eq!(after["files"], before["files"]);
    assert!(after["free"].as_u64() >= before["free"].as_u64());
    let report = crate::harness::eventually(
        "an update_failed report",
        std::time::Duration::from_secs(10),
        || {
            f.json(&["device", "show", MAC, "--json"])["reports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["report"].clone())
                .find(|r| r["event"] == "update_failed")
        },
    );
    assert!(
        report["error"].as_str().unwrap_or("").contains("no room"),
        "{report}"
    );
    // One that fits installs.
    f.publish("sensorclass", "VALUE = 'small'\n", &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["generation"].as_i64() != Some(big.generation)
    });
    let small = target(&s, "small");
    let run = b.boot_with(&s.base, 6, true, None);
    check(&b, &run, &[&small], &[&old, &small]).unwrap_or_else(|e| panic!("{e}\n{}", run.out));
}

/// The sensorclass files on the image, and the one its primary configuration names.
fn sensorclass_files(b: &ImageBoard) -> (Vec<String>, String) {
    let image = b.inspect();
    let files: Vec<String> = image["files"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| p.starts_with("/ota/m/sensorclass/"))
        .cloned()
        .collect();
    let primary = image["files"]["/ota/primary.json"]["text"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("\"sensorclass\":"))
        .map(|l| l.split('"').nth(3).unwrap().to_owned())
        .unwrap();
    (files, primary)
}

/// A power cut in the install boot, after a file is in place and before the swap, leaves that
/// file on flash (the reporter's tidy after an install never ran). The next update, on a
/// flash with room for its file only once that one is gone, fails for room; the reporter's
/// tidy deletes it and asks for the update again, which installs.
#[test]
fn what_an_install_cut_short_left_is_deleted_when_the_next_needs_its_room() {
    let (f, s, mut b) = small_flash_board(96);
    b.heap = "512k".into(); // the app imports a module of tens of KB in one string
    let run = b.boot_with(&s.base, 6, false, None);
    let v0 = target(&s, "v0");
    check(&b, &run, &[&v0], &[&v0]).unwrap_or_else(|e| panic!("{e}\n{}", run.out));
    let (_, v0_file) = sensorclass_files(&b);

    // v1, five blocks and more: cut the install boot after its file is in place.
    let source = format!("VALUE = 'v1'\nPAD = '{}'\n", "x".repeat(20 * 1024));
    f.publish("sensorclass", &source, &[]);
    wait_for_manifest(&s, v0.generation, source.len() as u64);
    let clean = b
        .copy_to(f.dir.path().join("clean"), MAC)
        .boot_with(&s.base, 2, true, None);
    let writes: Vec<u64> = clean
        .said()
        .iter()
        .filter_map(|l| l.strip_prefix("writes="))
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(writes.len() >= 2, "{}", clean.out);
    let (check_writes, install_writes) = (writes[0], writes[1]);
    let cut = (1..=install_writes)
        .rev()
        .map(|i| check_writes + i)
        .find_map(|k| {
            let c = b.copy_to(f.dir.path().join(format!("cut{k}")), MAC);
            let run = c.boot_with(&s.base, 2, true, Some(k));
            let (files, primary) = sensorclass_files(&c);
            (run.power_cut() && files.len() == 2 && primary == v0_file).then_some(c)
        })
        .expect("a cut in the install boot that leaves the new file beside the running one");

    // v2: sized so that it fits only once v1's file is gone.
    let free = cut.inspect()["free"].as_u64().unwrap();
    assert!(free > 10, "{free} blocks free after the cut");
    // The installer wants size / 4096 + 2 blocks, and 4 to spare: three more than are free
    // now (the boots before the install may free a block or two), and at least two fewer
    // than v1's file gives back.
    let size = (free + 3 - 6) * 4096 + 100;
    let frame = "VALUE = 'v2'\nPAD = ''\n".len();
    let source = format!(
        "VALUE = 'v2'\nPAD = '{}'\n",
        "x".repeat(size as usize - frame)
    );
    let v1 = target(&s, "v1");
    f.publish("sensorclass", &source, &[]);
    wait_for_manifest(&s, v1.generation, size);
    let v2 = target(&s, "v2");
    let run = cut.boot_with(&s.base, 10, true, None);
    check(&cut, &run, &[&v2], &[&v0, &v1, &v2]).unwrap_or_else(|e| panic!("{e}\n{}", run.out));
    assert_eq!(
        run.out.matches("no room on flash").count(),
        2,
        "{}",
        run.out
    ); // install, report
       // v1's file went; v2's is the primary's, v0's the alternate's.
    let (files, primary) = sensorclass_files(&cut);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|p| p.ends_with(&primary)), "{files:?}");
}
