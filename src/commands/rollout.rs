//! `mpfleet rollout ...`: start, list, show, pause, resume, abort. `list` and `show` only
//! read the store. The rollout itself advances inside `serve` (`store::rollouts`).

use super::{ago, print_json, table};
use crate::cli::RolloutCommand;
use crate::duration;
use crate::manifest::Pins;
use crate::names::GroupName;
use crate::ops::device::pair;
use crate::out::outln;
use crate::rollout::{parse_steps, Status, Threshold};
use crate::store::{NewRollout, RolloutRow, RolloutView, Store};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn seconds(what: &str, s: &str) -> Result<i64> {
    let d = duration::parse(s).with_context(|| format!("--{what}"))?;
    // Reports carry whole seconds; a duration below one is one.
    Ok(d.as_secs().max(1) as i64)
}

fn show_secs(s: i64) -> String {
    duration::show(Duration::from_secs(s as u64))
}

/// "step 2/3 (25%)".
fn step(r: &RolloutRow) -> String {
    format!(
        "{}/{} ({}%)",
        r.step + 1,
        r.spec.steps.len(),
        r.spec.steps[r.step]
    )
}

fn row_json(r: &RolloutRow) -> Value {
    json!({
        "id": r.id, "group": r.spec.group.as_str(),
        "to": serde_json::from_str::<Value>(&r.spec.to.to_json()).expect("JSON"),
        "steps": r.spec.steps, "step": r.step + 1,
        "max_failures": r.spec.max_failures.to_string(),
        "healthy_after": r.spec.healthy_after, "deadline": r.spec.deadline,
        "state": r.state, "reason": r.reason,
        "created_at": r.created_at, "updated_at": r.updated_at,
    })
}

fn print_view(v: &RolloutView, json_out: bool) -> Result<()> {
    let r = &v.row;
    let count = |f: fn(&Status) -> bool| v.moved.iter().filter(|b| f(&b.status)).count();
    let healthy = count(|s| *s == Status::Healthy);
    let waiting = count(|s| *s == Status::Waiting);
    let failed = count(|s| matches!(s, Status::Failed(_) | Status::Forgiven));
    let untouched = v.size.saturating_sub(v.moved.len());
    if json_out {
        let mut j = row_json(r);
        j["boards"] = json!(v.size);
        j["moved"] = json!(v.moved.len());
        j["healthy"] = json!(healthy);
        j["waiting"] = json!(waiting);
        j["failed"] = json!(failed);
        j["untouched"] = json!(untouched);
        j["devices"] = v
            .moved
            .iter()
            .map(|b| {
                json!({"mac": b.mac, "step": b.step + 1, "generation": b.generation,
                       "status": b.status.to_string()})
            })
            .collect();
        return print_json(&j);
    }
    outln!("rollout  {}", r.id)?;
    outln!("group    {}", r.spec.group)?;
    outln!("to       {}", r.spec.to.describe())?;
    outln!("state    {}", r.state)?;
    if let Some(why) = &r.reason {
        outln!("reason   {why}")?;
    }
    let steps: Vec<String> = r.spec.steps.iter().map(|p| format!("{p}%")).collect();
    outln!("step     {} of {}", step(r), steps.join(","))?;
    outln!(
        "rules    healthy after {}, deadline {}, max failures {}",
        show_secs(r.spec.healthy_after),
        show_secs(r.spec.deadline),
        r.spec.max_failures
    )?;
    outln!(
        "boards   {} in the group: {} moved ({healthy} healthy, {waiting} waiting, {failed} failed), {untouched} untouched",
        v.size,
        v.moved.len()
    )?;
    if !v.moved.is_empty() {
        outln!()?;
        let rows: Vec<Vec<String>> = v
            .moved
            .iter()
            .map(|b| {
                vec![
                    b.mac.clone(),
                    (b.step + 1).to_string(),
                    b.generation.map_or("-".into(), |g| g.to_string()),
                    b.status.to_string(),
                ]
            })
            .collect();
        table(&["MAC", "STEP", "GENERATION", "STATUS"], &rows)?;
    }
    Ok(())
}

pub fn run(data: &Path, command: RolloutCommand) -> Result<()> {
    match command {
        RolloutCommand::Start {
            group,
            to,
            steps,
            max_failures,
            healthy_after,
            deadline,
        } => {
            let group = GroupName::parse(&group).map_err(anyhow::Error::msg)?;
            let pairs = to.iter().map(|s| pair(s)).collect::<Result<Vec<_>>>()?;
            let spec = NewRollout {
                to: Pins::new(None, pairs)?,
                steps: parse_steps(&steps).context("--steps")?,
                max_failures: Threshold::parse(&max_failures)?,
                healthy_after: seconds("healthy-after", &healthy_after)?,
                deadline: seconds("deadline", &deadline)?,
                group,
            };
            let mut store = Store::open(data)?;
            let (view, said) = store
                .start_rollout(&spec)
                .with_context(|| format!("cannot start a rollout of group {}", spec.group))?;
            outln!(
                "rollout {} of group {} to {}: {}",
                view.row.id,
                spec.group,
                spec.to.describe(),
                if view.row.state == "done" {
                    "done (nothing to wait for)".to_owned()
                } else {
                    format!("step {}", step(&view.row))
                }
            )?;
            for line in said {
                outln!("  {line}")?;
            }
            Ok(())
        }
        RolloutCommand::List(list) => {
            let store = Store::open_read_only(data)?;
            let rollouts = store.rollouts()?;
            if list.json {
                return print_json(&json!(rollouts.iter().map(row_json).collect::<Vec<_>>()));
            }
            let rows: Vec<Vec<String>> = rollouts
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.spec.group.to_string(),
                        r.spec.to.describe(),
                        r.state.clone(),
                        step(r),
                        ago(Some(r.updated_at)),
                        r.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            table(
                &["ID", "GROUP", "TO", "STATE", "STEP", "CHANGED", "REASON"],
                &rows,
            )
        }
        RolloutCommand::Show { rollout, list } => {
            let store = Store::open_read_only(data)?;
            let id = store.find_rollout(&rollout)?;
            print_view(&store.rollout_view(id)?, list.json)
        }
        RolloutCommand::Pause { rollout } => {
            let mut store = Store::open(data)?;
            let id = store.find_rollout(&rollout)?;
            let r = store.pause_rollout(id)?;
            outln!("rollout {} paused at step {}", r.id, step(&r))
        }
        RolloutCommand::Resume { rollout } => {
            let mut store = Store::open(data)?;
            let id = store.find_rollout(&rollout)?;
            let (r, said) = store.resume_rollout(id)?;
            outln!("rollout {} {} at step {}", r.id, r.state, step(&r))?;
            for line in said {
                outln!("  {line}")?;
            }
            Ok(())
        }
        RolloutCommand::Abort { rollout } => {
            let mut store = Store::open(data)?;
            let id = store.find_rollout(&rollout)?;
            let r = store.abort_rollout(id)?;
            outln!(
                "rollout {} aborted: its boards go back to group {}'s versions",
                r.id,
                r.spec.group
            )
        }
    }
}
