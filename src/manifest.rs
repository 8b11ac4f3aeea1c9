//! Desired and resolved manifests: what a device should run, as the user wrote it and as a
//! board installs it.
//!
//! The desired manifest keeps the seed's format (`{"name": app, module: version|"latest"}`);
//! the resolved one replaces every `latest` by a concrete version and adds sizes, hashes and
//! URLs (see `DESIGN.md`). Both are rendered here and only here, so `serve` and `export`
//! cannot disagree on a byte.

use crate::names::{Mac, ModuleName, Version};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The runtime modules every device gets, at `latest` unless its manifest names a version.
pub const RUNTIME_MODULES: [&str; 7] = [
    "config",
    "updater",
    "updater_trust",
    "reporter",
    "updater_io",
    "installer",
    "updater_delta",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Latest,
    Exact(Version),
}

impl Want {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "latest" {
            Ok(Self::Latest)
        } else {
            Version::parse(s).map(Self::Exact)
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Latest => "latest",
            Self::Exact(v) => v.as_str(),
        }
    }
}

impl FromStr for Want {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// `MODULE=VERSION` as the command line takes it (VERSION may be `latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub module: ModuleName,
    pub want: Want,
}

impl Pair {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (m, v) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not MODULE=VERSION (VERSION may be `latest`)"))?;
        Ok(Self {
            module: ModuleName::parse(m)?,
            want: Want::parse(v)?,
        })
    }

    /// The pairs as the `(module, want)` tuples manifests are built from.
    pub fn tuples(pairs: &[Pair]) -> Vec<(ModuleName, Want)> {
        pairs
            .iter()
            .map(|p| (p.module.clone(), p.want.clone()))
            .collect()
    }
}

impl FromStr for Pair {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.module, self.want.as_str())
    }
}

/// The pins of a seed-format object (`{"name": APP, MODULE: VERSION, ...}`): the app, if
/// named, and the pairs in their order.
fn seed_pins(map: &Map<String, Value>) -> Result<Pins> {
    let app = match map.get("name") {
        None => None,
        Some(v) => Some(
            ModuleName::parse(v.as_str().context("\"name\" is not a string")?)
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let mut pairs = Vec::new();
    for (k, v) in map.iter().filter(|(k, _)| *k != "name") {
        let name = ModuleName::parse(k).map_err(anyhow::Error::msg)?;
        let v = v
            .as_str()
            .with_context(|| format!("version of {k} is not a string"))?;
        pairs.push((name, Want::parse(v).map_err(anyhow::Error::msg)?));
    }
    Pins::new(app, pairs)
}

/// Serialises `app` and `modules` as a seed-format object.
fn serialize_seed<S: serde::Serializer>(
    app: Option<&ModuleName>,
    modules: &[(ModuleName, Want)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(modules.len() + usize::from(app.is_some())))?;
    if let Some(app) = app {
        map.serialize_entry("name", app.as_str())?;
    }
    for (name, want) in modules {
        map.serialize_entry(name.as_str(), want.as_str())?;
    }
    map.end()
}

/// What a device should run, in the order the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub app: ModuleName,
    pub modules: Vec<(ModuleName, Want)>,
}

impl Desired {
    /// Builds a manifest from the app and `module=version` pairs: the app is added at `latest`
    /// if not listed, and so are the runtime modules.
    pub fn new(app: ModuleName, pairs: Vec<(ModuleName, Want)>) -> Result<Self> {
        let mut modules = Pins::new(None, pairs)?.modules;
        if !modules.iter().any(|(n, _)| *n == app) {
            modules.insert(0, (app.clone(), Want::Latest));
        }
        for rt in RUNTIME_MODULES {
            if !modules.iter().any(|(n, _)| n.as_str() == rt) {
                modules.push((ModuleName::parse(rt).expect("runtime name"), Want::Latest));
            }
        }
        Ok(Self { app, modules })
    }

    /// The seed's format: `{"name": "smartcharger", "smartcharger": "1", ...}`.
    pub fn to_seed_json(&self) -> String {
        let mut map = Map::new();
        map.insert("name".into(), Value::String(self.app.to_string()));
        for (name, want) in &self.modules {
            map.insert(name.to_string(), Value::String(want.as_str().to_owned()));
        }
        Value::Object(map).to_string()
    }

    pub fn from_seed_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("desired manifest is not JSON")?;
        Self::from_seed(&value)
    }

    /// From the seed's format, already parsed.
    pub fn from_seed(value: &Value) -> Result<Self> {
        let map = value
            .as_object()
            .context("desired manifest is not a JSON object")?;
        let pins = seed_pins(map)?;
        Self::new(
            pins.app.context("desired manifest has no \"name\"")?,
            pins.modules,
        )
    }
}

/// In the seed's format, as [`Desired::to_seed_json`] writes it.
impl serde::Serialize for Desired {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_seed(Some(&self.app), &self.modules, s)
    }
}

impl<'de> serde::Deserialize<'de> for Desired {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Self::from_seed(&value).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// Module pins as the user gave them, without the defaults [`Desired::new`] adds: what a
/// group asks of its devices, what a grouped device says on top of its group, and what a
/// rollout moves boards to. Layers are laid over each other (the later wins) and only the
/// result becomes a [`Desired`], so a device's pin overrides its group's but a module the
/// device does not name follows the group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pins {
    pub app: Option<ModuleName>,
    pub modules: Vec<(ModuleName, Want)>,
}

impl Pins {
    /// Pins from the app (if any) and `module=version` pairs; a module twice with two
    /// versions is an error.
    pub fn new(app: Option<ModuleName>, pairs: Vec<(ModuleName, Want)>) -> Result<Self> {
        let mut modules: Vec<(ModuleName, Want)> = Vec::new();
        for (name, want) in pairs {
            if let Some((_, old)) = modules.iter().find(|(n, _)| *n == name) {
                if *old != want {
                    bail!(
                        "module {name} is listed twice, as {} and as {}",
                        old.as_str(),
                        want.as_str()
                    );
                }
                continue;
            }
            modules.push((name, want));
        }
        Ok(Self { app, modules })
    }

    /// `layer` laid over these pins: its app, if it names one, and its versions win.
    pub fn overlay(&self, layer: &Pins) -> Pins {
        let mut out = self.clone();
        if let Some(app) = &layer.app {
            out.app = Some(app.clone());
        }
        for (name, want) in &layer.modules {
            match out.modules.iter_mut().find(|(n, _)| n == name) {
                Some((_, w)) => *w = want.clone(),
                None => out.modules.push((name.clone(), want.clone())),
            }
        }
        out
    }

    /// The desired manifest these pins make, defaults added; they must name an app.
    pub fn desired(&self) -> Result<Desired> {
        let app = self
            .app
            .clone()
            .context("no app: give one with --app (or the device's group names one)")?;
        Desired::new(app, self.modules.clone())
    }

    /// The seed's format with `"name"` left out when there is no app.
    pub fn to_json(&self) -> String {
        let mut map = Map::new();
        if let Some(app) = &self.app {
            map.insert("name".into(), Value::String(app.to_string()));
        }
        for (name, want) in &self.modules {
            map.insert(name.to_string(), Value::String(want.as_str().to_owned()));
        }
        Value::Object(map).to_string()
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("pins are not JSON")?;
        Self::from_value(&value)
    }

    /// From [`Self::to_json`]'s format, already parsed.
    pub fn from_value(value: &Value) -> Result<Self> {
        let map = value.as_object().context("pins are not a JSON object")?;
        seed_pins(map)
    }

    /// `MODULE=VERSION ...`, with `app APP` first when there is one ("-" for none at all).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(app) = &self.app {
            parts.push(format!("app {app}"));
        }
        parts.extend(
            self.modules
                .iter()
                .map(|(n, w)| format!("{n}={}", w.as_str())),
        );
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }
}

/// In [`Pins::to_json`]'s format.
impl serde::Serialize for Pins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_seed(self.app.as_ref(), &self.modules, s)
    }
}

impl<'de> serde::Deserialize<'de> for Pins {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Self::from_value(&value).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// One published version's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub sha256: String,
    pub size: u64,
    /// Its precompiled variant, if it has one.
    pub mpy: Option<MpyInfo>,
}

/// A version's bytecode-only `.mpy` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpyInfo {
    pub sha256: String,
    pub size: u64,
    /// The .mpy major version (`sys.implementation._mpy & 0xff` on a board that loads it).
    pub version: u8,
}

/// Every module's versions and latest pointer: all that resolution needs.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub modules: BTreeMap<ModuleName, ModuleInfo>,
}

#[derive(Debug, Clone)]
pub struct ModuleInfo {
    pub latest: Version,
    pub versions: BTreeMap<Version, VersionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    pub version: Version,
    pub info: VersionInfo,
}

/// A desired manifest with every version concrete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub app: ModuleName,
    pub modules: BTreeMap<ModuleName, ResolvedModule>,
    /// What a bootstrap installs besides the modules: `/main.py` (module `main`, latest)
    /// and the first stage (modules `mpfleet` and `mpfleet_boot`, latest). Not part of a generation: an
    /// update never replaces them.
    pub boot: Vec<(ModuleName, ResolvedModule)>,
}

/// The most modules a device may run: what the board runtime is tested with (its
/// configuration and the importer hold one short entry per module in RAM).
pub const MAX_MODULES: usize = 64;

/// The modules a bootstrap installs outside any configuration: `/main.py` (a stub, always
/// source) and the first stage (`device/mpfleet.py`, `device/mpfleet_boot.py`).
pub const BOOT_MODULES: [&str; 3] = ["main", "mpfleet", "mpfleet_boot"];

impl Catalog {
    pub fn resolve(&self, desired: &Desired) -> Result<Resolved> {
        if desired.modules.len() > MAX_MODULES {
            bail!(
                "{} modules (runtime included): a board runs at most {MAX_MODULES}",
                desired.modules.len()
            );
        }
        let mut modules = BTreeMap::new();
        for (name, want) in &desired.modules {
            let info = self
                .modules
                .get(name)
                .with_context(|| format!("module {name} is not published"))?;
            let version = match want {
                Want::Latest => info.latest.clone(),
                Want::Exact(v) => v.clone(),
            };
            let vi = info
                .versions
                .get(&version)
                .with_context(|| format!("module {name} has no version {version}"))?;
            modules.insert(
                name.clone(),
                ResolvedModule {
                    version,
                    info: vi.clone(),
                },
            );
        }
        let boot = BOOT_MODULES
            .iter()
            .filter_map(|n| {
                let name = ModuleName::parse(n).ok()?;
                let info = self.modules.get(&name)?;
                let m = ResolvedModule {
                    version: info.latest.clone(),
                    info: info.versions.get(&info.latest)?.clone(),
                };
                Some((name, m))
            })
            .collect();
        Ok(Resolved {
            app: desired.app.clone(),
            modules,
            boot,
        })
    }
}

impl Resolved {
    /// A hash of what the board would run: when it changes, the generation grows.
    pub fn content_hash(&self) -> String {
        let modules: Map<String, Value> = self
            .modules
            .iter()
            .map(|(n, m)| {
                let mpy = m.info.mpy.as_ref().map(|x| x.sha256.as_str());
                (
                    n.to_string(),
                    json!([m.version.as_str(), m.info.sha256, mpy]),
                )
            })
            .collect();
        crate::store::sha256_hex(
            json!({"app": self.app.as_str(), "modules": modules})
                .to_string()
                .as_bytes(),
        )
    }

    /// The manifest inside `v1/{mac}.json` (which is this, sealed by `crate::sign::seal`):
    /// JSON with one file per line, so a board can read it from flash a line at a time (see
    /// `docs/protocol.md`). The first line holds the device, the store, app and generation
    /// and ends with `"modules":{`; then one `"name":{...}` per line; then `},"boot":{`, one
    /// line per file a bootstrap installs, and `}}`.
    pub fn to_json(&self, mac: &Mac, store: &str, generation: i64) -> String {
        let mut out = head(mac, store, &self.app, generation, false);
        out.push_str(&self.tail());
        out
    }

    /// Everything of [`Self::to_json`] after the head: the same for every device that
    /// resolves to the same files, so the served tree keeps it once for all of them.
    pub fn tail(&self) -> String {
        self.tail_with(&|_| Extra::default())
    }

    /// [`Self::tail`], with what `extra` (by a file's SHA-256) says the tree has beside each
    /// file: what `serve` and `export` hand out.
    pub fn tail_with(&self, extra: &dyn Fn(&str) -> Extra) -> String {
        let mut out = String::with_capacity(400 * (self.modules.len() + 3));
        lines(
            &mut out,
            self.modules
                .iter()
                .map(|(n, m)| (n, file_entry(n, m, extra))),
        );
        out.push_str("\n},\"boot\":{");
        lines(
            &mut out,
            self.boot.iter().map(|(name, m)| {
                let mut e = file_entry(name, m, extra);
                if name.as_str() == "main" {
                    // /main.py runs as source, whatever the port.
                    e.as_object_mut()
                        .expect("an entry is an object")
                        .remove("mpy");
                }
                (name, e)
            }),
        );
        out.push_str("\n}}\n");
        out
    }
}

/// A device's resolved manifest as data: the JSON of [`Resolved::to_json`] (serde writes the
/// same object), for `device show` and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub device: Mac,
    pub store: String,
    pub app: ModuleName,
    pub generation: i64,
    pub modules: BTreeMap<ModuleName, FileEntry>,
    pub boot: BTreeMap<ModuleName, FileEntry>,
}

/// One file of a [`Manifest`]: its version, size, SHA-256, URL, and precompiled variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub version: Version,
    pub size: u64,
    pub sha256: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpy: Option<MpyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpyEntry {
    pub version: u8,
    pub size: u64,
    pub sha256: String,
    pub url: String,
}

impl Resolved {
    /// What [`Self::to_json`] says, as data.
    pub fn manifest(&self, mac: &Mac, store: &str, generation: i64) -> Manifest {
        let entry = |name: &ModuleName, m: &ResolvedModule, mpy: bool| FileEntry {
            version: m.version.clone(),
            size: m.info.size,
            sha256: m.info.sha256.clone(),
            url: version_path(name, &m.version),
            mpy: m.info.mpy.as_ref().filter(|_| mpy).map(|x| MpyEntry {
                version: x.version,
                size: x.size,
                sha256: x.sha256.clone(),
                url: mpy_path(name, &m.version),
            }),
        };
        Manifest {
            device: mac.clone(),
            store: store.to_owned(),
            app: self.app.clone(),
            generation,
            modules: self
                .modules
                .iter()
                .map(|(n, m)| (n.clone(), entry(n, m, true)))
                .collect(),
            // /main.py runs as source, whatever the port (as in `tail`).
            boot: self
                .boot
                .iter()
                .map(|(n, m)| (n.clone(), entry(n, m, n.as_str() != "main")))
                .collect(),
        }
    }
}

/// The first line of a device's manifest, up to and including `"modules":{`: the device, the
/// store, the app and the generation ([`Resolved::to_json`] is this, then the tail), and
/// `"deltas":true` when a module entry lists deltas (`from`): the board then applies them in a
/// boot of their own before the installer's.
pub fn head(mac: &Mac, store: &str, app: &ModuleName, generation: i64, deltas: bool) -> String {
    let mut head = json!({
        "device": mac.as_str(),
        "store": store,
        "app": app.as_str(),
        "generation": generation,
    });
    if deltas {
        head["deltas"] = Value::Bool(true);
    }
    let head = head.to_string();
    let mut out = String::with_capacity(head.len() + 12);
    out.push_str(&head[..head.len() - 1]);
    out.push_str(",\"modules\":{");
    out
}

/// Appends `"name":{entry}` lines, each after a newline, separated by commas.
fn lines<'a>(out: &mut String, entries: impl Iterator<Item = (&'a ModuleName, Value)>) {
    for (i, (name, entry)) in entries.enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        out.push_str(&Value::String(name.to_string()).to_string());
        out.push(':');
        out.push_str(&entry.to_string());
    }
}

/// What the served tree has beside a file, named in its manifest entry.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// The size of its gzip copy (`crate::compress`), if it has one: `"gz"`.
    pub gz: Option<u64>,
    /// The first 12 hex digits of the SHA-256 of each file it has a delta from
    /// (`crate::delta`): `"from"`.
    pub from: Vec<String>,
}

/// One file of a resolved manifest: its version, size, SHA-256, URL, what `extra` says the
/// tree has beside it (a compressed copy, deltas), and its precompiled variant (with its own).
fn file_entry(name: &ModuleName, m: &ResolvedModule, extra: &dyn Fn(&str) -> Extra) -> Value {
    let add = |entry: &mut Value, sha: &str, url: &str| {
        let e = extra(sha);
        if let Some(size) = e.gz {
            entry["gz"] = json!({"size": size, "url": crate::compress::path(url)});
        }
        if !e.from.is_empty() {
            entry["from"] = json!(e.from);
        }
    };
    let url = version_path(name, &m.version);
    let mut entry = json!({
        "version": m.version.as_str(),
        "size": m.info.size,
        "sha256": m.info.sha256,
        "url": url,
    });
    add(&mut entry, &m.info.sha256, &url);
    if let Some(mpy) = &m.info.mpy {
        let url = mpy_path(name, &m.version);
        let mut variant = json!({
            "version": mpy.version,
            "size": mpy.size,
            "sha256": mpy.sha256,
            "url": url,
        });
        add(&mut variant, &mpy.sha256, &url);
        entry["mpy"] = variant;
    }
    entry
}

/// The device-facing path of one version's bytes, relative to the base URL.
pub fn version_path(module: &ModuleName, version: &Version) -> String {
    format!("m/{module}/{version}.py")
}

/// The device-facing path of one version's precompiled variant.
pub fn mpy_path(module: &ModuleName, version: &Version) -> String {
    format!("m/{module}/{version}.mpy")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> ModuleName {
        ModuleName::parse(s).unwrap()
    }

    #[test]
    fn seed_format_round_trips_and_adds_runtime() {
        let d = Desired::new(
            m("smartcharger"),
            vec![
                (m("smartcharger"), Want::parse("1").unwrap()),
                (m("sensorclass"), Want::parse("2").unwrap()),
                (m("mqttclass"), Want::Latest),
            ],
        )
        .unwrap();
        let text = d.to_seed_json();
        assert_eq!(
            text,
            r#"{"name":"smartcharger","smartcharger":"1","sensorclass":"2","mqttclass":"latest","config":"latest","updater":"latest","updater_trust":"latest","reporter":"latest","updater_io":"latest","installer":"latest","updater_delta":"latest"}"#
        );
        assert_eq!(Desired::from_seed_json(&text).unwrap(), d);
    }

    #[test]
    fn a_layer_overrides_only_what_it_names() {
        let group = Pins::new(
            Some(m("app")),
            vec![(m("sensorclass"), Want::parse("1").unwrap())],
        )
        .unwrap();
        let own = Pins::new(None, vec![(m("mqtt"), Want::parse("3").unwrap())]).unwrap();
        let d = group.overlay(&own).desired().unwrap();
        assert_eq!(
            d.to_seed_json(),
            r#"{"name":"app","app":"latest","sensorclass":"1","mqtt":"3","config":"latest","updater":"latest","updater_trust":"latest","reporter":"latest","updater_io":"latest","installer":"latest","updater_delta":"latest"}"#
        );
        let own = Pins::new(None, vec![(m("sensorclass"), Want::Latest)]).unwrap();
        assert_eq!(
            group.overlay(&own).modules,
            vec![(m("sensorclass"), Want::Latest)]
        );
        assert_eq!(Pins::from_json(&own.to_json()).unwrap(), own);
        assert!(Pins::default().desired().is_err());
    }

    #[test]
    fn serde_writes_the_seed_format_and_reads_it_back() {
        let d = Desired::new(
            m("app"),
            vec![(m("sensorclass"), Want::parse("2").unwrap())],
        )
        .unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), d.to_seed_json());
        assert_eq!(
            serde_json::from_str::<Desired>(&d.to_seed_json()).unwrap(),
            d
        );
        let own = Pins::new(None, vec![(m("mqtt"), Want::Latest)]).unwrap();
        assert_eq!(serde_json::to_string(&own).unwrap(), own.to_json());
        assert_eq!(serde_json::from_str::<Pins>(&own.to_json()).unwrap(), own);
        assert!(serde_json::from_str::<Pins>(r#"{"../x": "1"}"#).is_err());
        assert_eq!("a=latest".parse::<Pair>().unwrap().to_string(), "a=latest");
        for bad in ["a", "../x=1", "a=../1", "=1"] {
            assert!(bad.parse::<Pair>().is_err(), "{bad}");
        }
    }

    /// The typed manifest is the JSON a board reads, object for object.
    #[test]
    fn manifest_data_is_what_to_json_says() {
        let info = |sha: &str, mpy: bool| VersionInfo {
            sha256: sha.repeat(64),
            size: 12,
            mpy: mpy.then(|| MpyInfo {
                sha256: "c".repeat(64),
                size: 7,
                version: 6,
            }),
        };
        let v = |s: &str| Version::parse(s).unwrap();
        let mut catalog = Catalog::default();
        for (name, mpy) in [
            ("app", true),
            ("config", false),
            ("updater", true),
            ("updater_trust", true),
            ("reporter", true),
            ("updater_io", true),
            ("installer", true),
            ("updater_delta", true),
            ("main", true),
            ("mpfleet", true),
        ] {
            catalog.modules.insert(
                m(name),
                ModuleInfo {
                    latest: v("2"),
                    versions: [(v("1"), info("a", mpy)), (v("2"), info("b", mpy))].into(),
                },
            );
        }
        let d = Desired::new(m("app"), vec![(m("app"), Want::parse("1").unwrap())]).unwrap();
        let resolved = catalog.resolve(&d).unwrap();
        let mac = Mac::parse("deadbeef1234").unwrap();
        let text = resolved.to_json(&mac, "store1", 3);
        let data = resolved.manifest(&mac, "store1", 3);
        let parsed: Value = serde_json::from_str(&text).unwrap();
        // Compared as text: the same keys in the same order, so `--json` prints the same.
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            serde_json::to_string(&parsed).unwrap()
        );
        assert_eq!(serde_json::from_value::<Manifest>(parsed).unwrap(), data);
        assert!(data.boot[&m("main")].mpy.is_none());
        assert!(data.boot[&m("mpfleet")].mpy.is_some());
    }

    #[test]
    fn app_is_added_when_missing() {
        let d = Desired::new(m("app"), vec![]).unwrap();
        assert_eq!(d.modules[0], (m("app"), Want::Latest));
    }
}
