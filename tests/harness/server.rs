//! A real `mpfleet serve` child on port 0, killed when dropped.

use super::{eventually, BIN};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `mpfleet serve`.
pub struct Server {
    child: Child,
    /// The data directory it serves.
    data: std::path::PathBuf,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Its stdout after the first line.
    lines: Mutex<mpsc::Receiver<String>>,
}

pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; a sealed manifest's envelope line (`{"hmac":...}`) is skipped.
    pub fn json(&self) -> serde_json::Value {
        let body = match self.body.strip_prefix(b"{\"hmac\":\"") {
            Some(rest) => &rest[rest.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)..],
            None => &self.body[..],
        };
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

impl Server {
    pub fn start(data: &Path) -> Self {
        Self::start_env(data, &[])
    }

    /// Starts with extra environment variables (e.g. `MPFLEET_MPY_CROSS=""`).
    pub fn start_env(data: &Path, env: &[(String, String)]) -> Self {
        Self::start_at(data, "127.0.0.1:0", env)
    }

    /// Starts listening on `listen` (e.g. the address of a server stopped before).
    pub fn start_at(data: &Path, listen: &str, env: &[(String, String)]) -> Self {
        Self::start_with(data, &["--listen", listen], env)
    }

    /// Starts `mpfleet serve ARGS...` (ARGS must include `--listen`).
    pub fn start_with(data: &Path, args: &[&str], env: &[(String, String)]) -> Self {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("MPFLEET_DATA", data)
            .env("RUST_LOG", "info,mpfleet::access=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mpfleet serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("mpfleet serve printed no address within 30s");
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL on serve's first line: {first}"))
            .to_owned();
        assert!(base.ends_with('/'), "{base}");
        Self {
            child,
            data: data.to_owned(),
            base,
            log,
            lines: Mutex::new(rx),
        }
    }

    /// The next line serve printed on stdout after its first.
    pub fn next_line(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .expect("mpfleet serve printed no further line within 30s")
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build()
    }

    fn reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
        let resp = match r {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = resp.status();
        let etag = resp.header("etag").map(str::to_owned);
        let content_type = resp.header("content-type").map(str::to_owned);
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
        Reply {
            status,
            etag,
            content_type,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        Self::reply(Self::agent().get(&format!("{}{path}", self.base)).call())
    }

    pub fn get_if_none_match(&self, path: &str, etag: &str) -> Reply {
        Self::reply(
            Self::agent()
                .get(&format!("{}{path}", self.base))
                .set("If-None-Match", etag)
                .call(),
        )
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Reply {
        Self::reply(
            Self::agent()
                .post(&format!("{}{path}", self.base))
                .set("Content-Type", "application/json")
                .send_bytes(body),
        )
    }

    /// The admin token of the store this server serves (`admin-token` in its data dir).
    pub fn token(&self) -> String {
        let path = self.data.join("admin-token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// A request to the admin side (`path` without the leading slash, e.g.
    /// `admin/api/v1/devices`), with `Authorization: Bearer {token}` when a token is given,
    /// and `body` as JSON when there is one.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = Self::agent().request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        Self::reply(match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        })
    }

    /// POSTs `body` as a report of `mac`, signed with `key` as a board signs it.
    pub fn report(&self, mac: &str, key: &mpfleet::store::DeviceKey, body: &[u8]) -> Reply {
        Self::reply(
            Self::agent()
                .post(&format!("{}v1/{mac}/report", self.base))
                .set("Content-Type", "application/json")
                .set(
                    mpfleet::sign::REPORT_HMAC,
                    &mpfleet::sign::hmac_hex(key, body),
                )
                .send_bytes(body),
        )
    }

    /// Waits until GET `path` satisfies `ok` (the server picks up CLI changes by polling).
    pub fn wait_get(&self, path: &str, ok: impl Fn(&Reply) -> bool) -> Reply {
        eventually(
            &format!("GET {path} to change"),
            Duration::from_secs(10),
            || {
                let r = self.get(path);
                ok(&r).then_some(r)
            },
        )
    }

    /// A point in the access log after every request made so far: the log is read from the
    /// server's output a little later, so a plain `requests().len()` can miss the test's own
    /// last requests and count them as made after it. A marker request settles that.
    pub fn mark(&self) -> usize {
        let probe = format!("/mark-{}-{}", self.requests().len(), std::process::id());
        self.get(&probe[1..]);
        eventually(
            "the access log to catch up",
            Duration::from_secs(10),
            || {
                let log = self.requests();
                log.iter().rposition(|l| l.contains(&probe)).map(|i| i + 1)
            },
        )
    }

    /// Everything serve logged to stderr so far, a line each.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The access log lines so far (`GET /path 200 ...`).
    pub fn requests(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let i = l.find(" INFO ")?;
                let rest = &l[i + 6..];
                (rest.starts_with("GET ") || rest.starts_with("POST ") || rest.starts_with("HEAD "))
                    .then(|| rest.to_owned())
            })
            .collect()
    }

    /// The module files (`/m/...` paths) the server was asked for since `mark`.
    pub fn downloads(&self, mark: usize) -> Vec<String> {
        self.requests()[mark..]
            .iter()
            .filter(|l| l.starts_with("GET /m/"))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
            .collect()
    }

    /// Stops the server as a service manager does (SIGTERM) and waits for it to exit.
    pub fn terminate(mut self) -> i32 {
        self.sigterm();
        self.exit_within(Duration::from_secs(20))
            .expect("serve did not stop on SIGTERM")
    }

    /// Sends SIGTERM, without waiting.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the server signal `name` (`TERM`, `HUP`...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// The exit code once the server has exited, or `None` if it still runs after `within`.
    pub fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id (to read `/proc/PID/...`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` the server listens on, for raw TCP clients.
    pub fn addr(&self) -> String {
        self.base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    }

    /// How many lines of the server's log (stderr) so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
