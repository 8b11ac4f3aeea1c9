//! How long `serve` waits for a client, and how many clients it holds at once.
//!
//! A hostile or broken client on the LAN must not be able to hold the server: one that sends
//! half a request and stalls, one that trickles a body, thousands of idle connections, or a
//! half-sent request at SIGTERM. Boards send small requests (a GET, a report of a few hundred
//! bytes), so a board on slow Wi-Fi meets every limit here with a wide margin.
//!
//! The other side of the connection cap is a fleet that connects at once (a thousand boards
//! after a power cut, each a connection per request): they must be accepted, not left to the
//! kernel, whose full accept queue drops a handshake and makes the board resend it after
//! 200 ms to 1 s. So the cap sits above such a crowd, the listen backlog is as deep as the
//! kernel allows, and the open-file limit is raised at start-up to fit the cap (or the cap
//! is lowered to fit the limit, with a warning).
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
/// bound how long that is), rather than being refused. Twice a thousand boards connecting at
/// once (a thousand at once took `serve` from 11 to about 30 MB of RSS in `bench/serve.sh`'s
/// `close-1000`). Needs an open-file limit above it ([`Limits::fit_open_files`]).
pub const MAX_CONNECTIONS: usize = 2048;

/// Listen backlog asked for: connections the kernel completes and queues before `serve`
/// accepts them. Linux caps it at `net.core.somaxconn` (4096 since 5.4, 128 before). tokio's
/// own `bind` asks for 128, fewer than a crowd of boards: the rest had their handshakes
/// dropped and resent.
pub const LISTEN_BACKLOG: u32 = 4096;

/// File descriptors kept for what is not a connection: the listeners, the SQLite files of
/// each store handle (database, WAL, shared memory), blobs read for the admin side, logs.
const OTHER_FILES: u64 = 64;

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

    /// Raises the open-file limit to its hard limit, then lowers `max_connections` if that is
    /// still too few files for it (with a warning naming the limit). A service manager's
    /// default soft limit is often 1024 with a hard limit far above.
    pub fn fit_open_files(&mut self) {
        let Some(files) = raise_open_files() else {
            return;
        };
        let fits = files.saturating_sub(OTHER_FILES).max(1) as usize;
        if self.max_connections > fits {
            tracing::warn!(
                "the open-file limit is {files}: serving at most {fits} connections at once, \
                 not {}; raise it (`ulimit -n`, or LimitNOFILE= in a systemd unit) to at least {}",
                self.max_connections,
                self.max_connections as u64 + OTHER_FILES
            );
            self.max_connections = fits;
        }
    }
}

/// Sets the soft open-file limit to the hard one; returns the soft limit then in force
/// (None where there is no such limit).
#[cfg(unix)]
fn raise_open_files() -> Option<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return None;
    }
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: l.rlim_max,
            rlim_max: l.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            l = raised;
        }
    }
    if l.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Some(l.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_open_files() -> Option<u64> {
    None
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
