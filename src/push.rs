//! `serve --mqtt URL`: tells boards over MQTT that they have something new, so they need not
//! wait for their next poll, and mirrors their reports for Home Assistant.
//!
//! Two kinds of retained messages, QoS 1:
//! - `mpfleet/{mac}/update`, `{"generation": N}`: published whenever a device's generation
//!   changes (and for every device when `serve` starts or reconnects, so a broker that lost
//!   its retained messages gets them again); an empty payload clears it when the device is
//!   removed. A board's `mpfleet_push` module subscribes to it and asks for an update when N
//!   is newer than what it runs. The message is only a wake-up: the board still installs
//!   only a manifest signed with its key.
//! - `mpfleet/{mac}/state`: the JSON of the board's last report, as stored.
//!
//! It runs on a thread and a runtime of its own, and nothing on the HTTP side ever waits for
//! it: callers only put the newest payload per topic in a map and wake the publisher, which
//! sends what is queued whenever the broker is connected. A broker that is down or goes away
//! is retried with a backoff (1 s doubling to 30 s), each failure logged.

use crate::names::Mac;
use crate::snapshot::Snapshot;
use anyhow::{bail, Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The first part of every topic.
pub const PREFIX: &str = "mpfleet";

/// The broker's default port.
const DEFAULT_PORT: u16 = 1883;

/// Longest wait between two attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where to publish, from `mqtt://[user[:password]@]host[:port][/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl Broker {
    /// Parses the `--mqtt` URL; an error says what is wrong and what is expected.
    pub fn parse(url: &str) -> Result<Self> {
        let expected = "expected mqtt://[user[:password]@]host[:port]";
        let Some(rest) = url.strip_prefix("mqtt://") else {
            if url.starts_with("mqtts://") || url.starts_with("ssl://") {
                bail!("--mqtt {url}: TLS is not supported; use mqtt:// to a broker on your LAN");
            }
            bail!("--mqtt {url}: {expected}");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') {
            bail!("--mqtt {url}: no path or query allowed, {expected}");
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((cred, hp)) => {
                let (user, password) = cred.split_once(':').unwrap_or((cred, ""));
                if user.is_empty() {
                    bail!("--mqtt {url}: empty user name, {expected}");
                }
                (Some((user.to_owned(), password.to_owned())), hp)
            }
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .with_context(|| format!("--mqtt {url}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            bail!("--mqtt {url}: no host, {expected}");
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .with_context(|| format!("--mqtt {url}: {p:?} is not a port"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// For logs: the URL without its password.
    pub fn display(&self) -> String {
        let user = match &self.credentials {
            Some((u, _)) => format!("{u}@"),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("mqtt://{user}{host}:{}", self.port)
    }
}

/// The topic a device's generation goes to.
pub fn update_topic(mac: &Mac) -> String {
    format!("{PREFIX}/{mac}/update")
}

/// The topic a device's reports are mirrored to.
pub fn state_topic(mac: &Mac) -> String {
    format!("{PREFIX}/{mac}/state")
}

/// What is waiting to go out, and what is current.
#[derive(Default)]
struct Queue {
    /// The newest payload per topic not yet handed to the client.
    pending: BTreeMap<String, Vec<u8>>,
    /// Every device's current generation: queued again at each new connection.
    generations: HashMap<Mac, i64>,
}

impl Queue {
    /// Queues the generations that changed (all of them the first time), and clears the
    /// topics of devices that are gone.
    fn generations(&mut self, next: &HashMap<Mac, i64>) {
        for (mac, generation) in next {
            if self.generations.get(mac) != Some(generation) {
                self.pending
                    .insert(update_topic(mac), update_payload(*generation));
            }
        }
        for mac in self.generations.keys() {
            if !next.contains_key(mac) {
                self.pending.insert(update_topic(mac), Vec::new());
            }
        }
        self.generations = next.clone();
    }

    /// Queues every current generation again (a new connection: the broker may have lost
    /// its retained messages).
    fn all_again(&mut self) {
        for (mac, generation) in &self.generations {
            self.pending
                .insert(update_topic(mac), update_payload(*generation));
        }
    }
}

fn update_payload(generation: i64) -> Vec<u8> {
    serde_json::json!({ "generation": generation })
        .to_string()
        .into_bytes()
}

/// The handle `serve` keeps: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Push {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
}

impl Push {
    /// Starts publishing to `broker` on a thread of its own. Returns at once: the broker
    /// may be down; it is tried until it answers.
    pub fn start(broker: Broker) -> Result<Self> {
        let push = Self {
            queue: Arc::default(),
            wake: Arc::new(Notify::new()),
        };
        let runner = push.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || runtime.block_on(runner.run(broker)))?;
        Ok(push)
    }

    /// Publishes the generations of `snapshot` that changed since the last call (all of
    /// them at the first).
    pub fn snapshot(&self, snapshot: &Snapshot) {
        self.queue
            .lock()
            .expect("push queue")
            .generations(&snapshot.generations());
        self.wake.notify_one();
    }

    /// Mirrors a report (its JSON as stored) to `mpfleet/{mac}/state`.
    pub fn report(&self, mac: &Mac, body: &str) {
        self.queue
            .lock()
            .expect("push queue")
            .pending
            .insert(state_topic(mac), body.as_bytes().to_vec());
        self.wake.notify_one();
    }

    async fn run(self, broker: Broker) {
        let client_id = format!("mpfleet-serve-{}", std::process::id());
        let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        // A report can be up to MAX_REPORT bytes; rumqttc's default limit is 10 KiB.
        let most = crate::http::MAX_REPORT + 1024;
        options.set_max_packet_size(most, most);
        if let Some((user, password)) = &broker.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, mut events) = AsyncClient::new(options, 256);
        let connected = Arc::new(AtomicBool::new(false));
        tokio::spawn(self.clone().publisher(client, connected.clone()));
        let name = broker.display();
        let mut backoff = Duration::from_secs(1);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("MQTT: connected to {name}");
                    backoff = Duration::from_secs(1);
                    self.queue.lock().expect("push queue").all_again();
                    connected.store(true, Ordering::SeqCst);
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    let was = connected.swap(false, Ordering::SeqCst);
                    let what = if was { "lost" } else { "cannot reach" };
                    tracing::warn!(
                        "MQTT: {what} {name}: {e}; retrying in {}s (boards still poll)",
                        backoff.as_secs()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Hands what is queued to the client whenever the broker is connected.
    async fn publisher(self, client: AsyncClient, connected: Arc<AtomicBool>) {
        loop {
            self.wake.notified().await;
            if !connected.load(Ordering::SeqCst) {
                continue; // the next connection wakes it again
            }
            let batch = std::mem::take(&mut self.queue.lock().expect("push queue").pending);
            for (topic, payload) in batch {
                // Waits only when the client's channel is full, i.e. on this thread alone.
                if let Err(e) = client
                    .publish(topic.clone(), QoS::AtLeastOnce, true, payload)
                    .await
                {
                    tracing::error!("MQTT: cannot publish {topic}: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = Broker::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.credentials),
            ("127.0.0.1", 1884, None)
        );
        let b = Broker::parse("mqtt://homeassistant.local/").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("homeassistant.local", 1883));
        let b = Broker::parse("mqtt://mpfleet:s3cr:t@ha.local:1883").unwrap();
        assert_eq!(b.credentials, Some(("mpfleet".into(), "s3cr:t".into())));
        assert_eq!(b.display(), "mqtt://mpfleet@ha.local:1883");
        let b = Broker::parse("mqtt://[::1]:1885").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1885));
        assert_eq!(b.display(), "mqtt://[::1]:1885");
        for bad in [
            "127.0.0.1:1883",
            "http://x",
            "mqtts://x",
            "mqtt://",
            "mqtt://x:0",
            "mqtt://x:99999",
            "mqtt://x:port",
            "mqtt://x/topic",
            "mqtt://@x",
            "mqtt://[::1",
        ] {
            let e = Broker::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--mqtt "), "{bad}: {e}");
        }
    }

    fn gens(pairs: &[(&str, i64)]) -> HashMap<Mac, i64> {
        pairs
            .iter()
            .map(|(m, g)| (Mac::parse(m).unwrap(), *g))
            .collect()
    }

    fn drain(q: &mut Queue) -> Vec<(String, String)> {
        std::mem::take(&mut q.pending)
            .into_iter()
            .map(|(t, p)| (t, String::from_utf8(p).unwrap()))
            .collect()
    }

    #[test]
    fn only_changed_generations_go_out() {
        let mut q = Queue::default();
        q.generations(&gens(&[("aaaaaaaaaaaa", 1), ("bbbbbbbbbbbb", 2)]));
        assert_eq!(drain(&mut q).len(), 2);
        q.generations(&gens(&[("aaaaaaaaaaaa", 1), ("bbbbbbbbbbbb", 3)]));
        assert_eq!(
            drain(&mut q),
            [(
                "mpfleet/bbbbbbbbbbbb/update".into(),
                "{\"generation\":3}".into()
            )]
        );
        // Removed: its retained message is cleared.
        q.generations(&gens(&[("bbbbbbbbbbbb", 3)]));
        assert_eq!(
            drain(&mut q),
            [("mpfleet/aaaaaaaaaaaa/update".into(), String::new())]
        );
        q.all_again();
        assert_eq!(drain(&mut q).len(), 1);
    }
}
