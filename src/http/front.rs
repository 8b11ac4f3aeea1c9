//! What every request passes through before (and instead of) the router: the side gate
//! (`sides`), the latency histogram of `/metrics`, the access log and the body deadline
//! (`body_deadline`), as one hyper service per listener.
//!
//! They were `axum::middleware::from_fn` layers, each of which cloned the route below it and
//! boxed a future for every request; boards mostly open a connection per request, so that
//! per-request cost was a good part of what a connection costs. Here they are plain code
//! around one call, in the same order as the layers were: gate, then the clock, then the
//! access log, then the body deadline.
//!
//! A board's read (GET or HEAD of a path outside the admin side that cannot be a report) is
//! answered by `device::read` without the router: the router would send it there anyway (it
//! is the fallback), and the response gets what the router adds to a handler's (a
//! `Content-Length`, and no body for HEAD). Everything else goes through the router.

use super::metrics::{self, Metrics};
use super::sides::{self, Side};
use super::{body_deadline, device, App};
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

/// The service of one listener (cloned for each connection: one reference count).
#[derive(Clone)]
pub struct Front(Arc<Inner>);

struct Inner {
    router: Router,
    app: App,
    side: Side,
    metrics: Arc<Metrics>,
    body_timeout: Duration,
    /// Whether `mpfleet::access` logs at info (checked once: the log costs a little per
    /// request even when filtered out).
    access_log: bool,
}

impl Front {
    pub fn new(router: Router, app: App, side: Side, body_timeout: Duration) -> Self {
        let metrics = app.metrics.clone();
        Self(Arc::new(Inner {
            router,
            app,
            side,
            metrics,
            body_timeout,
            access_log: tracing::enabled!(target: "mpfleet::access", tracing::Level::INFO),
        }))
    }

    /// The response to `req`.
    pub fn respond(&self, req: Request) -> Responding {
        let this = &*self.0;
        let path = req.uri().path();
        let admin = sides::is_admin_path(path);
        let mut req = req;
        if let Some(refused) = sides::gate(&this.side, admin, &mut req) {
            return Responding::Ready(Some(refused));
        }
        let side = if admin {
            metrics::Side::Admin
        } else {
            metrics::Side::Device
        };
        let start = Instant::now();
        let log = this
            .access_log
            .then(|| (req.method().clone(), req.uri().path().to_owned()));
        let read = !admin && is_read(req.method(), req.uri().path());
        let (req, expired) = body_deadline::wrap(req, this.body_timeout);
        let inner = if read {
            Step::Done(Some(direct(&this.app, req)))
        } else {
            Step::Routing(this.router.clone().call(req))
        };
        Responding::Timed(Box::new(Timed {
            inner,
            front: self.clone(),
            side,
            start,
            log,
            expired,
        }))
    }
}

/// A GET or HEAD that the router would hand to its fallback, `device::read`: outside the
/// admin side (checked by the caller), and not a path of the one other device route
/// (`/v1/{mac}/report`, whose other methods get the router's 405).
fn is_read(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && !path.ends_with("/report")
}

/// `device::read`'s response, finished as the router finishes a handler's.
fn direct(app: &App, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    let mut response = device::respond(app, &req).into_response();
    if !response.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(n) = response.body().size_hint().exact() {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    if head {
        *response.body_mut() = Body::empty();
    }
    response
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Responding;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Responding {
        self.respond(req.map(Body::new))
    }
}

/// The future of [`Front::respond`].
pub enum Responding {
    /// Answered by the gate.
    Ready(Option<Response>),
    Timed(Box<Timed>),
}

pub struct Timed {
    inner: Step,
    front: Front,
    side: metrics::Side,
    start: Instant,
    /// Method and path, when the access log is on.
    log: Option<(Method, String)>,
    /// Set when the body deadline cut the request's body off.
    expired: Option<Arc<AtomicBool>>,
}

enum Step {
    Routing(RouteFuture<Infallible>),
    Done(Option<Response>),
}

impl Future for Responding {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Nothing here is pinned structurally: the route future is boxed inside axum.
        let timed = match self.get_mut() {
            Responding::Ready(r) => {
                return Poll::Ready(Ok(r.take().expect("polled after completion")))
            }
            Responding::Timed(t) => t,
        };
        let mut response = match &mut timed.inner {
            Step::Routing(f) => match ready!(Pin::new(f).poll(cx)) {
                Ok(r) => r,
                Err(e) => match e {},
            },
            Step::Done(r) => r.take().expect("polled after completion"),
        };
        let front = &*timed.front.0;
        if timed
            .expired
            .as_ref()
            .is_some_and(|e| e.load(Ordering::Relaxed))
        {
            response = body_deadline::timed_out(front.body_timeout);
        }
        if let Some((method, path)) = timed.log.take() {
            tracing::info!(
                target: "mpfleet::access",
                "{method} {path} {} {}us",
                response.status().as_u16(),
                timed.start.elapsed().as_micros()
            );
        }
        front.metrics.request(timed.side, timed.start.elapsed());
        Poll::Ready(Ok(response))
    }
}
