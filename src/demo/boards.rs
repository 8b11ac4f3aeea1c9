//! The demo's fleet: simulated boards (`crate::sim`, the real MicroPython unix port) that keep
//! asking the server for an update, each on a thread of its own, until told to stop.
//!
//! A board first boots from a blank flash (the bootstrap installs the runtime and the app),
//! then, every poll interval, asks for an update and boots again, as an app does with
//! `config.set('update')` and `machine.reset()` (what `mpfleet sim --update` stands for). Each
//! boot runs until the board settles (or crashes five times and goes back by itself), so a
//! stop takes effect within one boot cycle.

use crate::sim::{Board, BoardOptions, Cause, Port, PortVersion};
use anyhow::Result;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Boots one update may take: check, install, report, five crashes, the boot that rolls back,
/// with room to spare. A board that has not settled by then simply tries again at its next poll.
const MAX_BOOTS: u32 = 20;

/// A quiet app has settled after this long (the demo's app prints one line and is done).
const SETTLE: Duration = Duration::from_millis(1000);

/// Set once, waited on by everyone: Ctrl-C, `--exit`, or an error.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    pub fn stop(&self) {
        *self.stopped.lock().expect("stop lock") = true;
        self.cv.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().expect("stop lock")
    }

    /// Waits `d` or until stopped; true if stopped.
    pub fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().expect("stop lock");
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .expect("stop lock");
        *guard
    }
}

/// The running boards.
pub struct Fleet {
    threads: Vec<JoinHandle<()>>,
    /// The first error a board thread met (the interpreter would not start, a full disk...).
    error: Arc<Mutex<Option<String>>>,
}

/// What the boards need to know.
pub struct Setup<'a> {
    pub micropython: &'a Path,
    pub server: &'a str,
    pub data: &'a Path,
    /// Flash images, RTC memory and one log per board.
    pub dir: &'a Path,
    pub poll: Duration,
}

impl Fleet {
    /// Starts a board per MAC, their first boots spread over a second so they do not all
    /// compete for the CPU at once.
    pub fn start(setup: &Setup, macs: &[crate::names::Mac], stop: &Arc<Stop>) -> Result<Self> {
        let shims = crate::sim::shims_dir()?;
        std::fs::create_dir_all(setup.dir)?;
        let port = Port::Esp8266;
        let error = Arc::new(Mutex::new(None));
        let mut threads = Vec::new();
        let n = macs.len().max(1) as u32;
        for (i, mac) in macs.iter().enumerate() {
            let board = Board::new(BoardOptions {
                micropython: setup.micropython.to_owned(),
                shims: shims.clone(),
                server: setup.server.to_owned(),
                mac: mac.clone(),
                rtc: setup.dir.join(format!("{mac}.rtc")),
                flash: crate::sim::Flash::Image(setup.dir.join(format!("{mac}.img"))),
                flash_blocks: port.default_flash_blocks(),
                heap: port.default_heap(),
                port,
                port_version: PortVersion::LATEST,
                settle: SETTLE,
                cut_tear: "half".into(),
                watchdog: None,
                timeout: None,
                data: setup.data.to_owned(),
                key: None,
                bootstrap: None,
                echo: false,
                log: Some(setup.dir.join(format!("{mac}.log"))),
            });
            let (stop, error) = (stop.clone(), error.clone());
            let first = Duration::from_secs(1) * i as u32 / n;
            let poll = setup.poll;
            threads.push(std::thread::spawn(move || {
                if stop.wait(first) {
                    return;
                }
                if let Err(e) = polls(&board, poll, &stop) {
                    let mut slot = error.lock().expect("error lock");
                    slot.get_or_insert_with(|| format!("board {}: {e:#}", board.options.mac));
                }
            }));
        }
        Ok(Self { threads, error })
    }

    /// The first error a board met, if one did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("error lock").clone()
    }

    /// Waits for every board to finish its boot cycle (stop them first).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One board's life: bootstrap, then a boot asking for an update every `poll`.
fn polls(board: &Board, poll: Duration, stop: &Stop) -> Result<()> {
    let mut cause = Cause::PowerOn;
    loop {
        board.run(MAX_BOOTS, None, cause)?;
        if stop.wait(poll) {
            return Ok(());
        }
        board.request_update()?;
        cause = Cause::Reset;
    }
}
