//! `mpfleet export`: the same bytes as `serve`, swapped in whole, deterministic.

use crate::harness::Fleet;
use std::collections::BTreeMap;
use std::path::Path;

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn fleet() -> Fleet {
    let f = Fleet::smartcharger();
    f.ok(&[
        "device",
        "set",
        "deadbeef1234",
        "--app",
        "smartcharger",
        "sensorclass=1",
    ]);
    f.ok(&["device", "set", "aabbccddeeff", "--app", "smartcharger"]);
    f
}

#[test]
fn export_matches_serve_byte_for_byte() {
    let f = fleet();
    let out = f.dir.path().join("www/ota");
    assert!(f
        .ok(&["export", out.to_str().unwrap()])
        .contains("exported"));
    let files = tree(&out);
    let s = f.serve();
    let mut served = 0;
    for (path, bytes) in &files {
        if path == ".mpfleet-export" {
            continue;
        }
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(&r.body, bytes, "{path} differs between serve and export");
        served += 1;
    }
    for expected in [
        "deadbeef1234",
        "aabbccddeeff",
        "latestversions",
        "sensorclass.py",
        "smartcharger.py",
        "config.py",
        "updater.py",
        "m/sensorclass/1.py",
        "m/sensorclass/2.py",
        "v1/deadbeef1234.json",
        "v1/aabbccddeeff.json",
    ] {
        assert!(
            files.contains_key(expected),
            "{expected} not exported: {:?}",
            files.keys()
        );
    }
    assert!(served >= 11);
}

#[test]
fn export_twice_is_identical_and_replaces_whole() {
    let f = fleet();
    let out = f.dir.path().join("ota");
    f.ok(&["export", out.to_str().unwrap()]);
    let first = tree(&out);
    f.ok(&["export", out.to_str().unwrap()]);
    assert_eq!(tree(&out), first);
    // A removed device disappears from the next export: the tree is replaced, not merged.
    f.ok(&["device", "rm", "aabbccddeeff"]);
    f.ok(&["export", out.to_str().unwrap()]);
    let third = tree(&out);
    assert!(!third.contains_key("v1/aabbccddeeff.json"));
    assert!(third.contains_key("v1/deadbeef1234.json"));
    // No staging directory is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".new-") || n.ends_with(".old"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn export_refuses_to_replace_a_foreign_directory() {
    let f = fleet();
    let www = f.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "mine").unwrap();
    let err = f.fails(&["export", www.to_str().unwrap()]);
    assert!(err.contains("refusing to replace"), "{err}");
    assert_eq!(
        std::fs::read_to_string(www.join("index.html")).unwrap(),
        "mine"
    );
}

#[test]
fn staging_left_by_a_killed_export_is_removed_by_the_next() {
    let f = fleet();
    let www = f.dir.path().join("www");
    let dead = crate::harness::dead_pid();
    let leftovers = [
        www.join(format!(".ota.new-{dead}")),
        www.join(format!(".ota.old-{dead}")),
    ];
    // Still being written by a live process (this test's own), or not an export of `ota`.
    let kept = [
        www.join(format!(".ota.new-{}", std::process::id())),
        www.join(format!(".other.new-{dead}")),
        www.join(format!(".ota.new-{dead}-mine")),
    ];
    for d in leftovers.iter().chain(&kept) {
        std::fs::create_dir_all(d.join("v1")).unwrap();
        std::fs::write(d.join("v1/half.json"), "{").unwrap();
    }
    f.ok(&["export", www.join("ota").to_str().unwrap()]);
    for d in &leftovers {
        assert!(!d.exists(), "{} is still there", d.display());
    }
    for d in &kept {
        assert!(
            d.join("v1/half.json").exists(),
            "{} was removed",
            d.display()
        );
    }
    assert!(www.join("ota/v1/deadbeef1234.json").exists());
}
