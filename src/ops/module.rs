//! Operations on modules: list, show, publish, latest.

use super::{NotFound, Operation, Verb};
use crate::names::{ModuleName, Version};
use crate::store::{NewVersion, Published, Store};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub fn module_name(s: &str) -> Result<ModuleName> {
    ModuleName::parse(s).map_err(anyhow::Error::msg)
}

pub fn version(s: &str) -> Result<Version> {
    Version::parse(s).map_err(anyhow::Error::msg)
}

/// Leads the error of a refused publish of several files: none of them was published.
pub fn nothing_published(files: usize) -> String {
    if files > 1 {
        format!("nothing published (of {files} files)")
    } else {
        "nothing published".into()
    }
}

/// `GET /modules`: every module with its latest version.
#[derive(Debug, Serialize, Deserialize)]
pub struct List {}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModuleSummary {
    pub name: String,
    pub latest: String,
    /// How many versions are published.
    pub versions: usize,
    /// The latest version's size in bytes.
    pub size: u64,
}

impl Operation for List {
    type Output = Vec<ModuleSummary>;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/modules";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let catalog = store.catalog()?;
        Ok(catalog
            .modules
            .iter()
            .map(|(n, m)| ModuleSummary {
                name: n.to_string(),
                latest: m.latest.to_string(),
                versions: m.versions.len(),
                size: m.versions.get(&m.latest).map_or(0, |v| v.size),
            })
            .collect())
    }
}

/// `GET /modules/{name}`: one module's versions and which devices run each.
#[derive(Debug, Serialize, Deserialize)]
pub struct Show {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModuleDetail {
    pub name: String,
    pub latest: String,
    pub versions: Vec<VersionDetail>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VersionDetail {
    pub version: String,
    pub size: u64,
    pub sha256: String,
    pub published_at: i64,
    pub mpy_size: Option<u64>,
    pub latest: bool,
    /// MACs of the devices whose resolved manifest names this version.
    pub devices: Vec<String>,
}

impl Operation for Show {
    type Output = ModuleDetail;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/modules/{name}";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let name = module_name(&self.name)?;
        let Some((latest, versions)) = store.versions(&name)? else {
            return Err(NotFound(format!("module {name} is not published")).into());
        };
        let catalog = store.catalog()?;
        let devices = store.devices()?;
        let users = |v: &Version| -> Vec<String> {
            devices
                .iter()
                .filter(|d| {
                    catalog
                        .resolve(&d.desired)
                        .is_ok_and(|r| r.modules.get(&name).is_some_and(|m| m.version == *v))
                })
                .map(|d| d.mac.to_string())
                .collect()
        };
        let mpy_size = |v: &Version| {
            catalog.modules[&name].versions[v]
                .mpy
                .as_ref()
                .map(|m| m.size)
        };
        Ok(ModuleDetail {
            name: name.to_string(),
            latest: latest.to_string(),
            versions: versions
                .iter()
                .map(|r| VersionDetail {
                    version: r.version.to_string(),
                    size: r.size,
                    sha256: r.sha256.clone(),
                    published_at: r.published_at,
                    mpy_size: mpy_size(&r.version),
                    latest: r.version == latest,
                    devices: users(&r.version),
                })
                .collect(),
        })
    }
}

/// `POST /modules`: publish one or more files, all or none.
#[derive(Debug, Serialize, Deserialize)]
pub struct Publish {
    pub files: Vec<PublishFile>,
    /// Move `latest` to the new versions.
    pub latest: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PublishFile {
    /// Where it came from (a file name), to name it in an error.
    #[serde(default)]
    pub origin: String,
    pub name: String,
    /// The version to publish as; none for one more than the highest numeric version.
    #[serde(default)]
    pub version: Option<String>,
    /// The module's source text.
    pub source: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Publication {
    pub name: String,
    pub version: String,
    pub size: u64,
    /// False when these exact bytes were already published as this version.
    pub new: bool,
    /// Whether `latest` now points at it (only for a new version).
    pub latest: bool,
    /// The precompiled size, when mpy-cross compiled it.
    pub mpy_size: Option<u64>,
    /// Why mpy-cross could not compile it.
    pub mpy_error: Option<String>,
}

impl Publish {
    /// Checks what can be checked without a store (names, versions, text, size), naming the
    /// file in an error.
    pub fn check(&self) -> Result<Vec<NewVersion>> {
        let mut work = Vec::new();
        for f in &self.files {
            let n = module_name(&f.name).with_context(|| f.origin.clone())?;
            let v = f.version.as_deref().map(version).transpose()?;
            crate::store::check_module(&n, f.source.as_bytes())
                .with_context(|| f.origin.clone())
                .with_context(|| nothing_published(self.files.len()))?;
            work.push(NewVersion {
                origin: f.origin.clone(),
                name: n,
                version: v,
                bytes: f.source.as_bytes().to_vec(),
            });
        }
        Ok(work)
    }
}

impl Operation for Publish {
    type Output = Vec<Publication>;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/modules";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let work = self.check()?;
        let done = store
            .publish_all(&work, self.latest)
            .with_context(|| nothing_published(work.len()))?;
        Ok(work
            .iter()
            .zip(done)
            .map(|(item, published)| {
                let (version, new, latest, mpy) = match published {
                    Published::New {
                        version,
                        latest,
                        mpy,
                    } => (version, true, latest, mpy),
                    Published::Unchanged { version } => (version, false, false, None),
                };
                Publication {
                    name: item.name.to_string(),
                    version: version.to_string(),
                    size: item.bytes.len() as u64,
                    new,
                    latest,
                    mpy_size: mpy.as_ref().and_then(|m| m.as_ref().ok().copied()),
                    mpy_error: mpy.and_then(|m| m.err()),
                }
            })
            .collect())
    }
}

/// `PUT /modules/{name}/latest`: point `latest` at one of its versions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Latest {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LatestSet {
    pub name: String,
    pub version: String,
    /// False when it already pointed there.
    pub changed: bool,
}

impl Operation for Latest {
    type Output = LatestSet;
    const VERB: Verb = Verb::Put;
    const PATH: &'static str = "/modules/{name}/latest";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let (name, v) = (module_name(&self.name)?, version(&self.version)?);
        let changed = store.set_latest(&name, &v)?;
        Ok(LatestSet {
            name: name.to_string(),
            version: v.to_string(),
            changed,
        })
    }
}
