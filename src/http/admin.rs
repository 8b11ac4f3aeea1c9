//! The admin API: every [`Operation`] of `crate::ops` as JSON over HTTP under
//! `/admin/api/v1`, behind the admin token (`auth`). Routes are made from `ops::register`,
//! so an operation added there is served here with nothing else to write.
//!
//! A request's path fields and its JSON body (for POST and PUT) make the operation's fields;
//! its output is the JSON answer. Errors are `{"error": "..."}`, the same text the CLI prints
//! on the local data dir: 404 for what does not exist, 500 for the store failing (database,
//! disk), 400 for everything the request got wrong. Operations run on a blocking thread with
//! a store of their own, as the CLI would run them; `serve` picks up their changes as it does
//! the CLI's.

use crate::ops::{self, NotFound, Operation, Registry, Verb};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, RawPathParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// Largest admin request body: a device import of 100,000 lines is about 10 MB.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Where admin operations run.
#[derive(Clone)]
pub struct Admin {
    pub data: PathBuf,
}

struct Api(Router<Admin>);

impl Registry for Api {
    fn op<O: Operation>(self) -> Self {
        let h = handle::<O>;
        let method = match O::VERB {
            Verb::Get => get(h),
            Verb::Post => post(h),
            Verb::Put => put(h),
            Verb::Delete => delete(h),
        };
        Api(self.0.route(O::PATH, method))
    }
}

/// The API's routes, relative to `/admin/api/v1` (no token check: the caller adds it).
pub fn api() -> Router<Admin> {
    ops::register(Api(Router::new()))
        .0
        .route("/modules/{name}/versions", post(publish_raw))
        .fallback(no_such_route)
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn no_such_route() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such admin API path (see docs/admin-api.md)",
    )
}

async fn handle<O: Operation>(
    State(admin): State<Admin>,
    params: RawPathParams,
    body: Bytes,
) -> Response {
    let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return error(StatusCode::BAD_REQUEST, "the body is not a JSON object"),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not JSON: {e}"),
                )
            }
        }
    };
    for (k, v) in params.iter() {
        fields.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    match serde_json::from_value::<O>(Value::Object(fields)) {
        Ok(op) => run(admin, op).await,
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("{} /admin/api/v1{}: {e}", O::VERB.as_str(), O::PATH),
        ),
    }
}

/// `POST /modules/{name}/versions[?version=V][&latest=false]` with the module's source as
/// the body: one file, for `curl --data-binary @sensorclass.py`.
async fn publish_raw(
    State(admin): State<Admin>,
    params: RawPathParams,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let name = params
        .iter()
        .find(|(k, _)| *k == "name")
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    let latest = match query.get("latest").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("latest={other:?}: expected true or false"),
            )
        }
    };
    let Ok(source) = String::from_utf8(body.to_vec()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("nothing published: {name} is not UTF-8 text: a module is a .py source file"),
        );
    };
    let op = ops::module::Publish {
        files: vec![ops::module::PublishFile {
            origin: String::new(),
            name,
            version: query.get("version").cloned(),
            source,
        }],
        latest,
    };
    run(admin, op).await
}

async fn run<O: Operation>(admin: Admin, op: O) -> Response {
    let done = tokio::task::spawn_blocking(move || ops::run_local(&admin.data, op)).await;
    match done {
        Ok(Ok(output)) => Json(output).into_response(),
        Ok(Err(e)) => {
            let status = if e.chain().any(|c| c.is::<NotFound>()) {
                StatusCode::NOT_FOUND
            } else if e
                .chain()
                .any(|c| c.is::<rusqlite::Error>() || c.is::<std::io::Error>())
            {
                tracing::error!("admin {} {}: {e:#}", O::VERB.as_str(), O::PATH);
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            };
            error(status, format!("{e:#}"))
        }
        Err(e) => {
            tracing::error!("admin {} {} panicked: {e}", O::VERB.as_str(), O::PATH);
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
        }
    }
}
