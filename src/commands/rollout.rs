//! `mpfleet rollout ...`: start, list, show, pause, resume, abort, each as an operation
//! (`crate::ops::rollout`) run by a backend (the data dir or a remote server), printed here.
//! `list` and `show` only read the store. The rollout itself advances inside `serve`
//! (`store::rollouts`).

use super::{ago, print_json, table};
use crate::cli::RolloutCommand;
use crate::duration;
use crate::ops::group::modules;
use crate::ops::rollout::{self as op, RolloutDetail};
use crate::ops::Backend;
use crate::out::outln;
use anyhow::Result;
use std::time::Duration;

fn show_secs(s: i64) -> String {
    duration::show(Duration::from_secs(s.max(0) as u64))
}

fn print_detail(v: &RolloutDetail, json_out: bool) -> Result<()> {
    if json_out {
        return print_json(&serde_json::to_value(v)?);
    }
    let r = &v.rollout;
    outln!("rollout  {}", r.id)?;
    outln!("group    {}", r.group)?;
    outln!("to       {}", r.to_pins()?.describe())?;
    outln!("state    {}", r.state)?;
    if let Some(why) = &r.reason {
        outln!("reason   {why}")?;
    }
    let steps: Vec<String> = r.steps.iter().map(|p| format!("{p}%")).collect();
    outln!("step     {} of {}", r.step_text(), steps.join(","))?;
    outln!(
        "rules    healthy after {}, deadline {}, max failures {}",
        show_secs(r.healthy_after),
        show_secs(r.deadline),
        r.max_failures
    )?;
    outln!(
        "boards   {} in the group: {} moved ({} healthy, {} waiting, {} failed), {} untouched",
        v.boards,
        v.moved,
        v.healthy,
        v.waiting,
        v.failed,
        v.untouched
    )?;
    if !v.devices.is_empty() {
        outln!()?;
        let rows: Vec<Vec<String>> = v
            .devices
            .iter()
            .map(|b| {
                vec![
                    b.mac.clone(),
                    b.step.to_string(),
                    b.generation.map_or("-".into(), |g| g.to_string()),
                    b.status.clone(),
                ]
            })
            .collect();
        table(&["MAC", "STEP", "GENERATION", "STATUS"], &rows)?;
    }
    Ok(())
}

pub fn run(backend: &Backend, command: RolloutCommand) -> Result<()> {
    match command {
        RolloutCommand::Start {
            group,
            to,
            steps,
            max_failures,
            healthy_after,
            deadline,
        } => start(
            backend,
            op::Start {
                group: group.to_string(),
                to: modules(&to)?,
                steps,
                max_failures,
                healthy_after,
                deadline,
            },
        ),
        RolloutCommand::List(list) => list_rollouts(backend, list.json),
        RolloutCommand::Show { rollout, list } => {
            print_detail(&backend.call(op::Show { rollout })?, list.json)
        }
        RolloutCommand::Pause { rollout } => pause(backend, rollout),
        RolloutCommand::Resume { rollout } => resume(backend, rollout),
        RolloutCommand::Abort { rollout } => abort(backend, rollout),
    }
}

/// `rollout start GROUP --to MODULE=VERSION... [--steps ...] ...`
fn start(backend: &Backend, start: op::Start) -> Result<()> {
    // What needs no store is refused here, as on the server.
    start.spec()?;
    let done = backend.call(start)?;
    let r = &done.rollout;
    outln!(
        "rollout {} of group {} to {}: {}",
        r.id,
        r.group,
        r.to_pins()?.describe(),
        if r.state == "done" {
            "done (nothing to wait for)".to_owned()
        } else {
            format!("step {}", r.step_text())
        }
    )?;
    for line in done.said {
        outln!("  {line}")?;
    }
    Ok(())
}

/// `rollout list`
fn list_rollouts(backend: &Backend, json: bool) -> Result<()> {
    let rollouts = backend.call(op::List {})?;
    if json {
        return print_json(&serde_json::to_value(&rollouts)?);
    }
    let rows = rollouts
        .iter()
        .map(|r| {
            Ok(vec![
                r.id.to_string(),
                r.group.clone(),
                r.to_pins()?.describe(),
                r.state.clone(),
                r.step_text(),
                ago(Some(r.updated_at)),
                r.reason.clone().unwrap_or_default(),
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    table(
        &["ID", "GROUP", "TO", "STATE", "STEP", "CHANGED", "REASON"],
        &rows,
    )
}

/// `rollout pause ROLLOUT`
fn pause(backend: &Backend, rollout: String) -> Result<()> {
    let r = backend.call(op::Pause { rollout })?;
    outln!("rollout {} paused at step {}", r.id, r.step_text())
}

/// `rollout resume ROLLOUT`
fn resume(backend: &Backend, rollout: String) -> Result<()> {
    let done = backend.call(op::Resume { rollout })?;
    let r = &done.rollout;
    outln!("rollout {} {} at step {}", r.id, r.state, r.step_text())?;
    for line in done.said {
        outln!("  {line}")?;
    }
    Ok(())
}

/// `rollout abort ROLLOUT`
fn abort(backend: &Backend, rollout: String) -> Result<()> {
    let r = backend.call(op::Abort { rollout })?;
    outln!(
        "rollout {} aborted: its boards go back to group {}'s versions",
        r.id,
        r.group
    )
}
