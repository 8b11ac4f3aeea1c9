//! The device-facing routes: GET/HEAD of any path of the snapshot, and `POST v1/{mac}/report`.
//!
//! Reads never touch the database: they look the path up in the in-memory snapshot. The
//! only writes are sightings and reports, handed to the recorder.

use super::metrics::Refused;
use super::{error::ApiError, App};
use crate::names::Mac;
use crate::sign::REPORT_HMAC;
use crate::store::now;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Largest report body accepted.
pub const MAX_REPORT: usize = 16 * 1024;

/// Largest oversized body still read before refusing it.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// The events a report may carry (see `DESIGN.md`).
pub const EVENTS: [&str; 5] = [
    "boot",
    "updated",
    "update_failed",
    "server_failed",
    "rolled_back",
];

/// The MAC a device-facing path is about, if it is `{mac}` or `v1/{mac}.json`.
fn device_of(path: &str) -> Option<Mac> {
    let candidate = path
        .strip_prefix("v1/")
        .and_then(|p| p.strip_suffix(".json"))
        .unwrap_or(path);
    (candidate.len() == 12 && candidate.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| Mac::parse(candidate).ok())
        .flatten()
}

/// The router's fallback: any path that is no other route's.
pub async fn read(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    respond(&app, &req)
}

/// GET or HEAD of a path of the snapshot (`front` calls it without the router for reads).
pub fn respond(app: &App, req: &Request) -> Result<Response, ApiError> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    let headers = req.headers();
    let path = req.uri().path().trim_start_matches('/');
    let snapshot = app.snapshot();
    let Some(entry) = snapshot.get(path) else {
        if let Some(mac) = device_of(path) {
            if !snapshot.is_device(&mac) {
                let message = format!(
                    "unknown device {mac}: assign it with `mpfleet device set {mac} --app NAME`"
                );
                app.recorder.unknown(mac, now());
                app.metrics.unknown_poll();
                return Err(ApiError::NotFound(message));
            }
        }
        return Err(ApiError::NotFound(format!("no such file: /{path}")));
    };
    if let Some(mac) = device_of(path) {
        app.recorder.seen(mac, now());
        app.metrics.poll();
    }
    let cache = if entry.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/").as_bytes() == entry.etag.as_bytes()
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(entry.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(entry.content_type),
        );
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, entry.etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

pub async fn report(
    State(app): State<App>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let metrics = app.metrics.clone();
    let refused = |why: Refused| metrics.refused(why);
    let mac = Mac::parse(&mac).map_err(|e| {
        refused(Refused::Malformed);
        ApiError::BadRequest(e)
    })?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        refused(Refused::Malformed);
        ApiError::TooLarge(format!("report is over {MAX_REPORT} bytes"))
    };
    if declared.is_some_and(|n| n > MAX_REPORT) {
        // Read (and drop) a moderately sized body first: answering before the client has
        // sent it makes the connection reset under the client, which then never sees the 413.
        if declared.is_some_and(|n| n <= DRAIN_LIMIT) {
            let _ = axum::body::to_bytes(body, DRAIN_LIMIT).await;
        }
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_REPORT)
        .await
        .map_err(|_| too_large())?;
    let Some(key) = app.snapshot().key(&mac).cloned() else {
        let message = format!("unknown device {mac}");
        app.recorder.unknown(mac, now());
        refused(Refused::Unknown);
        return Err(ApiError::NotFound(message));
    };
    let signed = headers
        .get(REPORT_HMAC)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|claimed| crate::sign::verify(&key, &bytes, claimed));
    if !signed {
        app.recorder.forged(mac.clone());
        refused(Refused::Unsigned);
        return Err(ApiError::Unauthorized(format!(
            "report for {mac} is not signed with its key (header {REPORT_HMAC})"
        )));
    }
    let report = parse_report(&bytes).map_err(|e| {
        refused(Refused::Malformed);
        ApiError::BadRequest(e)
    })?;
    let event = report.event;
    let report = parse_report(&bytes).map_err(ApiError::BadRequest)?;
    let mirror = app.push.as_ref().map(|p| (p, report.body.clone()));
    let taken = app
        .recorder
        .report(mac.clone(), now(), report.body, report.counter, report.high)
        .await?;
    if !taken {
        refused(Refused::Replayed);
        return Err(ApiError::Conflict(format!(
            "report counter {} was already used: a replay",
            report.counter
        )));
    }
    app.metrics.report(event);
    if let Some((push, body)) = mirror {
        push.report(&mac, &body);
    }
    Ok(Json(serde_json::json!({ "stored": true })).into_response())
}

/// A report's checked fields, and its body as stored.
#[derive(Debug)]
pub struct ParsedReport {
    pub body: String,
    /// One of [`EVENTS`].
    pub event: &'static str,
    /// The board's report counter: higher than any report before it.
    pub counter: i64,
    /// The highest generation the board has accepted, if it says.
    pub high: Option<i64>,
}

/// Checks a report body (after its HMAC): a JSON object with a known `event`, a positive
/// integer counter `n`, and an optional integer `high`.
pub fn parse_report(bytes: &[u8]) -> Result<ParsedReport, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("report is not JSON: {e}"))?;
    let object = value.as_object().ok_or("report is not a JSON object")?;
    let event = object
        .get("event")
        .and_then(|e| e.as_str())
        .ok_or("report has no \"event\" string")?;
    let Some(event) = EVENTS.iter().copied().find(|e| *e == event) else {
        return Err(format!(
            "unknown event {event:?}: expected one of {}",
            EVENTS.join(", ")
        ));
    };
    let counter = object
        .get("n")
        .and_then(|n| n.as_i64())
        .filter(|n| *n > 0)
        .ok_or("report has no counter \"n\" (a positive integer)")?;
    let high = match object.get("high") {
        None | Some(serde_json::Value::Null) => None,
        Some(h) => Some(
            h.as_i64()
                .filter(|h| *h >= 0)
                .ok_or("\"high\" is not a generation")?,
        ),
    };
    Ok(ParsedReport {
        body: value.to_string(),
        event,
        counter,
        high,
    })
}

#[cfg(test)]
mod report_fuzz {
    use super::parse_report;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client posts, parsing a report never panics, and what it accepts has
        /// a known event and a positive counter.
        #[test]
        fn arbitrary_report_bodies(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(r) = parse_report(&bytes) {
                prop_assert!(r.counter > 0);
            }
        }

        /// JSON-shaped bodies: accepted exactly when event, n and high are valid.
        #[test]
        fn json_report_bodies(
            event in prop_oneof![Just("boot"), Just("updated"), Just("exploded"), Just("")],
            n in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), Just("\"1\"".to_owned()), Just("null".to_owned())],
            high in prop_oneof![Just("null".to_owned()), any::<i64>().prop_map(|n| n.to_string()), Just("[]".to_owned())],
        ) {
            let body = format!("{{\"event\":\"{event}\",\"n\":{n},\"high\":{high}}}");
            let ok_event = event == "boot" || event == "updated";
            let ok_n = n.parse::<i64>().is_ok_and(|n| n > 0);
            let ok_high = high == "null" || high.parse::<i64>().is_ok_and(|h| h >= 0);
            prop_assert_eq!(parse_report(body.as_bytes()).is_ok(), ok_event && ok_n && ok_high, "{}", body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::device_of;

    #[test]
    fn device_paths() {
        assert_eq!(device_of("deadbeef1234").unwrap().as_str(), "deadbeef1234");
        assert_eq!(
            device_of("v1/deadbeef1234.json").unwrap().as_str(),
            "deadbeef1234"
        );
        assert!(device_of("latestversions").is_none());
        assert!(device_of("v1/deadbeef1234").is_none());
        assert!(device_of("m/x/1.py").is_none());
    }

    proptest::proptest! {
        /// Any path a client sends: no panic, and a MAC only for `{mac}` or `v1/{mac}.json`.
        #[test]
        fn device_of_takes_only_device_paths(path in "(v1/)?[0-9a-fA-F:./-]{0,16}(\\.json)?|\\PC{0,40}") {
            if let Some(mac) = device_of(&path) {
                let m = mac.as_str();
                proptest::prop_assert!(m.len() == 12 && m.bytes().all(|b| b.is_ascii_hexdigit()));
                proptest::prop_assert!(!m.bytes().any(|b| b.is_ascii_uppercase()));
                let lower = path.to_ascii_lowercase();
                proptest::prop_assert!(lower == m || lower == format!("v1/{m}.json"), "{path:?}");
            }
        }

        #[test]
        fn device_of_finds_every_mac(bytes in proptest::prelude::any::<[u8; 6]>()) {
            let mac = hex::encode(bytes);
            proptest::prop_assert_eq!(device_of(&mac).unwrap().to_string(), mac.clone());
            let json = format!("v1/{mac}.json");
            proptest::prop_assert_eq!(device_of(&json).unwrap().to_string(), mac);
        }
    }
}
