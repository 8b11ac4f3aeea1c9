//! The only writer of device traffic: sightings and reports are queued here and written in
//! batches, one transaction per batch, on a blocking thread of its own.

use crate::store::{Sighting, Store};
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};

/// Largest batch written in one transaction.
const BATCH: usize = 512;

struct Job {
    sighting: Sighting,
    /// Answered once the batch holding this sighting is committed (reports wait for it).
    done: Option<oneshot::Sender<Result<(), String>>>,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
}

impl Recorder {
    pub fn start(data: PathBuf) -> anyhow::Result<Self> {
        let mut store = Store::open_plain(&data)?;
        let (tx, mut rx) = mpsc::channel::<Job>(16 * BATCH);
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let batch: Vec<Sighting> = jobs.iter().map(|j| j.sighting.clone()).collect();
                    let result = store.record(&batch).map_err(|e| format!("{e:#}"));
                    if let Err(e) = &result {
                        tracing::error!("recording {} sightings failed: {e}", batch.len());
                    }
                    for job in jobs {
                        if let Some(done) = job.done {
                            let _ = done.send(result.clone());
                        }
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Queues a sighting without waiting; dropped (with a warning) if the queue is full.
    pub fn note(&self, sighting: Sighting) {
        if self
            .tx
            .try_send(Job {
                sighting,
                done: None,
            })
            .is_err()
        {
            tracing::warn!("recorder queue full; a sighting was dropped");
        }
    }

    /// Queues a sighting and waits until it is committed.
    pub async fn record(&self, sighting: Sighting) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job {
                sighting,
                done: Some(done),
            })
            .await
            .map_err(|_| "recorder stopped".to_owned())?;
        wait.await.map_err(|_| "recorder stopped".to_owned())?
    }
}
