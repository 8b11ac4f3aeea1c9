//! All integration tests, compiled into one test binary. Each starts the real `mpfleet`
//! binary (on port 0 when it serves) and talks to it as a user or a board does.

mod harness;

mod admin_api;
mod admin_tls;
mod bad_code;
mod board;
mod cli_bulk;
mod cli_device;
mod cli_group;
mod cli_install;
mod cli_module;
mod cli_pipe;
mod cli_store;
mod compression;
mod crash;
mod dashboard;
mod delta;
mod demo;
mod export;
mod faults;
mod hardening;
mod heap;
mod mqtt;
mod never_stuck;
mod ports;
mod provision;
mod readme;
mod repl;
mod rollout;
mod security;
mod serve;
mod service;

/// The harness used to be split between `harness.rs` and `sim.rs`; code still written against
/// `crate::sim::...` keeps compiling. New code: `crate::harness::...`.
#[allow(unused_imports)]
mod sim {
    pub use crate::harness::*;
}
