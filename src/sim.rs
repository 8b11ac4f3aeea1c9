//! `mpfleet sim`: simulated boards on the real MicroPython unix port.

use clap::Args;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Base URL of the server the board talks to.
    #[arg(long)]
    pub server: String,
}

pub fn run(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
