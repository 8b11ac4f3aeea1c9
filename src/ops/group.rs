//! Operations on groups: create, set, list, show, delete.

use super::device::pair;
use super::{NotFound, Operation, Verb};
use crate::manifest::{Pair, Pins};
use crate::names::{GroupName, ModuleName};
use crate::store::{unknown_group, Store};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub fn group_name(s: &str) -> Result<GroupName> {
    GroupName::parse(s).map_err(anyhow::Error::msg)
}

/// `MODULE=VERSION` pairs as the JSON object the API takes, checked (a module listed twice
/// with two versions is an error here, before a map could keep only one of them).
pub fn modules(pairs: &[Pair]) -> Result<Map<String, Value>> {
    let pins = Pins::new(None, Pair::tuples(pairs))?;
    Ok(pins
        .modules
        .iter()
        .map(|(m, w)| (m.to_string(), Value::String(w.as_str().to_owned())))
        .collect())
}

/// The checked pins of an app (if any) and `{"module": "version"}`.
fn pins(app: Option<&str>, modules: &Map<String, Value>) -> Result<Pins> {
    let app = app
        .map(|a| ModuleName::parse(a).map_err(anyhow::Error::msg))
        .transpose()?;
    let mut pairs = Vec::new();
    for (m, v) in modules {
        let v = v
            .as_str()
            .with_context(|| format!("version of {m} is not a string"))?;
        pairs.push(pair(&format!("{m}={v}"))?);
    }
    Pins::new(app, pairs)
}

fn pins_json(p: &Pins) -> Value {
    serde_json::from_str(&p.to_json()).expect("pins are JSON")
}

/// The group `n`, or a "no such group" error (404 on the admin API).
fn existing(store: &Store, n: &GroupName) -> Result<crate::store::GroupRow> {
    store
        .group(n)?
        .ok_or_else(|| NotFound(unknown_group(n)).into())
}

/// What `create` and `set` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupSet {
    pub name: String,
    /// The desired manifest the group's pins make, in the seed's format.
    pub desired: Value,
}

fn group_set(n: &GroupName, p: &Pins) -> Result<GroupSet> {
    Ok(GroupSet {
        name: n.to_string(),
        desired: serde_json::from_str(&p.desired()?.to_seed_json())?,
    })
}

/// `POST /groups`: `{"name": "greenhouse", "app": "smartcharger", "modules":
/// {"sensorclass": "2"}}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Create {
    pub name: String,
    pub app: String,
    #[serde(default)]
    pub modules: Map<String, Value>,
}

impl Operation for Create {
    type Output = GroupSet;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/groups";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let n = group_name(&self.name)?;
        let p = pins(Some(&self.app), &self.modules)?;
        store
            .create_group(&n, &p)
            .with_context(|| format!("cannot create group {n}"))?;
        group_set(&n, &p)
    }
}

/// `PUT /groups/{group}`: `{"modules": {"sensorclass": "3"}, "app"?: "smartcharger"}`: the
/// modules replace the group's; the app stays unless given.
#[derive(Debug, Serialize, Deserialize)]
pub struct Set {
    pub group: String,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub modules: Map<String, Value>,
}

impl Operation for Set {
    type Output = GroupSet;
    const VERB: Verb = Verb::Put;
    const PATH: &'static str = "/groups/{group}";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let n = group_name(&self.group)?;
        let cannot = || format!("cannot set group {n}");
        let p = pins(self.app.as_deref(), &self.modules)?;
        existing(store, &n).with_context(cannot)?;
        let p = store.set_group(&n, &p).with_context(cannot)?;
        group_set(&n, &p)
    }
}

/// `DELETE /groups/{group}`: a group without devices or a rollout under way.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delete {
    pub group: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    pub name: String,
}

impl Operation for Delete {
    type Output = Deleted;
    const VERB: Verb = Verb::Delete;
    const PATH: &'static str = "/groups/{group}";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let n = group_name(&self.group)?;
        let cannot = || format!("cannot delete group {n}");
        existing(store, &n).with_context(cannot)?;
        store.delete_group(&n).with_context(cannot)?;
        Ok(Deleted {
            name: n.to_string(),
        })
    }
}

/// `GET /groups`: every group with its pins and how many devices it has.
#[derive(Debug, Serialize, Deserialize)]
pub struct List {}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    /// `{"name": APP, "module": "version", ...}`.
    pub pins: Value,
    pub devices: i64,
    pub created_at: i64,
}

impl Operation for List {
    type Output = Vec<GroupSummary>;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/groups";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        Ok(store
            .groups()?
            .iter()
            .map(|g| GroupSummary {
                name: g.name.to_string(),
                pins: pins_json(&g.pins),
                devices: g.members,
                created_at: g.created_at,
            })
            .collect())
    }
}

/// `GET /groups/{group}`: its pins, the desired manifest they make, its devices.
#[derive(Debug, Serialize, Deserialize)]
pub struct Show {
    pub group: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupDetail {
    pub name: String,
    pub pins: Value,
    pub desired: Value,
    pub created_at: i64,
    pub devices: Vec<Member>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Member {
    pub mac: String,
    /// The device's own pins over the group's.
    pub own_pins: Option<Value>,
    pub generation: i64,
    pub last_seen: Option<i64>,
    pub last_report: Option<Value>,
}

impl Operation for Show {
    type Output = GroupDetail;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/groups/{group}";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let n = group_name(&self.group)?;
        let g = existing(store, &n)?;
        let desired = g.pins.desired()?;
        let devices = store
            .devices()?
            .into_iter()
            .filter_map(|d| {
                let (group, own) = d.group.as_ref()?;
                (*group == n).then(|| Member {
                    mac: d.mac.to_string(),
                    own_pins: Some(pins_json(own)),
                    generation: d.generation,
                    last_seen: d.last_seen,
                    last_report: d.last_report.clone(),
                })
            })
            .collect();
        Ok(GroupDetail {
            name: n.to_string(),
            pins: pins_json(&g.pins),
            desired: serde_json::from_str(&desired.to_seed_json())?,
            created_at: g.created_at,
            devices,
        })
    }
}
