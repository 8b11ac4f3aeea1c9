//! The device runtime this binary carries, and publishing it into a store.
//!
//! `main`, `config` and `updater` are compiled into the binary from `device/`. Whenever a store
//! is opened and lacks those exact bytes, they are published as the next version (and become
//! `latest`), so a fresh server can bootstrap a board with no manual publish and upgrading
//! mpfleet offers boards the new runtime like any other new version.

use crate::names::ModuleName;
use crate::store::{sha256_hex, Published, Store};
use anyhow::Result;

/// The runtime modules, as (module name, source).
pub const RUNTIME: [(&str, &str); 3] = [
    ("main", include_str!("../device/main.py")),
    ("config", include_str!("../device/config.py")),
    ("updater", include_str!("../device/updater.py")),
];

/// The bootstrap a user copies to a fresh board; not a module (it runs once, by hand).
pub const BOOTSTRAP: &str = include_str!("../device/bootstrap.py");

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
