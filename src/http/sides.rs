//! Which side a listener serves. Without `--admin-listen`, the one port serves both boards
//! and the admin side (`/admin...`, `/metrics`). With it, the admin side moves to its own
//! TLS listener: the board port then refuses admin paths with a `403` naming the https
//! address (so the token is not sent over the LAN in clear again), and the admin port
//! serves nothing but the admin side.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use std::net::SocketAddr;

/// Whether `path` belongs to the admin side: everything under `/admin`, and `/metrics`.
pub fn is_admin_path(path: &str) -> bool {
    path == "/metrics" || path == "/admin" || path.starts_with("/admin/")
}

/// What one listener answers.
#[derive(Debug, Clone)]
pub enum Side {
    /// Boards and the admin side, on one port (no `--admin-listen`).
    Both,
    /// Boards only; the admin side is at `admin` (https).
    Boards { admin: SocketAddr },
    /// The admin side only; boards are at `boards` (http).
    Admin { boards: SocketAddr },
}

/// `https://HOST:PORT/` or `http://HOST:PORT/` of `addr` as the client that sent `req`
/// should write it: the address itself, or when it is unspecified (0.0.0.0, [::]) the host
/// the client reached this server at.
fn url_for(scheme: &str, addr: SocketAddr, req: &Request) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    url_with_host(scheme, addr, host)
}

/// [`url_for`], given the request's `Host` header, if any.
pub fn url_with_host(scheme: &str, addr: SocketAddr, host_header: Option<&str>) -> String {
    let host = if addr.ip().is_unspecified() {
        host_header
            .map(|h| host_of(h.trim()).to_owned())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .unwrap_or_else(|| "SERVER".to_owned())
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("{scheme}://{host}:{}/", addr.port())
}

/// The host of a `Host` header: `name`, `name:port`, `1.2.3.4:port`, `[::1]:port`, `[::1]`.
fn host_of(h: &str) -> &str {
    match h.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (name.ends_with(']') || !name.contains(':')) =>
        {
            name
        }
        _ => h,
    }
}

/// Marks a request that came over the TLS port (the dashboard's login cookie is then
/// `Secure`: a browser never sends it over plain HTTP to the boards' port).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Answers only what this listener's side serves: None lets `req` through (marked
/// [`OverTls`] on the admin side's own port), Some is the answer to a request for the other
/// side. `admin` is [`is_admin_path`] of its path.
pub fn gate(side: &Side, admin: bool, req: &mut Request) -> Option<Response> {
    match (side, admin) {
        (Side::Both, _) | (Side::Boards { .. }, false) => None,
        (Side::Admin { .. }, true) => {
            req.extensions_mut().insert(OverTls);
            None
        }
        (Side::Boards { admin }, true) => Some(super::admin::error(
            StatusCode::FORBIDDEN,
            format!(
                "the admin side is served over TLS only, at {}: this port serves boards \
                 (if this request carried the admin token, it crossed the network in clear: \
                 `mpfleet token rotate`)",
                url_for("https", *admin, req)
            ),
        )),
        // The admin side's root is its dashboard.
        (Side::Admin { .. }, false) if req.uri().path() == "/" => Some(
            axum::response::IntoResponse::into_response(axum::response::Redirect::to("/admin/")),
        ),
        (Side::Admin { boards }, false) => Some(super::admin::error(
            StatusCode::NOT_FOUND,
            format!(
                "this port serves only the admin side (/admin/, /metrics); boards use {}",
                url_for("http", *boards, req)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_a_host_header() {
        for (h, host) in [
            ("fleet.lan", "fleet.lan"),
            ("fleet.lan:8080", "fleet.lan"),
            ("10.0.0.2:8080", "10.0.0.2"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(super::host_of(h), host, "{h}");
        }
    }

    #[test]
    fn urls_name_the_host_the_client_used_when_bound_to_any() {
        let any: std::net::SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let one: std::net::SocketAddr = "10.0.0.2:8443".parse().unwrap();
        let url = super::url_with_host;
        assert_eq!(
            url("https", any, Some("fleet.lan:8080")),
            "https://fleet.lan:8443/"
        );
        assert_eq!(url("https", any, Some("[::1]:8080")), "https://[::1]:8443/");
        assert_eq!(url("https", any, Some("x\"y")), "https://SERVER:8443/");
        assert_eq!(url("https", any, None), "https://SERVER:8443/");
        assert_eq!(url("http", one, Some("fleet.lan")), "http://10.0.0.2:8443/");
    }
}
