//! Nothing changes what boards run but the owner: commands that only read write nothing in
//! the data directory, and an older `mpfleet` (a lower runtime release than the store runs)
//! never publishes its runtime, while a newer one publishes its own exactly once.

use crate::harness::{dead_pid, eventually, Fleet};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const RUNTIME: [&str; 9] = [
    "config",
    "installer",
    "main",
    "mpfleet",
    "mpfleet_boot",
    "reporter",
    "updater",
    "updater_delta",
    "updater_io",
];
const MAC: &str = "deadbeef1234";
const OTHER: &str = "aabbccddeeff";
/// A release no binary carries: the store of a much newer mpfleet.
const NEWER: u32 = 1_000_000;

/// Every file under `dir`: its SHA-256 and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (String, SystemTime)> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (String, SystemTime)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                let sha = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.insert(p, (sha, mtime));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn db(f: &Fleet) -> rusqlite::Connection {
    rusqlite::Connection::open(f.data().join("mpfleet.db")).unwrap()
}

fn set_release(f: &Fleet, release: Option<u32>) {
    let db = db(f);
    match release {
        Some(r) => db
            .execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('runtime_release', ?1)",
                [r.to_string()],
            )
            .unwrap(),
        None => db
            .execute("DELETE FROM meta WHERE name = 'runtime_release'", [])
            .unwrap(),
    };
}

fn release(f: &Fleet) -> Option<String> {
    db(f)
        .query_row(
            "SELECT value FROM meta WHERE name = 'runtime_release'",
            [],
            |r| r.get(0),
        )
        .ok()
}

/// Every (module, version, sha256) of the runtime's modules.
fn runtime_versions(f: &Fleet) -> Vec<(String, String, String)> {
    let db = db(f);
    let mut stmt = db
        .prepare(
            "SELECT module, version, sha256 FROM versions
             WHERE module IN ('config', 'main', 'mpfleet', 'mpfleet_boot', 'updater')
             ORDER BY module, version",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Every device's generation.
fn generations(f: &Fleet) -> Vec<(String, i64)> {
    let db = db(f);
    let mut stmt = db
        .prepare("SELECT mac, generation FROM devices ORDER BY mac")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

/// A fleet whose runtime is not the one this binary carries (each module's source with a
/// line added, as another release of mpfleet would have published it), with `app` and two
/// devices running it.
fn fleet_with_another_runtime() -> Fleet {
    let f = Fleet::new();
    f.publish("app", "import config\n", &[]);
    {
        // Forget the carried runtime (no device names it yet) ...
        let db = db(&f);
        for table in ["versions WHERE module", "modules WHERE name"] {
            db.execute(
                &format!(
                    "DELETE FROM {table} IN \
                     ('config', 'main', 'mpfleet', 'mpfleet_boot', 'updater')"
                ),
                [],
            )
            .unwrap();
        }
    }
    // ... and publish the other one. The store already records this binary's release, so
    // these writes publish nothing of their own.
    for name in RUNTIME {
        let source = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("device/{name}.py")),
        )
        .unwrap();
        f.publish(
            name,
            &format!("{source}\n# another release of the runtime\n"),
            &[],
        );
    }
    f.ok(&["device", "set", MAC, "--app", "app"]);
    f.ok(&["device", "set", OTHER, "--app", "app", "config=1"]);
    let versions = runtime_versions(&f);
    assert_eq!(versions.len(), 5, "{versions:?}");
    f
}

const WARNING: &str = "this store runs a newer device runtime (release 1000000)";

#[test]
fn an_old_binary_run_against_a_newer_store_makes_no_fleet_change() {
    let f = fleet_with_another_runtime();
    set_release(&f, Some(NEWER));
    let versions = runtime_versions(&f);
    let gens = generations(&f);
    let unchanged = |what: &str| {
        assert_eq!(runtime_versions(&f), versions, "after {what}");
        assert_eq!(generations(&f), gens, "after {what}");
        assert_eq!(release(&f).as_deref(), Some("1000000"), "after {what}");
    };

    let s = f.serve();
    let log = eventually(
        "serve's warning about the newer store",
        Duration::from_secs(10),
        || {
            let log = s.log();
            log.iter().any(|l| l.contains(WARNING)).then_some(log)
        },
    );
    assert_eq!(
        log.iter().filter(|l| l.contains(WARNING)).count(),
        1,
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("carries (release ")),
        "{log:#?}"
    );
    assert_eq!(s.get(&format!("v1/{MAC}.json")).status, 200);
    assert_eq!(s.terminate(), 0);
    unchanged("serve");

    let x = f.file("x.py", "X = 1\n");
    let write: [&[&str]; 3] = [
        &["module", "publish", x.to_str().unwrap()],
        &["device", "set", MAC, "--app", "app"],
        &["module", "latest", "app", "1"],
    ];
    let warns_and_changes_nothing = |args: &[&str]| {
        let r = f.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.matches(WARNING).count(),
            1,
            "{args:?}: {}",
            r.stderr
        );
        unchanged(&format!("{args:?}"));
    };
    for args in write {
        warns_and_changes_nothing(args);
    }
    // What the owner asked for was done.
    assert_eq!(f.json(&["module", "show", "x", "--json"])["latest"], "1");

    let out = f.dir.path().join("www");
    let read: [&[&str]; 5] = [
        &["module", "list"],
        &["module", "show", "config"],
        &["device", "list"],
        &["device", "show", MAC],
        &["export", out.to_str().unwrap()],
    ];
    for args in read {
        warns_and_changes_nothing(args);
    }
}

#[test]
fn a_store_at_an_older_release_gets_the_carried_runtime_once() {
    let f = fleet_with_another_runtime();
    // A store made before runtime releases were recorded runs release 0.
    set_release(&f, None);
    let versions = runtime_versions(&f);
    let gens = generations(&f);

    // Reading changes nothing.
    f.ok(&["device", "list"]);
    assert_eq!(runtime_versions(&f), versions);
    assert_eq!(release(&f), None);

    // The first write publishes the carried runtime, as version 2 of each module, and
    // records its release; every device tracking `latest` gets a new generation.
    let y = f.file("y.py", "Y = 1\n");
    let r = f.run(&["module", "publish", y.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = runtime_versions(&f);
    assert_eq!(after.len(), 10, "{after:?}");
    for name in RUNTIME {
        let show = f.json(&["module", "show", name, "--json"]);
        assert_eq!(show["latest"], "2", "{name}: {show}");
    }
    assert_eq!(
        release(&f),
        Some(mpfleet::runtime::RUNTIME_RELEASE.to_string())
    );
    let moved = generations(&f);
    for ((mac, before), (_, now)) in gens.iter().zip(&moved) {
        assert!(now > before, "{mac} kept generation {before}");
    }

    // Once: later writes and serve publish nothing more.
    f.ok(&["device", "set", MAC, "--app", "app"]);
    let s = f.serve();
    assert_eq!(s.terminate(), 0);
    f.ok(&["module", "publish", y.to_str().unwrap()]);
    assert_eq!(runtime_versions(&f), after);
    assert_eq!(generations(&f), moved);
}

#[test]
fn read_only_commands_write_nothing() {
    // A store a write command would change: versions not yet precompiled (published without
    // mpy-cross), a runtime release older than the carried one, a blob temporary file left
    // by a killed publish.
    let mut f = Fleet::without_mpy_cross();
    f.publish("app", "import sensorclass\n", &[]);
    f.publish("sensorclass", "X = 1\n", &[]);
    f.ok(&["device", "set", MAC, "--app", "app"]);
    let s = f.serve();
    assert_eq!(s.get("v1/0123456789ab.json").status, 404);
    assert_eq!(s.terminate(), 0);
    set_release(&f, Some(0));
    let dead = dead_pid();
    std::fs::write(
        f.data().join(format!("blobs/.tmp-{dead}-0123456789abcdef")),
        "half",
    )
    .unwrap();
    // Read with mpy-cross at hand, as a user's shell has it.
    f.set_env(
        "MPFLEET_MPY_CROSS",
        &std::env::var("MPFLEET_MPY_CROSS").unwrap_or_default(),
    );
    let before = files(&f.data());
    let out = f.dir.path().join("www/ota");
    let read: [&[&str]; 11] = [
        &["module", "list"],
        &["module", "list", "--json"],
        &["group", "list"],
        &["group", "list", "--json"],
        &["module", "show", "sensorclass"],
        &["module", "show", "app", "--json"],
        &["device", "list"],
        &["device", "list", "--unknown", "--json"],
        &["device", "show", MAC],
        &["device", "show", MAC, "--json"],
        &["export", out.to_str().unwrap()],
    ];
    for args in read {
        let r = f.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(
            files(&f.data()),
            before,
            "{args:?} changed the data directory"
        );
    }
    // Export said what the store lacks.
    let r = f.run(&["export", out.to_str().unwrap()]);
    assert!(
        r.stderr
            .contains("note: the store runs device runtime release 0"),
        "{}",
        r.stderr
    );
    // A write command does change it (the store above was worth watching).
    f.ok(&["device", "set", MAC, "--app", "app"]);
    assert_ne!(files(&f.data()), before);
}

#[test]
fn read_only_commands_without_a_store_say_so_and_create_nothing() {
    let f = Fleet::new();
    let out = f.dir.path().join("www");
    for args in [
        &["module", "list"][..],
        &["module", "show", "app"],
        &["device", "list", "--unknown"],
        &["device", "show", MAC],
        &["group", "list"],
        &["group", "show", "greenhouse"],
        &["export", out.to_str().unwrap()],
    ] {
        let err = f.fails(args);
        assert!(
            err.contains(&format!("no store at {}", f.data().display())),
            "{args:?}: {err}"
        );
        assert!(err.contains("mpfleet serve"), "{args:?}: {err}");
        assert!(!f.data().exists(), "{args:?} created the data directory");
        assert!(!out.exists(), "{args:?} exported");
    }
}

#[test]
fn a_store_with_an_older_schema_is_read_by_no_one_and_upgraded_by_a_write() {
    let f = Fleet::new();
    f.publish("app", "X = 1\n", &[]);
    // The store as the binary before migration 3 left it.
    {
        let db = db(&f);
        db.execute_batch(
            "DROP TABLE rollouts;
             DROP TABLE rollout_devices;
             DROP INDEX devices_by_group;
             ALTER TABLE devices DROP COLUMN grp;
             DROP TABLE groups;
             DROP TABLE meta;
             ALTER TABLE devices DROP COLUMN key;
             ALTER TABLE devices DROP COLUMN report_counter;
             ALTER TABLE devices DROP COLUMN forged_reports;
             ALTER TABLE devices DROP COLUMN replayed_reports;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let before = files(&f.data());
    let err = f.fails(&["module", "list"]);
    assert!(err.contains("schema version 2"), "{err}");
    assert!(err.contains("to upgrade it"), "{err}");
    assert_eq!(files(&f.data()), before);
    // A write upgrades it; then it reads.
    f.ok(&["device", "set", MAC, "--app", "app"]);
    assert_eq!(f.json(&["device", "list", "--json"])[0]["mac"], MAC);
}

#[test]
fn a_store_with_a_newer_schema_is_never_written() {
    let f = Fleet::new();
    f.publish("app", "X = 1\n", &[]);
    db(&f).execute_batch("PRAGMA user_version = 99;").unwrap();
    let before = files(&f.data());
    let err = f.fails(&["device", "set", MAC, "--app", "app"]);
    assert!(
        err.contains("written by a newer mpfleet (schema version 99"),
        "{err}"
    );
    assert_eq!(files(&f.data()), before);
    // Reading it is harmless.
    assert_eq!(f.json(&["module", "show", "app", "--json"])["latest"], "1");
}

#[test]
fn blob_temporary_files_of_killed_publishes_are_removed_by_the_next_write() {
    let f = Fleet::new();
    f.publish("app", "X = 1\n", &[]);
    let blobs = f.data().join("blobs");
    let dead = blobs.join(format!(".tmp-{}-0123456789abcdef", dead_pid()));
    // This test's own process is alive: its temporary file is a publish still running.
    let live = blobs.join(format!(".tmp-{}-fedcba9876543210", std::process::id()));
    let other = blobs.join(".tmp-notapid");
    for p in [&dead, &live, &other] {
        std::fs::write(p, "half a blob").unwrap();
    }
    f.ok(&["module", "list"]);
    assert!(dead.exists(), "a read-only command removed a file");
    f.publish("app", "X = 2\n", &[]);
    assert!(!dead.exists(), "the dead publish's file is still there");
    assert!(live.exists(), "a live publish's file was removed");
    assert!(other.exists(), "a file that names no process was removed");
}

/// A listen address that is not HOST:PORT is a usage error (exit 2), from the flag or from
/// MPFLEET_LISTEN, before serve opens the store; a host name is still accepted.
#[test]
fn bad_listen_addresses_are_usage_errors() {
    let f = Fleet::new();
    for bad in [
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:99999",
        ":8080",
        "::1:8080",
    ] {
        for r in [
            f.run(&["serve", "--listen", bad]),
            f.run_env(&["serve"], &[("MPFLEET_LISTEN", bad)]),
        ] {
            assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
            assert!(
                r.stderr.starts_with("error: invalid value")
                    && r.stderr.contains("invalid listen address")
                    && r.stderr.contains("HOST:PORT"),
                "{bad}: {}",
                r.stderr
            );
        }
    }
    assert!(!f.data().exists(), "a refused serve created the store");
    // A name is looked up when binding, as before.
    let s = crate::harness::Server::start_at(&f.data(), "localhost:0", &[]);
    assert!(s.base.starts_with("http://"), "{}", s.base);
}
