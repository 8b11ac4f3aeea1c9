//! The device-facing tree: every path a board can GET, with its bytes and ETag.
//!
//! It is a pure function of the store's state, built once per change. `serve` keeps the
//! current one in memory and answers device reads from it without touching the database;
//! `export` writes the same one to disk. Both therefore serve the same bytes. A device's
//! manifest is sealed with its key (`crate::sign`); the keys are kept beside the tree, to
//! check reports, and are never part of it.

use crate::manifest::{mpy_path, version_path};
use crate::names::Mac;
use crate::store::{DeviceKey, Store};
use anyhow::Result;
use axum::body::Bytes;
use axum::http::HeaderValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// One file of the tree.
#[derive(Debug, Clone)]
pub struct Entry {
    pub body: Bytes,
    /// A strong ETag, quoted, derived from the body (ready to send).
    pub etag: HeaderValue,
    pub content_type: &'static str,
    /// `m/{module}/{version}.py` never changes: it may be cached forever.
    pub immutable: bool,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    files: BTreeMap<String, Entry>,
    /// Blob bytes by SHA-256, reused by the next build so only new blobs are read.
    blobs: HashMap<String, Bytes>,
    /// Each device's key, to check its reports. Never a served path.
    keys: HashMap<Mac, DeviceKey>,
    /// The generation of each device whose manifest resolves (what `serve --mqtt` pushes).
    generations: HashMap<Mac, i64>,
}

const JSON: &str = "application/json";
const PYTHON: &str = "text/x-python; charset=utf-8";
const MPY: &str = "application/octet-stream";

fn entry(body: Bytes, content_type: &'static str, immutable: bool) -> Entry {
    let etag = format!("\"{}\"", &crate::store::sha256_hex(&body)[..32]);
    let etag = HeaderValue::from_str(&etag).expect("an ETag is ASCII");
    Entry {
        body,
        etag,
        content_type,
        immutable,
    }
}

impl Snapshot {
    /// Builds the tree from one consistent read of the store.
    pub fn build(store: &mut Store, previous: Option<&Snapshot>) -> Result<Snapshot> {
        store.read(|store| {
            let revision = store.revision()?;
            let catalog = store.catalog()?;
            let devices = store.devices()?;
            let store_id = store.store_id()?;
            let mut keys = HashMap::new();
            let mut generations = HashMap::new();
            let mut files = BTreeMap::new();
            let mut blobs = HashMap::new();
            let mut blob = |sha: &str| -> Result<Bytes> {
                if let Some(b) = blobs.get(sha) {
                    return Ok(Bytes::clone(b));
                }
                let bytes = match previous.and_then(|p| p.blobs.get(sha)) {
                    Some(b) => b.clone(),
                    None => Bytes::from(store.blob(sha)?),
                };
                blobs.insert(sha.to_owned(), bytes.clone());
                Ok(bytes)
            };

            let mut latest = Map::new();
            for (name, info) in &catalog.modules {
                latest.insert(name.to_string(), Value::String(info.latest.to_string()));
                for (version, vi) in &info.versions {
                    let body = blob(&vi.sha256)?;
                    if *version == info.latest {
                        files.insert(format!("{name}.py"), entry(body.clone(), PYTHON, false));
                    }
                    files.insert(version_path(name, version), entry(body, PYTHON, true));
                    if let Some(mpy) = &vi.mpy {
                        let body = blob(&mpy.sha256)?;
                        files.insert(mpy_path(name, version), entry(body, MPY, true));
                    }
                }
            }
            let latest = Value::Object(latest).to_string();
            files.insert("latestversions".into(), entry(latest.into(), JSON, false));

            for d in &devices {
                let desired = d.desired.to_seed_json();
                files.insert(d.mac.to_string(), entry(desired.into(), JSON, false));
                keys.insert(d.mac.clone(), d.key.clone());
                if let Ok(resolved) = catalog.resolve(&d.desired) {
                    let body = resolved.to_json(&d.mac, &store_id, d.generation);
                    let body = crate::sign::seal(&d.key, &body);
                    generations.insert(d.mac.clone(), d.generation);
                    files.insert(
                        format!("v1/{}.json", d.mac),
                        entry(body.into(), JSON, false),
                    );
                }
            }
            Ok(Snapshot {
                revision,
                files,
                blobs,
                keys,
                generations,
            })
        })
    }

    /// The file at `path` (relative to the base URL, no leading slash).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.files.get(path)
    }

    /// The key of a device, if it is one.
    pub fn key(&self, mac: &Mac) -> Option<&DeviceKey> {
        self.keys.get(mac)
    }

    /// Each device's generation, for the devices boards can fetch a manifest for.
    pub fn generations(&self) -> &HashMap<Mac, i64> {
        &self.generations
    }

    /// Every file, in path order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.files.iter().map(|(p, e)| (p.as_str(), e))
    }
}
