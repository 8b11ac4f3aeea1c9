//! The device-facing tree: every path a board can GET, with its bytes and ETag.
//!
//! It is a pure function of the store's state, built once per change. `serve` keeps the
//! current one in memory and answers device reads from it without touching the database;
//! `export` writes the same one to disk. Both therefore serve the same bytes.
//!
//! Module files are kept whole (there are few of them). A device's two paths are not: the
//! tree keeps, per device, its generation, its key and two shared pieces (its desired
//! manifest, and the part of its resolved manifest that every device resolving to the same
//! files has in common), and renders `v1/{mac}.json` when it is asked for, sealing it with
//! the device's key (`crate::sign`): a few microseconds per request, and about 200 bytes per
//! device instead of a sealed copy of its manifest (BENCHMARKS.md, "A fleet of 100,000").
//! The keys, kept to check reports, are never part of a served path.

use crate::manifest::{mpy_path, version_path, Catalog, Extra, Resolved};
use crate::names::{Mac, ModuleName};
use crate::store::{DeviceKey, Store};
use anyhow::Result;
use axum::body::Bytes;
use axum::http::HeaderValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
    /// Every file that is not a device's own: modules, `latestversions`.
    files: BTreeMap<String, Entry>,
    /// Blob bytes by SHA-256, reused by the next build so only new blobs are read.
    blobs: HashMap<String, Bytes>,
    /// Compressed copies of the blobs some device's manifest names, by the blob's SHA-256
    /// (None: not worth it), reused by the next build so each is compressed once.
    gz: HashMap<String, Option<Entry>>,
    /// Deltas to the blobs some device's manifest names from earlier versions of the same
    /// file (`crate::delta`), by `{base sha256}>{target sha256}` (None: not worth it), reused
    /// by the next build likewise.
    deltas: HashMap<String, Option<Entry>>,
    /// What each device's `{mac}` and `v1/{mac}.json` are made from, by [`Mac::bits`].
    devices: HashMap<u64, DeviceFiles, BuildMacHasher>,
    /// The store's identity, named in every manifest.
    store_id: String,
}

/// One device's share of the tree.
#[derive(Debug)]
struct DeviceFiles {
    generation: i64,
    /// Its key, to seal its manifest and check its reports. Never a served path.
    key: DeviceKey,
    /// `{mac}`: its desired manifest (one copy for every device that wants the same).
    seed: Arc<Entry>,
    /// What `v1/{mac}.json` is made from, or None when its manifest does not resolve.
    resolved: Option<Arc<Shared>>,
}

/// The part of a resolved manifest that is not about one device: the app, and every line
/// after the head ([`Resolved::tail`]).
#[derive(Debug)]
struct Shared {
    app: ModuleName,
    tail: String,
    /// Whether a module entry of the tail lists deltas (`from`).
    deltas: bool,
}

const JSON: &str = "application/json";
const PYTHON: &str = "text/x-python; charset=utf-8";
const MPY: &str = "application/octet-stream";
const GZIP: &str = "application/gzip";
const DELTA: &str = "application/octet-stream";

/// A module file has deltas from this many earlier versions of it (the ones just before it):
/// a board further behind fetches the whole file.
const DELTA_BASES: usize = 3;

/// A delta is offered only when it saves at least this many bytes (and half) of what the
/// board would fetch instead: applying one costs the board the heap of `updater_delta`.
const DELTA_SAVES: usize = 512;

fn entry(body: Bytes, content_type: &'static str, immutable: bool) -> Entry {
    let sha256 = crate::store::sha256_hex(&body);
    hashed(body, &sha256, content_type, immutable)
}

/// An entry whose body's SHA-256 is known already (a stored blob's): not hashed again, so a
/// rebuild costs nothing per stored version.
fn hashed(body: Bytes, sha256: &str, content_type: &'static str, immutable: bool) -> Entry {
    let etag = format!("\"{}\"", &sha256[..32]);
    let etag = HeaderValue::from_str(&etag).expect("an ETag is ASCII");
    Entry {
        body,
        etag,
        content_type,
        immutable,
    }
}

/// What a build makes beside the stored files, each once (or taken from the previous tree).
#[derive(Default)]
struct Made {
    gz: HashMap<String, Option<Entry>>,
    deltas: HashMap<String, Option<Entry>>,
    /// The SHA-256 prefixes (12 hex digits) of the files each file has a delta from, by its
    /// SHA-256: what its manifest entry lists as `from`.
    from: HashMap<String, Vec<String>>,
}

/// Adds to `files` the compressed copy of every file `r` names that is worth one, and the
/// deltas to each of its modules' files from the [`DELTA_BASES`] versions before it that are
/// worth one, making each once (or taking it from the previous tree).
fn copies(
    r: &Resolved,
    catalog: &Catalog,
    made: &mut Made,
    blobs: &HashMap<String, Bytes>,
    previous: Option<&Snapshot>,
    files: &mut BTreeMap<String, Entry>,
) {
    let each = r.modules.iter().chain(r.boot.iter().map(|(n, m)| (n, m)));
    for (name, m) in each {
        let mut plain = vec![(&m.info.sha256, version_path(name, &m.version))];
        if let Some(mpy) = &m.info.mpy {
            plain.push((&mpy.sha256, mpy_path(name, &m.version)));
        }
        for (sha, path) in plain {
            let copy = made.gz.entry(sha.clone()).or_insert_with(|| {
                match previous.and_then(|p| p.gz.get(sha)) {
                    Some(c) => c.clone(),
                    None => blobs.get(sha).and_then(|b| {
                        let z = crate::compress::gzip(b)?;
                        Some(entry(z.into(), GZIP, true))
                    }),
                }
            });
            if let Some(c) = copy {
                files.insert(crate::compress::path(&path), c.clone());
            }
        }
    }
    for (name, m) in &r.modules {
        let Some(versions) = catalog.modules.get(name).map(|i| &i.versions) else {
            continue;
        };
        let earlier = versions.range(..&m.version).rev().take(DELTA_BASES);
        let mut pairs = Vec::new();
        for (_, base) in earlier {
            pairs.push((&base.sha256, &m.info.sha256, version_path(name, &m.version)));
            if let (Some(a), Some(b)) = (&base.mpy, &m.info.mpy) {
                pairs.push((&a.sha256, &b.sha256, mpy_path(name, &m.version)));
            }
        }
        for (base, target, path) in pairs {
            if base == target {
                continue;
            }
            let key = format!("{base}>{target}");
            let delta = made.deltas.entry(key.clone()).or_insert_with(|| {
                if let Some(d) = previous.and_then(|p| p.deltas.get(&key)) {
                    return d.clone();
                }
                let (from, to) = (blobs.get(base)?, blobs.get(target)?);
                let d = crate::delta::make(from, to);
                // Worth it only when it saves half of what the board would fetch instead,
                // and at least DELTA_SAVES: applying one loads code of its own.
                let whole = match made.gz.get(target) {
                    Some(Some(z)) => z.body.len(),
                    _ => to.len(),
                };
                let worth = d.len() * 2 <= whole && d.len() + DELTA_SAVES <= whole;
                worth.then(|| entry(d.into(), DELTA, true))
            });
            if let Some(d) = delta {
                files.insert(crate::delta::path(&path, base), d.clone());
                let from = made.from.entry(target.clone()).or_default();
                if !from.iter().any(|f| base.starts_with(f.as_str())) {
                    from.push(base[..12].to_owned());
                }
            }
        }
    }
}

/// The device a device's own path is about (`{mac}` or `v1/{mac}.json`, the MAC in the
/// canonical form the tree uses: 12 lowercase hex digits), as [`Mac::bits`], and whether it
/// is the manifest.
fn device_path(path: &str) -> Option<(u64, bool)> {
    let (candidate, manifest) = match path.strip_prefix("v1/") {
        Some(p) => (p.strip_suffix(".json")?, true),
        None => (path, false),
    };
    let canonical = candidate.len() == 12
        && candidate
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    canonical
        .then(|| {
            u64::from_str_radix(candidate, 16)
                .ok()
                .map(|m| (m, manifest))
        })
        .flatten()
}

/// Hashes a MAC's 48 bits with one multiplication (Fibonacci hashing): the device table is
/// looked up on every board request and filled at every change, and a MAC needs no
/// protection from chosen collisions that SipHash would give (the table only holds devices
/// the owner created).
#[derive(Default, Clone, Copy)]
struct MacHasher(u64);

impl std::hash::Hasher for MacHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type BuildMacHasher = std::hash::BuildHasherDefault<MacHasher>;

impl Snapshot {
    /// Builds the tree from one consistent read of the store.
    pub fn build(store: &mut Store, previous: Option<&Snapshot>) -> Result<Snapshot> {
        store.read(|store| {
            let revision = store.revision()?;
            let catalog = store.catalog()?;
            let store_id = store.store_id()?;
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
                        let e = hashed(body.clone(), &vi.sha256, PYTHON, false);
                        files.insert(format!("{name}.py"), e);
                    }
                    let e = hashed(body, &vi.sha256, PYTHON, true);
                    files.insert(version_path(name, version), e);
                    if let Some(mpy) = &vi.mpy {
                        let body = blob(&mpy.sha256)?;
                        files.insert(
                            mpy_path(name, version),
                            hashed(body, &mpy.sha256, MPY, true),
                        );
                    }
                }
            }
            let latest = Value::Object(latest).to_string();
            files.insert("latestversions".into(), entry(latest.into(), JSON, false));

            // The compressed copy of every file a manifest names, and deltas to it, made once.
            let mut made = Made::default();

            // Devices that want the same (most of a fleet) share one seed and one resolution:
            // each distinct desired manifest is worked out and resolved once.
            let mut shared: HashMap<String, (Arc<Entry>, Option<Arc<Shared>>)> = HashMap::new();
            let mut devices = HashMap::with_capacity_and_hasher(
                previous.map_or(0, |p| p.devices.len()),
                BuildMacHasher::default(),
            );
            store.each_device_view(|v| {
                let (seed, resolved) = match shared.get(&v.memo) {
                    Some(s) => s.clone(),
                    None => {
                        let d = v.desired()?;
                        let resolved = catalog.resolve(&d).ok().map(|r: Resolved| {
                            copies(&r, &catalog, &mut made, &blobs, previous, &mut files);
                            let extra = |sha: &str| Extra {
                                gz: made
                                    .gz
                                    .get(sha)
                                    .and_then(Option::as_ref)
                                    .map(|c| c.body.len() as u64),
                                from: made.from.get(sha).cloned().unwrap_or_default(),
                            };
                            let deltas = r.modules.values().any(|m| {
                                let mpy = m.info.mpy.as_ref().map(|x| &x.sha256);
                                [Some(&m.info.sha256), mpy]
                                    .into_iter()
                                    .flatten()
                                    .any(|sha| made.from.contains_key(sha))
                            });
                            Arc::new(Shared {
                                tail: r.tail_with(&extra),
                                app: r.app,
                                deltas,
                            })
                        });
                        let seed = Arc::new(entry(d.to_seed_json().into(), JSON, false));
                        shared.insert(v.memo.clone(), (seed.clone(), resolved.clone()));
                        (seed, resolved)
                    }
                };
                devices.insert(
                    v.bits,
                    DeviceFiles {
                        generation: v.generation,
                        key: v.key.clone(),
                        seed,
                        resolved,
                    },
                );
                Ok(())
            })?;
            Ok(Snapshot {
                revision,
                files,
                blobs,
                gz: made.gz,
                deltas: made.deltas,
                devices,
                store_id,
            })
        })
    }

    /// `v1/{mac}.json` of a device: its manifest, sealed with its key. Its ETag is the start
    /// of the HMAC, which covers every byte the board checks (and changes with the key).
    fn manifest(&self, mac: u64, d: &DeviceFiles) -> Option<Entry> {
        let shared = d.resolved.as_ref()?;
        let mac = Mac::from_bits(mac);
        let mut manifest = crate::manifest::head(
            &mac,
            &self.store_id,
            &shared.app,
            d.generation,
            shared.deltas,
        );
        manifest.push_str(&shared.tail);
        let sealed = crate::sign::seal(&d.key, &manifest);
        let etag = format!("\"{}\"", &sealed[9..41]);
        Some(Entry {
            etag: HeaderValue::from_str(&etag).expect("an ETag is ASCII"),
            body: sealed.into(),
            content_type: JSON,
            immutable: false,
        })
    }

    /// The file at `path` (relative to the base URL, no leading slash).
    pub fn get(&self, path: &str) -> Option<Cow<'_, Entry>> {
        if let Some(e) = self.files.get(path) {
            return Some(Cow::Borrowed(e));
        }
        let (mac, manifest) = device_path(path)?;
        let d = self.devices.get(&mac)?;
        if manifest {
            self.manifest(mac, d).map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&*d.seed))
        }
    }

    /// Whether `mac` is a device of the store.
    pub fn is_device(&self, mac: &Mac) -> bool {
        self.devices.contains_key(&mac.bits())
    }

    /// The key of a device, if it is one.
    pub fn key(&self, mac: &Mac) -> Option<&DeviceKey> {
        self.devices.get(&mac.bits()).map(|d| &d.key)
    }

    /// Each device's generation, for the devices boards can fetch a manifest for (what
    /// `serve --mqtt` pushes).
    pub fn generations(&self) -> HashMap<Mac, i64> {
        self.devices
            .iter()
            .filter(|(_, d)| d.resolved.is_some())
            .map(|(&mac, d)| (Mac::from_bits(mac), d.generation))
            .collect()
    }

    /// Every file: the shared ones in path order, then each device's two (rendered now).
    pub fn files(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, Entry>)> {
        let shared = self
            .files
            .iter()
            .map(|(p, e)| (Cow::Borrowed(p.as_str()), Cow::Borrowed(e)));
        let own = self.devices.iter().flat_map(move |(&mac, d)| {
            let name = Mac::from_bits(mac);
            let seed = (Cow::Owned(name.to_string()), Cow::Borrowed(&*d.seed));
            let manifest = self
                .manifest(mac, d)
                .map(|e| (Cow::Owned(format!("v1/{name}.json")), Cow::Owned(e)));
            std::iter::once(seed).chain(manifest)
        });
        shared.chain(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Desired, Want};
    use crate::store::Assignment;

    /// A store with `app` and `lib` published and `n` devices running `app`, every other one
    /// pinning `lib` 1 (so two distinct desired manifests).
    fn store(dir: &std::path::Path, n: u64) -> Store {
        let mut store = Store::open(dir).unwrap();
        let name = |s: &str| ModuleName::parse(s).unwrap();
        store
            .publish(&name("app"), None, b"import lib\n", true)
            .unwrap();
        store.publish(&name("lib"), None, b"x = 1\n", true).unwrap();
        store.publish(&name("lib"), None, b"x = 2\n", true).unwrap();
        let devices: Vec<(Mac, Assignment)> = (0..n)
            .map(|i| {
                let want = if i % 2 == 0 { "1" } else { "latest" };
                let pairs = vec![(name("lib"), Want::parse(want).unwrap())];
                let d = Desired::new(name("app"), pairs).unwrap();
                (Mac::from_bits(i), Assignment::Own(d))
            })
            .collect();
        store.set_devices(&devices).unwrap();
        store
    }

    /// What `v1/{mac}.json` held when the tree kept every device's sealed manifest (with
    /// the compressed copies, made the same way from each file's bytes).
    fn sealed_whole(store: &Store, mac: &Mac) -> String {
        let d = store.device(mac).unwrap().unwrap();
        let resolved = store.catalog().unwrap().resolve(&d.desired).unwrap();
        let extra = |sha: &str| crate::manifest::Extra {
            gz: crate::compress::gzip(&store.blob(sha).unwrap()).map(|z| z.len() as u64),
            from: Vec::new(),
        };
        let mut manifest = crate::manifest::head(
            mac,
            &store.store_id().unwrap(),
            &resolved.app,
            d.generation,
            false,
        );
        manifest.push_str(&resolved.tail_with(&extra));
        crate::sign::seal(&d.key, &manifest)
    }

    #[test]
    fn device_files_are_rendered_as_they_were_stored_whole_and_share_their_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path(), 6);
        let snapshot = Snapshot::build(&mut store, None).unwrap();
        for i in 0..6 {
            let mac = Mac::from_bits(i);
            let got = snapshot.get(&format!("v1/{mac}.json")).unwrap();
            assert_eq!(got.body, sealed_whole(&store, &mac).as_bytes(), "{mac}");
            assert_eq!(
                got.etag.as_bytes(),
                format!("\"{}\"", &got.body[9..41].escape_ascii()).as_bytes()
            );
            let seed = snapshot.get(mac.as_str()).unwrap();
            let d = store.device(&mac).unwrap().unwrap();
            assert_eq!(seed.body, d.desired.to_seed_json().as_bytes());
        }
        // Six devices, two distinct desired manifests: two shared pieces, not six.
        let mut pieces: Vec<*const Shared> = snapshot
            .devices
            .values()
            .map(|d| Arc::as_ptr(d.resolved.as_ref().unwrap()))
            .collect();
        pieces.sort();
        pieces.dedup();
        assert_eq!(pieces.len(), 2);
        // Not a device, not canonical, or no such file: nothing.
        for path in [
            "v1/0000000000ff.json",
            "v1/00000000000A.json",
            "00:00:00:00:00:01",
            "v1/x.json",
        ] {
            assert!(snapshot.get(path).is_none(), "{path}");
        }
        // Every copy a manifest names is in the tree, and is the file compressed.
        let manifest = snapshot.get("v1/000000000000.json").unwrap().body.clone();
        let mut named = 0;
        for line in std::str::from_utf8(&manifest).unwrap().lines().skip(2) {
            let Some(i) = line.find(":{").filter(|_| line.starts_with('"')) else {
                continue;
            };
            let entry: Value = serde_json::from_str(line[i + 1..].trim_end_matches(',')).unwrap();
            for e in [&entry, &entry["mpy"]] {
                let Some(url) = e["gz"]["url"].as_str() else {
                    continue;
                };
                let copy = snapshot.get(url).unwrap();
                assert_eq!(copy.body.len() as u64, e["gz"]["size"].as_u64().unwrap());
                let plain = snapshot.get(e["url"].as_str().unwrap()).unwrap();
                assert_eq!(*copy.body, *crate::compress::gzip(&plain.body).unwrap());
                named += 1;
            }
        }
        assert!(named >= 8, "the runtime's files have copies: {named}");
        // Export sees the same files serve answers with.
        let exported: HashMap<String, Bytes> = snapshot
            .files()
            .map(|(p, e)| (p.into_owned(), e.body.clone()))
            .collect();
        for i in 0..6 {
            let path = format!("v1/{}.json", Mac::from_bits(i));
            assert_eq!(exported[&path], snapshot.get(&path).unwrap().body);
        }
    }
}
