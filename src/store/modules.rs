//! Publishing module versions and moving `latest`.
//!
//! Publishing several files is one transaction: all of them or none.

use super::{catalog, commit_change, now, optional, Store, MAX_MODULE_SIZE};
use crate::mpy::Compiled;
use crate::names::{ModuleName, Version};
use anyhow::{bail, Context, Result};
use rusqlite::Transaction;

/// What `publish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A new version was stored. `mpy` says how precompiling went: `None` when mpy-cross
    /// is not installed, the size of the `.mpy`, or why the source does not compile.
    New {
        version: Version,
        latest: bool,
        mpy: Option<Result<u64, String>>,
    },
    /// These exact bytes were already published as this version; nothing changed.
    Unchanged { version: Version },
}

/// One row of `module show`.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: Version,
    pub sha256: String,
    pub size: u64,
    pub published_at: i64,
}

/// One file to publish with [`Store::publish_all`].
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Where the bytes came from, as the user knows it (a file's path): errors name it
    /// (empty: errors name only the module).
    pub origin: String,
    pub name: ModuleName,
    /// The version to publish as, or `None` for one more than the highest numeric version.
    pub version: Option<Version>,
    pub bytes: Vec<u8>,
}

/// Refuses what a store never accepts as a module: too large, or not UTF-8 text.
pub fn check_module(name: &ModuleName, bytes: &[u8]) -> Result<()> {
    if bytes.len() > MAX_MODULE_SIZE {
        bail!(
            "{name} is {} bytes, over the limit of {MAX_MODULE_SIZE} bytes",
            bytes.len()
        );
    }
    if std::str::from_utf8(bytes).is_err() {
        bail!("{name} is not UTF-8 text: a module is a .py source file");
    }
    Ok(())
}

/// Names `origin` in an error, when there is one.
fn in_origin<T>(r: Result<T>, origin: &str) -> Result<T> {
    if origin.is_empty() {
        r
    } else {
        r.with_context(|| origin.to_owned())
    }
}

/// A version ready to be inserted: its bytes and their compiled variant are in the blobs.
struct Prepared<'a> {
    item: &'a NewVersion,
    sha: String,
    compiled: Result<Option<Compiled>, String>,
    mpy: (Option<String>, Option<i64>, Option<i64>),
}

impl Store {
    /// Publishes `bytes` as `name`, at `version` or the next numeric version.
    ///
    /// Without a version, bytes identical to an existing version are a no-op. With a version,
    /// the same bytes are a no-op and other bytes are an error: versions are immutable.
    pub fn publish(
        &mut self,
        name: &ModuleName,
        version: Option<&Version>,
        bytes: &[u8],
        move_latest: bool,
    ) -> Result<Published> {
        let item = NewVersion {
            origin: String::new(),
            name: name.clone(),
            version: version.cloned(),
            bytes: bytes.to_vec(),
        };
        let mut done = self.publish_tx(std::slice::from_ref(&item), move_latest, None)?;
        Ok(done.remove(0))
    }

    /// Publishes every item, as [`Store::publish`] does each, in one transaction: either all
    /// of them are published or, when one is refused, none is (the error names its origin).
    /// Their blobs are written before the transaction; a refused publish leaves at most
    /// unreferenced blobs.
    pub fn publish_all(
        &mut self,
        items: &[NewVersion],
        move_latest: bool,
    ) -> Result<Vec<Published>> {
        self.publish_tx(items, move_latest, None)
    }

    /// Publishes the device runtime as release `release`, recorded in the same transaction;
    /// publishes nothing (and returns nothing) if the store already runs that release or a
    /// newer one by the time the transaction starts.
    pub(crate) fn publish_runtime(
        &mut self,
        items: &[NewVersion],
        release: u32,
    ) -> Result<Vec<Published>> {
        self.publish_tx(items, true, Some(release))
    }

    fn publish_tx(
        &mut self,
        items: &[NewVersion],
        move_latest: bool,
        release: Option<u32>,
    ) -> Result<Vec<Published>> {
        for item in items {
            in_origin(check_module(&item.name, &item.bytes), &item.origin)?;
        }
        // The blobs are durable before the transaction can name them.
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            let sha = self.blobs.put(&item.bytes)?;
            let compiled = crate::mpy::compile(item.name.as_str(), &item.bytes);
            let mpy = self.put_compiled(&compiled)?;
            prepared.push(Prepared {
                item,
                sha,
                compiled,
                mpy,
            });
        }
        let tx = self.write()?;
        if let Some(release) = release {
            if super::release::get(&tx)? >= release {
                return Ok(Vec::new());
            }
        }
        let mut out = Vec::with_capacity(prepared.len());
        for p in prepared {
            let origin = p.item.origin.clone();
            out.push(in_origin(insert_version(&tx, p, move_latest), &origin)?);
        }
        if let Some(release) = release {
            super::release::set(&tx, release)?;
        }
        if out.iter().any(|p| matches!(p, Published::New { .. })) {
            commit_change(tx)?;
        } else {
            tx.commit()?;
        }
        Ok(out)
    }

    /// Stores a compiled variant's bytes; returns the columns (sha256, size, version) to
    /// record: all NULL without mpy-cross, version 0 when the source does not compile.
    fn put_compiled(
        &self,
        compiled: &Result<Option<Compiled>, String>,
    ) -> Result<(Option<String>, Option<i64>, Option<i64>)> {
        Ok(match compiled {
            Ok(None) => (None, None, None),
            Err(_) => (None, None, Some(0)),
            Ok(Some(c)) => (
                Some(self.blobs.put(&c.bytes)?),
                Some(c.bytes.len() as i64),
                Some(i64::from(c.version)),
            ),
        })
    }

    /// Precompiles every version that has not been tried yet (published before mpy-cross
    /// was installed). Returns how many were tried.
    pub fn precompile_missing(&mut self) -> Result<usize> {
        let tool = crate::mpy::mpy_cross().is_some();
        let mut todo: Vec<(String, String, String)> = {
            let mut stmt = self.conn.prepare(
                "SELECT module, version, sha256 FROM versions WHERE mpy_version IS NULL",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if !tool {
            // Only the runtime this binary carries precompiled.
            let carried: Vec<String> = crate::runtime::RUNTIME
                .iter()
                .filter(|(n, src)| crate::runtime::precompiled(n, src.as_bytes()).is_some())
                .map(|(_, src)| super::sha256_hex(src.as_bytes()))
                .collect();
            todo.retain(|(_, _, sha)| carried.contains(sha));
        }
        if todo.is_empty() {
            return Ok(0);
        }
        let mut columns = Vec::new();
        for (module, _, sha) in &todo {
            let compiled = crate::mpy::compile(module, &self.blobs.get(sha)?);
            columns.push(self.put_compiled(&compiled)?);
        }
        let tx = self.write()?;
        for ((module, version, _), (mpy_sha, mpy_size, mpy_version)) in todo.iter().zip(columns) {
            tx.execute(
                "UPDATE versions SET mpy_sha256 = ?3, mpy_size = ?4, mpy_version = ?5
                 WHERE module = ?1 AND version = ?2 AND mpy_version IS NULL",
                rusqlite::params![module, version, mpy_sha, mpy_size, mpy_version],
            )?;
        }
        commit_change(tx)?;
        Ok(todo.len())
    }

    /// Points `latest` of `name` at `version`. Returns false if it already pointed there.
    pub fn set_latest(&mut self, name: &ModuleName, version: &Version) -> Result<bool> {
        let tx = self.write()?;
        let cat = catalog(&tx)?;
        let Some(info) = cat.modules.get(name) else {
            bail!("module {name} is not published");
        };
        if !info.versions.contains_key(version) {
            bail!("module {name} has no version {version}");
        }
        if info.latest == *version {
            return Ok(false);
        }
        tx.execute(
            "UPDATE modules SET latest = ?2 WHERE name = ?1",
            [name.as_str(), version.as_str()],
        )?;
        commit_change(tx)?;
        Ok(true)
    }

    /// The versions of one module, oldest first, or `None` if it was never published.
    pub fn versions(&self, name: &ModuleName) -> Result<Option<(Version, Vec<VersionRow>)>> {
        let latest: Option<String> = optional(self.conn.query_row(
            "SELECT latest FROM modules WHERE name = ?1",
            [name.as_str()],
            |r| r.get(0),
        ))?;
        let Some(latest) = latest else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare(
            "SELECT version, sha256, size, published_at FROM versions
             WHERE module = ?1 ORDER BY published_at, rowid",
        )?;
        let rows = stmt.query_map([name.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (version, sha256, size, published_at) = row?;
            out.push(VersionRow {
                version: Version::parse(&version).map_err(anyhow::Error::msg)?,
                sha256,
                size: size as u64,
                published_at,
            });
        }
        Ok(Some((
            Version::parse(&latest).map_err(anyhow::Error::msg)?,
            out,
        )))
    }
}

/// Inserts one prepared version inside the publishing transaction.
fn insert_version(tx: &Transaction<'_>, p: Prepared<'_>, move_latest: bool) -> Result<Published> {
    let (name, bytes, sha, mpy) = (&p.item.name, &p.item.bytes, &p.sha, &p.mpy);
    let existing: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT version, sha256 FROM versions WHERE module = ?1")?;
        let rows = stmt.query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let version = match &p.item.version {
        Some(v) => {
            if let Some((_, old)) = existing.iter().find(|(ev, _)| ev == v.as_str()) {
                if old == sha {
                    return Ok(Published::Unchanged { version: v.clone() });
                }
                bail!(
                    "{name} version {v} is already published with other bytes \
                     (sha256 {}): versions are immutable, publish a new version",
                    &old[..12]
                );
            }
            v.clone()
        }
        None => {
            if let Some((ev, _)) = existing.iter().find(|(_, es)| es == sha) {
                return Ok(Published::Unchanged {
                    version: Version::parse(ev).map_err(anyhow::Error::msg)?,
                });
            }
            let next = existing
                .iter()
                .filter_map(|(v, _)| Version::parse(v).ok()?.numeric())
                .max()
                .map_or(1, |n| n + 1);
            Version::parse(&next.to_string()).map_err(anyhow::Error::msg)?
        }
    };
    let first = existing.is_empty();
    if first {
        tx.execute(
            "INSERT INTO modules (name, latest) VALUES (?1, ?2)",
            [name.as_str(), version.as_str()],
        )?;
    }
    tx.execute(
        "INSERT INTO versions (module, version, sha256, size, published_at,
                               mpy_sha256, mpy_size, mpy_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            name.as_str(),
            version.as_str(),
            sha,
            bytes.len() as i64,
            now(),
            mpy.0,
            mpy.1,
            mpy.2
        ],
    )?;
    let latest = first || move_latest;
    if latest {
        tx.execute(
            "UPDATE modules SET latest = ?2 WHERE name = ?1",
            [name.as_str(), version.as_str()],
        )?;
    }
    Ok(Published::New {
        version,
        latest,
        mpy: match p.compiled {
            Ok(None) => None,
            Ok(Some(c)) => Some(Ok(c.bytes.len() as u64)),
            Err(e) => Some(Err(e)),
        },
    })
}
