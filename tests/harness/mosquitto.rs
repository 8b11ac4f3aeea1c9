//! A real Mosquitto broker (Debian's `mosquitto`, which `./test.sh` installs) on a free
//! 127.0.0.1 port with a config of its own, killed when dropped; and [`Subscriber`], an MQTT
//! client that records every message under `mpfleet/#`.

use super::eventually;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The broker binary: `MPFLEET_MOSQUITTO`, else Debian's path, else `mosquitto` on PATH.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MPFLEET_MOSQUITTO") {
        return p.into();
    }
    let debian = PathBuf::from("/usr/sbin/mosquitto");
    if debian.is_file() {
        return debian;
    }
    PathBuf::from("mosquitto")
}

/// A port nothing listens on now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts on `port` (e.g. the one a server was told before the broker was there).
    /// No persistence: a broker started again has lost every retained message.
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\n"
            ),
        )
        .unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto ({e}): install Debian's mosquitto (./test.sh does)")
            });
        let mut broker = Self {
            child,
            port,
            _dir: dir,
        };
        eventually("mosquitto to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto exited at start: {status}");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        broker
    }

    /// What `serve --mqtt` is given.
    pub fn url(&self) -> String {
        url(self.port)
    }
}

pub fn url(port: u16) -> String {
    format!("mqtt://127.0.0.1:{port}")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message as the subscriber got it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// Records every message under `mpfleet/#` (retained ones first, as the broker sends them).
pub struct Subscriber {
    client: rumqttc::Client,
    got: Arc<Mutex<Vec<Message>>>,
}

impl Subscriber {
    pub fn connect(port: u16) -> Self {
        let id = format!("test-{}-{}", std::process::id(), free_port());
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        // Reports up to serve's largest (rumqttc's default limit is 10 KiB).
        options.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut connection) = rumqttc::Client::new(options, 16);
        client
            .subscribe("mpfleet/#", rumqttc::QoS::AtLeastOnce)
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        })
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Self { client, got }
    }

    /// Waits for a message on `topic` that `ok` accepts; returns its payload.
    pub fn wait(&self, topic: &str, timeout: Duration, ok: impl Fn(&Message) -> bool) -> Message {
        eventually(&format!("a message on {topic}"), timeout, || {
            self.got
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.topic == topic && ok(m))
                .cloned()
        })
    }

    /// Every message so far on `topic`.
    pub fn on(&self, topic: &str) -> Vec<Message> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

/// The generation in an `mpfleet/{mac}/update` payload.
pub fn generation(m: &Message) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(&m.payload)
        .ok()?
        .get("generation")?
        .as_i64()
}
