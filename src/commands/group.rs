//! `mpfleet group ...`: create, set, show, list, delete, each as an operation
//! (`crate::ops::group`) run by a backend (the data dir or a remote server), printed here.
//! `show` and `list` only read the store; the others change it.

use super::{ago, print_json, table};
use crate::cli::GroupCommand;
use crate::manifest::Pins;
use crate::ops::group::{self as op, group_name, modules};
use crate::ops::Backend;
use crate::out::outln;
use anyhow::Result;

/// The module pins of a group's `pins` (its app left out), described.
fn module_pins(pins: &serde_json::Value) -> Result<String> {
    let mut p = Pins::from_json(&pins.to_string())?;
    p.app = None;
    Ok(p.describe())
}

pub fn run(backend: &Backend, command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::Create {
            name,
            app,
            modules: words,
        } => {
            let name = group_name(&name)?.to_string();
            let set = backend.call(op::Create {
                name,
                app,
                modules: modules(&words)?,
            })?;
            outln!("group {}: {}", set.name, set.desired)
        }
        GroupCommand::Set {
            name,
            app,
            modules: words,
        } => {
            let group = group_name(&name)?.to_string();
            let set = backend.call(op::Set {
                group,
                app,
                modules: modules(&words)?,
            })?;
            outln!("group {}: {}", set.name, set.desired)
        }
        GroupCommand::Delete { name } => {
            let deleted = backend.call(op::Delete {
                group: group_name(&name)?.to_string(),
            })?;
            outln!("deleted group {}", deleted.name)
        }
        GroupCommand::List(list) => {
            let groups = backend.call(op::List {})?;
            if list.json {
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
        GroupCommand::Show { name, list } => {
            let g = backend.call(op::Show {
                group: group_name(&name)?.to_string(),
            })?;
            if list.json {
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
                            Some(p) => Pins::from_json(&p.to_string())?.describe(),
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
    }
}
