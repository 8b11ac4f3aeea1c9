//! The simulated board, driven through `mpfleet sim` exactly as a user runs it, and a fault
//! injecting proxy that stands between a board and the real server.

use crate::harness::{Fleet, BIN};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A board's flash as a plain directory, so tests can read what is on it.
pub struct SimBoard {
    pub mac: String,
    pub flash: PathBuf,
    pub state: PathBuf,
    pub heap: String,
}

pub struct SimRun {
    pub code: i32,
    pub out: String,
}

impl SimRun {
    /// Lines the board printed (without the `[mac #n] ` prefix).
    pub fn said(&self) -> Vec<&str> {
        self.out
            .lines()
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
            .collect()
    }

    /// The app's `APP ...` lines.
    pub fn app_lines(&self) -> Vec<&str> {
        self.said()
            .into_iter()
            .filter(|l| l.starts_with("APP "))
            .collect()
    }

    pub fn last_app_line(&self) -> &str {
        self.app_lines()
            .last()
            .copied()
            .unwrap_or_else(|| panic!("the app never ran:\n{}", self.out))
    }

    pub fn settled(&self) -> bool {
        self.code == 0 && self.out.contains("settled after")
    }
}

impl SimBoard {
    pub fn new(fleet: &Fleet, mac: &str) -> Self {
        let root = fleet.dir.path().join(format!("board-{mac}"));
        Self {
            mac: mac.to_owned(),
            flash: root.join("flash"),
            state: root.join("state"),
            heap: "96k".into(),
        }
    }

    /// Boots the board until it settles (at most `boots` boots).
    pub fn boot(&self, server: &str, boots: u32) -> SimRun {
        let out = Command::new(BIN)
            .args([
                "sim", "--server", server, "--mac", &self.mac, "--settle", "1",
            ])
            .arg("--flash-dir")
            .arg(&self.flash)
            .arg("--state")
            .arg(&self.state)
            .args(["--heap", &self.heap, "--boots", &boots.to_string()])
            .output()
            .expect("running mpfleet sim");
        let run = SimRun {
            code: out.status.code().unwrap_or(-1),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        eprintln!("--- mpfleet sim {}:\n{}", self.mac, run.out);
        run
    }

    /// Asks for an update the way application code does: our test app sees this file,
    /// calls `config.set('update')` and resets.
    pub fn ask_for_update(&self) {
        std::fs::write(self.flash.join("request_update"), "").unwrap();
    }

    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.flash.join(path.trim_start_matches('/'))).ok()
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(
            &self
                .read(path)
                .unwrap_or_else(|| panic!("{path} missing on flash")),
        )
        .unwrap()
    }

    /// The board's boot flags (its RTC memory).
    pub fn rtc(&self) -> serde_json::Value {
        let path = self.state.join(format!("{}.rtc", self.mac));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    pub fn ls(&self, path: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.flash.join(path.trim_start_matches('/')))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The test application: prints what it runs, asks for an update when told to.
pub fn app_source() -> &'static str {
    "import os\n\
     import config\n\
     import machine\n\
     import sensorclass\n\
     print('APP', sensorclass.VALUE, 'primary' if config.primary else 'alternate', config.generation)\n\
     config.set('reboots', 0)\n\
     try:\n\
     \x20   os.stat('/request_update')\n\
     \x20   os.remove('/request_update')\n\
     \x20   print('APP asks for an update')\n\
     \x20   config.set('update')\n\
     \x20   machine.reset()\n\
     except OSError:\n\
     \x20   pass\n"
}

/// A fleet with `app` (the test app) and `sensorclass` 1, and `mac` assigned to it.
pub fn fleet_with_board(mac: &str, extra: &[&str]) -> Fleet {
    let f = Fleet::new();
    f.publish("app", app_source(), &[]);
    f.publish("sensorclass", "VALUE = 'one'\n", &[]);
    let mut args = vec!["device", "set", mac, "--app", "app"];
    if !extra.iter().any(|e| e.starts_with("sensorclass=")) {
        args.push("sensorclass=latest");
    }
    args.extend_from_slice(extra);
    f.ok(&args);
    f
}

/// How the proxy misbehaves on requests whose path starts with `prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Status500,
    /// Announce the full length, send half, close.
    Truncate,
    /// Flip one byte of the body.
    FlipByte,
    /// Add one byte to the body (and to Content-Length).
    ExtraByte,
    /// Accept the connection and never answer.
    Stall,
}

/// Listens on a free loopback port and hands each connection, with the upstream `host:port`,
/// to `handle` on a thread of its own. Returns the proxy's base URL.
fn listen<F>(upstream: &str, handle: F) -> String
where
    F: Fn(TcpStream, &str) -> std::io::Result<()> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let (handle, upstream) = (handle.clone(), upstream.clone());
            std::thread::spawn(move || {
                let _ = handle(conn, &upstream);
            });
        }
    });
    base
}

/// A proxy in front of the real server that applies a fault to matching paths.
pub struct FaultProxy {
    pub base: String,
    state: Arc<Mutex<(Fault, String)>>,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> Self {
        let state = Arc::new(Mutex::new((Fault::None, String::new())));
        let shared = state.clone();
        let base = listen(upstream, move |conn, upstream| {
            let (fault, prefix) = shared.lock().unwrap().clone();
            proxy_one(conn, upstream, fault, &prefix)
        });
        Self { base, state }
    }

    pub fn set(&self, fault: Fault, path_prefix: &str) {
        *self.state.lock().unwrap() = (fault, path_prefix.to_owned());
    }
}

/// Reads one request from a client (one per connection): its head and its body.
fn read_request(conn: &TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn proxy_one(
    mut conn: TcpStream,
    upstream: &str,
    fault: Fault,
    prefix: &str,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&conn)? else {
        return Ok(());
    };
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
    let fault = if path.starts_with(prefix) {
        fault
    } else {
        Fault::None
    };
    if fault == Fault::Stall {
        std::thread::sleep(Duration::from_secs(60));
        return Ok(());
    }
    if fault == Fault::Status500 {
        let msg = b"{\"error\":\"injected\"}";
        write!(
            conn,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        )?;
        conn.write_all(msg)?;
        return Ok(());
    }
    // Forward as is, with Connection: close.
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(
        head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let (rhead, rbody) = response.split_at(split);
    let mut rbody = rbody.to_vec();
    let rhead = String::from_utf8_lossy(rhead).into_owned();
    match fault {
        Fault::FlipByte if !rbody.is_empty() => {
            let i = rbody.len() / 2;
            rbody[i] ^= 0x20;
        }
        Fault::ExtraByte => rbody.push(b'\n'),
        _ => {}
    }
    let mut out_head = String::new();
    for line in rhead.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("content-length:")
            && !line.to_ascii_lowercase().starts_with("connection:")
        {
            out_head.push_str(line);
            out_head.push_str("\r\n");
        }
    }
    write!(
        conn,
        "{out_head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        rbody.len()
    )?;
    if fault == Fault::Truncate {
        conn.write_all(&rbody[..rbody.len() / 2])?;
    } else {
        conn.write_all(&rbody)?;
    }
    conn.flush()
}

/// A board whose flash is a littlefs2 image (`dir/flash.img`, RTC memory in `dir/flash.rtc`),
/// so power can be cut at any flash write; `inspect` reads the image.
pub struct ImageBoard {
    pub mac: String,
    pub dir: PathBuf,
    pub heap: String,
    pub flash_blocks: u32,
    /// What reaches the flash of the write a cut interrupts (`--cut-tear`).
    pub tear: &'static str,
    /// The watchdog timeout (seconds) the board gets when it bootstraps (`--watchdog`).
    pub watchdog: Option<f64>,
    /// `--settle` seconds.
    pub settle: f64,
}

impl ImageBoard {
    pub fn new(dir: PathBuf, mac: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            mac: mac.to_owned(),
            dir,
            heap: "96k".into(),
            flash_blocks: 256,
            tear: "half",
            watchdog: None,
            settle: 1.0,
        }
    }

    pub fn image(&self) -> PathBuf {
        self.dir.join("flash.img")
    }

    pub fn rtc(&self) -> PathBuf {
        self.dir.join("flash.rtc")
    }

    /// A copy of this board's flash and RTC memory in `dir`, as board `mac`.
    pub fn copy_to(&self, dir: PathBuf, mac: &str) -> ImageBoard {
        let b = ImageBoard::new(dir, mac);
        std::fs::copy(self.image(), b.image()).unwrap();
        let _ = std::fs::remove_file(b.rtc());
        if self.rtc().exists() {
            std::fs::copy(self.rtc(), b.rtc()).unwrap();
        }
        ImageBoard {
            heap: self.heap.clone(),
            flash_blocks: self.flash_blocks,
            tear: self.tear,
            watchdog: self.watchdog,
            settle: self.settle,
            ..b
        }
    }

    /// Boots until the board settles (at most `boots` boots); `update` asks for an update on
    /// the first boot; `cut` cuts power during that flash write of the run. Quiet unless
    /// `echo`.
    pub fn boot_with(&self, server: &str, boots: u32, update: bool, cut: Option<u64>) -> SimRun {
        let mut cmd = Command::new(BIN);
        cmd.args(["sim", "--server", server, "--mac", &self.mac])
            .args(["--settle", &self.settle.to_string()])
            .arg("--flash")
            .arg(self.image())
            .arg("--state")
            .arg(&self.dir)
            .args(["--heap", &self.heap, "--boots", &boots.to_string()])
            .args(["--flash-blocks", &self.flash_blocks.to_string()]);
        if update {
            cmd.arg("--update");
        }
        if let Some(w) = self.watchdog {
            cmd.args(["--watchdog", &w.to_string()]);
        }
        if let Some(k) = cut {
            cmd.args([
                "--cut-after-writes",
                &k.to_string(),
                "--cut-tear",
                self.tear,
            ]);
        }
        let out = cmd.output().expect("running mpfleet sim");
        SimRun {
            code: out.status.code().unwrap_or(-1),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// The image's files and directories (`mpfleet sim --inspect`).
    pub fn inspect(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["sim", "--inspect"])
            .arg(self.image())
            .output()
            .expect("running mpfleet sim --inspect");
        assert!(
            out.status.success(),
            "inspect failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("inspect JSON")
    }
}

impl SimRun {
    /// The flash writes of the whole run, from the run's last line.
    pub fn flash_writes(&self) -> u64 {
        self.out
            .lines()
            .find_map(|l| {
                l.strip_suffix(" flash writes")
                    .and_then(|l| l.rsplit("; ").next())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or_else(|| panic!("no flash writes count:\n{}", self.out))
    }

    /// Whether power was cut during the run.
    pub fn power_cut(&self) -> bool {
        self.out.contains("ended: PowerCut")
    }
}

/// A proxy in front of the real server that serves each board the manifest of another device:
/// `v1/{mac}.json` and `v1/{mac}/report` go to the device `route(mac)` names (or `mac` itself).
/// Many simulated boards can then share one store, each following its own script.
pub struct Router {
    pub base: String,
    routes: Arc<Mutex<std::collections::HashMap<String, String>>>,
}

impl Router {
    pub fn start(upstream: &str) -> Self {
        let routes = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let shared = routes.clone();
        let base = listen(upstream, move |conn, upstream| {
            route_one(conn, upstream, &shared)
        });
        Self { base, routes }
    }

    /// Board `mac` is served device `device`'s manifest from now on.
    pub fn route(&self, mac: &str, device: &str) {
        self.routes
            .lock()
            .unwrap()
            .insert(mac.to_owned(), device.to_owned());
    }
}

fn route_one(
    mut conn: TcpStream,
    upstream: &str,
    routes: &Mutex<std::collections::HashMap<String, String>>,
) -> std::io::Result<()> {
    let Some((mut head, body)) = read_request(&conn)? else {
        return Ok(());
    };
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if let Some(rest) = path.strip_prefix("/v1/") {
        let mac: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if let Some(device) = routes.lock().unwrap().get(&mac) {
            let new_path = format!("/v1/{device}{}", &rest[mac.len()..]);
            head = head.replacen(&path, &new_path, 1);
        }
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(
        head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    conn.write_all(&response)?;
    conn.flush()
}
