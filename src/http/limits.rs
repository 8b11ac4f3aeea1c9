//! How long `serve` waits for a client, and how many clients it holds at once.
//!
//! A hostile or broken client on the LAN must not be able to hold the server: one that sends
//! half a request and stalls, one that trickles a body, thousands of idle connections, or a
//! half-sent request at SIGTERM. Boards send small requests (a GET, a report of a few hundred
//! bytes), so a board on slow Wi-Fi meets every limit here with a wide margin.
//!
//! The values are consts. `MPFLEET_HEADER_TIMEOUT_MS`, `MPFLEET_BODY_TIMEOUT_MS`,
//! `MPFLEET_CONNECTION_DEADLINE_MS`, `MPFLEET_SHUTDOWN_GRACE_MS` and
//! `MPFLEET_MAX_CONNECTIONS` override them: they exist for the attack tests (so those run in
//! seconds, not minutes) and are not meant for production.

use std::time::Duration;

/// Time to receive a request's whole header, counted from the moment the connection is ready
/// for a request: a new connection, and a kept-alive one after its last response, so this is
/// the idle (keep-alive) timeout too. A request line and a few headers take one round trip.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time to receive a request's whole body once its header is in (a report is at most 16 KiB:
/// under 2 s at 64 kbit/s). A client still sending then gets `408` and the connection closes.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest life of one connection, whatever it does: bounds a client that reads a response
/// slowly, or keeps a connection busy with request after request. A board fetches a manifest
/// or one module per connection, kilobytes that take well under a second.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(120);

/// After SIGTERM or Ctrl-C: how long requests already in progress may take to finish before
/// their connections are dropped (a report accepted before that is still written).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Connections served at once. When all are taken, `serve` stops accepting: new connections
/// wait in the kernel's accept backlog and are served as soon as one ends (the timeouts above
/// bound how long that is), rather than being refused. Kept well under the usual limit of
/// 1024 open files.
pub const MAX_CONNECTIONS: usize = 512;

/// The limits one `serve` runs with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub connection_deadline: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            connection_deadline: CONNECTION_DEADLINE,
            shutdown_grace: SHUTDOWN_GRACE,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// The defaults, with the test overrides from the environment applied.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut l = Self::default();
        let ms = |name: &str, d: &mut Duration| -> anyhow::Result<()> {
            if let Some(v) = number(name)? {
                *d = Duration::from_millis(v);
            }
            Ok(())
        };
        ms("MPFLEET_HEADER_TIMEOUT_MS", &mut l.header_timeout)?;
        ms("MPFLEET_BODY_TIMEOUT_MS", &mut l.body_timeout)?;
        ms("MPFLEET_CONNECTION_DEADLINE_MS", &mut l.connection_deadline)?;
        ms("MPFLEET_SHUTDOWN_GRACE_MS", &mut l.shutdown_grace)?;
        if let Some(n) = number("MPFLEET_MAX_CONNECTIONS")? {
            anyhow::ensure!(n > 0, "MPFLEET_MAX_CONNECTIONS must be at least 1");
            l.max_connections = n as usize;
        }
        Ok(l)
    }
}

fn number(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(None),
    }
}
