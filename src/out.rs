//! Standard output that a closed pipe ends quietly.
//!
//! `mpfleet device list | head -1` closes the pipe after one line, and `println!` then panics
//! ("failed printing to stdout: Broken pipe") with a backtrace. Every command prints through
//! [`outln!`] and [`out!`] instead: they return an error, a closed pipe becomes
//! [`StdoutClosed`], and `crate::run` exits 0 without a word when it sees one, as ripgrep
//! does. Any other failure to write stdout (a full disk) is a clear error.

use std::io::Write;

/// Stdout's reader went away: the command stops, quietly and successfully.
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub struct StdoutClosed;

/// Turns a failed write to stdout into [`StdoutClosed`] (a broken pipe) or a clear error.
pub fn failed(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// Writes formatted text to stdout; `anyhow::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err($crate::out::failed)
    }};
}

/// Writes formatted text and a newline to stdout; `anyhow::Result<()>`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::out::failed)
    }};
}

pub(crate) use {out, outln};

/// Flushes stdout (what is left after the last newline).
pub fn flush() -> anyhow::Result<()> {
    std::io::stdout().flush().map_err(failed)
}

/// Whether `e` is, or was caused by, a closed stdout.
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}
