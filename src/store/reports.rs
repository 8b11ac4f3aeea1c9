//! What boards tell the server: reports, when each was last seen, and unknown MACs.
//!
//! `serve` writes these in batches (one transaction for many boards), so a storm of boards
//! rebooting after a power cut does not serialise on the database.

use super::{bump, Store};
use crate::names::Mac;
use anyhow::Result;
use rusqlite::Transaction;
use serde_json::Value;

/// Reports kept per device; older ones are dropped.
pub const REPORT_HISTORY: i64 = 50;

/// Rows kept in `unknown_devices`: anyone on the LAN can ask for random MACs, so past this
/// many the ones that asked longest ago are dropped (a real board asks again at its next
/// boot and is listed again).
pub const MAX_UNKNOWN_DEVICES: i64 = 1000;

/// An unknown MAC that has not asked for this long is forgotten (not listed, and deleted at
/// the next write of unknown MACs).
pub const UNKNOWN_EXPIRY_SECS: i64 = 7 * 24 * 3600;

/// One thing a board did that the server records.
#[derive(Debug, Clone)]
pub enum Sighting {
    /// A known device asked for something.
    Seen { mac: Mac, at: i64 },
    /// A MAC that is not a device asked for its manifest, `requests` times, last `at`.
    Unknown { mac: Mac, at: i64, requests: i64 },
    /// A known device sent a report (already validated JSON text, its HMAC checked):
    /// stored if `counter` is higher than any before it, refused as a replay otherwise.
    /// `high` is the highest generation the board has accepted (see [`Store::record`]).
    Report {
        mac: Mac,
        at: i64,
        body: String,
        counter: i64,
        high: Option<i64>,
    },
    /// Reports for a known device with a wrong or missing HMAC, `count` of them.
    Forged { mac: Mac, count: i64 },
}

#[derive(Debug, Clone)]
pub struct Report {
    pub at: i64,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct UnknownDevice {
    pub mac: Mac,
    pub first_seen: i64,
    pub last_seen: i64,
    pub requests: i64,
}

impl Store {
    /// Records a batch of sightings in one transaction. Returns, per sighting, whether it was
    /// taken: false only for a report whose counter is not above the last one stored (a
    /// replay, counted in `replayed_reports`). A batch with unknown MACs also prunes
    /// `unknown_devices` to [`MAX_UNKNOWN_DEVICES`] rows, none older than
    /// [`UNKNOWN_EXPIRY_SECS`].
    ///
    /// A report naming a generation higher than the device's (`high`: the board accepted it
    /// from this server before it was restored from a backup) moves the device to a new
    /// generation above it, so the board, which refuses anything lower, takes the next
    /// manifest.
    pub fn record(&mut self, batch: &[Sighting]) -> Result<Vec<bool>> {
        let prune = batch.iter().any(|s| matches!(s, Sighting::Unknown { .. }));
        let tx = self.write()?;
        let mut taken = Vec::with_capacity(batch.len());
        let mut moved = false;
        for s in batch {
            taken.push(true);
            match s {
                Sighting::Seen { mac, at } => {
                    tx.execute(
                        "UPDATE devices SET last_seen = max(coalesce(last_seen, 0), ?2)
                         WHERE mac = ?1",
                        rusqlite::params![mac.as_str(), at],
                    )?;
                }
                Sighting::Unknown { mac, at, requests } => {
                    // `serve` buffers these: the MAC may have become a device (`device set`)
                    // between the request and this write. Then it is not unknown any more.
                    tx.execute(
                        "INSERT INTO unknown_devices (mac, first_seen, last_seen, requests)
                         SELECT ?1, ?2, ?2, ?3
                         WHERE NOT EXISTS (SELECT 1 FROM devices WHERE mac = ?1)
                         ON CONFLICT (mac) DO UPDATE SET
                           last_seen = max(last_seen, excluded.last_seen),
                           requests = requests + excluded.requests",
                        rusqlite::params![mac.as_str(), at, requests],
                    )?;
                }
                Sighting::Forged { mac, count } => {
                    tx.execute(
                        "UPDATE devices SET forged_reports = forged_reports + ?2 WHERE mac = ?1",
                        rusqlite::params![mac.as_str(), count],
                    )?;
                }
                Sighting::Report {
                    mac,
                    at,
                    body,
                    counter,
                    high,
                } => {
                    let fresh = tx.execute(
                        "UPDATE devices SET report_counter = ?2
                         WHERE mac = ?1 AND report_counter < ?2",
                        rusqlite::params![mac.as_str(), counter],
                    )? > 0;
                    if !fresh {
                        tx.execute(
                            "UPDATE devices SET replayed_reports = replayed_reports + 1
                             WHERE mac = ?1",
                            [mac.as_str()],
                        )?;
                        *taken.last_mut().expect("pushed above") = false;
                        continue;
                    }
                    if let Some(high) = high {
                        moved |= restored_past(&tx, mac, *high)?;
                    }
                    tx.execute(
                        "INSERT INTO reports (mac, at, body) VALUES (?1, ?2, ?3)",
                        rusqlite::params![mac.as_str(), at, body],
                    )?;
                    tx.execute(
                        "UPDATE devices SET last_report = ?3, last_report_at = ?2,
                                last_seen = max(coalesce(last_seen, 0), ?2)
                         WHERE mac = ?1",
                        rusqlite::params![mac.as_str(), at, body],
                    )?;
                    tx.execute(
                        "DELETE FROM reports WHERE mac = ?1 AND id NOT IN
                           (SELECT id FROM reports WHERE mac = ?1 ORDER BY id DESC LIMIT ?2)",
                        rusqlite::params![mac.as_str(), REPORT_HISTORY],
                    )?;
                }
            }
        }
        if prune {
            tx.execute(
                "DELETE FROM unknown_devices WHERE last_seen < ?1",
                [super::now() - UNKNOWN_EXPIRY_SECS],
            )?;
            tx.execute(
                "DELETE FROM unknown_devices WHERE mac NOT IN
                   (SELECT mac FROM unknown_devices ORDER BY last_seen DESC, mac LIMIT ?1)",
                [MAX_UNKNOWN_DEVICES],
            )?;
        }
        if moved {
            bump(&tx, "revision")?;
        }
        tx.commit()?;
        Ok(taken)
    }

    /// The last `limit` reports of a device, newest first.
    pub fn reports(&self, mac: &Mac, limit: i64) -> Result<Vec<Report>> {
        let mut stmt = self
            .conn
            .prepare("SELECT at, body FROM reports WHERE mac = ?1 ORDER BY id DESC LIMIT ?2")?;
        let rows = stmt.query_map(rusqlite::params![mac.as_str(), limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (at, body) = r?;
            out.push(Report {
                at,
                body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
            });
        }
        Ok(out)
    }

    /// Reports stored since `since` (seconds), counted by hour and event: `(hour, event,
    /// count)`, `hour` the hour's first second, oldest first. Only the reports still kept
    /// ([`REPORT_HISTORY`] per device) are counted: the dashboard's fleet health chart.
    pub fn reports_by_hour(&self, since: i64) -> Result<Vec<(i64, String, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT (at / 3600) * 3600 AS hour,
                    coalesce(CAST(json_extract(body, '$.event') AS TEXT), '?') AS event, count(*)
             FROM reports WHERE at >= ?1 AND json_valid(body)
             GROUP BY hour, event ORDER BY hour, event",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// MACs that asked for a manifest and are not devices (a row written before its MAC was
    /// assigned is not listed, nor one expired and not deleted yet).
    pub fn unknown_devices(&self) -> Result<Vec<UnknownDevice>> {
        let mut stmt = self.conn.prepare(
            "SELECT mac, first_seen, last_seen, requests FROM unknown_devices
             WHERE mac NOT IN (SELECT mac FROM devices) AND last_seen >= ?1
             ORDER BY last_seen DESC, mac",
        )?;
        let rows = stmt.query_map([super::now() - UNKNOWN_EXPIRY_SECS], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (mac, first_seen, last_seen, requests) = r?;
            out.push(UnknownDevice {
                mac: Mac::parse(&mac).map_err(anyhow::Error::msg)?,
                first_seen,
                last_seen,
                requests,
            });
        }
        Ok(out)
    }
}

/// Gives `mac` a new generation above `high` if its own is lower: the store was restored
/// from a backup older than what the board already accepted. True if it did.
fn restored_past(tx: &Transaction<'_>, mac: &Mac, high: i64) -> Result<bool> {
    let generation: Option<i64> = super::optional(tx.query_row(
        "SELECT generation FROM devices WHERE mac = ?1",
        [mac.as_str()],
        |r| r.get(0),
    ))?;
    if generation.is_none_or(|g| g >= high) {
        return Ok(false);
    }
    tx.execute(
        "UPDATE counters SET value = max(value, ?1) WHERE name = 'generation'",
        [high],
    )?;
    let next = bump(tx, "generation")?;
    tx.execute(
        "UPDATE devices SET generation = ?2 WHERE mac = ?1",
        rusqlite::params![mac.as_str(), next],
    )?;
    tracing::warn!(
        device = %mac,
        "the board accepted generation {high}, above this store's; moved it to {next} \
         (was the store restored from a backup?)"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(i: i64, at: i64) -> Sighting {
        Sighting::Unknown {
            mac: Mac::parse(&format!("{i:012x}")).unwrap(),
            at,
            requests: 1,
        }
    }

    fn rows(store: &Store) -> i64 {
        store
            .conn
            .query_row("SELECT count(*) FROM unknown_devices", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn unknown_devices_are_capped_keeping_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_plain(dir.path()).unwrap();
        let now = crate::store::now();
        let n = MAX_UNKNOWN_DEVICES + 300;
        let batch: Vec<_> = (0..n).map(|i| unknown(i, now - n + i)).collect();
        for chunk in batch.chunks(250) {
            store.record(chunk).unwrap();
        }
        assert_eq!(rows(&store), MAX_UNKNOWN_DEVICES);
        let listed = store.unknown_devices().unwrap();
        assert_eq!(listed.len() as i64, MAX_UNKNOWN_DEVICES);
        // The oldest were evicted: the newest is first, the last kept is number 300.
        assert_eq!(listed[0].mac.as_str(), format!("{:012x}", n - 1));
        assert_eq!(listed.last().unwrap().mac.as_str(), format!("{:012x}", 300));
    }

    #[test]
    fn unknown_devices_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_plain(dir.path()).unwrap();
        let now = crate::store::now();
        store
            .record(&[unknown(1, now - UNKNOWN_EXPIRY_SECS - 10), unknown(2, now)])
            .unwrap();
        // The expired one is written by that batch, then deleted by the same batch's prune.
        assert_eq!(rows(&store), 1);
        store
            .conn
            .execute(
                "UPDATE unknown_devices SET last_seen = ?1",
                [now - UNKNOWN_EXPIRY_SECS - 10],
            )
            .unwrap();
        // Not listed even before a write deletes it.
        assert!(store.unknown_devices().unwrap().is_empty());
        store.record(&[unknown(3, now)]).unwrap();
        assert_eq!(rows(&store), 1);
        assert_eq!(
            store.unknown_devices().unwrap()[0].mac.as_str(),
            "000000000003"
        );
    }
}
