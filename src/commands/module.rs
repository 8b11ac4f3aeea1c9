//! `mpfleet module ...`: publish, list, show, latest. `list` and `show` only read the store;
//! `publish` and `latest` change it.

use super::{print_json, table};
use crate::cli::ModuleCommand;
use crate::names::{ModuleName, Version};
use crate::out::outln;
use crate::store::{NewVersion, Published, Store};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::Path;

fn module_name(s: &str) -> Result<ModuleName> {
    ModuleName::parse(s).map_err(anyhow::Error::msg)
}

fn version(s: &str) -> Result<Version> {
    Version::parse(s).map_err(anyhow::Error::msg)
}

/// Leads the error of a refused publish of several files: none of them was published.
fn nothing_published(files: usize) -> String {
    if files > 1 {
        format!("nothing published (of {files} files)")
    } else {
        "nothing published".into()
    }
}

pub fn run(data: &Path, command: ModuleCommand) -> Result<()> {
    match command {
        ModuleCommand::Publish {
            files,
            name,
            version: v,
            no_latest,
        } => {
            if name.is_some() && files.len() > 1 {
                bail!("--name applies to one file; publish the files one at a time");
            }
            let v = v.as_deref().map(version).transpose()?;
            // Check every file before opening the store, then publish them in one transaction:
            // all of them or, when one is refused, none.
            let mut work = Vec::new();
            for file in &files {
                let n = match &name {
                    Some(n) => module_name(n)?,
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
                let bytes =
                    std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                crate::store::check_module(&n, &bytes)
                    .with_context(|| file.display().to_string())
                    .with_context(|| nothing_published(files.len()))?;
                work.push(NewVersion {
                    origin: file.display().to_string(),
                    name: n,
                    version: v.clone(),
                    bytes,
                });
            }
            let mut store = Store::open(data)?;
            let done = store
                .publish_all(&work, !no_latest)
                .with_context(|| nothing_published(files.len()))?;
            for (item, published) in work.iter().zip(done) {
                let n = &item.name;
                match published {
                    Published::New {
                        version,
                        latest,
                        mpy,
                    } => {
                        outln!(
                            "published {n} {version} ({} bytes{}){}",
                            item.bytes.len(),
                            match &mpy {
                                Some(Ok(size)) => format!(", {size} bytes precompiled"),
                                _ => String::new(),
                            },
                            if latest { ", now latest" } else { "" }
                        )?;
                        if let Some(Err(e)) = mpy {
                            eprintln!(
                                "warning: {n} {version} does not compile ({e}); boards that \
                                 install it will fail to import it and roll back"
                            );
                        }
                    }
                    Published::Unchanged { version } => {
                        outln!("{n} {version} already has these bytes; nothing changed")?
                    }
                }
            }
            Ok(())
        }
        ModuleCommand::List(args) => {
            let store = Store::open_read_only(data)?;
            let catalog = store.catalog()?;
            if args.json {
                let list: Vec<_> = catalog
                    .modules
                    .iter()
                    .map(|(n, m)| {
                        json!({"name": n.as_str(), "latest": m.latest.as_str(),
                               "versions": m.versions.len()})
                    })
                    .collect();
                print_json(&json!(list))?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = catalog
                .modules
                .iter()
                .map(|(n, m)| {
                    let size = m.versions.get(&m.latest).map_or(0, |v| v.size);
                    vec![
                        n.to_string(),
                        m.latest.to_string(),
                        m.versions.len().to_string(),
                        size.to_string(),
                    ]
                })
                .collect();
            table(&["MODULE", "LATEST", "VERSIONS", "SIZE"], &rows)?;
            Ok(())
        }
        ModuleCommand::Show { name, list } => {
            let name = module_name(&name)?;
            let store = Store::open_read_only(data)?;
            let Some((latest, versions)) = store.versions(&name)? else {
                bail!("module {name} is not published");
            };
            let catalog = store.catalog()?;
            let devices = store.devices()?;
            let users = |v: &Version| -> Vec<String> {
                devices
                    .iter()
                    .filter(|d| {
                        catalog
                            .resolve(&d.desired)
                            .is_ok_and(|r| r.modules.get(&name).is_some_and(|m| m.version == *v))
                    })
                    .map(|d| d.mac.to_string())
                    .collect()
            };
            let mpy_size = |v: &Version| {
                catalog.modules[&name].versions[v]
                    .mpy
                    .as_ref()
                    .map(|m| m.size)
            };
            if list.json {
                let vs: Vec<_> = versions
                    .iter()
                    .map(|r| {
                        json!({"version": r.version.as_str(), "size": r.size,
                               "sha256": r.sha256, "published_at": r.published_at,
                               "mpy_size": mpy_size(&r.version),
                               "latest": r.version == latest, "devices": users(&r.version)})
                    })
                    .collect();
                print_json(
                    &json!({"name": name.as_str(), "latest": latest.as_str(), "versions": vs}),
                )?;
                return Ok(());
            }
            outln!("module {name}, latest {latest}")?;
            let rows: Vec<Vec<String>> = versions
                .iter()
                .map(|r| {
                    vec![
                        r.version.to_string(),
                        if r.version == latest {
                            "*".into()
                        } else {
                            String::new()
                        },
                        r.size.to_string(),
                        mpy_size(&r.version).map_or("-".into(), |s| s.to_string()),
                        r.sha256[..16].to_string(),
                        users(&r.version).join(","),
                    ]
                })
                .collect();
            table(
                &["VERSION", "LATEST", "SIZE", "MPY", "SHA256", "DEVICES"],
                &rows,
            )?;
            Ok(())
        }
        ModuleCommand::Latest { name, version: v } => {
            let (name, v) = (module_name(&name)?, version(&v)?);
            let mut store = Store::open(data)?;
            if store.set_latest(&name, &v)? {
                outln!("{name} latest is now {v}")?;
            } else {
                outln!("{name} latest was already {v}; nothing changed")?;
            }
            Ok(())
        }
    }
}
