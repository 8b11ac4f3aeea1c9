//! The database schema and its migrations.
//!
//! `PRAGMA user_version` holds how many migrations have run; opening a store runs the rest in
//! one transaction, so an old data directory is brought up to date and a new one is created.
//! Only opening a store to change it migrates; a read-only open checks the version instead
//! ([`check_readable`]). A store made by a newer mpfleet (more migrations than this binary
//! knows) is never written by this one.

use anyhow::{bail, Result};
use rusqlite::Connection;
use std::path::Path;

/// Each entry is one migration; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: modules, versions, devices, reports, unknown devices.
    "CREATE TABLE modules (
        name   TEXT PRIMARY KEY,
        latest TEXT NOT NULL
     );
     CREATE TABLE versions (
        module       TEXT NOT NULL REFERENCES modules(name),
        version      TEXT NOT NULL,
        sha256       TEXT NOT NULL,
        size         INTEGER NOT NULL,
        published_at INTEGER NOT NULL,
        PRIMARY KEY (module, version)
     );
     CREATE TABLE devices (
        mac           TEXT PRIMARY KEY,
        desired       TEXT NOT NULL,
        generation    INTEGER NOT NULL,
        resolved_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        last_seen     INTEGER,
        last_report   TEXT,
        last_report_at INTEGER
     );
     CREATE TABLE reports (
        id   INTEGER PRIMARY KEY,
        mac  TEXT NOT NULL,
        at   INTEGER NOT NULL,
        body TEXT NOT NULL
     );
     CREATE INDEX reports_by_mac ON reports (mac, id);
     CREATE TABLE unknown_devices (
        mac        TEXT PRIMARY KEY,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        requests   INTEGER NOT NULL
     );
     -- counters: 'revision' grows with every change a board can see (serve polls it to
     -- rebuild its snapshot); 'generation' hands out device generations, never reused.
     CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
     );
     INSERT INTO counters VALUES ('revision', 0), ('generation', 0);",
    // 2: a precompiled .mpy variant per version. mpy_version NULL: not tried yet (no
    // mpy-cross); 0: the source does not compile; otherwise the .mpy major version.
    "ALTER TABLE versions ADD COLUMN mpy_sha256 TEXT;
     ALTER TABLE versions ADD COLUMN mpy_size INTEGER;
     ALTER TABLE versions ADD COLUMN mpy_version INTEGER;",
    // 3: trust. `meta` holds the store's identity ('store': random, named in every signed
    // manifest so a board refuses another store's) and settings of the store itself. Every
    // device gets a random 256-bit key (manifests are signed and reports checked with it),
    // the highest report counter accepted from it (a lower one is a replay) and how many
    // forged and replayed reports were refused.
    "CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
     );
     INSERT INTO meta VALUES ('store', lower(hex(randomblob(16))));
     ALTER TABLE devices ADD COLUMN key TEXT NOT NULL DEFAULT '';
     UPDATE devices SET key = lower(hex(randomblob(32)));
     ALTER TABLE devices ADD COLUMN report_counter INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE devices ADD COLUMN forged_reports INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE devices ADD COLUMN replayed_reports INTEGER NOT NULL DEFAULT 0;",
    // 4: groups. A group's `pins` are what it asks of its devices (`Pins::to_json`: an app
    // and module versions). A device in a group (`grp`) keeps in `desired` only its own pins,
    // laid over the group's; a device in none keeps its whole desired manifest there, as before.
    // `grp` names a group (checked by the code that writes it; no REFERENCES, so a test can
    // take this migration back to make an older store).
    "CREATE TABLE groups (
        name       TEXT PRIMARY KEY,
        pins       TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );
     ALTER TABLE devices ADD COLUMN grp TEXT;
     CREATE INDEX devices_by_group ON devices (grp);",
    // 5: rollouts (`crate::rollout`). A rollout moves its group's boards to `pins` step by
    // step (`steps`: a JSON array of percentages); `state` is running, paused, done or
    // aborted, `step` the index of the current step, `reason` why it paused or stopped.
    // Durations are seconds. `rollout_devices` are the boards it has moved: when (`moved_at`),
    // the last report id before that (`after_report`: only later reports count), and the
    // generation that gave them (NULL: their own pins left nothing to move).
    "CREATE TABLE rollouts (
        id            INTEGER PRIMARY KEY,
        grp           TEXT NOT NULL,
        pins          TEXT NOT NULL,
        steps         TEXT NOT NULL,
        max_failures  TEXT NOT NULL,
        healthy_after INTEGER NOT NULL,
        deadline      INTEGER NOT NULL,
        state         TEXT NOT NULL,
        step          INTEGER NOT NULL,
        reason        TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
     );
     CREATE INDEX rollouts_by_group ON rollouts (grp, state);
     CREATE TABLE rollout_devices (
        rollout      INTEGER NOT NULL,
        mac          TEXT NOT NULL,
        step         INTEGER NOT NULL,
        moved_at     INTEGER NOT NULL,
        after_report INTEGER NOT NULL,
        generation   INTEGER,
        forgiven     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (rollout, mac)
     );",
];

/// The schema version this binary writes: how many migrations it knows.
const LATEST: usize = MIGRATIONS.len();

pub(crate) fn migrate(conn: &mut Connection, dir: &Path) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if done > LATEST {
        bail!(
            "the store in {} was written by a newer mpfleet (schema version {done}; this one \
             knows {LATEST}): use that mpfleet, this one changes nothing in it",
            dir.display()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// Checks that a store opened read-only can be read by this binary, without changing it.
pub(crate) fn check_readable(conn: &Connection, dir: &Path) -> Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        bail!("{}", super::no_store(dir));
    }
    if version < LATEST {
        bail!(
            "the store in {} has schema version {version} and this mpfleet reads version \
             {LATEST}: run `mpfleet serve`, or any command that changes the store (such as \
             `mpfleet module publish`), once to upgrade it",
            dir.display()
        );
    }
    // A newer schema only adds to what this binary reads: reading it is safe.
    Ok(())
}
