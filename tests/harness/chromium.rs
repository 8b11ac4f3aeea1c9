//! A real headless Chromium (Debian's `chromium`, which `./test.sh` installs), run once per
//! page as a user's browser would load it: [`dump_dom`] gives the DOM after the page loaded
//! (what the browser made of the HTML, not the bytes sent), [`screenshot`] writes a PNG at
//! a given window size. Each run gets a profile of its own, so tests run in parallel, and a
//! wall-clock deadline.

use super::output_within;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one page load may take, Chromium's start included, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The browser: `MPFLEET_CHROMIUM`, else `chromium` on PATH.
fn binary() -> PathBuf {
    std::env::var_os("MPFLEET_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

fn run(what: &str, args: &[&str]) -> String {
    static FOUND: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        if let Err(e) = Command::new(binary()).arg("--version").output() {
            panic!(
                "cannot run {} ({e}): install Debian's chromium (./test.sh does) or set \
                 MPFLEET_CHROMIUM",
                binary().display()
            );
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args);
    let out = output_within(&mut cmd, what, DEADLINE);
    assert!(
        out.status.success(),
        "{what}: chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM of `url` once loaded, serialised as HTML.
pub fn dump_dom(url: &str) -> String {
    let dom = run(&format!("chromium --dump-dom {url}"), &["--dump-dom", url]);
    assert!(dom.contains("</html>"), "no page from {url}:\n{dom}");
    dom
}

/// A PNG of `url` in a window `width` × `height` CSS pixels, written to `path`; returns the
/// image's size in pixels as the PNG says it.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) -> (u32, u32) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let _ = std::fs::remove_file(path);
    run(
        &format!("chromium --screenshot {url}"),
        &[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size={width},{height}"),
            "--force-device-scale-factor=1",
            url,
        ],
    );
    let png = std::fs::read(path)
        .unwrap_or_else(|e| panic!("chromium wrote no screenshot {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 24,
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}
