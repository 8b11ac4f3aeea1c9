//! Temporary files named after the process that writes them, and removing the ones a killed
//! process left behind.
//!
//! A blob being written (`blobs/.tmp-{pid}-…`) and an export being built (`.{name}.new-{pid}`
//! beside DIR) carry the id of the process writing them. A process killed half-way (power
//! cut, `kill -9`, Ctrl-C at the wrong moment) leaves its file there for ever; the next write
//! command (blobs) or the next export (staging directories) removes those whose process is no
//! longer running, and never one of a process that still runs.

use std::fs;
use std::path::Path;

/// Whether a process with this id is running (on this machine, in this pid namespace).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists, it belongs to someone else.
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes the entries of `dir` whose name `pid_of` maps to the id of a process that is no
/// longer running (never this process's own). Returns how many were removed; an entry that
/// cannot be removed is logged and left.
pub fn remove_dead(dir: &Path, pid_of: impl Fn(&str) -> Option<u32>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(&pid_of) else {
            continue;
        };
        if pid == me || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match result {
            Ok(()) => {
                tracing::info!("removed {} left by a killed mpfleet", path.display());
                removed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove stale {}: {e}", path.display()),
        }
    }
    removed
}

/// The pid in `{prefix}{pid}{rest}`, where `rest` is empty or starts with `sep` (a `sep` no
/// file name holds, such as `/`, asks for nothing after the pid).
pub fn pid_after(name: &str, prefix: &str, sep: char) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits = rest.split(sep).next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pids_only_where_expected() {
        assert_eq!(pid_after(".tmp-123-abcdef", ".tmp-", '-'), Some(123));
        assert_eq!(pid_after(".tmp-12x-abcdef", ".tmp-", '-'), None);
        assert_eq!(pid_after(".ota.new-77", ".ota.new-", '-'), Some(77));
        assert_eq!(pid_after("deadbeef", ".tmp-", '-'), None);
        assert_eq!(pid_after(".tmp--1", ".tmp-", '-'), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
