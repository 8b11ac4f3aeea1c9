//! The board side of `mpfleet provision`: a MicroPython board on a serial port, driven over
//! its raw REPL (the protocol `mpremote` uses). It says who it is (its Wi-Fi MAC and
//! MicroPython release), takes a file (written in verified pieces and renamed into place,
//! see `upload`), and runs its bootstrap, whose outcome it reads from what the board prints.
//! What the store does with the board is `commands::provision`'s.

pub mod repl;
pub mod serial;
pub mod upload;

use anyhow::{anyhow, bail, Result};
use repl::{Link, Ran, RawRepl, ReplError};
use std::time::{Duration, Instant};

/// Where the board's bootstrap is written. The first stage empties `/ota/tmp/` at every boot,
/// so the file (it holds the board's key) is gone after the reset that ends a provisioning.
pub const BOOTSTRAP_PATH: &str = "/ota/tmp/mpfleet_provision.py";

/// What the first stage prints just before it imports the app.
const APP_STARTS: &str = "mpfleet: running ";

/// How long the bootstrap may stay silent (each download prints a line; the board's own
/// network timeouts are 10 s).
const BOOTSTRAP_SILENCE: Duration = Duration::from_secs(60);

/// How long a board that reset may take to boot into its app (boot.py joins Wi-Fi first).
const BOOT_WAIT: Duration = Duration::from_secs(30);

/// A board in raw REPL mode on `port`.
pub struct Board<L: Link> {
    repl: RawRepl<L>,
    port: String,
}

/// What a board says about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its station MAC, 12 hex digits.
    pub mac: String,
    /// `sys.implementation.version`, (major, minor, micro).
    pub version: (u32, u32, u32),
}

/// How a bootstrap run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Installed and reset; `started` when the board then said it runs its app.
    Reset { started: bool },
}

impl<L: Link> Board<L> {
    /// Interrupts whatever the board runs and enters its raw REPL, or says why not.
    pub fn connect(link: L, port: &str, timeout: Duration) -> Result<Self> {
        let repl = RawRepl::enter(link, timeout).map_err(|e| match e {
            ReplError::NoAnswer => anyhow!(
                "the board on {port} does not answer (waited {:.0?}): is it powered, and \
                 running MicroPython? Unplug it and plug it in again, then retry",
                timeout
            ),
            ReplError::NotMicroPython(said) => anyhow!(
                "something answers on {port}, but not MicroPython's raw REPL (it said \
                 {said:?}): is MicroPython flashed on this board? \
                 (https://micropython.org/download/)"
            ),
            e => anyhow!("{port}: {e}"),
        })?;
        Ok(Self {
            repl,
            port: port.to_owned(),
        })
    }

    /// The board's MAC and MicroPython release.
    pub fn identify(&mut self) -> Result<Identity> {
        let said = self
            .repl
            .exec(
                "import binascii,network,sys\n\
                 print(binascii.hexlify(network.WLAN(network.STA_IF).config('mac')).decode(),\
                 '%d.%d.%d'%sys.implementation.version[:3])",
            )
            .map_err(|e| match e {
                ReplError::Raised(tb) if tb.contains("'network'") => anyhow!(
                    "the board on {} has no Wi-Fi (MicroPython without a `network` module): \
                     mpfleet boards update over Wi-Fi (ESP8266, ESP32)",
                    self.port
                ),
                e => self.lost(e, "reading its MAC"),
            })?;
        let mut words = said.split_whitespace();
        let (Some(mac), Some(version)) = (words.next(), words.next()) else {
            bail!(
                "the board on {} did not say its MAC and version: {said:?}",
                self.port
            );
        };
        let v: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
        Ok(Identity {
            mac: mac.to_owned(),
            version: (
                v.first().copied().unwrap_or(0),
                v.get(1).copied().unwrap_or(0),
                v.get(2).copied().unwrap_or(0),
            ),
        })
    }

    /// Writes `bytes` to `path` on the board, verified, renamed into place.
    pub fn write_file(
        &mut self,
        path: &str,
        bytes: &[u8],
        progress: impl FnMut(usize),
    ) -> Result<()> {
        upload::write_file(&mut self.repl, path, bytes, progress).map_err(|e| match e {
            upload::UploadError::Repl(e) => self.lost(e, &format!("writing {path}")),
            e => e.into(),
        })
    }

    /// Runs the bootstrap written at [`BOOTSTRAP_PATH`]. A bootstrap that works resets the
    /// board (and never returns); one that returns failed and said why. `line` sees every
    /// line the board prints. On failure the bootstrap file (it holds the key) is removed.
    pub fn run_bootstrap(&mut self, mut line: impl FnMut(&str)) -> Result<Outcome> {
        let module = BOOTSTRAP_PATH
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".py"))
            .expect("a .py path");
        let dir = &BOOTSTRAP_PATH[..BOOTSTRAP_PATH.rfind('/').expect("a path")];
        let code = format!(
            "import sys\n\
             for m in ({module:?},'updater'):sys.modules.pop(m,None)\n\
             sys.path.insert(0,{dir:?})\n\
             import {module}\n"
        );
        let mut said = Vec::new();
        let mut installed = false;
        let mut started = false;
        let ran = self
            .repl
            .run(&code, BOOTSTRAP_SILENCE, |l| {
                line(l);
                said.push(l.to_owned());
                // The updater's verdict: "mpfleet: updated N" or, on a board that runs
                // that generation already, "mpfleet: boot N"; the reset follows.
                installed |= verdict(l);
                started |= l.starts_with(APP_STARTS);
                installed || started
            })
            .map_err(|e| self.lost(e, "running its bootstrap"))?;
        match ran {
            Ran::Returned { err, .. } => {
                self.forget_bootstrap();
                if !err.trim().is_empty() {
                    if upload::is_enospc(&err) {
                        bail!("the board's flash is full (OSError 28): free some space on it, or erase it and flash MicroPython again");
                    }
                    bail!("the bootstrap raised on the board:\n{}", err.trim_end());
                }
                Err(failure(&said))
            }
            Ran::Silent(_) if !installed => {
                if let Some(e) = said.iter().find(|l| failed(l)) {
                    bail!("the board's bootstrap failed and it reset: {e}");
                }
                bail!(
                    "the board on {} stopped answering while it ran its bootstrap{}: run \
                     mpfleet provision again (it is safe to)",
                    self.port,
                    said.last()
                        .map(|l| format!(" (last it said: {l:?})"))
                        .unwrap_or_default()
                )
            }
            Ran::Silent(_) | Ran::Stopped(_) => {
                if !started {
                    // It resets after installing /main.py; then it boots into the app.
                    let deadline = Instant::now() + BOOT_WAIT;
                    let mut failure = None;
                    started = self
                        .repl
                        .watch(BOOT_WAIT, deadline, |l| {
                            line(l);
                            if failed(l) {
                                failure = Some(l.to_owned());
                            }
                            l.starts_with(APP_STARTS) || failure.is_some()
                        })
                        .unwrap_or(false);
                    if let Some(e) = failure {
                        bail!("the board's bootstrap failed: {e}");
                    }
                }
                Ok(Outcome::Reset { started })
            }
        }
    }

    /// Best effort: removes the bootstrap (and a piece of it) from the board.
    fn forget_bootstrap(&mut self) {
        let _ = self.repl.exec(&format!(
            "import os\n\
             for p in ({BOOTSTRAP_PATH:?},{:?}):\n\
             \x20try:os.remove(p)\n\
             \x20except OSError:pass\n",
            format!("{BOOTSTRAP_PATH}.part")
        ));
    }

    /// A REPL error while doing `what`, in words.
    fn lost(&self, e: ReplError, what: &str) -> anyhow::Error {
        match e {
            ReplError::NoAnswer | ReplError::Protocol(_) => anyhow!(
                "the board on {} stopped answering while {what}: check the cable and run \
                 mpfleet provision again (it is safe to)",
                self.port
            ),
            ReplError::Raised(tb) => anyhow!("{what}: the board raised:\n{}", tb.trim_end()),
            e => anyhow!("{what}: {e}"),
        }
    }
}

/// "mpfleet: updated 3" or "mpfleet: boot 3": the updater's verdict before the reset.
fn verdict(line: &str) -> bool {
    ["mpfleet: updated ", "mpfleet: boot "].iter().any(|p| {
        line.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// A line saying the bootstrap, or the update it runs, failed.
fn failed(line: &str) -> bool {
    line.starts_with("mpfleet: bootstrap failed")
        || line.starts_with("mpfleet: update_failed")
        || line.starts_with("mpfleet: server_failed")
}

/// Why a bootstrap that returned failed, from what it printed.
fn failure(said: &[String]) -> anyhow::Error {
    let text = said.join("\n");
    if upload::is_enospc(&text) || text.contains("no room") {
        return anyhow!(
            "the board's flash is full: free some space on it, or erase it and flash \
             MicroPython again; the board said:\n{}",
            text.trim_end()
        );
    }
    if text.contains("not assigned on the server yet") {
        return anyhow!(
            "the server does not know this board yet: is `mpfleet serve` running on this \
             store at the --server URL (for a static export: run `mpfleet export` again)? \
             The board said:\n{}",
            text.trim_end()
        );
    }
    if unreachable(&text) {
        return anyhow!(
            "the board cannot reach the server at the --server URL: is `mpfleet serve` \
             running there, is the URL right as the board sees it (not 127.0.0.1), and does \
             the board's boot.py join your Wi-Fi? The board said:\n{}",
            text.trim_end()
        );
    }
    anyhow!(
        "the board's bootstrap failed; it said:\n{}",
        text.trim_end()
    )
}

/// Whether the board's words are a network error: no route, refused, timed out, no DNS
/// (`OSError: -2`, `-202` on an ESP32), or Wi-Fi down.
fn unreachable(text: &str) -> bool {
    let Some(at) = text.find("bootstrap failed: OSError") else {
        return false;
    };
    let e = &text[at..];
    [
        "ECONNREFUSED",
        "ECONNRESET",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ETIMEDOUT",
        "ECONNABORTED",
        "ENOTCONN",
        "OSError: -2",
        "OSError: -202",
        "[Errno 110]",
        "[Errno 111]",
        "[Errno 113]",
        "OSError: 110",
        "OSError: 111",
        "OSError: 113",
        "OSError: 118",
    ]
    .iter()
    .any(|n| e.contains(n))
}

#[cfg(test)]
mod tests {
    #[test]
    fn network_errors_are_told_apart() {
        let said = |e: &str| format!("mpfleet: bootstrap failed: {e}");
        assert!(super::unreachable(&said(
            "OSError: [Errno 111] ECONNREFUSED"
        )));
        assert!(super::unreachable(&said("OSError: -202")));
        assert!(super::unreachable(&said("OSError: 113")));
        assert!(!super::unreachable(&said("OSError: 28")));
        assert!(!super::unreachable(&said(
            "ValueError: the manifest is not signed"
        )));
    }

    #[test]
    fn the_verdict_is_a_generation() {
        assert!(super::verdict("mpfleet: updated 3"));
        assert!(super::verdict("mpfleet: boot 12"));
        assert!(!super::verdict("mpfleet: boot primary 1 reboots 1"));
        assert!(!super::verdict("mpfleet: update_failed OSError: 28"));
    }
}
