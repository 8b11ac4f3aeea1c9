//! Devices: their desired manifests, generations and what they last reported.

use super::{bump, catalog, commit_change, now, optional, DeviceKey, Store};
use crate::manifest::{Catalog, Desired};
use crate::names::Mac;
use anyhow::{Context, Result};
use rusqlite::Transaction;
use serde_json::Value;
use std::collections::HashMap;

/// What [`Store::set_devices`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkCounts {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub mac: Mac,
    pub desired: Desired,
    pub generation: i64,
    pub created_at: i64,
    pub last_seen: Option<i64>,
    pub last_report: Option<Value>,
    pub last_report_at: Option<i64>,
    pub key: DeviceKey,
    /// The highest report counter accepted from the board.
    pub report_counter: i64,
    /// Reports refused: a wrong HMAC (forged) or a counter already used (replayed).
    pub forged_reports: i64,
    pub replayed_reports: i64,
}

const SELECT: &str = "SELECT mac, desired, generation, created_at, last_seen, last_report,
                             last_report_at, key, report_counter, forged_reports,
                             replayed_reports FROM devices";

/// A devices row as stored, before parsing.
type RawDevice = (
    (String, String, i64, i64, Option<i64>, Option<String>),
    (Option<i64>, String, i64, i64, i64),
);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok((
        (
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ),
        (r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
    ))
}

fn to_device(raw: RawDevice) -> Result<DeviceRow> {
    let (
        (mac, desired, generation, created_at, last_seen, last_report),
        (last_report_at, key, report_counter, forged_reports, replayed_reports),
    ) = raw;
    Ok(DeviceRow {
        key: DeviceKey::from_hex(&key).with_context(|| format!("stored key of {mac}"))?,
        report_counter,
        forged_reports,
        replayed_reports,
        mac: Mac::parse(&mac).map_err(anyhow::Error::msg)?,
        desired: Desired::from_seed_json(&desired)
            .with_context(|| format!("stored manifest of {mac}"))?,
        generation,
        created_at,
        last_seen,
        last_report: last_report.and_then(|t| serde_json::from_str(&t).ok()),
        last_report_at,
    })
}

/// Gives every device whose resolved content changed a new generation.
pub(super) fn refresh_generations(tx: &Transaction<'_>) -> Result<()> {
    let cat = catalog(tx)?;
    let rows: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare("SELECT mac, desired, resolved_hash FROM devices")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // Devices that want the same resolve the same: each distinct desired manifest is
    // resolved once (a fleet of 100,000 has a handful).
    let mut hashes: HashMap<String, Option<String>> = HashMap::new();
    let mut changed = Vec::new();
    for (mac, desired, old_hash) in rows {
        if !hashes.contains_key(&desired) {
            // A manifest that no longer resolves keeps its last generation; it cannot happen
            // while versions are immutable and never deleted.
            let hash = cat
                .resolve(&Desired::from_seed_json(&desired)?)
                .ok()
                .map(|r| r.content_hash());
            hashes.insert(desired.clone(), hash);
        }
        if let Some(hash) = &hashes[&desired] {
            if *hash != old_hash {
                changed.push((mac, hash.clone()));
            }
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    // One step of the counter for all of them: generations `last + 1 ..= last + n`.
    let last: i64 = tx.query_row(
        "UPDATE counters SET value = value + ?1 WHERE name = 'generation' RETURNING value",
        [changed.len() as i64],
        |r| r.get(0),
    )?;
    let first = last - changed.len() as i64 + 1;
    let mut update =
        tx.prepare("UPDATE devices SET generation = ?2, resolved_hash = ?3 WHERE mac = ?1")?;
    for (i, (mac, hash)) in changed.iter().enumerate() {
        update.execute(rusqlite::params![mac, first + i as i64, hash])?;
    }
    Ok(())
}

impl Store {
    /// Stores the desired manifest of `mac`; returns its generation afterwards.
    pub fn set_device(&mut self, mac: &Mac, desired: &Desired) -> Result<i64> {
        let tx = self.write()?;
        // Refuse a manifest naming a module or version that does not exist.
        let cat: Catalog = catalog(&tx)?;
        cat.resolve(desired)?;
        let text = desired.to_seed_json();
        let old: Option<String> = optional(tx.query_row(
            "SELECT desired FROM devices WHERE mac = ?1",
            [mac.as_str()],
            |r| r.get(0),
        ))?;
        if old.as_deref() != Some(text.as_str()) {
            if old.is_none() {
                let key = DeviceKey::random()?;
                tx.execute(
                    "INSERT INTO devices (mac, desired, generation, resolved_hash, created_at, key)
                     VALUES (?1, ?2, 0, '', ?3, ?4)",
                    rusqlite::params![mac.as_str(), text, now(), key.to_hex()],
                )?;
            } else {
                tx.execute(
                    "UPDATE devices SET desired = ?2 WHERE mac = ?1",
                    [mac.as_str(), text.as_str()],
                )?;
            }
            tx.execute("DELETE FROM unknown_devices WHERE mac = ?1", [mac.as_str()])?;
            commit_change(tx)?;
        } else {
            tx.commit()?;
        }
        Ok(self.conn.query_row(
            "SELECT generation FROM devices WHERE mac = ?1",
            [mac.as_str()],
            |r| r.get(0),
        )?)
    }

    /// Stores the desired manifests of many devices in one transaction (`device import`):
    /// new devices get random keys, existing ones keep theirs; the revision is bumped once.
    /// Every manifest is resolved first: if one names a module or version that does not
    /// exist, nothing is written. MACs must be distinct.
    ///
    /// Generations are given here, not by [`refresh_generations`]: the catalog does not
    /// change in this transaction, so only the devices written here can resolve to new
    /// content, and resolving the other devices of a large fleet again would be most of the
    /// time of an import.
    pub fn set_devices(&mut self, devices: &[(Mac, Desired)]) -> Result<BulkCounts> {
        let tx = self.write()?;
        let cat: Catalog = catalog(&tx)?;
        let hashes = devices
            .iter()
            .map(|(mac, desired)| {
                let resolved = cat
                    .resolve(desired)
                    .with_context(|| format!("device {mac}"))?;
                Ok(resolved.content_hash())
            })
            .collect::<Result<Vec<_>>>()?;
        let old: HashMap<String, (String, String)> = {
            let mut stmt = tx.prepare("SELECT mac, desired, resolved_hash FROM devices")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let last: i64 = tx.query_row(
            "SELECT value FROM counters WHERE name = 'generation'",
            [],
            |r| r.get(0),
        )?;
        let mut generation = last;
        let mut counts = BulkCounts::default();
        {
            let mut insert = tx.prepare(
                "INSERT INTO devices (mac, desired, generation, resolved_hash, created_at, key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut update = tx.prepare("UPDATE devices SET desired = ?2 WHERE mac = ?1")?;
            let mut regenerate = tx.prepare(
                "UPDATE devices SET desired = ?2, generation = ?3, resolved_hash = ?4
                 WHERE mac = ?1",
            )?;
            let mut forget = tx.prepare("DELETE FROM unknown_devices WHERE mac = ?1")?;
            let at = now();
            for ((mac, desired), hash) in devices.iter().zip(&hashes) {
                let text = desired.to_seed_json();
                match old.get(mac.as_str()) {
                    Some((o, _)) if *o == text => {
                        counts.unchanged += 1;
                        continue;
                    }
                    Some((_, old_hash)) if old_hash == hash => {
                        update.execute([mac.as_str(), text.as_str()])?;
                        counts.updated += 1;
                    }
                    Some(_) => {
                        generation += 1;
                        regenerate.execute(rusqlite::params![
                            mac.as_str(),
                            text,
                            generation,
                            hash
                        ])?;
                        counts.updated += 1;
                    }
                    None => {
                        generation += 1;
                        let key = DeviceKey::random()?;
                        insert.execute(rusqlite::params![
                            mac.as_str(),
                            text,
                            generation,
                            hash,
                            at,
                            key.to_hex()
                        ])?;
                        counts.created += 1;
                    }
                }
                forget.execute([mac.as_str()])?;
            }
        }
        if counts.created + counts.updated > 0 {
            tx.execute(
                "UPDATE counters SET value = ?1 WHERE name = 'generation'",
                [generation],
            )?;
            bump(&tx, "revision")?;
        }
        tx.commit()?;
        Ok(counts)
    }

    /// Forgets a device and its reports. Returns false if it was not known.
    pub fn remove_device(&mut self, mac: &Mac) -> Result<bool> {
        let tx = self.write()?;
        let n = tx.execute("DELETE FROM devices WHERE mac = ?1", [mac.as_str()])?;
        tx.execute("DELETE FROM reports WHERE mac = ?1", [mac.as_str()])?;
        if n > 0 {
            bump(&tx, "revision")?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// What the served tree needs of every device, in no order, without the rest of its
    /// row (reports, counters): its MAC (as [`Mac::bits`]), desired manifest as stored,
    /// generation and key. Calls `each` per device, so that a fleet of 100,000 is never a
    /// vector of rows, and parses only what it must (stored MACs are canonical).
    pub fn each_device_view(
        &self,
        mut each: impl FnMut(u64, &str, i64, DeviceKey) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT mac, desired, generation, key FROM devices")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let mac = r.get_ref(0)?.as_str()?;
            let bits = u64::from_str_radix(mac, 16)
                .ok()
                .filter(|_| mac.len() == 12)
                .with_context(|| format!("stored MAC {mac:?}"))?;
            let key = DeviceKey::from_hex(r.get_ref(3)?.as_str()?)
                .with_context(|| format!("stored key of {mac}"))?;
            each(bits, r.get_ref(1)?.as_str()?, r.get(2)?, key)?;
        }
        Ok(())
    }

    pub fn devices(&self) -> Result<Vec<DeviceRow>> {
        let mut stmt = self.conn.prepare(&format!("{SELECT} ORDER BY mac"))?;
        let rows = stmt.query_map([], row)?;
        rows.map(|r| to_device(r?)).collect()
    }

    pub fn device(&self, mac: &Mac) -> Result<Option<DeviceRow>> {
        let r = optional(self.conn.query_row(
            &format!("{SELECT} WHERE mac = ?1"),
            [mac.as_str()],
            row,
        ))?;
        r.map(to_device).transpose()
    }

    /// How many devices last reported each event (`None`: no report yet), for `/metrics`.
    pub fn devices_by_last_event(&self) -> Result<Vec<(Option<String>, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT json_extract(last_report, '$.event'), COUNT(*) FROM devices GROUP BY 1",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
