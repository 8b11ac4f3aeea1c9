//! Publishing module versions and moving `latest`.

use super::{catalog, commit_change, now, optional, Store, MAX_MODULE_SIZE};
use crate::mpy::Compiled;
use crate::names::{ModuleName, Version};
use anyhow::{bail, Result};

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
        if bytes.len() > MAX_MODULE_SIZE {
            bail!(
                "{name} is {} bytes, over the limit of {MAX_MODULE_SIZE} bytes",
                bytes.len()
            );
        }
        if std::str::from_utf8(bytes).is_err() {
            bail!("{name} is not UTF-8 text: a module is a .py source file");
        }
        // The blobs are durable before the transaction can name them.
        let sha = self.blobs.put(bytes)?;
        let compiled = crate::mpy::compile(name.as_str(), bytes);
        let mpy = self.put_compiled(&compiled)?;
        let tx = self.write()?;
        let existing: Vec<(String, String)> = {
            let mut stmt = tx.prepare("SELECT version, sha256 FROM versions WHERE module = ?1")?;
            let rows = stmt.query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let version = match version {
            Some(v) => {
                if let Some((_, old)) = existing.iter().find(|(ev, _)| ev == v.as_str()) {
                    if *old == sha {
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
                if let Some((ev, _)) = existing.iter().find(|(_, es)| *es == sha) {
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
        commit_change(tx)?;
        Ok(Published::New {
            version,
            latest,
            mpy: match compiled {
                Ok(None) => None,
                Ok(Some(c)) => Some(Ok(c.bytes.len() as u64)),
                Err(e) => Some(Err(e)),
            },
        })
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
