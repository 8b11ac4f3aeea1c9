//! A check-in storm, for `bench/storm.sh`: N distinct boards, arriving at a fixed rate (open
//! loop: a slow answer does not slow the arrivals), each doing what a board does at a poll:
//! GET its sealed manifest on a new connection, then POST a signed report on another.
//!
//! ```text
//! cargo run --release --example storm -- --server http://127.0.0.1:8080/ --data DIR \
//!     --boards 10000 --rate 1000
//! ```
//!
//! The boards are the store's own devices (`--data`, read only: their MACs and keys, so the
//! reports are signed as a board signs them). Latency is measured from when a request was
//! due, not from when it was sent, so a server that falls behind shows it (what HdrHistogram
//! calls correcting for coordinated omission); percentiles are printed as HdrHistogram does.
//! Exits non-zero if any request failed.

use hdrhistogram::Histogram;
use mpfleet::names::Mac;
use mpfleet::store::{DeviceKey, Store};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

struct Args {
    server: SocketAddr,
    data: PathBuf,
    boards: usize,
    rate: f64,
}

fn args() -> Result<Args, String> {
    let mut server = None;
    let mut data = None;
    let mut boards = 10_000;
    let mut rate = 1000.0;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--server" => {
                let url = value()?;
                let hostport = url
                    .strip_prefix("http://")
                    .ok_or("--server must be http://HOST:PORT/")?
                    .trim_end_matches('/');
                server = Some(hostport.parse().map_err(|e| format!("--server: {e}"))?);
            }
            "--data" => data = Some(PathBuf::from(value()?)),
            "--boards" => boards = value()?.parse().map_err(|e| format!("--boards: {e}"))?,
            "--rate" => rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args {
        server: server.ok_or("--server is required")?,
        data: data.ok_or("--data is required")?,
        boards,
        rate,
    })
}

/// One request on a new connection (`Connection: close`, as boards do), from a loopback
/// source address of its own (127.0.0.2-33, so a storm of 200,000 connections does not run
/// out of one address's ephemeral ports). Returns the status and the body.
async fn request(
    server: SocketAddr,
    source: u8,
    head: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, source), 0)))?;
    let mut stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    let mut got = Vec::with_capacity(2048);
    stream.read_to_end(&mut got).await?;
    let bad = || std::io::Error::other("not an HTTP response");
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&got[..end])
        .ok()
        .and_then(|h| h.split(' ').nth(1)?.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, got[end + 4..].to_vec()))
}

/// One board's poll: its manifest, then its report. Returns the two latencies (from when
/// each was due) or what went wrong.
async fn board(
    server: SocketAddr,
    i: usize,
    mac: &Mac,
    key: &DeviceKey,
    due: Instant,
    counter: i64,
) -> Result<(Duration, Duration), String> {
    let source = 2 + (i % 32) as u8;
    let get = format!("GET /v1/{mac}.json HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    let (status, body) = request(server, source, &get, b"")
        .await
        .map_err(|e| format!("GET {mac}: {e}"))?;
    if status != 200 || !body.starts_with(b"{\"hmac\":\"") {
        return Err(format!("GET {mac}: HTTP {status}"));
    }
    let got_manifest = Instant::now();
    let manifest = got_manifest - due;
    let report = format!(r#"{{"n":{counter},"event":"boot","generation":1}}"#);
    let hmac = mpfleet::sign::hmac_hex(key, report.as_bytes());
    let post = format!(
        "POST /v1/{mac}/report HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nX-Mpfleet-Hmac: {hmac}\r\n\r\n",
        report.len()
    );
    let (status, _) = request(server, source, &post, report.as_bytes())
        .await
        .map_err(|e| format!("POST {mac}: {e}"))?;
    if status != 200 {
        return Err(format!("POST {mac}: HTTP {status}"));
    }
    Ok((manifest, got_manifest.elapsed()))
}

fn percentiles(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name:<9} n={:<7} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    );
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("storm: {e}");
            std::process::exit(2);
        }
    };
    let store = Store::open_read_only(&args.data).expect("open the store");
    let mut fleet = Vec::new();
    store
        .each_device_view(|v| {
            fleet.push((Mac::from_bits(v.bits), v.key.clone()));
            Ok(())
        })
        .expect("read the devices");
    drop(store);
    fleet.sort_by(|a, b| a.0.cmp(&b.0));
    if fleet.len() < args.boards {
        eprintln!(
            "storm: the store has {} devices, not {}",
            fleet.len(),
            args.boards
        );
        std::process::exit(2);
    }
    fleet.truncate(args.boards);
    // Above any counter a board of this store has used: milliseconds since the epoch.
    let counter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let fleet = std::sync::Arc::new(fleet);
    let start = Instant::now() + Duration::from_millis(100);
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let mut tasks = Vec::with_capacity(args.boards);
    for i in 0..args.boards {
        let due = start + gap.mul_f64(i as f64);
        let fleet = fleet.clone();
        let server = args.server;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let (mac, key) = &fleet[i];
            board(server, i, mac, key, due, counter).await
        }));
    }
    let mut manifests = Histogram::<u64>::new(3).unwrap();
    let mut reports = Histogram::<u64>::new(3).unwrap();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.expect("a board task panicked") {
            Ok((m, r)) => {
                manifests.record(m.as_micros() as u64).unwrap();
                reports.record(r.as_micros() as u64).unwrap();
            }
            Err(e) => errors.push(e),
        }
    }
    let took = start.elapsed();
    println!(
        "storm: {} boards at {}/s: {:.1} s from the first arrival to the last answer, {} errors",
        args.boards,
        args.rate,
        took.as_secs_f64(),
        errors.len()
    );
    percentiles("manifest", &manifests);
    percentiles("report", &reports);
    for e in errors.iter().take(10) {
        println!("error: {e}");
    }
    if !errors.is_empty() {
        std::process::exit(1);
    }
}
