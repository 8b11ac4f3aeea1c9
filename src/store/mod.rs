//! The store: a data directory holding the SQLite database and the blob store.
//!
//! Every mutation runs in one `BEGIN IMMEDIATE` transaction that also refreshes the
//! generations of the devices it affects and bumps the `revision` counter, so two CLI commands
//! at once serialise cleanly and a running `serve` sees a consistent new state.
//!
//! Two ways in: [`Store::open`] for commands that change the store (it creates, migrates,
//! cleans up after killed publishes and publishes the runtime this binary carries when it is
//! a newer release), and [`Store::open_read_only`] for commands that only read: they write
//! nothing in the data directory, and refuse with a clear message when there is no store.

mod blobs;
mod devices;
mod groups;
mod keys;
mod modules;
mod release;
mod reports;
mod rollouts;
mod schema;

pub use blobs::sha256_hex;
pub use devices::{BulkCounts, DeviceRow, DeviceView};
pub use groups::{unknown_group, Assignment, GroupRow, Resolver};
pub use keys::DeviceKey;
pub use modules::{check_module, NewVersion, Published, VersionRow};
pub use reports::{Report, Sighting, UnknownDevice, REPORT_HISTORY};
pub use rollouts::{MovedBoard, NewRollout, RolloutRow, RolloutView};

use crate::manifest::{Catalog, ModuleInfo, MpyInfo, VersionInfo};
use crate::names::{ModuleName, Version};
use anyhow::{bail, Context, Result};
use blobs::Blobs;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest module a store accepts. An ESP8266 has about 1 MB of flash for files.
pub const MAX_MODULE_SIZE: usize = 512 * 1024;

pub struct Store {
    conn: Connection,
    blobs: Blobs,
    dir: PathBuf,
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The database file in a data directory.
const DB: &str = "mpfleet.db";

/// What a read-only command says when there is nothing to read.
pub(crate) fn no_store(dir: &Path) -> String {
    format!(
        "no store at {}: publish a module or run `mpfleet serve` first (or point --data / \
         MPFLEET_DATA at your store)",
        dir.display()
    )
}

/// Creates the data directory readable by its owner only: the database holds every device's
/// secret key (`docs/security.md`).
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))
}

impl Store {
    /// Opens the store in `dir` to change it: for `serve` and every command that writes.
    /// Creates and migrates the store if needed, removes temporary files left by killed
    /// publishes, and publishes the device runtime this binary carries if it is a newer
    /// release than the store's (an older binary publishes nothing: see [`crate::runtime`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let mut store = Self::open_plain(dir)?;
        store.blobs.remove_stale();
        crate::runtime::ensure_published(&mut store)?;
        Ok(store)
    }

    /// Opens to change, without the cleanup and the runtime: for a second connection in a
    /// process that has already opened the store with [`Store::open`].
    pub fn open_plain(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            create_private_dir(dir)?;
        }
        let db = dir.join(DB);
        let mut conn =
            Connection::open(&db).with_context(|| format!("opening database {}", db.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(|| format!("setting WAL mode on {}", db.display()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn, dir).with_context(|| format!("migrating {}", db.display()))?;
        let blobs = Blobs::open(dir.join("blobs"))?;
        Ok(Self {
            conn,
            blobs,
            dir: dir.to_owned(),
        })
    }

    /// Opens the store in `dir` only to read it, for commands that show or export: nothing
    /// in `dir` is created, migrated or published, and no file there changes. Fails with a
    /// clear message when there is no store, or when its schema is older than this binary
    /// reads (a command that changes the store upgrades it).
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let db = dir.join(DB);
        if !db.is_file() {
            bail!("{}", no_store(dir));
        }
        // A WAL database needs its `-wal` and `-shm` files even to be read. When another
        // connection has them open, share them (read-only). When none has, a read-only
        // connection would create them and leave them behind; a read-write one that runs no
        // write (`query_only`) creates them and, as the last connection, removes them again
        // on close, with nothing to checkpoint: the directory is left as it was.
        let in_use = dir.join(format!("{DB}-wal")).exists();
        let mode = if in_use {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let conn = Connection::open_with_flags(&db, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("opening database {}", db.display()))?;
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        schema::check_readable(&conn, dir).with_context(|| format!("reading {}", db.display()))?;
        let store = Self {
            conn,
            blobs: Blobs::existing(dir.join("blobs")),
            dir: dir.to_owned(),
        };
        crate::runtime::warn_if_older(store.runtime_release()?);
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A write transaction; callers finish with [`Store::commit_change`] or plain commit.
    fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// The counter that grows with every change a board could see.
    pub fn revision(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT value FROM counters WHERE name = 'revision'",
            [],
            |r| r.get(0),
        )?)
    }

    /// The bytes of one blob, checked against its hash.
    pub fn blob(&self, sha256: &str) -> Result<Vec<u8>> {
        self.blobs.get(sha256)
    }

    pub fn catalog(&self) -> Result<Catalog> {
        catalog(&self.conn)
    }

    /// Runs `f` inside one read transaction, so everything it reads is one consistent state.
    pub fn read<T>(&mut self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(self);
        self.conn.execute_batch("COMMIT")?;
        out
    }
}

/// Finishes a change boards can see: new generations where what a device would run changed,
/// a new revision (so `serve` rebuilds its snapshot), commit.
fn commit_change(tx: Transaction<'_>) -> Result<()> {
    devices::refresh_generations(&tx)?;
    bump(&tx, "revision")?;
    tx.commit()?;
    Ok(())
}

fn bump(tx: &Transaction<'_>, counter: &str) -> Result<i64> {
    Ok(tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = ?1 RETURNING value",
        [counter],
        |r| r.get(0),
    )?)
}

pub(crate) fn catalog(conn: &Connection) -> Result<Catalog> {
    let mut cat = Catalog::default();
    let mut stmt = conn.prepare("SELECT name, latest FROM modules")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (name, latest) = row?;
        cat.modules.insert(
            ModuleName::parse(&name).map_err(anyhow::Error::msg)?,
            ModuleInfo {
                latest: Version::parse(&latest).map_err(anyhow::Error::msg)?,
                versions: Default::default(),
            },
        );
    }
    let mut stmt = conn.prepare(
        "SELECT module, version, sha256, size, mpy_sha256, mpy_size, mpy_version FROM versions",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    for row in rows {
        let (module, version, sha256, size, mpy_sha, mpy_size, mpy_version) = row?;
        let mpy = match (mpy_sha, mpy_size, mpy_version) {
            (Some(sha256), Some(size), Some(v)) if v > 0 => Some(MpyInfo {
                sha256,
                size: size as u64,
                version: v as u8,
            }),
            _ => None,
        };
        let name = ModuleName::parse(&module).map_err(anyhow::Error::msg)?;
        if let Some(info) = cat.modules.get_mut(&name) {
            info.versions.insert(
                Version::parse(&version).map_err(anyhow::Error::msg)?,
                VersionInfo {
                    sha256,
                    size: size as u64,
                    mpy,
                },
            );
        }
    }
    Ok(cat)
}

/// Looks up one optional value; a small helper over rusqlite's `optional()`.
pub(crate) fn optional<T>(r: rusqlite::Result<T>) -> Result<Option<T>> {
    Ok(r.optional()?)
}
