//! The only writer of device traffic: what boards report and when they were last seen.
//!
//! Reports are queued and written in batches, one transaction per batch, on a thread of its
//! own; a report's request waits until its batch is committed. "Seen" times and unknown MACs
//! are only coalesced in memory (a map per MAC) and flushed with the next batch or once a
//! second, so a fleet polling hard costs the database one small write per second, not one
//! per request.

use super::error::ApiError;
use crate::names::Mac;
use crate::store::{Sighting, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// Largest number of reports written in one transaction.
const BATCH: usize = 512;

/// Reports waiting to be written before new ones are refused (the board retries later).
const QUEUE: usize = 8 * BATCH;

/// How often coalesced sightings are flushed when no report comes.
const FLUSH: Duration = Duration::from_secs(1);

/// Distinct unknown MACs held in memory between two flushes. Anyone on the LAN can ask for
/// random MACs; past this many in one flush interval, new ones are not noted (the ones already
/// noted still count their requests). A real board asks again at its next boot. The table has
/// its own cap (`store::MAX_UNKNOWN_DEVICES`).
pub const MAX_PENDING_UNKNOWN: usize = 1024;

struct Job {
    sighting: Sighting,
    /// Whether the report was taken (false: a replayed counter), or why writing failed.
    done: oneshot::Sender<Result<bool, String>>,
}

/// Sightings not yet written: the latest time per known MAC, and time and request count
/// per unknown MAC.
#[derive(Default)]
struct Pending {
    seen: HashMap<Mac, i64>,
    unknown: HashMap<Mac, (i64, i64)>,
    /// Reports refused for a wrong HMAC, per known device.
    forged: HashMap<Mac, i64>,
}

impl Pending {
    fn unknown(&mut self, mac: Mac, at: i64) {
        let full = self.unknown.len() >= MAX_PENDING_UNKNOWN;
        if full && !self.unknown.contains_key(&mac) {
            return;
        }
        let e = self.unknown.entry(mac).or_insert((at, 0));
        e.0 = e.0.max(at);
        e.1 += 1;
    }

    fn drain(&mut self) -> Vec<Sighting> {
        let mut out: Vec<Sighting> = self
            .seen
            .drain()
            .map(|(mac, at)| Sighting::Seen { mac, at })
            .collect();
        out.extend(
            self.unknown
                .drain()
                .map(|(mac, (at, requests))| Sighting::Unknown { mac, at, requests }),
        );
        out.extend(
            self.forged
                .drain()
                .map(|(mac, count)| Sighting::Forged { mac, count }),
        );
        out
    }
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::SyncSender<Job>,
    pending: Arc<Mutex<Pending>>,
}

impl Recorder {
    /// Starts the writer thread. Once every clone of the recorder is dropped, it writes what
    /// is still pending and ends: join the handle to know that nothing was lost. `written`
    /// is notified after each batch holding reports is committed (the rollout engine reads
    /// them).
    pub fn start(data: PathBuf, written: Arc<Notify>) -> anyhow::Result<(Self, JoinHandle<()>)> {
        let mut store = Store::open_plain(&data)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let shared = pending.clone();
        let writer = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || loop {
                let mut jobs = Vec::new();
                let stopped = match rx.recv_timeout(FLUSH) {
                    Ok(first) => {
                        jobs.push(first);
                        while jobs.len() < BATCH {
                            match rx.try_recv() {
                                Ok(j) => jobs.push(j),
                                Err(_) => break,
                            }
                        }
                        false
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                };
                let mut batch = shared.lock().expect("pending lock").drain();
                let first_job = batch.len();
                batch.extend(jobs.iter().map(|j| j.sighting.clone()));
                if !batch.is_empty() {
                    let result = store.record(&batch).map_err(|e| format!("{e:#}"));
                    if let Err(e) = &result {
                        tracing::error!("recording {} sightings failed: {e}", batch.len());
                    } else if !jobs.is_empty() {
                        written.notify_one();
                    }
                    for (i, job) in jobs.into_iter().enumerate() {
                        let taken = result.as_ref().map(|t| t[first_job + i]);
                        let _ = job.done.send(taken.map_err(Clone::clone));
                    }
                }
                if stopped {
                    break;
                }
            })?;
        Ok((Self { tx, pending }, writer))
    }

    /// Notes that a known device asked for something.
    pub fn seen(&self, mac: Mac, at: i64) {
        let mut p = self.pending.lock().expect("pending lock");
        let t = p.seen.entry(mac).or_insert(at);
        *t = (*t).max(at);
    }

    /// Notes that a MAC that is not a device asked for its manifest (unless
    /// [`MAX_PENDING_UNKNOWN`] others already did since the last flush).
    pub fn unknown(&self, mac: Mac, at: i64) {
        self.pending.lock().expect("pending lock").unknown(mac, at);
    }

    /// Notes a report for a known device whose HMAC is wrong or missing.
    pub fn forged(&self, mac: Mac) {
        let mut p = self.pending.lock().expect("pending lock");
        *p.forged.entry(mac).or_insert(0) += 1;
    }

    /// Queues a report (its HMAC checked) and waits until it is committed. Returns false if
    /// it was refused as a replay: its counter is not above the last one stored.
    pub async fn report(
        &self,
        mac: Mac,
        at: i64,
        body: String,
        counter: i64,
        high: Option<i64>,
    ) -> Result<bool, ApiError> {
        let stopped = || ApiError::Internal(anyhow::anyhow!("the recorder thread stopped"));
        let (done, wait) = oneshot::channel();
        let job = Job {
            sighting: Sighting::Report {
                mac,
                at,
                body,
                counter,
                high,
            },
            done,
        };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                ApiError::Unavailable("too many reports waiting; try again later".into())
            }
            mpsc::TrySendError::Disconnected(_) => stopped(),
        })?;
        wait.await
            .map_err(|_| stopped())?
            .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: usize) -> Mac {
        Mac::parse(&format!("{i:012x}")).unwrap()
    }

    #[test]
    fn unknown_macs_in_memory_are_capped() {
        let mut p = Pending::default();
        for i in 0..3 * MAX_PENDING_UNKNOWN {
            p.unknown(mac(i), 100);
        }
        assert_eq!(p.unknown.len(), MAX_PENDING_UNKNOWN);
        // One already noted still counts its requests when the map is full.
        p.unknown(mac(0), 200);
        assert_eq!(p.unknown[&mac(0)], (200, 2));
        // A flush empties the map: new MACs are noted again.
        assert_eq!(p.drain().len(), MAX_PENDING_UNKNOWN);
        p.unknown(mac(5 * MAX_PENDING_UNKNOWN), 300);
        assert_eq!(p.unknown.len(), 1);
    }
}
