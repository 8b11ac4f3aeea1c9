//! `mpfleet device ...`: set, import, export, list, show, rm. `export`, `list` and `show`
//! only read the store; `set`, `import` and `rm` change it.

use super::{ago, print_json, table, terminal::for_terminal};
use crate::cli::DeviceCommand;
use crate::manifest::{Desired, Pins, Want};
use crate::names::{GroupName, Mac, ModuleName};
use crate::out::{out, outln};
use crate::store::{Assignment, Store};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;

fn mac(s: &str) -> Result<Mac> {
    Mac::parse(s).map_err(anyhow::Error::msg)
}

pub(super) fn pair(s: &str) -> Result<(ModuleName, Want)> {
    let (m, v) = s
        .split_once('=')
        .with_context(|| format!("{s:?} is not MODULE=VERSION (VERSION may be `latest`)"))?;
    Ok((
        ModuleName::parse(m).map_err(anyhow::Error::msg)?,
        Want::parse(v).map_err(anyhow::Error::msg)?,
    ))
}

pub fn run(data: &Path, command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Set {
            mac: m,
            app,
            group,
            modules,
        } => {
            let m = mac(&m)?;
            let app = app
                .map(|a| ModuleName::parse(&a).map_err(anyhow::Error::msg))
                .transpose()?;
            let pairs = modules
                .iter()
                .map(|s| pair(s))
                .collect::<Result<Vec<_>>>()?;
            let assignment = match group {
                Some(g) => Assignment::Group {
                    group: GroupName::parse(&g).map_err(anyhow::Error::msg)?,
                    pins: Pins::new(app, pairs)?,
                },
                None => Assignment::Own(Desired::new(
                    app.context("give --app APP, or --group GROUP")?,
                    pairs,
                )?),
            };
            let mut store = Store::open(data)?;
            let (desired, generation) = store
                .set_device(&m, &assignment)
                .with_context(|| format!("cannot set device {m}"))?;
            let group = match &assignment {
                Assignment::Group { group, pins } => {
                    format!(" group {group}, own pins: {};", pins.describe())
                }
                Assignment::Own(_) => String::new(),
            };
            outln!(
                "device {m}:{group} {} (generation {generation})",
                desired.to_seed_json()
            )?;
            Ok(())
        }
        DeviceCommand::Import { file } => {
            let (name, text) = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading standard input")?;
                ("standard input".to_owned(), text)
            } else {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                (file.display().to_string(), text)
            };
            let nothing = || format!("{name}: nothing imported");
            let entries = crate::bulk::parse(&text).with_context(nothing)?;
            let mut store = Store::open(data)?;
            // Name the line of a group, module or version that does not exist; `set_devices`
            // checks again inside its transaction.
            let resolver = store.resolver()?;
            for e in &entries {
                resolver
                    .desired(&e.mac, &e.assignment)
                    .with_context(|| format!("line {}: device {}", e.line, e.mac))
                    .with_context(nothing)?;
            }
            let devices: Vec<_> = entries.into_iter().map(|e| (e.mac, e.assignment)).collect();
            let counts = store.set_devices(&devices).with_context(nothing)?;
            outln!(
                "imported {} devices from {name}: {} created, {} updated, {} unchanged",
                devices.len(),
                counts.created,
                counts.updated,
                counts.unchanged
            )?;
            Ok(())
        }
        DeviceCommand::Export => {
            let store = Store::open_read_only(data)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for d in store.devices()? {
                writeln!(out, "{}", crate::bulk::export_line(&d.mac, &d.assignment()))
                    .map_err(crate::out::failed)?;
            }
            out.flush().map_err(crate::out::failed)?;
            Ok(())
        }
        DeviceCommand::List {
            unknown: true,
            list,
        } => {
            let store = Store::open_read_only(data)?;
            let unknown = store.unknown_devices()?;
            if list.json {
                let v: Vec<_> = unknown
                    .iter()
                    .map(|u| {
                        json!({"mac": u.mac.as_str(), "first_seen": u.first_seen,
                               "last_seen": u.last_seen, "requests": u.requests})
                    })
                    .collect();
                print_json(&json!(v))?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = unknown
                .iter()
                .map(|u| {
                    vec![
                        u.mac.to_string(),
                        ago(Some(u.last_seen)),
                        ago(Some(u.first_seen)),
                        u.requests.to_string(),
                    ]
                })
                .collect();
            table(&["MAC", "LAST ASKED", "FIRST ASKED", "REQUESTS"], &rows)?;
            Ok(())
        }
        DeviceCommand::List {
            unknown: false,
            list,
        } => {
            let store = Store::open_read_only(data)?;
            let devices = store.devices()?;
            if list.json {
                let v: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        json!({"mac": d.mac.as_str(), "app": d.desired.app.as_str(),
                               "group": d.group.as_ref().map(|(g, _)| g.as_str()),
                               "generation": d.generation, "last_seen": d.last_seen,
                               "last_report": d.last_report})
                    })
                    .collect();
                print_json(&json!(v))?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = devices
                .iter()
                .map(|d| {
                    let (event, running) = summary(d.last_report.as_ref(), d.generation);
                    vec![
                        d.mac.to_string(),
                        d.desired.app.to_string(),
                        d.group.as_ref().map_or("-".into(), |(g, _)| g.to_string()),
                        d.generation.to_string(),
                        running,
                        event,
                        ago(d.last_seen),
                    ]
                })
                .collect();
            table(
                &[
                    "MAC",
                    "APP",
                    "GROUP",
                    "GENERATION",
                    "RUNNING",
                    "LAST EVENT",
                    "LAST SEEN",
                ],
                &rows,
            )?;
            Ok(())
        }
        DeviceCommand::Show { mac: m, list } => {
            let m = mac(&m)?;
            let store = Store::open_read_only(data)?;
            let Some(d) = store.device(&m)? else {
                bail!("unknown device {m}: add it with `mpfleet device set {m} --app NAME`");
            };
            let resolved = store.catalog()?.resolve(&d.desired)?;
            let resolved: Value =
                serde_json::from_str(&resolved.to_json(&m, &store.store_id()?, d.generation))?;
            let reports = store.reports(&m, 10)?;
            if list.json {
                let desired: Value = serde_json::from_str(&d.desired.to_seed_json())?;
                let rs: Vec<_> = reports
                    .iter()
                    .map(|r| json!({"at": r.at, "report": r.body}))
                    .collect();
                let group = d.group.as_ref().map(|(g, pins)| {
                    let pins: Value = serde_json::from_str(&pins.to_json()).expect("JSON");
                    json!({"name": g.as_str(), "own_pins": pins})
                });
                let rollout = store
                    .rollout_of(&m)?
                    .map(|(id, state, step)| json!({"id": id, "state": state, "step": step + 1}));
                print_json(&json!({
                    "mac": m.as_str(), "group": group, "rollout": rollout,
                    "desired": desired, "resolved": resolved,
                    "generation": d.generation, "last_seen": d.last_seen,
                    "last_report": d.last_report, "last_report_at": d.last_report_at,
                    "key": d.key.fingerprint(), "report_counter": d.report_counter,
                    "forged_reports": d.forged_reports,
                    "replayed_reports": d.replayed_reports,
                    "reports": rs,
                }))?;
                return Ok(());
            }
            outln!("device     {m}")?;
            outln!("app        {}", d.desired.app)?;
            if let Some((g, pins)) = &d.group {
                outln!("group      {g} (own pins: {})", pins.describe())?;
            }
            if let Some((id, state, step)) = store.rollout_of(&m)? {
                outln!("rollout    {id} ({state}) moved it at step {}", step + 1)?;
            }
            outln!("generation {}", d.generation)?;
            outln!("last seen  {}", ago(d.last_seen))?;
            outln!("key        {} (fingerprint)", d.key.fingerprint())?;
            outln!(
                "reports    counter {}; refused {} forged, {} replayed",
                d.report_counter,
                d.forged_reports,
                d.replayed_reports
            )?;
            outln!("desired    {}", d.desired.to_seed_json())?;
            outln!()?;
            let rows: Vec<Vec<String>> = resolved["modules"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, r)| {
                    let reported = d
                        .last_report
                        .as_ref()
                        .and_then(|rep| rep["modules"][name.as_str()].as_str())
                        .unwrap_or("-");
                    vec![
                        name.clone(),
                        r["version"].as_str().unwrap_or("").to_owned(),
                        reported.to_owned(),
                        r["size"].to_string(),
                        r["sha256"]
                            .as_str()
                            .unwrap_or("")
                            .chars()
                            .take(16)
                            .collect(),
                    ]
                })
                .collect();
            table(&["MODULE", "RESOLVED", "REPORTED", "SIZE", "SHA256"], &rows)?;
            outln!()?;
            if reports.is_empty() {
                outln!("no reports yet")?;
            } else {
                outln!("recent reports (newest first):")?;
                for r in &reports {
                    // A report is what a board (or whoever posts as one) sent.
                    let body = r.body.to_string();
                    outln!("  {:>8}  {}", ago(Some(r.at)), for_terminal(&body))?;
                }
            }
            Ok(())
        }
        DeviceCommand::Bootstrap {
            mac: m,
            server,
            secrets,
        } => {
            let m = mac(&m)?;
            let secrets = secrets
                .map(|path| -> Result<String> {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let value: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?;
                    if !value.is_object() {
                        bail!("{} is not a JSON object", path.display());
                    }
                    Ok(value.to_string())
                })
                .transpose()?;
            if !server.starts_with("http://") {
                bail!("--server {server:?}: boards speak plain http://, e.g. http://192.168.1.10:8080/");
            }
            let store = Store::open_read_only(data)?;
            let Some(d) = store.device(&m)? else {
                bail!("unknown device {m}: add it first with `mpfleet device set {m} --app NAME`");
            };
            let text = crate::runtime::bootstrap_for(
                &server,
                &d.key,
                &store.store_id()?,
                d.report_counter,
                secrets.as_deref(),
            );
            out!("{text}")?;
            eprintln!(
                "mpfleet: this bootstrap holds the secret key of {m}: run it on that board \
                 (mpremote run bootstrap.py) and do not keep it"
            );
            Ok(())
        }
        DeviceCommand::Key { mac: m, rotate } => {
            let m = mac(&m)?;
            let mut store = if rotate {
                Store::open(data)?
            } else {
                Store::open_read_only(data)?
            };
            if rotate && !store.rotate_key(&m)? {
                bail!("unknown device {m}");
            }
            let Some(d) = store.device(&m)? else {
                bail!("unknown device {m}");
            };
            outln!("device {m}: key {}", d.key.fingerprint())?;
            if rotate {
                outln!(
                    "new key: the board refuses updates until it runs its new bootstrap: \
                     mpfleet device bootstrap {m} > bootstrap.py"
                )?;
            }
            Ok(())
        }
        DeviceCommand::Rm { mac: m } => {
            let m = mac(&m)?;
            let mut store = Store::open(data)?;
            if !store.remove_device(&m)? {
                bail!("unknown device {m}: nothing removed");
            }
            outln!("removed device {m}")?;
            Ok(())
        }
    }
}

/// The last event, and "gen N (config)" of what the board last said it runs.
fn summary(report: Option<&Value>, desired_generation: i64) -> (String, String) {
    let Some(r) = report else {
        return ("-".into(), "-".into());
    };
    let event = r["event"].as_str().unwrap_or("?").to_owned();
    let running = match r["generation"].as_i64() {
        Some(g) => format!(
            "gen {g} ({}){}",
            r["config"].as_str().unwrap_or("?"),
            if g == desired_generation {
                ""
            } else {
                " behind"
            }
        ),
        None => "-".into(),
    };
    (event, running)
}
