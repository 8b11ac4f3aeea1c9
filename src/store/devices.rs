//! Devices: their desired manifests, generations and what they last reported.

use super::groups::{Assignment, Layers};
use super::{bump, catalog, commit_change, now, optional, DeviceKey, Store};
use crate::manifest::{Catalog, Desired, Pins};
use crate::names::{GroupName, Mac};
use anyhow::{Context, Result};
use rusqlite::Transaction;
use serde_json::Value;
use std::collections::HashMap;

/// One device as the served tree sees it ([`Store::each_device_view`]).
pub struct DeviceView<'a> {
    /// Its MAC's 48 bits ([`Mac::bits`]).
    pub bits: u64,
    /// Devices with the same `memo` have the same desired manifest.
    pub memo: String,
    pub generation: i64,
    pub key: DeviceKey,
    layers: &'a Layers,
    mac: &'a str,
    group: Option<&'a str>,
    stored: &'a str,
}

impl DeviceView<'_> {
    /// What it runs: its own manifest, or its group's (and rollout's) with its pins over it.
    pub fn desired(&self) -> Result<Desired> {
        self.layers
            .desired(self.mac, self.group, self.stored)
            .with_context(|| format!("stored manifest of {}", self.mac))
    }
}

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
    /// What it runs: its own manifest, or its group's with its own pins over it.
    pub desired: Desired,
    /// Its group, and its own pins laid over the group's.
    pub group: Option<(GroupName, Pins)>,
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

impl DeviceRow {
    /// What the device was told to run, as `device set` or `device import` takes it.
    pub fn assignment(&self) -> Assignment {
        match &self.group {
            Some((group, pins)) => Assignment::Group {
                group: group.clone(),
                pins: pins.clone(),
            },
            None => Assignment::Own(self.desired.clone()),
        }
    }
}

const SELECT: &str = "SELECT mac, desired, generation, created_at, last_seen, last_report,
                             last_report_at, key, report_counter, forged_reports,
                             replayed_reports, grp FROM devices";

/// A devices row as stored, before parsing.
type RawDevice = (
    (String, String, i64, i64, Option<i64>, Option<String>),
    (Option<i64>, String, i64, i64, i64, Option<String>),
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
        (
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
        ),
    ))
}

fn to_device(layers: &Layers, raw: RawDevice) -> Result<DeviceRow> {
    let (
        (mac, desired, generation, created_at, last_seen, last_report),
        (last_report_at, key, report_counter, forged_reports, replayed_reports, grp),
    ) = raw;
    let group = match &grp {
        Some(g) => Some((
            GroupName::parse(g).map_err(anyhow::Error::msg)?,
            Pins::from_json(&desired).with_context(|| format!("stored pins of {mac}"))?,
        )),
        None => None,
    };
    Ok(DeviceRow {
        group,
        key: DeviceKey::from_hex(&key).with_context(|| format!("stored key of {mac}"))?,
        report_counter,
        forged_reports,
        replayed_reports,
        mac: Mac::parse(&mac).map_err(anyhow::Error::msg)?,
        desired: layers
            .desired(&mac, grp.as_deref(), &desired)
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
    let layers = Layers::load(tx)?;
    let rows: Vec<(String, String, Option<String>, String)> = {
        let mut stmt = tx.prepare("SELECT mac, desired, grp, resolved_hash FROM devices")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // Devices that want the same resolve the same: each distinct (group, rollout-moved,
    // stored manifest) is resolved once (a fleet of 100,000 has a handful).
    let mut hashes: HashMap<String, Option<String>> = HashMap::new();
    let mut changed = Vec::new();
    for (mac, desired, grp, old_hash) in rows {
        let memo = layers.memo_key(&mac, grp.as_deref(), &desired);
        if !hashes.contains_key(&memo) {
            // A manifest that no longer resolves keeps its last generation; it cannot happen
            // while versions are immutable and never deleted.
            let hash = cat
                .resolve(&layers.desired(&mac, grp.as_deref(), &desired)?)
                .ok()
                .map(|r| r.content_hash());
            hashes.insert(memo.clone(), hash);
        }
        if let Some(hash) = &hashes[&memo] {
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
    /// Stores what `mac` runs (its own manifest, or a group and its own pins); returns the
    /// desired manifest that makes and its generation afterwards.
    pub fn set_device(&mut self, mac: &Mac, assignment: &Assignment) -> Result<(Desired, i64)> {
        let tx = self.write()?;
        // Refuse a manifest naming a group, module or version that does not exist.
        let cat: Catalog = catalog(&tx)?;
        let desired = Layers::load(&tx)?.assigned(mac.as_str(), assignment)?;
        cat.resolve(&desired)?;
        let (text, grp) = assignment.stored();
        let old: Option<(String, Option<String>)> = optional(tx.query_row(
            "SELECT desired, grp FROM devices WHERE mac = ?1",
            [mac.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ))?;
        let same = old
            .as_ref()
            .is_some_and(|(t, g)| *t == text && g.as_deref() == grp);
        if !same {
            if old.is_none() {
                let key = DeviceKey::random()?;
                tx.execute(
                    "INSERT INTO devices (mac, desired, generation, resolved_hash, created_at, key, grp)
                     VALUES (?1, ?2, 0, '', ?3, ?4, ?5)",
                    rusqlite::params![mac.as_str(), text, now(), key.to_hex(), grp],
                )?;
            } else {
                tx.execute(
                    "UPDATE devices SET desired = ?2, grp = ?3 WHERE mac = ?1",
                    rusqlite::params![mac.as_str(), text, grp],
                )?;
            }
            tx.execute("DELETE FROM unknown_devices WHERE mac = ?1", [mac.as_str()])?;
            commit_change(tx)?;
        } else {
            tx.commit()?;
        }
        let generation = self.conn.query_row(
            "SELECT generation FROM devices WHERE mac = ?1",
            [mac.as_str()],
            |r| r.get(0),
        )?;
        Ok((desired, generation))
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
    pub fn set_devices(&mut self, devices: &[(Mac, Assignment)]) -> Result<BulkCounts> {
        let tx = self.write()?;
        let cat: Catalog = catalog(&tx)?;
        let layers = Layers::load(&tx)?;
        let hashes = devices
            .iter()
            .map(|(mac, assignment)| {
                let desired = layers
                    .assigned(mac.as_str(), assignment)
                    .with_context(|| format!("device {mac}"))?;
                let resolved = cat
                    .resolve(&desired)
                    .with_context(|| format!("device {mac}"))?;
                Ok(resolved.content_hash())
            })
            .collect::<Result<Vec<_>>>()?;
        type Old = ((String, Option<String>), String);
        let old: HashMap<String, Old> = {
            let mut stmt = tx.prepare("SELECT mac, desired, grp, resolved_hash FROM devices")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get(0)?, ((r.get(1)?, r.get(2)?), r.get(3)?))))?;
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
                "INSERT INTO devices (mac, desired, generation, resolved_hash, created_at, key, grp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut update =
                tx.prepare("UPDATE devices SET desired = ?2, grp = ?3 WHERE mac = ?1")?;
            let mut regenerate = tx.prepare(
                "UPDATE devices SET desired = ?2, grp = ?5, generation = ?3, resolved_hash = ?4
                 WHERE mac = ?1",
            )?;
            let mut forget = tx.prepare("DELETE FROM unknown_devices WHERE mac = ?1")?;
            let at = now();
            for ((mac, assignment), hash) in devices.iter().zip(&hashes) {
                let (text, grp) = assignment.stored();
                match old.get(mac.as_str()) {
                    Some(((o, g), _)) if *o == text && g.as_deref() == grp => {
                        counts.unchanged += 1;
                        continue;
                    }
                    Some((_, old_hash)) if old_hash == hash => {
                        update.execute(rusqlite::params![mac.as_str(), text, grp])?;
                        counts.updated += 1;
                    }
                    Some(_) => {
                        generation += 1;
                        regenerate.execute(rusqlite::params![
                            mac.as_str(),
                            text,
                            generation,
                            hash,
                            grp
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
                            key.to_hex(),
                            grp
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

    /// Forgets a device, its reports and which rollouts moved it. Returns false if it was
    /// not known.
    pub fn remove_device(&mut self, mac: &Mac) -> Result<bool> {
        let tx = self.write()?;
        let n = tx.execute("DELETE FROM devices WHERE mac = ?1", [mac.as_str()])?;
        tx.execute("DELETE FROM reports WHERE mac = ?1", [mac.as_str()])?;
        // A rollout has not moved a device added again later under the same MAC.
        tx.execute("DELETE FROM rollout_devices WHERE mac = ?1", [mac.as_str()])?;
        if n > 0 {
            bump(&tx, "revision")?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// What the served tree needs of every device, in no order, without the rest of its
    /// row (reports, counters): see [`DeviceView`]. Calls `each` per device, so that a fleet
    /// of 100,000 is never a vector of rows, and parses only what it must (stored MACs are
    /// canonical; a desired manifest is worked out only when the caller asks).
    pub fn each_device_view(
        &self,
        mut each: impl FnMut(&DeviceView<'_>) -> Result<()>,
    ) -> Result<()> {
        let layers = Layers::load(&self.conn)?;
        let mut stmt = self
            .conn
            .prepare("SELECT mac, desired, grp, generation, key FROM devices")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let mac = r.get_ref(0)?.as_str()?;
            let bits = u64::from_str_radix(mac, 16)
                .ok()
                .filter(|_| mac.len() == 12)
                .with_context(|| format!("stored MAC {mac:?}"))?;
            let key = DeviceKey::from_hex(r.get_ref(4)?.as_str()?)
                .with_context(|| format!("stored key of {mac}"))?;
            let stored = r.get_ref(1)?.as_str()?;
            let group = r.get_ref(2)?.as_str_or_null()?;
            each(&DeviceView {
                bits,
                memo: layers.memo_key(mac, group, stored),
                generation: r.get(3)?,
                key,
                layers: &layers,
                mac,
                group,
                stored,
            })?;
        }
        Ok(())
    }

    pub fn devices(&self) -> Result<Vec<DeviceRow>> {
        let layers = Layers::load(&self.conn)?;
        let mut stmt = self.conn.prepare(&format!("{SELECT} ORDER BY mac"))?;
        let rows = stmt.query_map([], row)?;
        rows.map(|r| to_device(&layers, r?)).collect()
    }

    pub fn device(&self, mac: &Mac) -> Result<Option<DeviceRow>> {
        let r = optional(self.conn.query_row(
            &format!("{SELECT} WHERE mac = ?1"),
            [mac.as_str()],
            row,
        ))?;
        let layers = Layers::load(&self.conn)?;
        r.map(|r| to_device(&layers, r)).transpose()
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
