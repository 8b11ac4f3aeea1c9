//! Delta downloads (`src/delta.rs`, docs/protocol.md): a board moving a module from a version
//! it has to a newer one fetches a delta against the file on its flash when the manifest lists
//! one, applies it into `/ota/tmp/` in a boot of its own (`updater_delta`, before the
//! installer's) and checks the result like any download. A delta that breaks off or is
//! corrupted, or a base file that is not what its name says, leaves the installer to fetch the
//! whole file; a power cut while a delta applies leaves the board as any cut does.

use crate::harness::{
    fleet_with_board, Fault, FaultProxy, Fleet, ImageBoard, Server, SimBoard, StaticFiles,
};

const MAC: &str = "deadbeef1234";

/// `sensorclass` of about 20 KB: `VALUE`, then 40 functions of a dozen lines.
fn big(value: &str) -> String {
    let mut s = format!("VALUE = '{value}'\n\n");
    for i in 0..40 {
        s.push_str(&format!("def reading_{i}(sensor, offset=0):\n"));
        s.push_str("    # Read the sensor a few times, drop the extremes, scale.\n");
        for j in 0..10 {
            s.push_str(&format!(
                "    r{j} = sensor.read({i}, channel={j}) * {} + offset\n",
                (i * 7 + j) % 13
            ));
        }
        s.push_str("    return (r0 + r1 + r2 + r3 + r4 + r5 + r6 + r7 + r8 + r9) / 10\n\n");
    }
    s
}

/// Publishes `sensorclass` `source` and waits until the board's manifest names `version`.
fn publish(f: &Fleet, s: &Server, source: &str, version: &str) {
    f.publish("sensorclass", source, &[]);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == version
    });
}

/// The manifest entry of `sensorclass` the board takes: its `.mpy` variant (the fleet
/// precompiles).
fn mpy_entry(s: &Server) -> serde_json::Value {
    let entry = s.get(&format!("v1/{MAC}.json")).json()["modules"]["sensorclass"].clone();
    assert!(entry["mpy"].is_object(), "{entry}");
    entry["mpy"].clone()
}

/// A board running the big `sensorclass` 2 (installed whole: version 1 is too small for a
/// delta to be worth it), with version 3, one line changed, published.
fn on_two_with_three(f: &Fleet, s: &Server, base: &str) -> SimBoard {
    let b = SimBoard::new(f, MAC);
    assert!(b.boot(base, 6).settled());
    publish(f, s, &big("two"), "2");
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(base, 6);
    assert_eq!(
        run.last_app_line().split(' ').nth(1),
        Some("two"),
        "{}",
        run.out
    );
    assert!(
        s.downloads(mark).iter().all(|d| !d.contains(".from-")),
        "{:?}",
        s.downloads(mark)
    );
    publish(f, s, &big("three"), "3");
    b
}

/// The board asked for an update boots until it runs `sensorclass` 3, with the bytes of
/// version 3's `.mpy` on its flash, having fetched exactly `fetched` for it.
fn updates_to_three(b: &SimBoard, s: &Server, base: &str, fetched: &[&str]) -> String {
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(base, 8);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP three primary"),
        "{}",
        run.out
    );
    let got: Vec<String> = s
        .downloads(mark)
        .into_iter()
        .filter(|d| d.starts_with("/m/sensorclass/"))
        .collect();
    assert_eq!(got, fetched, "{}", run.out);
    let file = b
        .ls("ota/m/sensorclass")
        .into_iter()
        .find(|f| f.starts_with("3-"))
        .expect("version 3 installed");
    let on_flash = std::fs::read(b.flash.join(format!("ota/m/sensorclass/{file}"))).unwrap();
    assert_eq!(on_flash, s.get("m/sensorclass/3.mpy").body);
    run.out
}

/// What a board fetches of version 3 when it takes no delta: the `.mpy`'s gzip copy if it
/// has one (it has the heap for it), else the `.mpy`.
fn whole(s: &Server) -> String {
    let entry = mpy_entry(s);
    let url = entry["gz"]["url"]
        .as_str()
        .or(entry["url"].as_str())
        .unwrap();
    format!("/{url}")
}

/// The delta the manifest offers from version 2's `.mpy`.
fn delta_path(s: &Server) -> String {
    let two = s.get("m/sensorclass/2.mpy").body;
    let sha = mpfleet::store::sha256_hex(&two);
    let entry = mpy_entry(s);
    assert_eq!(entry["from"], serde_json::json!([&sha[..12]]), "{entry}");
    format!("/m/sensorclass/3.mpy.from-{}", &sha[..12])
}

#[test]
fn a_one_line_change_travels_as_a_delta_of_under_2_percent() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = on_two_with_three(&f, &s, &s.base);
    let path = delta_path(&s);
    updates_to_three(&b, &s, &s.base, &[&path]);
    // On the wire: the delta, against the module (source, and what the board loads).
    let delta = s.get(path.trim_start_matches('/'));
    assert_eq!(delta.status, 200);
    let source = big("three").len();
    let mpy = s.get("m/sensorclass/3.mpy").body.len();
    assert!(
        delta.body.len() * 50 < mpy,
        "{} bytes of delta for a {mpy}-byte .mpy",
        delta.body.len()
    );
    // The source variant's delta, for a board that loads source.
    let py_sha = mpfleet::store::sha256_hex(big("two").as_bytes());
    let py_delta = s.get(&format!("m/sensorclass/3.py.from-{}", &py_sha[..12]));
    assert_eq!(py_delta.status, 200);
    assert!(
        py_delta.body.len() * 50 < source,
        "{} bytes of delta for {source} bytes of source",
        py_delta.body.len()
    );
    eprintln!(
        "FIGURES delta: {} bytes for {mpy} bytes of .mpy; {} bytes for {source} bytes of source",
        delta.body.len(),
        py_delta.body.len()
    );
}

#[test]
fn a_board_updates_by_delta_from_a_static_export() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = on_two_with_three(&f, &s, &s.base);
    let path = delta_path(&s);
    let www = f.dir.path().join("www");
    f.ok(&["export", www.to_str().unwrap()]);
    let exported = std::fs::read(www.join(&path[1..])).expect("the export holds the delta");
    assert_eq!(exported, s.get(&path[1..]).body);
    let web = StaticFiles::start(www);
    b.ask_for_update();
    let run = b.boot(&web.base, 8);
    assert!(
        run.last_app_line().starts_with("APP three primary"),
        "{}",
        run.out
    );
    assert!(
        run.out
            .contains(&format!("mpfleet: downloading {}", &path[1..])),
        "{}",
        run.out
    );
    assert!(!run.out.contains("no delta"), "{}", run.out);
}

/// A delta that breaks off, has a byte changed or is not sent does not apply: the board
/// fetches the whole file (its gzip copy) in the same boot and updates.
fn falls_back(fault: Fault, why: &str) {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let proxy = FaultProxy::start(&s.base);
    let b = on_two_with_three(&f, &s, &proxy.base);
    let path = delta_path(&s);
    proxy.set(fault, path.trim_start_matches('/'));
    // The server sees the delta asked for unless the proxy answers in its place.
    let asked: &[&str] = match fault {
        Fault::Status500 => &[],
        _ => &[&path],
    };
    let whole = whole(&s);
    let fetched: Vec<&str> = asked.iter().copied().chain([whole.as_str()]).collect();
    let out = updates_to_three(&b, &s, &proxy.base, &fetched);
    assert!(
        out.contains(&format!("mpfleet: downloading {}", &path[1..])),
        "{out}"
    );
    assert!(out.contains(&format!("mpfleet: no delta: {why}")), "{out}");
    assert!(!out.contains("update_failed"), "{out}");
}

#[test]
fn a_truncated_delta_falls_back_to_the_whole_file() {
    falls_back(Fault::Truncate, "OSError ");
}

#[test]
fn a_corrupted_delta_falls_back_to_the_whole_file() {
    // A changed byte in an operation breaks it; in inserted bytes, the SHA-256.
    falls_back(Fault::FlipByte, "");
}

#[test]
fn a_delta_the_server_fails_to_send_falls_back_to_the_whole_file() {
    falls_back(Fault::Status500, "OSError HTTP 500");
}

#[test]
fn a_base_file_that_is_not_what_its_name_says_falls_back_to_the_whole_file() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = on_two_with_three(&f, &s, &s.base);
    let path = delta_path(&s);
    // Version 2's file on flash, changed behind the board's back (same name, other bytes:
    // still a module that loads, so the board runs it until the update).
    let file = b
        .ls("ota/m/sensorclass")
        .into_iter()
        .find(|f| f.starts_with("2-") && f.ends_with(".mpy"))
        .unwrap();
    let on_flash = b.flash.join(format!("ota/m/sensorclass/{file}"));
    let mut other = std::fs::read(&on_flash).unwrap();
    let name = b"reading_20"; // a function's name: bytes version 3 has too
    let at = other
        .windows(name.len())
        .position(|w| w == name)
        .expect("in the .mpy");
    other[at..at + name.len()].copy_from_slice(b"readinx_20");
    std::fs::write(&on_flash, &other).unwrap();
    let out = updates_to_three(&b, &s, &s.base, &[&path, &whole(&s)]);
    assert!(out.contains(": sha256 mismatch"), "{out}");
    assert!(out.contains("mpfleet: no delta: ValueError "), "{out}");
}

#[test]
fn a_power_cut_while_a_delta_applies_leaves_the_board_as_any_cut_does() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let dir = f.dir.path().join("image");
    let mut b = ImageBoard::new(dir.clone(), MAC);
    b.data = Some(f.data());
    assert!(b.boot_with(&s.base, 6, false, None).settled());
    publish(&f, &s, &big("two"), "2");
    assert!(b.boot_with(&s.base, 6, true, None).settled());
    publish(&f, &s, &big("three"), "3");
    let path = delta_path(&s);
    // How many flash writes the whole update takes, and where the delta's are.
    let whole = b.copy_to(f.dir.path().join("whole"), MAC);
    let mark = s.mark();
    let run = whole.boot_with(&s.base, 8, true, None);
    assert!(
        run.last_app_line().starts_with("APP three primary"),
        "{}",
        run.out
    );
    assert_eq!(
        s.downloads(mark)
            .iter()
            .filter(|d| d.starts_with("/m/sensorclass/"))
            .collect::<Vec<_>>(),
        [&path]
    );
    let writes = run.flash_writes();
    // Where the delta boot's writes are: each boot says how many it made (`writes=N`).
    let mut before = 0;
    let mut install = None;
    for boot in run.out.split("--- boot ") {
        let n: u64 = boot
            .lines()
            .find_map(|l| l.split_once("] writes=").and_then(|(_, n)| n.parse().ok()))
            .unwrap_or(0);
        if boot.contains(&format!("downloading {}", &path[1..])) {
            install = Some((before, n));
        }
        before += n;
    }
    let (start, n) = install.unwrap_or_else(|| panic!("no delta boot:\n{}", run.out));
    assert!(n > 0, "{}", run.out);
    // Cut at points spread over the delta boot's writes (the new file lands in /ota/tmp/dl,
    // then moves into place) and over the whole update; each board then
    // boots without a cut, runs version 2 or 3, and a second request ends on 3.
    let mut cuts: Vec<u64> = (0..6).map(|i| start + 1 + i * (n - 1) / 5).collect();
    cuts.extend((1..writes).step_by((writes / 4).max(1) as usize));
    cuts.sort_unstable();
    cuts.dedup();
    eprintln!("delta: {writes} writes, the delta boot's {start}+1..={start}+{n}; cuts {cuts:?}");
    for k in cuts {
        let c = b.copy_to(f.dir.path().join(format!("cut-{k}")), MAC);
        let cut = c.boot_with(&s.base, 8, true, Some(k));
        assert!(cut.power_cut(), "cut {k} of {writes}: {}", cut.out);
        let after = c.boot_with(&s.base, 8, false, None);
        assert!(after.settled(), "cut {k}: {}", after.out);
        let line = after.last_app_line();
        assert!(
            line.starts_with("APP two primary") || line.starts_with("APP three primary"),
            "cut {k}: {line}\n{}",
            after.out
        );
        let again = c.boot_with(&s.base, 8, true, None);
        assert!(
            again.last_app_line().starts_with("APP three primary"),
            "cut {k}: {}",
            again.out
        );
    }
}
