//! HTTP proxies between a board and the real server: [`FaultProxy`] misbehaves on chosen
//! paths, [`Router`] serves a board another device's manifest. Both accept connections the
//! same way and forward a request upstream through one path ([`forward`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// One request read from a client (one per connection).
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    /// The request's path, with its leading `/`.
    fn path(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("/")
    }
}

/// Reads one request from a client: its head and its body. `None` when the client closed.
fn read_request(conn: &TcpStream) -> std::io::Result<Option<Request>> {
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
    Ok(Some(Request { head, body }))
}

/// Sends `req` upstream with `Connection: close` and returns the whole raw response.
fn forward(upstream: &str, req: &Request) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(
        req.head
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    up.write_all(&req.body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(response)
}

/// A proxy in front of the real server that applies a fault to matching paths.
/// Where a raw HTTP response's body starts (its length if it has no complete head).
fn body_start(response: &[u8]) -> usize {
    response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4)
}

/// A response `head` for a body of `len` bytes: its own lines but Content-Length and
/// Connection, then those two (the proxies answer one request per connection).
fn head_for(head: &[u8], len: usize) -> String {
    let mut out = String::new();
    for line in String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|l| !l.is_empty())
    {
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("content-length:") && !lower.starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\n\r\n"
    ));
    out
}

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

fn proxy_one(
    mut conn: TcpStream,
    upstream: &str,
    fault: Fault,
    prefix: &str,
) -> std::io::Result<()> {
    let Some(req) = read_request(&conn)? else {
        return Ok(());
    };
    let fault = if req.path().trim_start_matches('/').starts_with(prefix) {
        fault
    } else {
        Fault::None
    };
    match fault {
        Fault::Stall => {
            // Hold the connection open, answering nothing, until the board gives up.
            std::thread::sleep(Duration::from_secs(60));
            return Ok(());
        }
        Fault::Status500 => {
            let msg = b"{\"error\":\"injected\"}";
            write!(
                conn,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                msg.len()
            )?;
            conn.write_all(msg)?;
            return Ok(());
        }
        _ => {}
    }
    let response = forward(upstream, &req)?;
    let (rhead, rbody) = response.split_at(body_start(&response));
    let mut rbody = rbody.to_vec();
    match fault {
        Fault::FlipByte if !rbody.is_empty() => {
            let i = rbody.len() / 2;
            rbody[i] ^= 0x20;
        }
        Fault::ExtraByte => rbody.push(b'\n'),
        _ => {}
    }
    conn.write_all(head_for(rhead, rbody.len()).as_bytes())?;
    if fault == Fault::Truncate {
        conn.write_all(&rbody[..rbody.len() / 2])?;
    } else {
        conn.write_all(&rbody)?;
    }
    conn.flush()
}

/// A proxy in front of the real server that serves each board the manifest of another device:
/// `v1/{mac}.json` and `v1/{mac}/report` go to the device `route(mac)` names (or `mac` itself),
/// and the device's MAC in what comes back (the manifest's `device`) is replaced by the board's.
/// Many simulated boards can then share one store, each following its own script. A routed
/// manifest is sealed again under [`Router::KEY`], the key such boards bootstrap with
/// ([`Router::key`]); their reports, signed with it, are refused by the server.
pub struct Router {
    pub base: String,
    routes: Arc<Mutex<HashMap<String, String>>>,
}

impl Router {
    /// The key every routed board holds.
    pub const KEY: &'static str =
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

    /// (key, store) for [`ImageBoard::key`](super::ImageBoard): a board that takes routed
    /// manifests of `store`.
    pub fn key(store: &str) -> (String, String) {
        (Self::KEY.to_owned(), store.to_owned())
    }

    pub fn start(upstream: &str) -> Self {
        let routes = Arc::new(Mutex::new(HashMap::new()));
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
    routes: &Mutex<HashMap<String, String>>,
) -> std::io::Result<()> {
    let Some(mut req) = read_request(&conn)? else {
        return Ok(());
    };
    let path = req.path().to_owned();
    // (board MAC, device whose manifest it gets)
    let mut routed = None;
    if let Some(rest) = path.strip_prefix("/v1/") {
        let mac: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if let Some(device) = routes.lock().unwrap().get(&mac) {
            let new_path = format!("/v1/{device}{}", &rest[mac.len()..]);
            req.head = req.head.replacen(&path, &new_path, 1);
            routed = Some((mac.clone(), device.clone()));
        }
    }
    let mut response = forward(upstream, &req)?;
    // A manifest names the device it is for, and a board refuses another device's: the
    // board's own MAC goes in its place (as long, so Content-Length still holds).
    if let Some((mac, device)) = routed.filter(|(m, d)| m.len() == d.len() && m != d) {
        let (from, to) = (format!("\"{device}\""), format!("\"{mac}\""));
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let mut i = 0;
        while i + from.len() <= response.len() {
            if &response[i..i + from.len()] == from {
                response[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
        reseal(&mut response);
    }
    conn.write_all(&response)?;
    conn.flush()
}

/// Seals the manifest in `response` (if it is one) again under [`Router::KEY`]: same length,
/// so Content-Length still holds.
fn reseal(response: &mut [u8]) {
    let start = body_start(response);
    let body = &mut response[start..];
    if !body.starts_with(b"{\"hmac\":\"") {
        return;
    }
    let Some(nl) = body.iter().position(|&b| b == b'\n') else {
        return;
    };
    let key = mpfleet::store::DeviceKey::from_hex(Router::KEY).unwrap();
    let manifest = std::str::from_utf8(&body[nl + 1..]).unwrap().to_owned();
    let sealed = mpfleet::sign::seal(&key, &manifest);
    body.copy_from_slice(sealed.as_bytes());
}

/// How a [`Tamper`] proxy rewrites a response body.
pub type Rewrite = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// An attacker between the board and the server: responses to paths under a prefix get their
/// body rewritten (and Content-Length fixed); everything else passes unchanged.
pub struct Tamper {
    pub base: String,
    rule: Arc<Mutex<Option<(String, Rewrite)>>>,
}

impl Tamper {
    pub fn start(upstream: &str) -> Self {
        let rule: Arc<Mutex<Option<(String, Rewrite)>>> = Arc::new(Mutex::new(None));
        let shared = rule.clone();
        let base = listen(upstream, move |mut conn, upstream| {
            let Some(req) = read_request(&conn)? else {
                return Ok(());
            };
            let response = forward(upstream, &req)?;
            let rule = shared.lock().unwrap().clone();
            let response = match rule {
                Some((prefix, f)) if req.path().trim_start_matches('/').starts_with(&prefix) => {
                    let (head, body) = response.split_at(body_start(&response));
                    let body = f(body);
                    let mut out = head_for(head, body.len()).into_bytes();
                    out.extend_from_slice(&body);
                    out
                }
                _ => response,
            };
            conn.write_all(&response)?;
            conn.flush()
        });
        Self { base, rule }
    }

    /// From now on, responses to paths starting with `prefix` go through `f`.
    pub fn set(&self, prefix: &str, f: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Some((prefix.to_owned(), Arc::new(f)));
    }

    /// Responses pass unchanged again.
    pub fn clear(&self) {
        *self.rule.lock().unwrap() = None;
    }
}
