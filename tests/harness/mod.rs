//! The test harness, in one place:
//!
//! - `fleet`: a temporary store and the CLI run as a user runs it ([`Fleet`], [`Run`]);
//! - `server`: a real `mpfleet serve` on port 0 ([`Server`], [`Reply`]);
//! - `board`: simulated boards driven through `mpfleet sim` ([`SimBoard`] with its flash as a
//!   directory, [`ImageBoard`] with a littlefs2 image), one boot implementation for both,
//!   every run under a wall-clock deadline;
//! - `proxy`: HTTP proxies in front of the server ([`FaultProxy`] injects faults, [`Router`]
//!   serves a board another device's manifest), one forwarding path for both;
//! - `serial`: a simulated board behind a serial port (a pseudo-terminal), for `provision`
//!   ([`SerialPort`]);
//! - `static_files`: a static file server over an export ([`StaticFiles`]);
//! - `mosquitto`: a real Mosquitto broker on a free port ([`Mosquitto`]) and an MQTT client
//!   recording what it publishes ([`Subscriber`]);
//! - `running`: a simulated board left running while the test acts ([`Running`]);
//! - `heap`: the smallest `--heap` a board needs for a run ([`min_heap`]);
//! - `chromium`: a real headless Chromium loading a page ([`chromium::dump_dom`],
//!   [`chromium::screenshot`]).

// Each test file uses some of it.
#![allow(dead_code)]

mod board;
pub mod chromium;
mod fleet;
mod heap;
pub mod mosquitto;
mod process;
mod proxy;
mod running;
mod serial;
mod server;
mod static_files;

#[allow(unused_imports)]
pub use board::{
    app_source, config_versions, fleet_with_board, inspect, with_board, ImageBoard, SimBoard,
    SimRun, DEFAULT_DEADLINE,
};
#[allow(unused_imports)]
pub use fleet::{Fleet, Run};
#[allow(unused_imports)]
pub use heap::{image_board_at, kib, littlefs_image, min_heap, STEP};
#[allow(unused_imports)]
pub use mosquitto::{free_port, Message, Mosquitto, Subscriber};
#[allow(unused_imports)]
pub use process::{dead_pid, output_within};
#[allow(unused_imports)]
pub use proxy::{Fault, FaultProxy, Router, Tamper};
#[allow(unused_imports)]
pub use running::Running;
pub use serial::SerialPort;
#[allow(unused_imports)]
pub use server::{Reply, Server};
#[allow(unused_imports)]
pub use static_files::StaticFiles;

use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mpfleet");

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
