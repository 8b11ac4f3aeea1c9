//! The device runtime this binary carries, and publishing it into a store.
//!
//! `main`, `config` and `updater` are compiled into the binary from `device/`. Whenever a store
//! is opened and lacks those exact bytes, they are published as the next version (and become
//! `latest`), so a fresh server can bootstrap a board with no manual publish and upgrading
//! mpfleet offers boards the new runtime like any other new version.
//!
//! The binary also carries them precompiled (`device/mpy/`, made by `device/precompile.sh`
//! with the pinned mpy-cross), so a server without mpy-cross still offers boards bytecode:
//! compiling `updater` from source would take more heap than an ESP8266 has to spare.

use crate::names::ModuleName;
use crate::store::{sha256_hex, DeviceKey, Published, Store};
use anyhow::Result;

/// The runtime modules, as (module name, source). `main` is what a board's `/main.py` holds
/// (a stub), `mpfleet` and `mpfleet_boot` its first stage: they are installed by the
/// bootstrap only (the manifest's `boot`), never by an update.
pub const RUNTIME: [(&str, &str); 5] = [
    ("main", include_str!("../device/main.py")),
    ("mpfleet", include_str!("../device/mpfleet.py")),
    ("mpfleet_boot", include_str!("../device/mpfleet_boot.py")),
    ("config", include_str!("../device/config.py")),
    ("updater", include_str!("../device/updater.py")),
];

/// The runtime precompiled by the pinned mpy-cross, as (module name, .mpy bytes).
pub const PRECOMPILED: [(&str, &[u8]); 4] = [
    ("mpfleet", include_bytes!("../device/mpy/mpfleet.mpy")),
    (
        "mpfleet_boot",
        include_bytes!("../device/mpy/mpfleet_boot.mpy"),
    ),
    ("config", include_bytes!("../device/mpy/config.mpy")),
    ("updater", include_bytes!("../device/mpy/updater.mpy")),
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

pub(crate) fn ensure_published(store: &mut Store) -> Result<()> {
    let catalog = store.catalog()?;
    for (name, source) in RUNTIME {
        let name = ModuleName::parse(name).expect("runtime module name");
        let sha = sha256_hex(source.as_bytes());
        let present = catalog
            .modules
            .get(&name)
            .is_some_and(|m| m.versions.values().any(|v| v.sha256 == sha));
        if !present {
            if let Published::New { version, .. } =
                store.publish(&name, None, source.as_bytes(), true)?
            {
                tracing::info!(module = %name, %version, "published the runtime carried by this binary");
            }
        }
    }
    let n = store.precompile_missing()?;
    if n > 0 {
        tracing::info!("precompiled {n} module version(s) to .mpy");
    }
    Ok(())
}
