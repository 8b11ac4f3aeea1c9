//! A real headless Chromium (Debian's `chromium`, which `./test.sh` installs): [`dump_dom`]
//! runs one for one page and gives the DOM after the page loaded (what the browser made of
//! the HTML, not the bytes sent); a [`Browser`] is kept running and driven over the DevTools
//! protocol, to load many pages fast, take screenshots at a given viewport, and fill in and
//! submit forms with its own cookies. Each gets a profile of its own, so tests run in
//! parallel, and every wait a wall-clock deadline.

use super::output_within;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one page load may take, Chromium's start included, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The browser: `MPFLEET_CHROMIUM` (unless empty), else `chromium` on PATH.
fn binary() -> PathBuf {
    std::env::var_os("MPFLEET_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

/// Headless Chromium with a profile of its own in `profile`, as every test runs it.
fn headless(profile: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    cmd
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
    let mut cmd = headless(&profile);
    cmd.args(["--hide-scrollbars"]).args(args);
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

/// Width and height from a PNG's header (failing the test if it is not a PNG).
fn png_size(png: &[u8], path: &Path) -> (u32, u32) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 24,
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Decodes standard base64 (what the DevTools protocol sends binary data as).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A headless Chromium kept running and driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: JSON messages ending in a NUL byte on file descriptors 3 and
/// 4; no client library): a browser with its cookies that loads pages, fills in and submits
/// forms as a user does. Killed when dropped.
pub struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Events received while waiting for something else.
    events: Vec<serde_json::Value>,
    next: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Self {
        use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two descriptors into the array it is given.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: both descriptors were just created and are owned here only.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let (child_reads, we_write) = pipe();
        let (we_read, child_writes) = pipe();
        let (r, w) = (child_reads.into_raw_fd(), child_writes.into_raw_fd());
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = headless(&profile);
        cmd.arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec; dup2 gives the child
        // descriptors 3 and 4 without close-on-exec. Both ends are first copied above 9:
        // either may itself be 3 or 4 (the test process opens and closes descriptors on many
        // threads), and dup2 onto itself would keep close-on-exec, or overwrite the other.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::fcntl(r, libc::F_DUPFD, 10);
                let w = libc::fcntl(w, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): install Debian's chromium (./test.sh does) or set \
                 MPFLEET_CHROMIUM",
                binary().display()
            )
        });
        // SAFETY: the child has its copies; these are ours and closed once.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = std::fs::File::from(we_read);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let message: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&message[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Self {
            child,
            to: std::fs::File::from(we_write),
            from: rx,
            events: Vec::new(),
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call(
            "Target.createTarget",
            serde_json::json!({"url": "about:blank"}),
        );
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = b.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b.call("Page.enable", serde_json::json!({}));
        b
    }

    /// Sends a command (to the page once attached) and returns its result.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        self.next += 1;
        let id = self.next;
        let mut message = serde_json::json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("writing to chromium");
        let answer = self.receive(&format!("the answer to {method}"), |m| m["id"] == id);
        assert!(
            answer.get("error").is_none(),
            "{method} {params}: {answer}",
            params = message["params"]
        );
        answer["result"].clone()
    }

    /// The first message (an event kept from before included) that `wanted` takes.
    fn receive(
        &mut self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(i) = self.events.iter().position(&wanted) {
            return self.events.remove(i);
        }
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.from.recv_timeout(left) {
                Ok(m) if wanted(&m) => return m,
                Ok(m) => {
                    if m.get("method").is_some() {
                        self.events.push(m);
                    }
                }
                Err(e) => panic!("chromium: no {what} within {DEADLINE:?} ({e})"),
            }
        }
    }

    /// Runs `action` (which makes the page navigate) and waits until the next page loaded.
    fn loading(&mut self, action: impl FnOnce(&mut Self)) {
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        action(self);
        self.receive("a page load", |m| m["method"] == "Page.loadEventFired");
    }

    /// Loads `url` and waits for the page.
    pub fn open(&mut self, url: &str) {
        self.loading(|b| {
            let r = b.call("Page.navigate", serde_json::json!({"url": url}));
            assert!(r.get("errorText").is_none(), "{url}: {r}");
        });
    }

    /// Evaluates `expression` in the page (as DevTools does: the page's own policy forbids
    /// scripts) and returns its value.
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Clicks the element `selector` names (a form's button: the browser submits the form),
    /// and waits for the page it leads to.
    pub fn click(&mut self, selector: &str) {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; \
             e.click(); return true; }})()",
            serde_json::Value::from(selector)
        );
        self.loading(|b| assert_eq!(b.eval(&expression), true, "no {selector}"));
    }

    /// The page's address and its text as shown.
    pub fn location(&mut self) -> String {
        self.eval("location.href")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's DOM, serialised as HTML (what `--dump-dom` prints).
    pub fn html(&mut self) -> String {
        let html = self
            .eval("'<!DOCTYPE html>\\n' + document.documentElement.outerHTML")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(html.contains("</html>"), "no page: {html}");
        html
    }

    /// Loads `url` and returns its DOM.
    pub fn dom(&mut self, url: &str) -> String {
        self.open(url);
        self.html()
    }

    /// A PNG of `url` in a viewport `width` × `height` CSS pixels (a phone's when narrow),
    /// written to `path`; returns the image's size in pixels as the PNG says it. The viewport
    /// stays at that size for the pages after.
    pub fn screenshot(&mut self, url: &str, path: &Path, width: u32, height: u32) -> (u32, u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1,
                               "mobile": width < 600}),
        );
        self.open(url);
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        let png = base64(shot["data"].as_str().expect("screenshot data"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, &png).unwrap();
        png_size(&png, path)
    }

    pub fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Its own process group: its helpers (renderer, GPU, zygote) die with it.
        // SAFETY: a signal to a process group this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
