//! What each subcommand does: parse the user's words into checked types, run them as
//! operations (`crate::ops`) on a backend (the data dir, or with `--remote` a running `serve`
//! through its admin API), print a table (or JSON with `--json`).
//!
//! A command that only reads (`module list|show`, `device list|show|export`,
//! `group list|show`, `rollout list|show`, `export`) opens the
//! store with `Store::open_read_only` and writes nothing in the data directory; the others
//! (and `serve`) open it with `Store::open`, which may publish the runtime this binary
//! carries (see `crate::runtime`).

mod device;
mod group;
mod install;
mod module;
mod progress;
mod provision;
mod rollout;
mod terminal;
mod token;

use crate::cli::{Cli, Command};
use crate::ops::Backend;
use crate::out::outln;
use anyhow::{bail, Result};

/// The backend `module`, `device`, `group` and `rollout` commands run on.
fn backend(
    data: &std::path::Path,
    remote: &Option<String>,
    ca_cert: Option<&std::path::Path>,
) -> Result<Backend> {
    Ok(match remote {
        None => Backend::Local(data.to_owned()),
        Some(url) => {
            let token = std::env::var("MPFLEET_TOKEN").unwrap_or_default();
            Backend::Remote(crate::ops::Remote::new(url, &token, ca_cert)?)
        }
    })
}

pub fn run(cli: Cli) -> Result<()> {
    let remote = cli.remote.is_some();
    let local_only = |what: &str| -> Result<()> {
        if remote {
            bail!("`mpfleet {what}` works on the local data directory only, not with --remote");
        }
        Ok(())
    };
    let backend = || backend(&cli.data, &cli.remote, cli.ca_cert.as_deref());
    match cli.command {
        Command::Serve {
            listen,
            mqtt,
            admin_listen,
            tls_cert,
            tls_key,
        } => {
            local_only("serve")?;
            let admin = match (admin_listen, tls_cert, tls_key) {
                (Some(listen), Some(cert), Some(key)) => {
                    Some(crate::http::AdminListen { listen, cert, key })
                }
                // clap requires all three together.
                _ => None,
            };
            crate::http::serve(cli.data, listen, mqtt, admin)
        }
        Command::Module(c) => module::run(&backend()?, c),
        Command::Device(c) => device::run(&backend()?, c),
        Command::Token(c) => {
            local_only("token")?;
            token::run(&cli.data, c)
        }
        Command::Group(c) => group::run(&backend()?, c),
        Command::Rollout(c) => rollout::run(&backend()?, c),
        Command::Export { dir } => {
            local_only("export")?;
            let mut store = crate::store::Store::open_read_only(&cli.data)?;
            let release = store.runtime_release()?;
            if release < crate::runtime::RUNTIME_RELEASE {
                eprintln!(
                    "note: the store runs device runtime release {release}, this mpfleet \
                     carries release {}: the next command that changes the store (or \
                     `mpfleet serve`) publishes it, then export again",
                    crate::runtime::RUNTIME_RELEASE
                );
            }
            let done = crate::export::export(&mut store, &dir)?;
            outln!(
                "exported {} files ({} bytes) to {}",
                done.files,
                done.bytes,
                dir.display()
            )?;
            Ok(())
        }
        Command::Provision(args) => {
            local_only("provision")?;
            provision::run(&cli.data, *args)
        }
        Command::Sim(args) => {
            local_only("sim")?;
            crate::sim::run(*args, &cli.data)
        }
        Command::Demo(args) => {
            local_only("demo")?;
            crate::demo::run(*args)
        }
        Command::Completions { shell } => install::completions(shell),
        Command::Man { dir } => install::man(dir.as_deref()),
    }
}

/// Prints rows as left-aligned columns under a header. Every cell is made safe for the
/// terminal first (cells may hold what a board reported).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| terminal::for_terminal(cell).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", s.trim_end())
    };
    line(header.to_vec())?;
    for row in &rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// "12s ago", "3m ago", "2h ago", "5d ago", or "never".
pub(crate) fn ago(at: Option<i64>) -> String {
    let Some(at) = at else {
        return "never".into();
    };
    let d = (crate::store::now() - at).max(0);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

pub(crate) fn print_json(value: &serde_json::Value) -> Result<()> {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON serialises")
    )
}
