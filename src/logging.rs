//! Where log lines go and how they look, so that a terminal, a pipe and journald each keep
//! them well: stderr (stdout is the command's output), one line per event, colours only on a
//! terminal, and no timestamp of our own when stderr is the journal (journald stamps every
//! line itself; systemd says so with `JOURNAL_STREAM`). `RUST_LOG` picks what is logged.

use tracing_subscriber::EnvFilter;

/// Sets up logging for this process (once; later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,mpfleet::access=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if stderr_is_journal() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// Whether stderr is the journal stream systemd gave this process: `JOURNAL_STREAM` is
/// "DEVICE:INODE" of that stream, and is inherited by children whose stderr may be elsewhere,
/// so it counts only when it names our stderr.
fn stderr_is_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
            return false;
        };
        stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    false
}
