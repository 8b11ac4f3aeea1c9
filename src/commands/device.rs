//! `mpfleet device ...`: set, import, export, list, show, rm, bootstrap, key, each as an
//! operation (`crate::ops::device`) run by a backend (the data dir or a remote server),
//! printed here. `export`, `list`, `show`, `bootstrap` and `key` only read the store; `set`,
//! `import`, `rm` and `key --rotate` change it.

use super::{ago, print_json, table, terminal::for_terminal};
use crate::cli::DeviceCommand;
use crate::manifest::Desired;
use crate::names::ModuleName;
use crate::ops::device::{self as op, mac, pair};
use crate::ops::Backend;
use crate::out::{out, outln};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;

pub fn run(backend: &Backend, command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Set {
            mac: m,
            app,
            group,
            modules,
        } => {
            let m = mac(&m)?;
            let set = backend.call(op::Set::new(&m, app, group, &modules)?)?;
            let group = match &set.group {
                Some((group, pins)) => format!(" group {group}, own pins: {pins};"),
                None => String::new(),
            };
            outln!(
                "device {}:{group} {} (generation {})",
                set.mac,
                set.desired,
                set.generation
            )
        }
        DeviceCommand::Import { file } => {
            let (source, text) = if file.as_os_str() == "-" {
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
            let done = backend.call(op::Import { source, text })?;
            outln!(
                "imported {} devices from {}: {} created, {} updated, {} unchanged",
                done.devices,
                done.source,
                done.created,
                done.updated,
                done.unchanged
            )
        }
        DeviceCommand::Export => {
            let lines = backend.call(op::Export {})?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for line in lines {
                writeln!(out, "{line}").map_err(crate::out::failed)?;
            }
            out.flush().map_err(crate::out::failed)
        }
        DeviceCommand::List {
            unknown: true,
            list,
        } => {
            let unknown = backend.call(op::Unknown {})?;
            if list.json {
                return print_json(&serde_json::to_value(&unknown)?);
            }
            let rows: Vec<Vec<String>> = unknown
                .iter()
                .map(|u| {
                    vec![
                        u.mac.clone(),
                        ago(Some(u.last_seen)),
                        ago(Some(u.first_seen)),
                        u.requests.to_string(),
                    ]
                })
                .collect();
            table(&["MAC", "LAST ASKED", "FIRST ASKED", "REQUESTS"], &rows)
        }
        DeviceCommand::List {
            unknown: false,
            list,
        } => {
            let devices = backend.call(op::List {})?;
            if list.json {
                return print_json(&serde_json::to_value(&devices)?);
            }
            let rows: Vec<Vec<String>> = devices
                .iter()
                .map(|d| {
                    let (event, running) = summary(d.last_report.as_ref(), d.generation);
                    vec![
                        d.mac.clone(),
                        d.app.clone(),
                        d.group.clone().unwrap_or_else(|| "-".into()),
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
            )
        }
        DeviceCommand::Show { mac: m, list } => {
            let d = backend.call(op::Show {
                mac: mac(&m)?.to_string(),
            })?;
            if list.json {
                return print_json(&serde_json::to_value(&d)?);
            }
            outln!("device     {}", d.mac)?;
            outln!("app        {}", d.desired["name"].as_str().unwrap_or("?"))?;
            if let Some(g) = &d.group {
                let pins = crate::manifest::Pins::from_json(&g["own_pins"].to_string())?;
                outln!(
                    "group      {} (own pins: {})",
                    g["name"].as_str().unwrap_or("?"),
                    pins.describe()
                )?;
            }
            if let Some(r) = &d.rollout {
                outln!(
                    "rollout    {} ({}) moved it at step {}",
                    r["id"],
                    r["state"].as_str().unwrap_or("?"),
                    r["step"]
                )?;
            }
            outln!("generation {}", d.generation)?;
            outln!("last seen  {}", ago(d.last_seen))?;
            outln!("key        {} (fingerprint)", d.key)?;
            outln!(
                "reports    counter {}; refused {} forged, {} replayed",
                d.report_counter,
                d.forged_reports,
                d.replayed_reports
            )?;
            outln!("desired    {}", d.desired)?;
            outln!()?;
            let rows: Vec<Vec<String>> = d.resolved["modules"]
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
            if d.reports.is_empty() {
                outln!("no reports yet")?;
            } else {
                outln!("recent reports (newest first):")?;
                for r in &d.reports {
                    // A report is what a board (or whoever posts as one) sent.
                    let body = r.report.to_string();
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
            let secrets = secrets.as_deref().map(read_secrets).transpose()?;
            let bootstrap = op::Bootstrap {
                mac: m.to_string(),
                server,
                secrets,
            };
            bootstrap.check()?;
            let script = backend.call(bootstrap)?;
            out!("{}", script.text)?;
            eprintln!(
                "mpfleet: this bootstrap holds the secret key of {m}: run it on that board \
                 (mpremote run bootstrap.py) and do not keep it"
            );
            Ok(())
        }
        DeviceCommand::Key { mac: m, rotate } => {
            let m = mac(&m)?.to_string();
            let key = if rotate {
                backend.call(op::RotateKey { mac: m })?
            } else {
                backend.call(op::Key { mac: m })?
            };
            outln!("device {}: key {}", key.mac, key.fingerprint)?;
            if rotate {
                outln!(
                    "new key: the board refuses updates until it runs its new bootstrap: \
                     mpfleet device bootstrap {} > bootstrap.py",
                    key.mac
                )?;
            }
            Ok(())
        }
        DeviceCommand::Rm { mac: m } => {
            let removed = backend.call(op::Remove {
                mac: mac(&m)?.to_string(),
            })?;
            outln!("removed device {}", removed.mac)
        }
    }
}

/// A board's own secrets (`--secrets FILE`): a JSON object, as compact JSON text.
pub(crate) fn read_secrets(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if !value.is_object() {
        bail!("{} is not a JSON object", path.display());
    }
    Ok(value.to_string())
}

/// A server URL a board can use (`--server`).
pub(crate) fn check_server(server: &str) -> Result<()> {
    if !server.starts_with("http://") {
        bail!("--server {server:?}: boards speak plain http://, e.g. http://192.168.1.10:8080/");
    }
    Ok(())
}

/// The device `mac` runs `app` with `modules` (MODULE=VERSION), as `device set` says it.
pub(crate) fn desired(app: &str, modules: &[String]) -> Result<Desired> {
    let app = ModuleName::parse(app).map_err(anyhow::Error::msg)?;
    let pairs = modules
        .iter()
        .map(|s| pair(s))
        .collect::<Result<Vec<_>>>()?;
    Desired::new(app, pairs)
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
