//! `mpfleet module ...`: publish, list, show, latest, each as an operation (`crate::ops::module`)
//! run by a backend (the data dir or a remote server), printed here. `list` and `show` only
//! read the store; `publish` and `latest` change it.

use super::{print_json, table};
use crate::cli::ModuleCommand;
use crate::names::{ModuleName, Version};
use crate::ops::module::{self as op, module_name, nothing_published};
use crate::ops::Backend;
use crate::out::outln;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;

pub fn run(backend: &Backend, command: ModuleCommand) -> Result<()> {
    match command {
        ModuleCommand::Publish {
            files,
            name,
            version,
            no_latest,
        } => publish(backend, &files, name.as_ref(), version.as_ref(), !no_latest),
        ModuleCommand::List(args) => list(backend, args.json),
        ModuleCommand::Show { name, list } => show(backend, &name, list.json),
        ModuleCommand::Latest { name, version } => latest(backend, &name, &version),
    }
}

/// `module publish FILE... [--name NAME] [--version VERSION] [--no-latest]`
fn publish(
    backend: &Backend,
    files: &[PathBuf],
    name: Option<&ModuleName>,
    version: Option<&Version>,
    latest: bool,
) -> Result<()> {
    if name.is_some() && files.len() > 1 {
        bail!("--name applies to one file; publish the files one at a time");
    }
    // Check every file before asking the store, which publishes them in one
    // transaction: all of them or, when one is refused, none.
    let mut publish = op::Publish {
        files: Vec::new(),
        latest,
    };
    for file in files {
        let n = match name {
            Some(n) => n.clone(),
            None => {
                let stem = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .with_context(|| format!("{} has no usable name", file.display()))?;
                module_name(stem).with_context(|| {
                    format!(
                        "{}: use --name to give the module a valid name",
                        file.display()
                    )
                })?
            }
        };
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        crate::store::check_module(&n, &bytes)
            .with_context(|| file.display().to_string())
            .with_context(|| nothing_published(files.len()))?;
        publish.files.push(op::PublishFile {
            origin: file.display().to_string(),
            name: n.to_string(),
            version: version.map(Version::to_string),
            source: String::from_utf8(bytes).expect("checked as UTF-8"),
        });
    }
    for p in backend.call(publish)? {
        let (n, version) = (&p.name, &p.version);
        if !p.new {
            outln!("{n} {version} already has these bytes; nothing changed")?;
            continue;
        }
        outln!(
            "published {n} {version} ({} bytes{}){}",
            p.size,
            match p.mpy_size {
                Some(size) => format!(", {size} bytes precompiled"),
                None => String::new(),
            },
            if p.latest { ", now latest" } else { "" }
        )?;
        if let Some(e) = &p.mpy_error {
            eprintln!(
                "warning: {n} {version} does not compile ({e}); boards that \
                 install it will fail to import it and roll back"
            );
        }
    }
    Ok(())
}

/// `module list`
fn list(backend: &Backend, json: bool) -> Result<()> {
    let modules = backend.call(op::List {})?;
    if json {
        let list: Vec<_> = modules
            .iter()
            .map(|m| json!({"name": m.name, "latest": m.latest, "versions": m.versions}))
            .collect();
        return print_json(&json!(list));
    }
    let rows: Vec<Vec<String>> = modules
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.latest.clone(),
                m.versions.to_string(),
                m.size.to_string(),
            ]
        })
        .collect();
    table(&["MODULE", "LATEST", "VERSIONS", "SIZE"], &rows)
}

/// `module show NAME`
fn show(backend: &Backend, name: &ModuleName, json: bool) -> Result<()> {
    let m = backend.call(op::Show {
        name: name.to_string(),
    })?;
    if json {
        return print_json(&serde_json::to_value(&m)?);
    }
    outln!("module {}, latest {}", m.name, m.latest)?;
    let rows: Vec<Vec<String>> = m
        .versions
        .iter()
        .map(|r| {
            vec![
                r.version.clone(),
                if r.latest { "*".into() } else { String::new() },
                r.size.to_string(),
                r.mpy_size.map_or("-".into(), |s| s.to_string()),
                r.sha256.chars().take(16).collect(),
                r.devices.join(","),
            ]
        })
        .collect();
    table(
        &["VERSION", "LATEST", "SIZE", "MPY", "SHA256", "DEVICES"],
        &rows,
    )
}

/// `module latest NAME VERSION`
fn latest(backend: &Backend, name: &ModuleName, version: &Version) -> Result<()> {
    let set = backend.call(op::Latest {
        name: name.to_string(),
        version: version.to_string(),
    })?;
    if set.changed {
        outln!("{} latest is now {}", set.name, set.version)
    } else {
        outln!(
            "{} latest was already {}; nothing changed",
            set.name,
            set.version
        )
    }
}
