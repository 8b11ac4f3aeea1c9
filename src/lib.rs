//! mpfleet: local-first over-the-air updates for fleets of MicroPython boards.
//!
//! The store holds versioned modules and per-device manifests; the snapshot renders what
//! boards read from it; `http` serves that snapshot and records what boards report (and `push`
//! tells an MQTT broker when a board has something new); `export` writes it as static files;
//! `sim` boots simulated boards on the real MicroPython; `provision` installs a real board
//! over its serial port; `demo` runs all of it at once for a newcomer.

// Stdout goes through `out::outln!`, which ends quietly on a closed pipe (see `out`).
#![deny(clippy::print_stdout)]

pub mod bulk;
pub mod cli;
mod commands;
pub mod compress;
pub mod delta;
pub mod demo;
pub mod duration;
pub mod export;
pub mod http;
mod logging;
pub mod manifest;
pub mod mpy;
pub mod names;
pub mod ops;
pub mod out;
pub mod push;
pub use provision::repl;
pub mod provision;
pub mod rollout;
pub mod runtime;
pub mod sign;
pub mod sim;
pub mod snapshot;
mod stale;
pub mod store;
pub mod token;

use clap::Parser;

/// Runs the command line; returns the process exit code.
pub fn run() -> i32 {
    let cli = cli::Cli::parse();
    logging::init();
    match commands::run(cli).and_then(|()| out::flush()) {
        Ok(()) => 0,
        // `mpfleet device list | head -1`: the reader has what it wanted.
        Err(e) if out::is_closed(&e) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
