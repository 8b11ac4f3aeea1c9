//! Desired and resolved manifests: what a device should run, as the user wrote it and as a
//! board installs it.
//!
//! The desired manifest keeps the seed's format (`{"name": app, module: version|"latest"}`);
//! the resolved one replaces every `latest` by a concrete version and adds sizes, hashes and
//! URLs (see `DESIGN.md`). Both are rendered here and only here, so `serve` and `export`
//! cannot disagree on a byte.

use crate::names::{Mac, ModuleName, Version};
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The runtime modules every device gets, at `latest` unless its manifest names a version.
pub const RUNTIME_MODULES: [&str; 5] = ["config", "updater", "reporter", "updater_io", "installer"];

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
        let map = value
            .as_object()
            .context("desired manifest is not a JSON object")?;
        let app = map
            .get("name")
            .and_then(Value::as_str)
            .context("desired manifest has no \"name\"")?;
        let app = ModuleName::parse(app).map_err(anyhow::Error::msg)?;
        let mut pairs = Vec::new();
        for (k, v) in map.iter().filter(|(k, _)| *k != "name") {
            let name = ModuleName::parse(k).map_err(anyhow::Error::msg)?;
            let v = v
                .as_str()
                .with_context(|| format!("version of {k} is not a string"))?;
            pairs.push((name, Want::parse(v).map_err(anyhow::Error::msg)?));
        }
        Self::new(app, pairs)
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
        let map = value.as_object().context("pins are not a JSON object")?;
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
        Self::new(app, pairs)
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
        let mut out = head(mac, store, &self.app, generation);
        out.push_str(&self.tail());
        out
    }

    /// Everything of [`Self::to_json`] after the head: the same for every device that
    /// resolves to the same files, so the served tree keeps it once for all of them.
    pub fn tail(&self) -> String {
        self.tail_with(&|_| None)
    }

    /// [`Self::tail`], with each file's compressed copy where `gz` (a file's SHA-256 to the
    /// size of its copy) has one: what `serve` and `export` hand out (`crate::compress`).
    pub fn tail_with(&self, gz: &dyn Fn(&str) -> Option<u64>) -> String {
        let mut out = String::with_capacity(400 * (self.modules.len() + 3));
        lines(
            &mut out,
            self.modules.iter().map(|(n, m)| (n, file_entry(n, m, gz))),
        );
        out.push_str("\n},\"boot\":{");
        lines(
            &mut out,
            self.boot.iter().map(|(name, m)| {
                let mut e = file_entry(name, m, gz);
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

/// The first line of a device's manifest, up to and including `"modules":{`: the device, the
/// store, the app and the generation ([`Resolved::to_json`] is this, then the tail).
pub fn head(mac: &Mac, store: &str, app: &ModuleName, generation: i64) -> String {
    let head = json!({
        "device": mac.as_str(),
        "store": store,
        "app": app.as_str(),
        "generation": generation,
    })
    .to_string();
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

/// One file of a resolved manifest: its version, size, SHA-256, URL, its compressed copy if
/// `gz` knows one, and its precompiled variant (with its own copy).
fn file_entry(name: &ModuleName, m: &ResolvedModule, gz: &dyn Fn(&str) -> Option<u64>) -> Value {
    let copy = |sha: &str, url: &str| {
        gz(sha).map(|size| json!({"size": size, "url": crate::compress::path(url)}))
    };
    let url = version_path(name, &m.version);
    let mut entry = json!({
        "version": m.version.as_str(),
        "size": m.info.size,
        "sha256": m.info.sha256,
        "url": url,
    });
    if let Some(c) = copy(&m.info.sha256, &url) {
        entry["gz"] = c;
    }
    if let Some(mpy) = &m.info.mpy {
        let url = mpy_path(name, &m.version);
        let mut variant = json!({
            "version": mpy.version,
            "size": mpy.size,
            "sha256": mpy.sha256,
            "url": url,
        });
        if let Some(c) = copy(&mpy.sha256, &url) {
            variant["gz"] = c;
        }
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
            r#"{"name":"smartcharger","smartcharger":"1","sensorclass":"2","mqttclass":"latest","config":"latest","updater":"latest","reporter":"latest","updater_io":"latest","installer":"latest"}"#
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
            r#"{"name":"app","app":"latest","sensorclass":"1","mqtt":"3","config":"latest","updater":"latest","reporter":"latest","updater_io":"latest","installer":"latest"}"#
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
    fn app_is_added_when_missing() {
        let d = Desired::new(m("app"), vec![]).unwrap();
        assert_eq!(d.modules[0], (m("app"), Want::Latest));
    }
}
