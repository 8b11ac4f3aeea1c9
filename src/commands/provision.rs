//! `mpfleet provision PORT`: a board on a serial port becomes a fleet member in one command.
//!
//! The board says its MAC; the store creates its device or adopts the one that exists (its key
//! kept, so a second run changes nothing on the server); the board gets its own bootstrap
//! (`device bootstrap`'s text) written onto it and runs it, which writes its settings, installs
//! the runtime and the app from the server, and resets. `crate::provision` drives the board.

use super::device::{check_server, desired, read_secrets};
use super::progress::Progress;
use crate::cli::ProvisionArgs;
use crate::names::Mac;
use crate::out::outln;
use crate::provision::{serial::Serial, Board, Outcome, BOOTSTRAP_PATH};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The oldest MicroPython the runtime runs on (`device/bootstrap.py` says why).
const OLDEST: (u32, u32, u32) = (1, 22, 0);

pub fn run(data: &Path, a: ProvisionArgs) -> Result<()> {
    check_server(&a.server)?;
    let mut server = a.server.clone();
    if !server.ends_with('/') {
        server.push('/');
    }
    let secrets = a.secrets.as_deref().map(read_secrets).transpose()?;
    let wanted = a
        .app
        .as_ref()
        .map(|app| desired(app, &a.modules))
        .transpose()?;
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        bail!("--timeout {}: give a number of seconds above 0", a.timeout);
    }
    let timeout = Duration::from_secs_f64(a.timeout);

    let mut progress = Progress::new();
    progress.step(0, &format!("opening {}", a.port));
    let link = Serial::open(&a.port)?;
    progress.step(2, "interrupting the board, entering its raw REPL");
    let mut board = Board::connect(link, &a.port, timeout)?;
    progress.step(5, "reading its MAC");
    let id = board.identify()?;
    let (x, y, z) = id.version;
    if id.version < OLDEST {
        bail!(
            "the board runs MicroPython {x}.{y}.{z}; mpfleet needs {}.{} or newer: flash a \
             newer firmware (https://micropython.org/download/) and run provision again",
            OLDEST.0,
            OLDEST.1
        );
    }
    let mac = Mac::parse(&id.mac)
        .map_err(|e| anyhow::anyhow!("the board said its MAC is {:?}: {e}", id.mac))?;
    progress.say("mpfleet", &format!("board {mac}, MicroPython {x}.{y}.{z}"));

    // The device: created, changed (--app), or adopted as it is.
    let mut store = Store::open(data)?;
    let before = store.device(&mac)?;
    let what = match (&before, &wanted) {
        (None, None) => bail!(
            "board {mac} is not a device yet: say what it runs with --app APP (and \
             MODULE=VERSION pairs, as in `mpfleet device set`)"
        ),
        (_, Some(d)) => {
            store
                .set_device(&mac, &crate::store::Assignment::Own(d.clone()))
                .with_context(|| format!("cannot set device {mac}"))?;
            match &before {
                None => "created",
                Some(b) if b.desired != *d => "adopted, what it runs changed",
                Some(_) => "adopted",
            }
        }
        (Some(_), None) => "adopted",
    };
    let device = store.device(&mac)?.context("the device just set")?;
    let modules = store.catalog()?.resolve(&device.desired)?.modules.len();
    let bootstrap = crate::runtime::bootstrap_for(
        &server,
        &device.key,
        &store.store_id()?,
        device.report_counter,
        secrets.as_deref(),
    );
    drop(store);
    progress.say(
        "mpfleet",
        &format!(
            "device {mac} {what}: app {}, generation {}",
            device.desired.app, device.generation
        ),
    );
    // A server on this store serves a new device within a second: let it, so the board's
    // first request finds it.
    served(&server, &mac, Duration::from_secs(5));

    progress.step(8, "writing its bootstrap");
    let size = bootstrap.len().max(1);
    board.write_file(BOOTSTRAP_PATH, bootstrap.as_bytes(), |n| {
        progress.set(8 + (27 * n / size) as u32)
    })?;

    progress.step(35, &format!("installing from {server}"));
    // A line per file: the updater, the first stage, main.py and the modules.
    let files = (modules + 4) as u32;
    let mut seen = 0;
    let outcome = board.run_bootstrap(|line| {
        progress.say("board", line);
        if line.starts_with("mpfleet: downloading") || line.starts_with("mpfleet: fetching") {
            seen += 1;
            progress.set(35 + 60 * seen.min(files) / files);
        }
    })?;
    progress.step(100, "done");
    progress.clear();
    let Outcome::Reset { started } = outcome;
    let app = &device.desired.app;
    if started {
        outln!(
            "board {mac} provisioned: it runs {app} (generation {}) from {server}",
            device.generation
        )?;
    } else {
        outln!(
            "board {mac} provisioned and reset; it did not say it started {app} yet: watch \
             its serial console, and `mpfleet device list` once it reports"
        )?;
    }
    Ok(())
}

/// Waits (at most `within`) until a server at `server` serves `mac`'s manifest. Best effort:
/// a server this machine cannot reach (the board may see another network) is not waited for.
fn served(server: &str, mac: &Mac, within: Duration) {
    let Some(rest) = server.strip_prefix("http://") else {
        return;
    };
    let (hostport, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let deadline = Instant::now() + within;
    loop {
        match status(&addr, hostport, &format!("/{prefix}v1/{mac}.json")) {
            Some(200) | None => return,
            Some(_) if Instant::now() >= deadline => return,
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The status of `GET path`, or None when the server cannot be reached.
fn status(addr: &str, host: &str, path: &str) -> Option<u16> {
    use std::net::ToSocketAddrs;
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
