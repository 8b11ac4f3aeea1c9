//! Operations on devices: set, import, export, list, unknown MACs, show, remove, bootstrap,
//! key fingerprint and rotation; and the fleet's reports counted by hour.

use super::{NotFound, Operation, Verb};
use crate::manifest::{Desired, Manifest, Pair, Pins, Want};
use crate::names::{GroupName, Mac, ModuleName};
use crate::store::{Assignment, Store};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub fn mac(s: &str) -> Result<Mac> {
    Mac::parse(s).map_err(anyhow::Error::msg)
}

/// `MODULE=VERSION` as the CLI takes it.
pub fn pair(s: &str) -> Result<(ModuleName, Want)> {
    let p = Pair::parse(s).map_err(anyhow::Error::msg)?;
    Ok((p.module, p.want))
}

fn unknown(m: &Mac, hint: &str) -> anyhow::Error {
    NotFound(format!("unknown device {m}{hint}")).into()
}

/// `PUT /devices/{mac}`: what a device runs, `{"app": "smartcharger", "modules":
/// {"sensorclass": "2"}}` (the app and the runtime modules are added at `latest` if missing),
/// or `{"group": "greenhouse", "modules": {...}}`: its group's, with its own pins over it
/// (`app` optional then).
#[derive(Debug, Serialize, Deserialize)]
pub struct Set {
    pub mac: String,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub modules: Map<String, Value>,
}

impl Set {
    /// The checked assignment it asks for.
    pub fn assignment(&self) -> Result<Assignment> {
        let app = self
            .app
            .as_deref()
            .map(|a| ModuleName::parse(a).map_err(anyhow::Error::msg))
            .transpose()?;
        let mut pairs = Vec::new();
        for (m, v) in &self.modules {
            let v = v
                .as_str()
                .with_context(|| format!("version of {m} is not a string"))?;
            pairs.push(pair(&format!("{m}={v}"))?);
        }
        Ok(match &self.group {
            Some(g) => Assignment::Group {
                group: GroupName::parse(g).map_err(anyhow::Error::msg)?,
                pins: Pins::new(app, pairs)?,
            },
            None => Assignment::Own(Desired::new(
                app.context("give --app APP, or --group GROUP")?,
                pairs,
            )?),
        })
    }

    /// The operation for `device set MAC [--app APP] [--group GROUP] MODULE=VERSION...`.
    pub fn new(
        m: &Mac,
        app: Option<&ModuleName>,
        group: Option<&GroupName>,
        modules: &[Pair],
    ) -> Self {
        let map = modules
            .iter()
            .map(|p| {
                (
                    p.module.to_string(),
                    Value::String(p.want.as_str().to_owned()),
                )
            })
            .collect();
        Self {
            mac: m.to_string(),
            app: app.map(ModuleName::to_string),
            group: group.map(GroupName::to_string),
            modules: map,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceSet {
    pub mac: String,
    /// The desired manifest, in the seed's format.
    pub desired: Value,
    /// Its group and its own pins over the group's, described (`sensorclass=2`), if any.
    #[serde(default)]
    pub group: Option<(String, String)>,
    pub generation: i64,
}

impl Operation for Set {
    type Output = DeviceSet;
    const VERB: Verb = Verb::Put;
    const PATH: &'static str = "/devices/{mac}";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let m = mac(&self.mac)?;
        let assignment = self.assignment()?;
        let (desired, generation) = store
            .set_device(&m, &assignment)
            .with_context(|| format!("cannot set device {m}"))?;
        Ok(DeviceSet {
            mac: m.to_string(),
            desired: serde_json::from_str(&desired.to_seed_json())?,
            group: match &assignment {
                Assignment::Group { group, pins } => Some((group.to_string(), pins.describe())),
                Assignment::Own(_) => None,
            },
            generation,
        })
    }
}

/// `POST /devices/import`: many devices at once from CSV or JSON lines (`text`), all or none.
#[derive(Debug, Serialize, Deserialize)]
pub struct Import {
    /// What the text is called in messages ("devices.csv", "standard input").
    pub source: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Imported {
    pub source: String,
    pub devices: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

impl Operation for Import {
    type Output = Imported;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/devices/import";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let name = self.source;
        let nothing = || format!("{name}: nothing imported");
        let entries = crate::bulk::parse(&self.text).with_context(nothing)?;
        // Name the line of a group, module or version that does not exist; `set_devices`
        // checks again inside its transaction.
        let resolver = store.resolver()?;
        for e in &entries {
            resolver
                .desired(&e.mac, &e.assignment)
                .with_context(|| format!("line {}: device {}", e.line, e.mac))
                .with_context(nothing)?;
        }
        let devices: Vec<_> = entries.into_iter().map(|e| (e.mac, e.assignment)).collect();
        let counts = store.set_devices(&devices).with_context(nothing)?;
        Ok(Imported {
            devices: devices.len(),
            created: counts.created,
            updated: counts.updated,
            unchanged: counts.unchanged,
            source: name,
        })
    }
}

/// `GET /devices/export`: every device in the form `Import` reads as JSON lines (no keys).
#[derive(Debug, Serialize, Deserialize)]
pub struct Export {}

impl Operation for Export {
    type Output = Vec<Value>;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/devices/export";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        store
            .devices()?
            .iter()
            .map(|d| {
                Ok(serde_json::from_str(&crate::bulk::export_line(
                    &d.mac,
                    &d.assignment(),
                ))?)
            })
            .collect()
    }
}

/// `GET /devices`: every device with what it last reported.
#[derive(Debug, Serialize, Deserialize)]
pub struct List {}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub mac: String,
    pub app: String,
    pub group: Option<String>,
    pub generation: i64,
    pub last_seen: Option<i64>,
    pub last_report: Option<Value>,
}

impl Operation for List {
    type Output = Vec<DeviceSummary>;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/devices";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        Ok(store
            .devices()?
            .into_iter()
            .map(|d| DeviceSummary {
                mac: d.mac.to_string(),
                app: d.desired.app.to_string(),
                group: d.group.as_ref().map(|(g, _)| g.to_string()),
                generation: d.generation,
                last_seen: d.last_seen,
                last_report: d.last_report,
            })
            .collect())
    }
}

/// `GET /devices/unknown`: MACs that asked for a manifest but are not devices.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unknown {}

#[derive(Debug, Serialize, Deserialize)]
pub struct UnknownDevice {
    pub mac: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub requests: i64,
}

impl Operation for Unknown {
    type Output = Vec<UnknownDevice>;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/devices/unknown";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        Ok(store
            .unknown_devices()?
            .into_iter()
            .map(|u| UnknownDevice {
                mac: u.mac.to_string(),
                first_seen: u.first_seen,
                last_seen: u.last_seen,
                requests: u.requests,
            })
            .collect())
    }
}

/// `GET /devices/{mac}`: desired and resolved manifest, what it reported, its key's
/// fingerprint, its ten latest reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct Show {
    pub mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceDetail {
    pub mac: Mac,
    /// `{"name": GROUP, "own_pins": {...}}` for a device in a group.
    pub group: Option<DeviceGroup>,
    /// `{"id", "state", "step"}` of the rollout that moved it, if one did and is under way.
    pub rollout: Option<RolloutAt>,
    /// In the seed's format.
    pub desired: Desired,
    /// What `v1/{mac}.json` holds.
    pub resolved: Manifest,
    pub generation: i64,
    pub last_seen: Option<i64>,
    pub last_report: Option<Value>,
    pub last_report_at: Option<i64>,
    /// The key's fingerprint (never the key).
    pub key: String,
    pub report_counter: i64,
    pub forged_reports: i64,
    pub replayed_reports: i64,
    /// Newest first.
    pub reports: Vec<ReportAt>,
}

/// A grouped device's group, and the pins of its own laid over the group's.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceGroup {
    pub name: GroupName,
    pub own_pins: Pins,
}

/// The rollout that moved a device, while it runs or is paused.
#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutAt {
    pub id: i64,
    /// `running` or `paused`.
    pub state: String,
    /// Counted from 1.
    pub step: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReportAt {
    pub at: i64,
    pub report: Value,
}

impl Operation for Show {
    type Output = DeviceDetail;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/devices/{mac}";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let m = mac(&self.mac)?;
        let Some(d) = store.device(&m)? else {
            return Err(unknown(
                &m,
                &format!(": add it with `mpfleet device set {m} --app NAME`"),
            ));
        };
        let resolved = store.catalog()?.resolve(&d.desired)?;
        let resolved = resolved.manifest(&m, &store.store_id()?, d.generation);
        let reports = store.reports(&m, 10)?;
        let group = d
            .group
            .map(|(name, own_pins)| DeviceGroup { name, own_pins });
        let rollout = store.rollout_of(&m)?.map(|(id, state, step)| RolloutAt {
            id,
            state,
            step: step + 1,
        });
        Ok(DeviceDetail {
            mac: m,
            group,
            rollout,
            desired: d.desired,
            resolved,
            generation: d.generation,
            last_seen: d.last_seen,
            last_report: d.last_report,
            last_report_at: d.last_report_at,
            key: d.key.fingerprint(),
            report_counter: d.report_counter,
            forged_reports: d.forged_reports,
            replayed_reports: d.replayed_reports,
            reports: reports
                .into_iter()
                .map(|r| ReportAt {
                    at: r.at,
                    report: r.body,
                })
                .collect(),
        })
    }
}

/// `DELETE /devices/{mac}`: forget a device and its reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct Remove {
    pub mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    pub mac: String,
}

impl Operation for Remove {
    type Output = Removed;
    const VERB: Verb = Verb::Delete;
    const PATH: &'static str = "/devices/{mac}";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let m = mac(&self.mac)?;
        if !store.remove_device(&m)? {
            return Err(unknown(&m, ": nothing removed"));
        }
        Ok(Removed { mac: m.to_string() })
    }
}

/// `POST /devices/{mac}/bootstrap`: the board's bootstrap.py, holding its secret key. Body:
/// `{"server": "http://192.168.1.10:8080/", "secrets": "{...}"}` (`secrets` optional: a JSON
/// object as text).
#[derive(Debug, Serialize, Deserialize)]
pub struct Bootstrap {
    pub mac: String,
    /// The URL boards reach the server at.
    pub server: String,
    #[serde(default)]
    pub secrets: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BootstrapScript {
    pub mac: String,
    /// bootstrap.py, to run on the board once.
    pub text: String,
}

impl Bootstrap {
    /// Checks what needs no store: the server's scheme and the secrets' shape.
    pub fn check(&self) -> Result<()> {
        if let Some(s) = &self.secrets {
            let value: Value = serde_json::from_str(s).context("secrets are not JSON")?;
            anyhow::ensure!(value.is_object(), "secrets are not a JSON object");
        }
        if !self.server.starts_with("http://") {
            anyhow::bail!(
                "--server {:?}: boards speak plain http://, e.g. http://192.168.1.10:8080/",
                self.server
            );
        }
        Ok(())
    }
}

impl Operation for Bootstrap {
    type Output = BootstrapScript;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/devices/{mac}/bootstrap";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let m = mac(&self.mac)?;
        self.check()?;
        let Some(d) = store.device(&m)? else {
            return Err(unknown(
                &m,
                &format!(": add it first with `mpfleet device set {m} --app NAME`"),
            ));
        };
        let text = crate::runtime::bootstrap_for(
            &self.server,
            &d.key,
            &store.store_id()?,
            d.report_counter,
            self.secrets.as_deref(),
        );
        Ok(BootstrapScript {
            mac: m.to_string(),
            text,
        })
    }
}

/// `GET /devices/{mac}/key`: the fingerprint of a device's key.
#[derive(Debug, Serialize, Deserialize)]
pub struct Key {
    pub mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KeyFingerprint {
    pub mac: String,
    pub fingerprint: String,
}

fn fingerprint(store: &Store, m: &Mac) -> Result<KeyFingerprint> {
    let Some(d) = store.device(m)? else {
        return Err(unknown(m, ""));
    };
    Ok(KeyFingerprint {
        mac: m.to_string(),
        fingerprint: d.key.fingerprint(),
    })
}

impl Operation for Key {
    type Output = KeyFingerprint;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/devices/{mac}/key";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        fingerprint(store, &mac(&self.mac)?)
    }
}

/// `POST /devices/{mac}/key/rotate`: a new random key (the board needs its new bootstrap).
#[derive(Debug, Serialize, Deserialize)]
pub struct RotateKey {
    pub mac: String,
}

impl Operation for RotateKey {
    type Output = KeyFingerprint;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/devices/{mac}/key/rotate";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let m = mac(&self.mac)?;
        if !store.rotate_key(&m)? {
            return Err(unknown(&m, ""));
        }
        fingerprint(store, &m)
    }
}

/// `GET /reports/hourly`: reports of the last 24 hours by hour and event (the dashboard's
/// health chart), oldest first; only reports still kept (the latest 50 per device) count.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hourly {}

/// Reports in one hour with one event.
#[derive(Debug, Serialize, Deserialize)]
pub struct HourCount {
    /// The hour's first second.
    pub hour: i64,
    pub event: String,
    pub count: i64,
}

/// How far back [`Hourly`] looks.
pub const HOURLY_HOURS: i64 = 24;

impl Operation for Hourly {
    type Output = Vec<HourCount>;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/reports/hourly";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let since = (crate::store::now() / 3600 - (HOURLY_HOURS - 1)) * 3600;
        Ok(store
            .reports_by_hour(since)?
            .into_iter()
            .map(|(hour, event, count)| HourCount { hour, event, count })
            .collect())
    }
}
