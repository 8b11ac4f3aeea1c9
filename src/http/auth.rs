//! The admin token check in front of the admin side (`/admin/...`, `/metrics`): a request
//! without `Authorization: Bearer <the token>` gets `401` with a JSON error and never reaches
//! a handler. The token is the data dir's `admin-token`, read again when it changes
//! (`crate::token::Live`), so `mpfleet token rotate` takes effect without a restart.
//!
//! The dashboard's browsers prove the same token another way: `/admin/login` takes it once
//! and sets a session cookie derived from it, and each form carries a second derived secret
//! against cross-site requests ([`session`]).

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

/// The dashboard's session cookie: set by `/admin/login` when the admin token is given,
/// HttpOnly, SameSite=Strict, Path=/admin. Its value is derived from the token
/// ([`crate::token::Token::derive`]), not the token itself, so it opens the dashboard's forms
/// but not the API, and rotating the token ends every session.
pub const SESSION_COOKIE: &str = "mpfleet_session";
const SESSION_PURPOSE: &str = "mpfleet dashboard session";
/// Every dashboard form carries this secret (a hidden `csrf` field) and every write checks
/// it: a page on another site cannot read it, so it cannot forge a form that passes.
const FORM_PURPOSE: &str = "mpfleet dashboard form";

/// A browser logged in to the dashboard.
pub struct Session {
    /// What its forms carry in their `csrf` field.
    pub form_token: String,
}

impl Session {
    /// Whether a submitted form carries this session's form token (constant time).
    pub fn form_ok(&self, presented: &str) -> bool {
        crate::token::same(&self.form_token, presented)
    }
}

/// The session of the request, if its cookie holds the current token's session value.
pub fn session(token: &Live, headers: &axum::http::HeaderMap) -> Option<Session> {
    let presented = cookie(headers, SESSION_COOKIE)?;
    let t = token.current()?;
    crate::token::same(&t.derive(SESSION_PURPOSE), presented).then(|| Session {
        form_token: t.derive(FORM_PURPOSE),
    })
}

/// `Set-Cookie` for a browser that gave the right token, or none if `presented` is not it.
pub fn login(token: &Live, presented: &str) -> Option<String> {
    let t = token.current()?;
    t.matches(presented.trim()).then(|| {
        format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/admin",
            t.derive(SESSION_PURPOSE)
        )
    })
}

/// `Set-Cookie` that ends the session.
pub fn logout() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0")
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}
