//! `mpfleet export DIR`: the device-facing tree as static files, for any web server.
//!
//! The tree is the same snapshot `serve` answers from, written beside DIR and swapped in with
//! one atomic rename (`renameat2(RENAME_EXCHANGE)` where the kernel has it), so a web server
//! reading DIR never sees a half-written tree. Writing is deterministic: the same store
//! state gives the same bytes. The staging directory is named after this process
//! (`.{name}.new-{pid}`), so the next export removes one a killed export left behind (and
//! never one an export still running is writing).

use crate::snapshot::Snapshot;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Left in every exported tree, so a later export knows it may replace that directory.
pub const MARKER: &str = ".mpfleet-export";

pub struct Exported {
    pub files: usize,
    pub bytes: u64,
}

pub fn export(store: &mut Store, dir: &Path) -> Result<Exported> {
    let snapshot = Snapshot::build(store, None)?;
    let dir = absolute(dir)?;
    if dir.exists() {
        let is_ours = dir.join(MARKER).exists()
            || fs::read_dir(&dir)
                .with_context(|| format!("{} is not a directory", dir.display()))?
                .next()
                .is_none();
        if !is_ours {
            bail!(
                "{} exists, is not empty and was not written by `mpfleet export`; \
                 refusing to replace it (export into a new or empty directory, \
                 such as a subdirectory of your web server's root)",
                dir.display()
            );
        }
    }
    let parent = dir.parent().context("export directory has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dir
        .file_name()
        .context("export directory has no name")?
        .to_string_lossy()
        .into_owned();
    let (new, old) = (format!(".{name}.new-"), format!(".{name}.old-"));
    crate::stale::remove_dead(parent, |entry| {
        crate::stale::pid_after(entry, &new, '/')
            .or_else(|| crate::stale::pid_after(entry, &old, '/'))
    });
    let pid = std::process::id();
    let staging = parent.join(format!("{new}{pid}"));
    let result = write_tree(&snapshot, &staging).and_then(|stats| {
        swap_in(&staging, &dir, &parent.join(format!("{old}{pid}")))?;
        Ok(stats)
    });
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        Ok(dir.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(dir))
    }
}

fn write_tree(snapshot: &Snapshot, root: &Path) -> Result<Exported> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let mut stats = Exported { files: 0, bytes: 0 };
    for (path, entry) in snapshot.files() {
        // Every path comes from checked names, but refuse anything that could escape anyway.
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("refusing to export unsafe path {path:?}");
        }
        let file = root.join(&*path);
        if let Some(p) = file.parent() {
            fs::create_dir_all(p)?;
        }
        let mut f =
            fs::File::create(&file).with_context(|| format!("writing {}", file.display()))?;
        f.write_all(&entry.body)
            .with_context(|| format!("writing {}", file.display()))?;
        f.sync_all()?;
        stats.files += 1;
        stats.bytes += entry.body.len() as u64;
    }
    fs::write(
        root.join(MARKER),
        "written by mpfleet export; replaced whole by the next one\n",
    )?;
    Ok(stats)
}

/// Puts `staging` at `dir` atomically, then removes the old tree (moved to `old` first where
/// the filesystem cannot exchange two directories).
fn swap_in(staging: &Path, dir: &Path, old: &Path) -> Result<()> {
    if !dir.exists() {
        fs::rename(staging, dir).with_context(|| format!("renaming into {}", dir.display()))?;
        return Ok(());
    }
    if exchange(staging, dir).is_ok() {
        // `staging` now holds the old tree.
        fs::remove_dir_all(staging)?;
        return Ok(());
    }
    // No atomic exchange on this filesystem: two renames, a moment without DIR.
    fs::rename(dir, old)?;
    fs::rename(staging, dir)?;
    fs::remove_dir_all(old)?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
