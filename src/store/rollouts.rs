//! Rollouts as stored: start, pause, resume, abort, and the engine's tick, which reads what
//! the moved boards reported (the `reports` table the recorder writes) and does what
//! [`crate::rollout::decide`] says, in one transaction per rollout. Everything lives in the
//! database, so a restarted `serve` carries on where the last one stopped.

use super::groups::unknown_group;
use super::{commit_change, devices, now, optional, Store};
use crate::manifest::{Pins, Want};
use crate::names::GroupName;
use crate::rollout::{self, Decision, Moved, Seen, Status, Threshold};
use anyhow::{bail, Context, Result};
use rusqlite::{Connection, Transaction};
use std::collections::HashSet;

/// A rollout as the user asked for it.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub group: GroupName,
    pub to: Pins,
    pub steps: Vec<u32>,
    pub max_failures: Threshold,
    /// Seconds a board must stay healthy after `updated`.
    pub healthy_after: i64,
    /// Seconds a moved board has to report `updated`.
    pub deadline: i64,
}

#[derive(Debug, Clone)]
pub struct RolloutRow {
    pub id: i64,
    pub spec: NewRollout,
    /// running, paused, done or aborted.
    pub state: String,
    pub step: usize,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One board a rollout has moved, and how it is doing.
#[derive(Debug, Clone)]
pub struct MovedBoard {
    pub mac: String,
    pub step: usize,
    pub generation: Option<i64>,
    pub status: Status,
}

/// A rollout with its boards.
#[derive(Debug, Clone)]
pub struct RolloutView {
    pub row: RolloutRow,
    /// Boards in the group now.
    pub size: usize,
    /// Boards moved (still in the group).
    pub moved: Vec<MovedBoard>,
}

const SELECT: &str = "SELECT id, grp, pins, steps, max_failures, healthy_after, deadline,
                             state, step, reason, created_at, updated_at FROM rollouts";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRollout> {
    Ok((
        (
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ),
        (
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
        ),
    ))
}

type RawRollout = (
    (i64, String, String, String, String, i64),
    (i64, String, i64, Option<String>, i64, i64),
);

fn parse(raw: RawRollout) -> Result<RolloutRow> {
    let (
        (id, grp, pins, steps, max_failures, healthy_after),
        (deadline, state, step, reason, created_at, updated_at),
    ) = raw;
    Ok(RolloutRow {
        id,
        spec: NewRollout {
            group: GroupName::parse(&grp).map_err(anyhow::Error::msg)?,
            to: Pins::from_json(&pins).with_context(|| format!("stored pins of rollout {id}"))?,
            steps: serde_json::from_str(&steps)
                .with_context(|| format!("stored steps of rollout {id}"))?,
            max_failures: Threshold::parse(&max_failures)?,
            healthy_after,
            deadline,
        },
        state,
        step: step as usize,
        reason,
        created_at,
        updated_at,
    })
}

fn load(conn: &Connection, id: i64) -> Result<Option<RolloutRow>> {
    optional(conn.query_row(&format!("{SELECT} WHERE id = ?1"), [id], row))?
        .map(parse)
        .transpose()
}

/// The group's boards, in the order the rollout takes them.
fn group_macs(conn: &Connection, group: &GroupName) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT mac FROM devices WHERE grp = ?1")?;
    let rows = stmt.query_map([group.as_str()], |r| r.get::<_, String>(0))?;
    let mut macs: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
    macs.sort_by_cached_key(|m| rollout::order_key(m));
    Ok(macs)
}

/// The boards `r` has moved that are still in its group, with what they reported since.
fn moved(conn: &Connection, r: &RolloutRow) -> Result<Vec<(String, usize, Moved)>> {
    let in_group: HashSet<String> = group_macs(conn, &r.spec.group)?.into_iter().collect();
    let mut stmt = conn.prepare(
        "SELECT mac, step, moved_at, after_report, generation, forgiven FROM rollout_devices
         WHERE rollout = ?1 ORDER BY step, moved_at, mac",
    )?;
    let rows = stmt.query_map([r.id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, bool>(5)?,
        ))
    })?;
    // After the move: a higher id than any report then, or (should the ids of deleted
    // reports be handed out again: SQLite reuses the highest rowid once its row is gone) a
    // later second.
    let mut reports = conn.prepare(
        "SELECT at, body FROM reports WHERE mac = ?1 AND (id > ?2 OR at > ?3) ORDER BY id",
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (mac, step, at, after, generation, forgiven) = row?;
        if !in_group.contains(&mac) {
            continue;
        }
        let seen = reports
            .query_map(rusqlite::params![mac, after, at], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .map(|r| {
                let (at, body) = r?;
                let body = serde_json::from_str(&body).unwrap_or_default();
                Ok(Seen::from_report(at, &body))
            })
            .collect::<Result<Vec<_>>>()?;
        out.push((
            mac,
            step as usize,
            Moved {
                at,
                generation,
                forgiven,
                reports: seen,
            },
        ));
    }
    Ok(out)
}

fn statuses(moved: &[(String, usize, Moved)], r: &RolloutRow, at: i64) -> Vec<(String, Status)> {
    moved
        .iter()
        .map(|(mac, _, m)| {
            let s = rollout::status(m, at, r.spec.healthy_after, r.spec.deadline);
            (mac.clone(), s)
        })
        .collect()
}

/// Moves the next `n` boards of the group (in rollout order) into step `step` of `r`, and
/// gives them their new generations. Returns how many it moved.
fn move_boards(tx: &Transaction<'_>, r: &RolloutRow, n: usize, at: i64) -> Result<usize> {
    let already: HashSet<String> = {
        let mut stmt = tx.prepare("SELECT mac FROM rollout_devices WHERE rollout = ?1")?;
        let rows = stmt.query_map([r.id], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let next: Vec<String> = group_macs(tx, &r.spec.group)?
        .into_iter()
        .filter(|m| !already.contains(m))
        .take(n)
        .collect();
    let after: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM reports", [], |r| r.get(0))?;
    let generation = |mac: &str| -> Result<i64> {
        Ok(tx.query_row(
            "SELECT generation FROM devices WHERE mac = ?1",
            [mac],
            |r| r.get(0),
        )?)
    };
    let before = next
        .iter()
        .map(|m| generation(m))
        .collect::<Result<Vec<_>>>()?;
    for mac in &next {
        tx.execute(
            "INSERT INTO rollout_devices (rollout, mac, step, moved_at, after_report)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![r.id, mac, r.step as i64, at, after],
        )?;
    }
    devices::refresh_generations(tx)?;
    for (mac, old) in next.iter().zip(before) {
        let new = generation(mac)?;
        if new != old {
            tx.execute(
                "UPDATE rollout_devices SET generation = ?3 WHERE rollout = ?1 AND mac = ?2",
                rusqlite::params![r.id, mac, new],
            )?;
        }
    }
    Ok(next.len())
}

fn set_state(tx: &Transaction<'_>, r: &RolloutRow, at: i64) -> Result<()> {
    tx.execute(
        "UPDATE rollouts SET state = ?2, step = ?3, reason = ?4, updated_at = ?5 WHERE id = ?1",
        rusqlite::params![r.id, r.state, r.step as i64, r.reason, at],
    )?;
    Ok(())
}

/// Runs a running rollout as far as it can go now: moves the boards its step needs, pauses
/// it, advances it, or completes it (the group takes its pins). Returns what happened, for
/// the log.
fn advance(tx: &Transaction<'_>, r: &mut RolloutRow, at: i64) -> Result<Vec<String>> {
    let mut said = Vec::new();
    // Each pass moves boards, advances a step or stops: a bound well past any real run.
    for _ in 0..4 * (r.spec.steps.len() + 2) {
        if r.state != "running" {
            break;
        }
        let moved = moved(tx, r)?;
        let size = group_macs(tx, &r.spec.group)?.len();
        let st = statuses(&moved, r, at);
        match rollout::decide(&r.spec.steps, r.step, r.spec.max_failures, size, &st) {
            Decision::Wait => break,
            Decision::Move(n) => {
                let done = move_boards(tx, r, n, at)?;
                said.push(format!(
                    "rollout {} step {} ({}%): moved {done} board(s)",
                    r.id,
                    r.step + 1,
                    r.spec.steps[r.step]
                ));
                if done == 0 {
                    break;
                }
            }
            Decision::Pause(reason) => {
                r.state = "paused".into();
                said.push(format!("rollout {} paused: {reason}", r.id));
                r.reason = Some(reason);
                set_state(tx, r, at)?;
            }
            Decision::Advance => {
                r.step += 1;
                set_state(tx, r, at)?;
                said.push(format!(
                    "rollout {} advanced to step {} ({}%)",
                    r.id,
                    r.step + 1,
                    r.spec.steps[r.step]
                ));
            }
            Decision::Complete => {
                let pins: String = tx.query_row(
                    "SELECT pins FROM groups WHERE name = ?1",
                    [r.spec.group.as_str()],
                    |r| r.get(0),
                )?;
                let pins = Pins::from_json(&pins)?.overlay(&r.spec.to);
                tx.execute(
                    "UPDATE groups SET pins = ?2 WHERE name = ?1",
                    [r.spec.group.as_str(), pins.to_json().as_str()],
                )?;
                r.state = "done".into();
                r.reason = None;
                set_state(tx, r, at)?;
                said.push(format!(
                    "rollout {} done: group {} now runs {}",
                    r.id,
                    r.spec.group,
                    r.spec.to.describe()
                ));
            }
        }
    }
    Ok(said)
}

impl Store {
    /// Starts a rollout of `spec` and moves the boards of its first step. Refused when the
    /// group is unknown, has a rollout under way, or a board's manifest would not resolve.
    pub fn start_rollout(&mut self, spec: &NewRollout) -> Result<(RolloutView, Vec<String>)> {
        if spec.to.modules.is_empty() {
            bail!("nothing to roll out: give --to MODULE=VERSION");
        }
        if let Some((m, _)) = spec.to.modules.iter().find(|(_, w)| *w == Want::Latest) {
            bail!("--to {m}=latest: a rollout moves to a published version, not `latest`");
        }
        let tx = self.write()?;
        let group: Option<String> = optional(tx.query_row(
            "SELECT pins FROM groups WHERE name = ?1",
            [spec.group.as_str()],
            |r| r.get(0),
        ))?;
        let Some(group_pins) = group else {
            bail!("{}", unknown_group(&spec.group));
        };
        let active: Option<i64> = optional(tx.query_row(
            "SELECT id FROM rollouts WHERE grp = ?1 AND state IN ('running', 'paused')",
            [spec.group.as_str()],
            |r| r.get(0),
        ))?;
        if let Some(id) = active {
            bail!(
                "group {} has rollout {id} under way: resume or abort it first \
                 (`mpfleet rollout show {id}`)",
                spec.group
            );
        }
        // Every board of the group must resolve with the new pins (their own pins over them).
        let cat = super::catalog(&tx)?;
        let base = Pins::from_json(&group_pins)?.overlay(&spec.to);
        cat.resolve(&base.desired()?)?;
        {
            let mut stmt = tx.prepare("SELECT mac, desired FROM devices WHERE grp = ?1")?;
            let rows = stmt.query_map([spec.group.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (mac, own) = row?;
                let d = base.overlay(&Pins::from_json(&own)?).desired()?;
                cat.resolve(&d).with_context(|| format!("device {mac}"))?;
            }
        }
        let at = now();
        tx.execute(
            "INSERT INTO rollouts (grp, pins, steps, max_failures, healthy_after, deadline,
                                   state, step, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', 0, ?7, ?7)",
            rusqlite::params![
                spec.group.as_str(),
                spec.to.to_json(),
                serde_json::to_string(&spec.steps)?,
                spec.max_failures.to_string(),
                spec.healthy_after,
                spec.deadline,
                at
            ],
        )?;
        let id = tx.last_insert_rowid();
        let mut r = load(&tx, id)?.context("the rollout just inserted")?;
        let said = advance(&tx, &mut r, at)?;
        commit_change(tx)?;
        Ok((self.rollout_view(id)?, said))
    }

    /// Every rollout, newest first.
    pub fn rollouts(&self) -> Result<Vec<RolloutRow>> {
        let mut stmt = self.conn.prepare(&format!("{SELECT} ORDER BY id DESC"))?;
        let rows = stmt.query_map([], row)?;
        rows.map(|r| parse(r?)).collect()
    }

    /// A rollout by number, or a group's latest rollout by the group's name.
    pub fn find_rollout(&self, which: &str) -> Result<i64> {
        if let Ok(id) = which.parse::<i64>() {
            if load(&self.conn, id)?.is_none() {
                bail!("no rollout {id} (`mpfleet rollout list` shows them)");
            }
            return Ok(id);
        }
        let group = GroupName::parse(which).map_err(|e| {
            anyhow::anyhow!("{which:?} is neither a rollout number nor a group: {e}")
        })?;
        let id: Option<i64> = optional(self.conn.query_row(
            "SELECT max(id) FROM rollouts WHERE grp = ?1",
            [group.as_str()],
            |r| r.get(0),
        ))?
        .flatten();
        id.with_context(|| format!("group {group} has no rollout"))
    }

    pub fn rollout_view(&self, id: i64) -> Result<RolloutView> {
        let r = load(&self.conn, id)?.with_context(|| format!("no rollout {id}"))?;
        let at = now();
        let moved = moved(&self.conn, &r)?;
        let st = statuses(&moved, &r, at);
        let size = group_macs(&self.conn, &r.spec.group)?.len();
        Ok(RolloutView {
            size,
            moved: moved
                .into_iter()
                .zip(st)
                .map(|((mac, step, m), (_, status))| MovedBoard {
                    mac,
                    step,
                    generation: m.generation,
                    status,
                })
                .collect(),
            row: r,
        })
    }

    /// The running or paused rollout that has moved `mac`, if any: its id, state and the
    /// step (0-based) that moved it.
    pub fn rollout_of(&self, mac: &crate::names::Mac) -> Result<Option<(i64, String, usize)>> {
        let r: Option<(i64, String, i64)> = optional(self.conn.query_row(
            "SELECT r.id, r.state, d.step FROM rollout_devices d
             JOIN rollouts r ON r.id = d.rollout
             JOIN devices v ON v.mac = d.mac AND v.grp = r.grp
             WHERE d.mac = ?1 AND r.state IN ('running', 'paused')",
            [mac.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        ))?;
        Ok(r.map(|(id, state, step)| (id, state, step as usize)))
    }

    /// Pauses a running rollout: no more boards move until `resume`.
    pub fn pause_rollout(&mut self, id: i64) -> Result<RolloutRow> {
        self.change_rollout(id, |r| match r.state.as_str() {
            "running" => {
                r.state = "paused".into();
                r.reason = Some("paused by the user".into());
                Ok(())
            }
            s => bail!(
                "rollout {} is {s}: only a running rollout can be paused",
                r.id
            ),
        })
    }

    /// Resumes a paused rollout. The boards that had failed are forgiven: they count neither
    /// as failures nor as waiting any more (they run what they rolled back to).
    pub fn resume_rollout(&mut self, id: i64) -> Result<(RolloutRow, Vec<String>)> {
        let tx = self.write()?;
        let mut r = load(&tx, id)?.with_context(|| format!("no rollout {id}"))?;
        if r.state != "paused" {
            bail!(
                "rollout {id} is {}: only a paused rollout can be resumed",
                r.state
            );
        }
        let at = now();
        for (mac, status) in statuses(&moved(&tx, &r)?, &r, at) {
            if matches!(status, Status::Failed(_)) {
                tx.execute(
                    "UPDATE rollout_devices SET forgiven = 1 WHERE rollout = ?1 AND mac = ?2",
                    rusqlite::params![id, mac],
                )?;
            }
        }
        r.state = "running".into();
        r.reason = None;
        set_state(&tx, &r, at)?;
        let said = advance(&tx, &mut r, at)?;
        commit_change(tx)?;
        Ok((r, said))
    }

    /// Aborts a running or paused rollout: every board it moved goes back to the group's
    /// manifest, as a new generation.
    pub fn abort_rollout(&mut self, id: i64) -> Result<RolloutRow> {
        self.change_rollout(id, |r| match r.state.as_str() {
            "running" | "paused" => {
                r.state = "aborted".into();
                r.reason = Some(match r.reason.take() {
                    Some(why) if why != "paused by the user" => {
                        format!("aborted by the user (it had paused: {why})")
                    }
                    _ => "aborted by the user".into(),
                });
                Ok(())
            }
            s => bail!(
                "rollout {} is {s}: only a running or paused rollout can be aborted",
                r.id
            ),
        })
    }

    fn change_rollout(
        &mut self,
        id: i64,
        f: impl FnOnce(&mut RolloutRow) -> Result<()>,
    ) -> Result<RolloutRow> {
        let tx = self.write()?;
        let mut r = load(&tx, id)?.with_context(|| format!("no rollout {id}"))?;
        f(&mut r)?;
        set_state(&tx, &r, now())?;
        commit_change(tx)?;
        Ok(r)
    }

    /// One turn of the engine: every running rollout goes as far as it can now. Returns what
    /// happened, for the log. A rollout that fails to advance is logged and left as it is.
    pub fn rollout_tick(&mut self) -> Result<Vec<String>> {
        let running: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM rollouts WHERE state = 'running' ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut said = Vec::new();
        for id in running {
            let tx = self.write()?;
            let Some(mut r) = load(&tx, id)? else {
                continue;
            };
            if r.state != "running" {
                continue;
            }
            let before = (r.state.clone(), r.step);
            let what = advance(&tx, &mut r, now())?;
            if what.is_empty() && before == (r.state.clone(), r.step) {
                tx.commit()?;
            } else {
                commit_change(tx)?;
            }
            said.extend(what);
        }
        Ok(said)
    }
}
