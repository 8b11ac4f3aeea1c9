//! `mpfleet group ...`: create, set, show, list, delete. `show` and `list` only read the
//! store; the others change it.

use super::{ago, print_json, table};
use crate::cli::GroupCommand;
use crate::manifest::Pins;
use crate::names::{GroupName, ModuleName};
use crate::ops::device::pair;
use crate::out::outln;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

fn name(s: &str) -> Result<GroupName> {
    GroupName::parse(s).map_err(anyhow::Error::msg)
}

fn pins(app: Option<String>, modules: &[String]) -> Result<Pins> {
    let app = app
        .map(|a| ModuleName::parse(&a).map_err(anyhow::Error::msg))
        .transpose()?;
    let pairs = modules
        .iter()
        .map(|s| pair(s))
        .collect::<Result<Vec<_>>>()?;
    Pins::new(app, pairs)
}

fn pins_json(p: &Pins) -> Value {
    serde_json::from_str(&p.to_json()).expect("pins are JSON")
}

pub fn run(data: &Path, command: GroupCommand) -> Result<()> {
    match command {
        GroupCommand::Create {
            name: n,
            app,
            modules,
        } => {
            let n = name(&n)?;
            let p = pins(Some(app), &modules)?;
            let mut store = Store::open(data)?;
            store
                .create_group(&n, &p)
                .with_context(|| format!("cannot create group {n}"))?;
            outln!("group {n}: {}", p.desired()?.to_seed_json())?;
            Ok(())
        }
        GroupCommand::Set {
            name: n,
            app,
            modules,
        } => {
            let n = name(&n)?;
            let p = pins(app, &modules)?;
            let mut store = Store::open(data)?;
            let p = store
                .set_group(&n, &p)
                .with_context(|| format!("cannot set group {n}"))?;
            outln!("group {n}: {}", p.desired()?.to_seed_json())?;
            Ok(())
        }
        GroupCommand::Delete { name: n } => {
            let n = name(&n)?;
            let mut store = Store::open(data)?;
            store
                .delete_group(&n)
                .with_context(|| format!("cannot delete group {n}"))?;
            outln!("deleted group {n}")?;
            Ok(())
        }
        GroupCommand::List(list) => {
            let store = Store::open_read_only(data)?;
            let groups = store.groups()?;
            if list.json {
                let v: Vec<_> = groups
                    .iter()
                    .map(|g| {
                        json!({"name": g.name.as_str(), "pins": pins_json(&g.pins),
                               "devices": g.members, "created_at": g.created_at})
                    })
                    .collect();
                return print_json(&json!(v));
            }
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    vec![
                        g.name.to_string(),
                        g.pins.app.as_ref().map_or("-".into(), ToString::to_string),
                        g.members.to_string(),
                        Pins {
                            app: None,
                            modules: g.pins.modules.clone(),
                        }
                        .describe(),
                    ]
                })
                .collect();
            table(&["GROUP", "APP", "DEVICES", "PINS"], &rows)
        }
        GroupCommand::Show { name: n, list } => {
            let n = name(&n)?;
            let store = Store::open_read_only(data)?;
            let Some(g) = store.group(&n)? else {
                bail!("{}", crate::store::unknown_group(&n));
            };
            let desired = g.pins.desired()?;
            let members: Vec<_> = store
                .devices()?
                .into_iter()
                .filter(|d| d.group.as_ref().is_some_and(|(name, _)| *name == n))
                .collect();
            if list.json {
                let ms: Vec<_> = members
                    .iter()
                    .map(|d| {
                        let own = d.group.as_ref().map(|(_, p)| pins_json(p));
                        json!({"mac": d.mac.as_str(), "own_pins": own,
                               "generation": d.generation, "last_seen": d.last_seen,
                               "last_report": d.last_report})
                    })
                    .collect();
                let desired: Value = serde_json::from_str(&desired.to_seed_json())?;
                return print_json(&json!({
                    "name": n.as_str(), "pins": pins_json(&g.pins), "desired": desired,
                    "created_at": g.created_at, "devices": ms,
                }));
            }
            outln!("group    {n}")?;
            outln!("app      {}", desired.app)?;
            let own = Pins {
                app: None,
                modules: g.pins.modules.clone(),
            };
            outln!("pins     {}", own.describe())?;
            outln!("desired  {}", desired.to_seed_json())?;
            outln!("devices  {}", members.len())?;
            if !members.is_empty() {
                outln!()?;
                let rows: Vec<Vec<String>> = members
                    .iter()
                    .map(|d| {
                        let own = d.group.as_ref().map_or("-".into(), |(_, p)| p.describe());
                        let event = d
                            .last_report
                            .as_ref()
                            .and_then(|r| r["event"].as_str())
                            .unwrap_or("-")
                            .to_owned();
                        vec![
                            d.mac.to_string(),
                            own,
                            d.generation.to_string(),
                            event,
                            ago(d.last_seen),
                        ]
                    })
                    .collect();
                table(
                    &["MAC", "OWN PINS", "GENERATION", "LAST EVENT", "LAST SEEN"],
                    &rows,
                )?;
            }
            Ok(())
        }
    }
}
