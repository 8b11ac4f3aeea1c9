//! `mpfleet completions SHELL` and `mpfleet man`: what a shell and `man` need to know about
//! mpfleet, generated from the same clap definitions as `--help`, so they never disagree
//! with it. Neither touches the data directory.

use crate::cli::Cli;
use crate::out::out;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    // clap_complete panics when its writer fails: render to memory, print through `out!`.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mpfleet", &mut script);
    out!("{}", String::from_utf8_lossy(&script))
}

/// Prints the mpfleet(1) page, or with `dir` writes it and one page per subcommand
/// (`mpfleet-device-set.1`, ...) there.
pub fn man(dir: Option<&Path>) -> Result<()> {
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            out!("{}", String::from_utf8_lossy(&page))
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("writing manual pages to {}", dir.display()))?;
            eprintln!(
                "mpfleet: manual pages written to {} (`man mpfleet` once it is on MANPATH)",
                dir.display()
            );
            Ok(())
        }
    }
}
