//! The admin token check in front of the admin side (`/admin/...`, `/metrics`): a request
//! without `Authorization: Bearer <the token>` gets `401` with a JSON error and never reaches
//! a handler. The token is the data dir's `admin-token`, read again when it changes
//! (`crate::token::Live`), so `mpfleet token rotate` takes effect without a restart.

use crate::token::Live;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// The token a request presents, if it carries one as a bearer token.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Middleware: lets the request through only with the current admin token.
pub async fn require_token(State(token): State<Arc<Live>>, req: Request, next: Next) -> Response {
    if bearer(&req).is_some_and(|t| token.check(t)) {
        return next.run(req).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({
            "error": "missing or wrong admin token (send the header Authorization: Bearer TOKEN)"
        })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mpfleet admin\""),
    );
    response
}
