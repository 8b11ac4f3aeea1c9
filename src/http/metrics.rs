//! `/metrics`: what `serve` has done, in the Prometheus text format (version 0.0.4), for a
//! scraper or a look with curl. On the admin side, so it needs the admin token like the admin
//! API: Prometheus sends it with `authorization: {credentials_file: .../admin-token}`, the
//! very file `serve` keeps it in.
//!
//! Counters live in memory (atomics, since this `serve` started): manifest polls, reports
//! taken by event and refused by reason, and a latency histogram of every request by side
//! (device or admin). Boards by state (the event each device last reported) are read from the
//! store at each scrape.

use super::device::EVENTS;
use crate::store::Store;
use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why a report was refused.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    /// No valid HMAC under the device's key.
    Unsigned,
    /// A counter already used.
    Replayed,
    /// Not a report (bad JSON, unknown event, too large).
    Malformed,
    /// For a MAC that is not a device.
    Unknown,
}

const REFUSED: [&str; 4] = ["unsigned", "replayed", "malformed", "unknown_device"];

/// Which side of `serve` a request went to.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Device = 0,
    Admin = 1,
}

const SIDES: [&str; 2] = ["device", "admin"];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative), then the overflow past the last bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    polls: AtomicU64,
    unknown_polls: AtomicU64,
    reports: [AtomicU64; EVENTS.len()],
    refused: [AtomicU64; REFUSED.len()],
    latency: [Histogram; SIDES.len()],
}

impl Metrics {
    /// A known device asked for its manifest.
    pub fn poll(&self) {
        self.polls.fetch_add(1, Relaxed);
    }

    /// A MAC that is not a device asked for its manifest.
    pub fn unknown_poll(&self) {
        self.unknown_polls.fetch_add(1, Relaxed);
    }

    /// A report was stored; `event` is one of [`EVENTS`].
    pub fn report(&self, event: &str) {
        if let Some(i) = EVENTS.iter().position(|e| *e == event) {
            self.reports[i].fetch_add(1, Relaxed);
        }
    }

    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    /// A request took `took` until its response was ready.
    pub fn request(&self, side: Side, took: Duration) {
        let h = &self.latency[side as usize];
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        h.buckets[i].fetch_add(1, Relaxed);
        h.sum_micros
            .fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// The text a scrape gets: the counters, and boards by state read from the store.
    pub fn render(&self, data: &Path) -> anyhow::Result<String> {
        let store = Store::open_read_only(data)?;
        let by_event = store.devices_by_last_event()?;
        let unknown = store.unknown_devices()?.len();
        let mut out = String::new();
        let w = &mut out;
        family(
            w,
            "mpfleet_polls_total",
            "counter",
            "Manifest requests from known devices since serve started.",
        );
        let _ = writeln!(w, "mpfleet_polls_total {}", self.polls.load(Relaxed));
        family(
            w,
            "mpfleet_unknown_polls_total",
            "counter",
            "Manifest requests for MACs that are not devices since serve started.",
        );
        let _ = writeln!(
            w,
            "mpfleet_unknown_polls_total {}",
            self.unknown_polls.load(Relaxed)
        );
        family(
            w,
            "mpfleet_reports_total",
            "counter",
            "Reports stored since serve started, by event.",
        );
        for (e, n) in EVENTS.iter().zip(&self.reports) {
            let _ = writeln!(
                w,
                "mpfleet_reports_total{{event=\"{e}\"}} {}",
                n.load(Relaxed)
            );
        }
        family(
            w,
            "mpfleet_reports_refused_total",
            "counter",
            "Reports refused since serve started, by reason.",
        );
        for (r, n) in REFUSED.iter().zip(&self.refused) {
            let _ = writeln!(
                w,
                "mpfleet_reports_refused_total{{reason=\"{r}\"}} {}",
                n.load(Relaxed)
            );
        }
        family(
            w,
            "mpfleet_boards",
            "gauge",
            "Devices by the event they last reported (none: no report yet).",
        );
        let count = |event: Option<&str>| {
            by_event
                .iter()
                .filter(|(e, _)| e.as_deref() == event)
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        for e in EVENTS {
            let _ = writeln!(w, "mpfleet_boards{{state=\"{e}\"}} {}", count(Some(e)));
        }
        let other: i64 = by_event
            .iter()
            .filter(|(e, _)| e.as_deref().is_some_and(|e| !EVENTS.contains(&e)))
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            w,
            "mpfleet_boards{{state=\"none\"}} {}",
            count(None) + other
        );
        family(
            w,
            "mpfleet_unknown_boards",
            "gauge",
            "MACs that asked for a manifest but are not devices (device list --unknown).",
        );
        let _ = writeln!(w, "mpfleet_unknown_boards {unknown}");
        family(
            w,
            "mpfleet_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its response being ready, by side.",
        );
        for (side, h) in SIDES.iter().zip(&self.latency) {
            let mut cumulative = 0;
            for (i, b) in h.buckets.iter().enumerate() {
                cumulative += b.load(Relaxed);
                let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(
                    w,
                    "mpfleet_request_duration_seconds_bucket{{side=\"{side}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                w,
                "mpfleet_request_duration_seconds_sum{{side=\"{side}\"}} {}",
                h.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                w,
                "mpfleet_request_duration_seconds_count{{side=\"{side}\"}} {cumulative}"
            );
        }
        Ok(out)
    }
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_its_bucket() {
        let m = Metrics::default();
        m.request(Side::Device, Duration::from_micros(300));
        m.request(Side::Device, Duration::from_millis(3));
        m.request(Side::Admin, Duration::from_secs(60));
        let counts: Vec<u64> = m.latency[0]
            .buckets
            .iter()
            .map(|b| b.load(Relaxed))
            .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[3], 1);
        assert_eq!(m.latency[1].buckets[BUCKETS.len()].load(Relaxed), 1);
    }
}
