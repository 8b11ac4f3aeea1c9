//! Random faults: many updates in a row on one board (a littlefs image), each with a fault
//! drawn from a seeded PRNG: a power cut at a random flash write, the server dying mid-body,
//! a byte flipped in transit, a 500 on the manifest, a stalled connection that must time out,
//! an update too big for the flash, or none. After each, the board must run one complete
//! configuration (the one before, or the new one where that is possible), with `/ota/tmp`
//! empty, and the flag the fault calls for.
//!
//! `MPFLEET_FAULT_SEED` (default 1) and `MPFLEET_FAULT_COUNT` (default 14) choose the run;
//! `MPFLEET_FAULT_LONG=1` makes it 2000 updates. Figures go to stderr (`--nocapture`).

use crate::crash::{check, Target};
use crate::harness::{Fault, FaultProxy, Fleet, ImageBoard, Server};
use std::collections::BTreeMap;
use std::time::Instant;

const MAC: &str = "deadbeeffa17";

/// xorshift64*: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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

#[test]
fn random_faults_in_a_row() {
    let seed = env_u64("MPFLEET_FAULT_SEED").unwrap_or(1);
    let long = std::env::var("MPFLEET_FAULT_LONG").is_ok_and(|v| v == "1");
    let count = env_u64("MPFLEET_FAULT_COUNT").unwrap_or(if long { 2000 } else { 14 });
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let t0 = Instant::now();

    let f = Fleet::new();
    f.publish("app", app(), &[]);
    f.publish("sensorclass", "VALUE = 'v0'\n", &[]);
    f.ok(&["device", "set", MAC, "--app", "app", "sensorclass=latest"]);
    let s = f.serve();
    let proxy = FaultProxy::start(&s.base);
    let mut b = ImageBoard::new(f.dir.path().join("board"), MAC);
    b.flash_blocks = 64; // 256 KiB: room for the runtime and a few versions, not much more
    let run = b.boot_with(&proxy.base, 6, false, None);
    let mut running = target(&s, "v0");
    check(&b, &run, &[&running], &[&running])
        .unwrap_or_else(|e| panic!("bootstrap: {e}\n{}", run.out));
    // Every generation the board may hold as primary or alternate.
    let mut known: Vec<Target> = vec![running.clone()];
    let mut survived: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut landed = 0u64;

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
        f.publish("sensorclass", &source, &[]);
        let want = running.generation;
        s.wait_get(&format!("v1/{MAC}.json"), |r| {
            r.json()["generation"].as_i64() != Some(want)
                && r.json()["modules"]["sensorclass"]["size"].as_u64() == Some(source.len() as u64)
        });
        let new = target(&s, &value);
        known.push(new.clone());
        let free_before = b.inspect()["free"].as_u64().unwrap();
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
        let t = check(&b, &run, &allowed, &known_refs).unwrap_or_else(|e| {
            panic!(
                "seed {seed}, round {round} ({kind:?}, cut {cut:?}): {e}\n{}",
                run.out
            )
        });
        let flags = rtc_flags(&b);
        let flag = match kind {
            Kind::Manifest500 => Some("server_failed"),
            Kind::ServerDiesMidBody | Kind::FlippedByte | Kind::Stall | Kind::FlashFull => {
                Some("update_failed")
            }
            _ => None,
        };
        if let Some(flag) = flag {
            assert_eq!(
                flags[flag], true,
                "seed {seed}, round {round} ({kind:?}): no {flag} flag: {flags}\n{}",
                run.out
            );
        }
        if kind == Kind::FlashFull {
            assert!(run.out.contains("no room on flash"), "{}", run.out);
            let free_after = b.inspect()["free"].as_u64().unwrap();
            assert!(
                free_after >= free_before,
                "round {round}: flash full left {free_after} free blocks, had {free_before}"
            );
        }
        *survived.entry(kind).or_default() += 1;
        if t.generation == new.generation {
            landed += 1;
            running = new;
        }
    }
    eprintln!(
        "FIGURES faults: seed {seed}, {count} updates in a row, every one survived: {survived:?}; \
         {landed} landed; {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn update_too_big_for_the_flash_is_refused_before_anything_is_replaced() {
    let f = Fleet::new();
    f.publish("app", app(), &[]);
    f.publish("sensorclass", "VALUE = 'v0'\n", &[]);
    f.ok(&["device", "set", MAC, "--app", "app", "sensorclass=latest"]);
    let s = f.serve();
    let mut b = ImageBoard::new(f.dir.path().join("board"), MAC);
    b.flash_blocks = 64;
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
    let mark = s.requests().len();
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
    let after = b.inspect();
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
