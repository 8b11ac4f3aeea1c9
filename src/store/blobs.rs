//! The content-addressed blob store: each module version's bytes in a file named by its SHA-256.
//!
//! A blob is written to a temporary file, synced, renamed into place and its directory synced
//! before any database row names it, so a crash at any moment leaves no row without its bytes
//! (at worst an orphan blob, which is harmless). The temporary file is named after the writing
//! process (`.tmp-{pid}-…`), so one left by a killed process is removed by the next write
//! command ([`Blobs::remove_stale`]).

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How a blob's temporary file starts; then the writer's pid, `-` and 16 hex digits.
const TMP_PREFIX: &str = ".tmp-";

pub(crate) struct Blobs {
    dir: PathBuf,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Blobs {
    pub(crate) fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// The blob store of a store opened read-only: nothing is created.
    pub(crate) fn existing(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Removes temporary files left by publishes whose process no longer runs.
    pub(crate) fn remove_stale(&self) -> usize {
        crate::stale::remove_dead(&self.dir, |name| {
            crate::stale::pid_after(name, TMP_PREFIX, '-')
        })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Stores `bytes` durably and returns their SHA-256 (hex).
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha);
        if path.exists() && fs::metadata(&path)?.len() == bytes.len() as u64 {
            return Ok(sha);
        }
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}-{}", std::process::id(), &sha[..16]));
        let result = (|| -> Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.with_context(|| format!("writing blob {}", path.display()))?;
        Ok(sha)
    }

    pub(crate) fn get(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.path(sha256);
        let bytes = fs::read(&path).with_context(|| format!("reading blob {}", path.display()))?;
        anyhow::ensure!(
            sha256_hex(&bytes) == sha256,
            "blob {} is corrupt: its bytes do not hash to its name",
            path.display()
        );
        Ok(bytes)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}
