//! Operations on rollouts: start, list, show, pause, resume, abort. A rollout then advances
//! inside `serve` (its engine), not in these operations.

use super::device::pair;
use super::group::group_name;
use super::{NotFound, Operation, Verb};
use crate::manifest::Pins;
use crate::names::GroupName;
use crate::rollout::{parse_steps, Status, Threshold};
use crate::store::{NewRollout, RolloutRow, RolloutView, Store};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What `rollout start` (and `POST /rollouts`) take when they are not told.
pub const DEFAULT_STEPS: &str = "5%,25%,100%";
pub const DEFAULT_MAX_FAILURES: &str = "0";
pub const DEFAULT_HEALTHY_AFTER: &str = "10m";
pub const DEFAULT_DEADLINE: &str = "1d";

fn seconds(what: &str, s: &str) -> Result<i64> {
    let d = crate::duration::parse(s).with_context(|| format!("--{what}"))?;
    // Reports carry whole seconds; a duration below one is one.
    Ok(d.as_secs().max(1) as i64)
}

/// A rollout by number, or a group's latest rollout by the group's name; one that does not
/// exist is [`NotFound`].
fn find(store: &Store, which: &str) -> Result<i64> {
    let well_formed = which.parse::<i64>().is_ok() || GroupName::parse(which).is_ok();
    store.find_rollout(which).map_err(|e| {
        if well_formed && !e.chain().any(|c| c.is::<rusqlite::Error>()) {
            NotFound(format!("{e:#}")).into()
        } else {
            e
        }
    })
}

/// A rollout as `list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutSummary {
    pub id: i64,
    pub group: String,
    /// The pins it moves boards to: `{"module": "version"}`.
    pub to: Value,
    /// Percentages of the group.
    pub steps: Vec<u32>,
    /// The step it is at, from 1.
    pub step: usize,
    /// A number (`2`) or a percentage (`10%`).
    pub max_failures: String,
    /// Seconds.
    pub healthy_after: i64,
    /// Seconds.
    pub deadline: i64,
    /// running, paused, done or aborted.
    pub state: String,
    /// Why it paused or was aborted.
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&RolloutRow> for RolloutSummary {
    fn from(r: &RolloutRow) -> Self {
        Self {
            id: r.id,
            group: r.spec.group.to_string(),
            to: serde_json::from_str(&r.spec.to.to_json()).expect("pins are JSON"),
            steps: r.spec.steps.clone(),
            step: r.step + 1,
            max_failures: r.spec.max_failures.to_string(),
            healthy_after: r.spec.healthy_after,
            deadline: r.spec.deadline,
            state: r.state.clone(),
            reason: r.reason.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl RolloutSummary {
    /// The pins it moves to.
    pub fn to_pins(&self) -> Result<Pins> {
        Pins::from_value(&self.to)
    }

    /// "2/3 (25%)".
    pub fn step_text(&self) -> String {
        let percent = self
            .steps
            .get(self.step.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        format!("{}/{} ({percent}%)", self.step, self.steps.len())
    }
}

/// A rollout with its boards, as `show` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutDetail {
    #[serde(flatten)]
    pub rollout: RolloutSummary,
    /// Boards in the group now.
    pub boards: usize,
    pub moved: usize,
    pub healthy: usize,
    pub waiting: usize,
    /// Failed, forgiven or not.
    pub failed: usize,
    pub untouched: usize,
    pub devices: Vec<RolloutBoard>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutBoard {
    pub mac: String,
    /// The step that moved it, from 1.
    pub step: usize,
    /// The generation it was given (none if moving it changed nothing it runs).
    pub generation: Option<i64>,
    /// waiting, healthy, `failed: WHY`, or `failed, forgiven`.
    pub status: String,
}

impl From<&RolloutView> for RolloutDetail {
    fn from(v: &RolloutView) -> Self {
        let count = |f: fn(&Status) -> bool| v.moved.iter().filter(|b| f(&b.status)).count();
        Self {
            rollout: (&v.row).into(),
            boards: v.size,
            moved: v.moved.len(),
            healthy: count(|s| *s == Status::Healthy),
            waiting: count(|s| *s == Status::Waiting),
            failed: count(|s| matches!(s, Status::Failed(_) | Status::Forgiven)),
            untouched: v.size.saturating_sub(v.moved.len()),
            devices: v
                .moved
                .iter()
                .map(|b| RolloutBoard {
                    mac: b.mac.clone(),
                    step: b.step + 1,
                    generation: b.generation,
                    status: b.status.to_string(),
                })
                .collect(),
        }
    }
}

/// What `start` and `resume` answer: the rollout, and what it did at once (boards moved, a
/// step advanced...).
#[derive(Debug, Serialize, Deserialize)]
pub struct Changed {
    pub rollout: RolloutSummary,
    pub said: Vec<String>,
}

/// `POST /rollouts`: `{"group": "greenhouse", "to": {"sensorclass": "3"}, "steps"?:
/// "10%,50%,100%", "max_failures"?: "1", "healthy_after"?: "10m", "deadline"?: "1d"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    pub group: String,
    pub to: Map<String, Value>,
    #[serde(default = "default_steps")]
    pub steps: String,
    #[serde(default = "default_max_failures")]
    pub max_failures: String,
    #[serde(default = "default_healthy_after")]
    pub healthy_after: String,
    #[serde(default = "default_deadline")]
    pub deadline: String,
}

fn default_steps() -> String {
    DEFAULT_STEPS.into()
}
fn default_max_failures() -> String {
    DEFAULT_MAX_FAILURES.into()
}
fn default_healthy_after() -> String {
    DEFAULT_HEALTHY_AFTER.into()
}
fn default_deadline() -> String {
    DEFAULT_DEADLINE.into()
}

impl Start {
    /// The checked rollout it asks for.
    pub fn spec(&self) -> Result<NewRollout> {
        let group = group_name(&self.group)?;
        let mut pairs = Vec::new();
        for (m, v) in &self.to {
            let v = v
                .as_str()
                .with_context(|| format!("version of {m} is not a string"))?;
            pairs.push(pair(&format!("{m}={v}"))?);
        }
        Ok(NewRollout {
            to: Pins::new(None, pairs)?,
            steps: parse_steps(&self.steps).context("--steps")?,
            max_failures: Threshold::parse(&self.max_failures)?,
            healthy_after: seconds("healthy-after", &self.healthy_after)?,
            deadline: seconds("deadline", &self.deadline)?,
            group,
        })
    }
}

impl Operation for Start {
    type Output = Changed;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/rollouts";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let spec = self.spec()?;
        let cannot = || format!("cannot start a rollout of group {}", spec.group);
        if store.group(&spec.group)?.is_none() {
            let unknown = NotFound(crate::store::unknown_group(&spec.group));
            return Err(anyhow::Error::new(unknown).context(cannot()));
        }
        let (view, said) = store.start_rollout(&spec).with_context(cannot)?;
        Ok(Changed {
            rollout: (&view.row).into(),
            said,
        })
    }
}

/// `GET /rollouts`: every rollout, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct List {}

impl Operation for List {
    type Output = Vec<RolloutSummary>;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/rollouts";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        Ok(store.rollouts()?.iter().map(Into::into).collect())
    }
}

/// `GET /rollouts/{rollout}`: a rollout (by number, or a group's name for its latest) with
/// its boards and how each is doing.
#[derive(Debug, Serialize, Deserialize)]
pub struct Show {
    pub rollout: String,
}

impl Operation for Show {
    type Output = RolloutDetail;
    const VERB: Verb = Verb::Get;
    const PATH: &'static str = "/rollouts/{rollout}";
    const WRITES: bool = false;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let id = find(store, &self.rollout)?;
        Ok((&store.rollout_view(id)?).into())
    }
}

/// `POST /rollouts/{rollout}/pause`: no more boards move until `resume`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pause {
    pub rollout: String,
}

impl Operation for Pause {
    type Output = RolloutSummary;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/rollouts/{rollout}/pause";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let id = find(store, &self.rollout)?;
        Ok((&store.pause_rollout(id)?).into())
    }
}

/// `POST /rollouts/{rollout}/resume`: a paused rollout runs again, its failed boards forgiven.
#[derive(Debug, Serialize, Deserialize)]
pub struct Resume {
    pub rollout: String,
}

impl Operation for Resume {
    type Output = Changed;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/rollouts/{rollout}/resume";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let id = find(store, &self.rollout)?;
        let (r, said) = store.resume_rollout(id)?;
        Ok(Changed {
            rollout: (&r).into(),
            said,
        })
    }
}

/// `POST /rollouts/{rollout}/abort`: every board it moved goes back to the group's versions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Abort {
    pub rollout: String,
}

impl Operation for Abort {
    type Output = RolloutSummary;
    const VERB: Verb = Verb::Post;
    const PATH: &'static str = "/rollouts/{rollout}/abort";
    const WRITES: bool = true;
    fn run(self, store: &mut Store) -> Result<Self::Output> {
        let id = find(store, &self.rollout)?;
        Ok((&store.abort_rollout(id)?).into())
    }
}
