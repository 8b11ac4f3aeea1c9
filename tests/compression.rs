//! Compressed downloads (`src/compress.rs`, docs/protocol.md): a board with the heap for it
//! fetches a file's gzip copy and inflates it while it hashes and writes; what lands on its
//! flash is the plain file, checked against the plain file's size and SHA-256. A board that
//! does not ask gets the plain bytes, and a copy that breaks off or is corrupted is refused
//! like a plain file.

use crate::harness::{fleet_with_board, Fault, FaultProxy, Fleet, Server, SimBoard};
use std::io::Read;

const MAC: &str = "deadbeef1234";

/// Version 2 of `sensorclass`: real prose as comments, about 6 KB, which gzip about halves.
fn version_two() -> String {
    let mut s = String::from("VALUE = 'two'\n");
    for line in include_str!("../docs/protocol.md").lines().take(120) {
        s.push_str("# ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A fleet whose board runs `sensorclass` 1, with version 2 (source only: a comment-only
/// `.mpy` would be tiny) published and served.
fn published(f: &Fleet, s: &Server) {
    let file = f.file("sensorclass.py", &version_two());
    let r = f.run_env(
        &["module", "publish", file.to_str().unwrap()],
        &[("MPFLEET_MPY_CROSS", "")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    s.wait_get(&format!("v1/{MAC}.json"), |r| {
        r.json()["modules"]["sensorclass"]["version"] == "2"
    });
}

fn installed(f: &Fleet, base: &str) -> SimBoard {
    let b = SimBoard::new(f, MAC);
    let run = b.boot(base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    b
}

/// The bytes on the board's flash for sensorclass 2 are the plain file the server serves.
fn installed_plain(b: &SimBoard, s: &Server) {
    let files = b.ls("ota/m/sensorclass");
    let file = files
        .iter()
        .find(|f| f.starts_with("2-"))
        .unwrap_or_else(|| panic!("version 2 not installed: {files:?}"));
    let on_flash = std::fs::read(b.flash.join(format!("ota/m/sensorclass/{file}"))).unwrap();
    assert_eq!(on_flash, s.get("m/sensorclass/2.py").body);
    assert_eq!(on_flash, version_two().as_bytes());
}

/// The board asked for an update boots until it runs sensorclass 2, having fetched `file`
/// through `base` (the server, or a proxy in front of it), with the plain bytes on flash.
fn updates_fetching(b: &SimBoard, s: &Server, base: &str, file: &str) {
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP two primary"),
        "{}",
        run.out
    );
    assert_eq!(s.downloads(mark), [file]);
    installed_plain(b, s);
}

#[test]
fn an_update_fetches_the_gzip_copy_and_installs_the_plain_bytes() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let b = installed(&f, &s.base);
    published(&f, &s);
    let manifest = s.get(&format!("v1/{MAC}.json")).json();
    let entry = &manifest["modules"]["sensorclass"];
    assert_eq!(entry["gz"]["url"], "m/sensorclass/2.py.gz", "{entry}");
    let copy = s.get("m/sensorclass/2.py.gz");
    assert_eq!(copy.status, 200);
    assert_eq!(copy.content_type.as_deref(), Some("application/gzip"));
    assert_eq!(Some(copy.body.len() as u64), entry["gz"]["size"].as_u64());
    let plain = version_two().len();
    assert!(
        copy.body.len() * 10 < plain * 6,
        "{} of {plain} bytes",
        copy.body.len()
    );
    updates_fetching(&b, &s, &s.base, "/m/sensorclass/2.py.gz");
}

#[test]
fn a_board_short_of_heap_fetches_the_plain_file() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let mut b = installed(&f, &s.base);
    published(&f, &s);
    // The heap the update budget allows: too little to spare 1 KiB of window and the
    // decoder's state, so the board asks for the plain file, and still updates.
    b.heap = (crate::heap::floor() + crate::heap::UPDATE_MPY_BUDGET).to_string();
    updates_fetching(&b, &s, &s.base, "/m/sensorclass/2.py");
}

/// A copy that breaks off, or has a byte changed, is refused: the configuration stays, the
/// board reports `update_failed`, and with the fault gone the same update completes.
fn refused(fault: Fault, error: &str) {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    let proxy = FaultProxy::start(&s.base);
    let b = installed(&f, &proxy.base);
    let before = b.read("ota/primary.json").unwrap();
    published(&f, &s);
    proxy.set(fault, "m/sensorclass/2.py.gz");
    let mark = s.mark();
    b.ask_for_update();
    let run = b.boot(&proxy.base, 6);
    assert!(run.settled(), "{}", run.out);
    assert!(
        run.last_app_line().starts_with("APP one primary"),
        "{}",
        run.out
    );
    assert_eq!(s.downloads(mark), ["/m/sensorclass/2.py.gz"]);
    assert!(
        run.out.contains(&format!("mpfleet: update_failed {error}")),
        "{}",
        run.out
    );
    assert_eq!(
        b.read("ota/primary.json").unwrap(),
        before,
        "configuration changed"
    );
    assert!(b.ls("ota/tmp").is_empty(), "{:?}", b.ls("ota/tmp"));
    assert_eq!(b.rtc()["update_failed"], true);

    proxy.set(Fault::None, "");
    updates_fetching(&b, &s, &proxy.base, "/m/sensorclass/2.py.gz");
}

#[test]
fn a_truncated_gzip_copy_is_refused() {
    refused(
        Fault::Truncate,
        "ValueError: m/sensorclass/2.py.gz: cannot inflate (EOFError",
    );
}

#[test]
fn a_corrupted_gzip_copy_is_refused() {
    // A changed byte either breaks the deflate stream or the SHA-256 of what it inflates to.
    refused(Fault::FlipByte, "ValueError: m/sensorclass/2.py.gz: ");
}

#[test]
fn a_client_that_asks_for_gzip_on_a_plain_path_gets_plain_bytes() {
    let f = fleet_with_board(MAC, &[]);
    let s = f.serve();
    published(&f, &s);
    let resp = ureq::get(&format!("{}m/sensorclass/2.py", s.base))
        .set("Accept-Encoding", "gzip")
        .call()
        .unwrap();
    assert_eq!(resp.header("content-encoding"), None);
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    assert_eq!(body, version_two().as_bytes());
}
