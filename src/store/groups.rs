//! Groups: many devices asking for the same thing. A group has pins (an app and module
//! versions); a device in it runs the group's pins with its own laid over them, so changing
//! the group moves every member whose resolved manifest changes, and only those.
//!
//! [`Layers`] is where a device's stored row becomes the desired manifest it runs: the one
//! place that knows how the layers stack (the group's pins, then a running or paused
//! rollout's for the boards it has moved, then the device's own), used by everything that
//! reads or regenerates devices.

use super::{catalog, commit_change, now, optional, Store};
use crate::manifest::{Desired, Pins};
use crate::names::GroupName;
use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};

/// A group as stored, with how many devices it has.
#[derive(Debug, Clone)]
pub struct GroupRow {
    pub name: GroupName,
    pub pins: Pins,
    pub created_at: i64,
    pub members: i64,
}

/// What a device is told to run: a whole manifest of its own, or a group's with its own
/// pins over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Own(Desired),
    Group { group: GroupName, pins: Pins },
}

impl Assignment {
    /// What the devices row holds: its `desired` text and its `grp`.
    pub(super) fn stored(&self) -> (String, Option<&str>) {
        match self {
            Self::Own(d) => (d.to_seed_json(), None),
            Self::Group { group, pins } => (pins.to_json(), Some(group.as_str())),
        }
    }
}

/// Everything a device's own pins are laid over, read once for many devices.
pub(crate) struct Layers {
    groups: HashMap<String, Pins>,
    /// Per group, its active rollout's pins and the boards it has moved.
    rollouts: HashMap<String, (Pins, HashSet<String>)>,
}

impl Layers {
    pub(crate) fn load(conn: &Connection) -> Result<Self> {
        let mut stmt = conn.prepare("SELECT name, pins FROM groups")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut groups = HashMap::new();
        for row in rows {
            let (name, pins) = row?;
            let pins =
                Pins::from_json(&pins).with_context(|| format!("stored pins of group {name}"))?;
            groups.insert(name, pins);
        }
        let mut rollouts: HashMap<String, (Pins, HashSet<String>)> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT r.grp, r.pins, d.mac FROM rollouts r
             LEFT JOIN rollout_devices d ON d.rollout = r.id
             WHERE r.state IN ('running', 'paused')",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (group, pins, mac) = row?;
            let entry = match rollouts.entry(group) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let pins = Pins::from_json(&pins).context("stored pins of a rollout")?;
                    e.insert((pins, HashSet::new()))
                }
            };
            entry.1.extend(mac);
        }
        Ok(Self { groups, rollouts })
    }

    /// The desired manifest of device `mac` from its row: `stored` is its `desired` column,
    /// `group` its `grp`.
    pub(crate) fn desired(&self, mac: &str, group: Option<&str>, stored: &str) -> Result<Desired> {
        let Some(group) = group else {
            return Desired::from_seed_json(stored);
        };
        let own = Pins::from_json(stored)?;
        let base = self
            .groups
            .get(group)
            .with_context(|| format!("unknown group {group}"))?;
        match self.rollouts.get(group) {
            Some((pins, moved)) if moved.contains(mac) => {
                base.overlay(pins).overlay(&own).desired()
            }
            _ => base.overlay(&own).desired(),
        }
    }

    /// What [`Self::desired`] depends on besides the stored text, as one string: devices
    /// with the same key have the same desired manifest, so a fleet is resolved once per
    /// distinct key, not once per device.
    pub(crate) fn memo_key(&self, mac: &str, group: Option<&str>, stored: &str) -> String {
        let moved = group
            .and_then(|g| self.rollouts.get(g))
            .is_some_and(|(_, moved)| moved.contains(mac));
        format!("{}\0{}\0{stored}", group.unwrap_or(""), u8::from(moved))
    }

    /// The desired manifest an assignment would give device `mac` now.
    pub(crate) fn assigned(&self, mac: &str, a: &Assignment) -> Result<Desired> {
        match a {
            Assignment::Own(d) => Ok(d.clone()),
            Assignment::Group { group, pins } => {
                if !self.groups.contains_key(group.as_str()) {
                    bail!("{}", unknown_group(group));
                }
                self.desired(mac, Some(group.as_str()), &pins.to_json())
            }
        }
    }
}

/// Checks assignments against the store as it is: their group exists and what they make
/// resolves. For commands that want to name the line of an error before writing anything.
pub struct Resolver {
    layers: Layers,
    catalog: crate::manifest::Catalog,
}

impl Resolver {
    /// The desired manifest `a` gives device `mac`, checked to resolve.
    pub fn desired(&self, mac: &crate::names::Mac, a: &Assignment) -> Result<Desired> {
        let d = self.layers.assigned(mac.as_str(), a)?;
        self.catalog.resolve(&d)?;
        Ok(d)
    }
}

pub fn unknown_group(name: &GroupName) -> String {
    format!("unknown group {name}: create it with `mpfleet group create {name} --app APP`")
}

impl Store {
    pub fn resolver(&self) -> Result<Resolver> {
        Ok(Resolver {
            layers: Layers::load(&self.conn)?,
            catalog: catalog(&self.conn)?,
        })
    }

    /// Creates a group with `pins`, which must name an app and resolve.
    pub fn create_group(&mut self, name: &GroupName, pins: &Pins) -> Result<()> {
        let tx = self.write()?;
        let exists: Option<i64> = optional(tx.query_row(
            "SELECT 1 FROM groups WHERE name = ?1",
            [name.as_str()],
            |r| r.get(0),
        ))?;
        if exists.is_some() {
            bail!("group {name} already exists: change it with `mpfleet group set {name} ...`");
        }
        catalog(&tx)?.resolve(&pins.desired()?)?;
        tx.execute(
            "INSERT INTO groups (name, pins, created_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![name.as_str(), pins.to_json(), now()],
        )?;
        commit_change(tx)
    }

    /// Replaces a group's pins (keeping its app when `pins` names none). Every member whose
    /// resolved manifest changes gets a new generation, and only those. Every member's
    /// manifest must still resolve, or nothing changes.
    pub fn set_group(&mut self, name: &GroupName, pins: &Pins) -> Result<Pins> {
        let tx = self.write()?;
        let old: Option<String> = optional(tx.query_row(
            "SELECT pins FROM groups WHERE name = ?1",
            [name.as_str()],
            |r| r.get(0),
        ))?;
        let Some(old) = old else {
            bail!("{}", unknown_group(name));
        };
        let mut pins = pins.clone();
        if pins.app.is_none() {
            pins.app = Pins::from_json(&old)?.app;
        }
        let cat = catalog(&tx)?;
        cat.resolve(&pins.desired()?)?;
        tx.execute(
            "UPDATE groups SET pins = ?2 WHERE name = ?1",
            [name.as_str(), pins.to_json().as_str()],
        )?;
        // The members, with their own pins over the new ones.
        let layers = Layers::load(&tx)?;
        {
            let mut stmt = tx.prepare("SELECT mac, desired FROM devices WHERE grp = ?1")?;
            let rows = stmt.query_map([name.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (mac, stored) = row?;
                let desired = layers.desired(&mac, Some(name.as_str()), &stored)?;
                cat.resolve(&desired)
                    .with_context(|| format!("device {mac} of group {name}"))?;
            }
        }
        commit_change(tx)?;
        Ok(pins)
    }

    /// Deletes a group that has no devices.
    pub fn delete_group(&mut self, name: &GroupName) -> Result<()> {
        let tx = self.write()?;
        let members: Vec<String> = {
            let mut stmt = tx.prepare("SELECT mac FROM devices WHERE grp = ?1 ORDER BY mac")?;
            let rows = stmt.query_map([name.as_str()], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if !members.is_empty() {
            let shown: Vec<&str> = members.iter().take(3).map(String::as_str).collect();
            bail!(
                "group {name} has {} device(s) ({}{}): move them out first \
                 (`mpfleet device set MAC --app APP` or `--group OTHER`), or `mpfleet device rm MAC`",
                members.len(),
                shown.join(", "),
                if members.len() > 3 { ", ..." } else { "" }
            );
        }
        let active: Option<i64> = optional(tx.query_row(
            "SELECT id FROM rollouts WHERE grp = ?1 AND state IN ('running', 'paused')",
            [name.as_str()],
            |r| r.get(0),
        ))?;
        if let Some(id) = active {
            bail!("group {name} has rollout {id} under way: `mpfleet rollout abort {id}` first");
        }
        if tx.execute("DELETE FROM groups WHERE name = ?1", [name.as_str()])? == 0 {
            bail!("{}", unknown_group(name));
        }
        commit_change(tx)
    }

    pub fn groups(&self) -> Result<Vec<GroupRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT g.name, g.pins, g.created_at,
                    (SELECT count(*) FROM devices d WHERE d.grp = g.name)
             FROM groups g ORDER BY g.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, pins, created_at, members) = row?;
            out.push(GroupRow {
                pins: Pins::from_json(&pins)
                    .with_context(|| format!("stored pins of group {name}"))?,
                name: GroupName::parse(&name).map_err(anyhow::Error::msg)?,
                created_at,
                members,
            });
        }
        Ok(out)
    }

    pub fn group(&self, name: &GroupName) -> Result<Option<GroupRow>> {
        Ok(self.groups()?.into_iter().find(|g| g.name == *name))
    }
}
