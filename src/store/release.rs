//! The release of the device runtime a store runs: the highest `RUNTIME_RELEASE` that any
//! mpfleet has published into it (`meta` row `runtime_release`; absent in a store no binary
//! has recorded one in yet, which counts as 0).
//!
//! Kept so that a binary only ever publishes a runtime newer than the store's: an older
//! `mpfleet` left on the PATH must not bring its older runtime back as a new version.

use super::{optional, Store};
use anyhow::{Context, Result};
use rusqlite::Connection;

const NAME: &str = "runtime_release";

pub(super) fn get(conn: &Connection) -> Result<u32> {
    let value: Option<String> = optional(conn.query_row(
        "SELECT value FROM meta WHERE name = ?1",
        [NAME],
        |r| r.get(0),
    ))?;
    value.map_or(Ok(0), |v| {
        v.parse()
            .with_context(|| format!("meta {NAME} of the store is not a number: {v:?}"))
    })
}

pub(super) fn set(conn: &Connection, release: u32) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [NAME, &release.to_string()],
    )?;
    Ok(())
}

impl Store {
    /// The release of the device runtime this store runs (0: none recorded yet).
    pub fn runtime_release(&self) -> Result<u32> {
        get(&self.conn)
    }
}
