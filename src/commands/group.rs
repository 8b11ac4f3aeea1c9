//! `mpfleet group ...`: create, set, show, list, delete, each as an operation
//! (`crate::ops::group`) run by a backend (the data dir or a remote server), printed here.
//! `show` and `list` only read the store; the others change it.

use super::{ago, print_json, table};
use crate::cli::GroupCommand;
use crate::manifest::{Pair, Pins};
use crate::names::{GroupName, ModuleName};
use crate::ops::group::{self as op, modules};
use crate::ops::Backend;
use crate::out::outln;
use anyhow::Result;

/// The module pins of a group's `pins` (its app left out), described.
fn module_pins(pins: &serde_json::Value) -> Result<String> {
    let mut p = Pins::from_value(pins)?;
    p.app = None;
    Ok(p.describe())
}

pub fn run(backend: &Backend, command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::Create { name, app, modules } => create(backend, &name, &app, &modules),
        GroupCommand::Set { name, app, modules } => set(backend, &name, app.as_ref(), &modules),
        GroupCommand::Delete { name } => delete(backend, &name),
        GroupCommand::List(list) => list_groups(backend, list.json),
        GroupCommand::Show { name, list } => show(backend, &name, list.json),
    }
}

/// `group create NAME --app APP MODULE=VERSION...`
fn create(backend: &Backend, name: &GroupName, app: &ModuleName, pairs: &[Pair]) -> Result<()> {
    let set = backend.call(op::Create {
        name: name.to_string(),
        app: app.to_string(),
        modules: modules(pairs)?,
    })?;
    outln!("group {}: {}", set.name, set.desired)
}

/// `group set NAME [--app APP] MODULE=VERSION...`
fn set(
    backend: &Backend,
    name: &GroupName,
    app: Option<&ModuleName>,
    pairs: &[Pair],
) -> Result<()> {
    let set = backend.call(op::Set {
        group: name.to_string(),
        app: app.map(ModuleName::to_string),
        modules: modules(pairs)?,
    })?;
    outln!("group {}: {}", set.name, set.desired)
}

/// `group delete NAME`
fn delete(backend: &Backend, name: &GroupName) -> Result<()> {
    let deleted = backend.call(op::Delete {
        group: name.to_string(),
    })?;
    outln!("deleted group {}", deleted.name)
}

/// `group list`
fn list_groups(backend: &Backend, json: bool) -> Result<()> {
    let groups = backend.call(op::List {})?;
    if json {
        return print_json(&serde_json::to_value(&groups)?);
    }
    let rows = groups
        .iter()
        .map(|g| {
            Ok(vec![
                g.name.clone(),
                g.pins["name"].as_str().unwrap_or("-").to_owned(),
                g.devices.to_string(),
                module_pins(&g.pins)?,
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    table(&["GROUP", "APP", "DEVICES", "PINS"], &rows)
}

/// `group show NAME`
fn show(backend: &Backend, name: &GroupName, json: bool) -> Result<()> {
    let g = backend.call(op::Show {
        group: name.to_string(),
    })?;
    if json {
        return print_json(&serde_json::to_value(&g)?);
    }
    outln!("group    {}", g.name)?;
    outln!("app      {}", g.desired["name"].as_str().unwrap_or("?"))?;
    outln!("pins     {}", module_pins(&g.pins)?)?;
    outln!("desired  {}", g.desired)?;
    outln!("devices  {}", g.devices.len())?;
    if !g.devices.is_empty() {
        outln!()?;
        let rows = g
            .devices
            .iter()
            .map(|d| {
                let own = match &d.own_pins {
                    Some(p) => Pins::from_value(p)?.describe(),
                    None => "-".into(),
                };
                let event = d
                    .last_report
                    .as_ref()
                    .and_then(|r| r["event"].as_str())
                    .unwrap_or("-")
                    .to_owned();
                Ok(vec![
                    d.mac.clone(),
                    own,
                    d.generation.to_string(),
                    event,
                    ago(d.last_seen),
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        table(
            &["MAC", "OWN PINS", "GENERATION", "LAST EVENT", "LAST SEEN"],
            &rows,
        )?;
    }
    Ok(())
}
