//! A deadline on receiving a request's body.
//!
//! hyper bounds how long a request's header may take (see `limits::HEADER_TIMEOUT`) but not
//! its body: a client could send the header of a report, then one byte a minute, and hold a
//! connection and a handler for ever. This layer gives every body a deadline, counted from
//! when its header was in; past it, reading the body fails, and the client gets `408` with
//! `Connection: close` whatever the handler made of the failed read (`front` applies it).

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Puts a deadline of `timeout` on the request's body, if it has one; the flag returned is
/// set if the deadline cuts the body off (then answer [`timed_out`] instead of the handler's
/// response).
pub fn wrap(req: Request, timeout: Duration) -> (Request, Option<Arc<AtomicBool>>) {
    if req.body().is_end_stream() {
        return (req, None);
    }
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            expired: expired.clone(),
        })
    });
    (req, Some(expired))
}

/// The answer to a request whose body did not arrive within `timeout`.
pub fn timed_out(timeout: Duration) -> Response {
    let message = format!(
        "request body not received within {}s",
        timeout.as_secs_f32()
    );
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A body that fails once its deadline has passed.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Set when the deadline cut the body off.
    expired: Arc<AtomicBool>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        // What has arrived is taken even at the deadline.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new("request body timed out"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
