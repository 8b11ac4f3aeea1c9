//! `mpfleet device ...`: set, import, export, list, show, rm, bootstrap, key, each as an
//! operation (`crate::ops::device`) run by a backend (the data dir or a remote server),
//! printed here. `export`, `list`, `show`, `bootstrap` and `key` only read the store; `set`,
//! `import`, `rm` and `key --rotate` change it.

use super::{ago, print_json, table, terminal::for_terminal};
use crate::cli::DeviceCommand;
use crate::manifest::{Desired, Pair};
use crate::names::{GroupName, Mac, ModuleName};
use crate::ops::device as op;
use crate::ops::Backend;
use crate::out::{out, outln};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;

pub fn run(backend: &Backend, command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Set {
            mac,
            app,
            group,
            modules,
        } => set(backend, &mac, app.as_ref(), group.as_ref(), &modules),
        DeviceCommand::Import { file } => import(backend, &file),
        DeviceCommand::Export => export(backend),
        DeviceCommand::List {
            unknown: true,
            list,
        } => list_unknown(backend, list.json),
        DeviceCommand::List {
            unknown: false,
            list,
        } => list_devices(backend, list.json),
        DeviceCommand::Show { mac, list } => show(backend, &mac, list.json),
        DeviceCommand::Bootstrap {
            mac,
            server,
            secrets,
        } => bootstrap(backend, &mac, server, secrets.as_deref()),
        DeviceCommand::Key { mac, rotate } => key(backend, &mac, rotate),
        DeviceCommand::Rm { mac } => remove(backend, &mac),
    }
}

/// `device set MAC [--app APP] [--group GROUP] MODULE=VERSION...`
fn set(
    backend: &Backend,
    mac: &Mac,
    app: Option<&ModuleName>,
    group: Option<&GroupName>,
    modules: &[Pair],
) -> Result<()> {
    let set = backend.call(op::Set::new(mac, app, group, modules))?;
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

/// `device import FILE`
fn import(backend: &Backend, file: &Path) -> Result<()> {
    let (source, text) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        ("standard input".to_owned(), text)
    } else {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
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

/// `device export`
fn export(backend: &Backend) -> Result<()> {
    let lines = backend.call(op::Export {})?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in lines {
        writeln!(out, "{line}").map_err(crate::out::failed)?;
    }
    out.flush().map_err(crate::out::failed)
}

/// `device list --unknown`
fn list_unknown(backend: &Backend, json: bool) -> Result<()> {
    let unknown = backend.call(op::Unknown {})?;
    if json {
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

/// `device list`
fn list_devices(backend: &Backend, json: bool) -> Result<()> {
    let devices = backend.call(op::List {})?;
    if json {
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

/// `device show MAC`: from the typed detail (only the reports, which are what a board sent,
/// stay JSON).
fn show(backend: &Backend, mac: &Mac, json: bool) -> Result<()> {
    let d = backend.call(op::Show {
        mac: mac.to_string(),
    })?;
    if json {
        return print_json(&serde_json::to_value(&d)?);
    }
    outln!("device     {}", d.mac)?;
    outln!("app        {}", d.desired.app)?;
    if let Some(g) = &d.group {
        outln!(
            "group      {} (own pins: {})",
            g.name,
            g.own_pins.describe()
        )?;
    }
    if let Some(r) = &d.rollout {
        outln!(
            "rollout    {} ({}) moved it at step {}",
            r.id,
            r.state,
            r.step
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
    outln!("desired    {}", d.desired.to_seed_json())?;
    outln!()?;
    let rows: Vec<Vec<String>> = d
        .resolved
        .modules
        .iter()
        .map(|(name, file)| {
            let reported = d
                .last_report
                .as_ref()
                .and_then(|rep| rep["modules"][name.as_str()].as_str())
                .unwrap_or("-");
            vec![
                name.to_string(),
                file.version.to_string(),
                reported.to_owned(),
                file.size.to_string(),
                file.sha256.chars().take(16).collect(),
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

/// `device bootstrap MAC [--server URL] [--secrets FILE]`
fn bootstrap(backend: &Backend, mac: &Mac, server: String, secrets: Option<&Path>) -> Result<()> {
    let secrets = secrets.map(read_secrets).transpose()?;
    let bootstrap = op::Bootstrap {
        mac: mac.to_string(),
        server,
        secrets,
    };
    bootstrap.check()?;
    let script = backend.call(bootstrap)?;
    out!("{}", script.text)?;
    eprintln!(
        "mpfleet: this bootstrap holds the secret key of {mac}: run it on that board \
         (mpremote run bootstrap.py) and do not keep it"
    );
    Ok(())
}

/// `device key MAC [--rotate]`
fn key(backend: &Backend, mac: &Mac, rotate: bool) -> Result<()> {
    let m = mac.to_string();
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

/// `device rm MAC`
fn remove(backend: &Backend, mac: &Mac) -> Result<()> {
    let removed = backend.call(op::Remove {
        mac: mac.to_string(),
    })?;
    outln!("removed device {}", removed.mac)
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

/// The device runs `app` with `modules`, as `device set` says it.
pub(crate) fn desired(app: &ModuleName, modules: &[Pair]) -> Result<Desired> {
    Desired::new(app.clone(), Pair::tuples(modules))
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
