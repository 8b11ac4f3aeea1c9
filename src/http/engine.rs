//! The rollout engine inside `serve`: a tokio task that runs [`Store::rollout_tick`] every
//! tick, and at once when reports have been written (the recorder wakes it), so a step
//! advances or a rollout pauses as soon as the reports say so. Its state is the database's:
//! a restarted `serve` carries on.

use crate::store::Store;
use anyhow::Result;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often the engine looks at running rollouts when no report wakes it (a board that
/// stays silent past its deadline, a step's healthy time running out).
pub const TICK: Duration = Duration::from_secs(5);

/// The tick, or `MPFLEET_ROLLOUT_TICK` (such as `200ms`: for tests).
pub fn tick_from_env() -> Result<Duration> {
    match std::env::var("MPFLEET_ROLLOUT_TICK") {
        Ok(s) if !s.is_empty() => {
            let d = crate::duration::parse(&s)
                .map_err(|e| anyhow::anyhow!("MPFLEET_ROLLOUT_TICK: {e:#}"))?;
            Ok(d.max(Duration::from_millis(10)))
        }
        _ => Ok(TICK),
    }
}

/// Opens its own connection to the store in `data`, for [`run`].
pub fn open(data: &Path) -> Result<Arc<Mutex<Store>>> {
    Ok(Arc::new(Mutex::new(Store::open_plain(data)?)))
}

/// Runs forever (until the runtime ends): a turn every `tick`, or when `wake` is notified.
pub async fn run(store: Arc<Mutex<Store>>, wake: Arc<Notify>, tick: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = wake.notified() => {}
        }
        let store = store.clone();
        let turn = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .expect("the engine's store lock")
                .rollout_tick()
        })
        .await;
        match turn {
            Ok(Ok(said)) => {
                for line in said {
                    tracing::info!(target: "mpfleet::rollout", "{line}");
                }
            }
            Ok(Err(e)) => tracing::error!("rollout engine: {e:#}"),
            Err(e) => tracing::error!("rollout engine: {e}"),
        }
    }
}
