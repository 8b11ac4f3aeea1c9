//! A simulated board left running in the background (`mpfleet sim` with a settle time longer
//! than any test), for tests that act while its app runs: what it prints is collected, and it
//! is killed, with every interpreter it started, when stopped or dropped. Its flash and RTC
//! memory stay, so the same [`SimBoard`] can be started again as if powered on.

use super::{eventually, SimBoard, BIN};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Running {
    child: Child,
    out: Arc<Mutex<String>>,
    pub mac: String,
}

impl SimBoard {
    /// Boots the board and leaves it running (at most 100 boots).
    pub fn start(&self, server: &str) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(["sim", "--server", server, "--mac", &self.mac])
            .args(["--boots", "100", "--settle", "100000"])
            .arg("--flash-dir")
            .arg(&self.flash)
            .arg("--state")
            .arg(&self.state)
            .arg("--data")
            .arg(&self.data);
        if !self.heap.is_empty() {
            cmd.args(["--heap", &self.heap]);
        }
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running mpfleet sim");
        let out = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in streams {
            let sink = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = sink.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Running {
            child,
            out,
            mac: self.mac.clone(),
        }
    }
}

impl Running {
    /// Everything it printed so far.
    pub fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until it has printed a line containing `needle` (the test fails after
    /// `timeout`, showing what it printed).
    pub fn wait_said(&self, needle: &str, timeout: Duration) {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(&format!("board to say {needle:?}"), timeout, || {
                self.out().contains(needle).then_some(())
            })
        }));
        if found.is_err() {
            panic!(
                "board {} did not say {needle:?} within {timeout:?}; it said:\n{}",
                self.mac,
                self.out()
            );
        }
    }

    /// Kills it at once (a power cut, as far as its app knows).
    pub fn stop(mut self) -> String {
        self.kill();
        self.out()
    }

    fn kill(&mut self) {
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        eprintln!("--- mpfleet sim {} (running):\n{}", self.mac, self.out());
        self.kill();
    }
}
