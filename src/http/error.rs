//! The one error type of the HTTP layer: each variant names its status, and every error goes
//! out as `{"error": "..."}`. Internal errors are logged and never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad MAC, bad JSON, bad report).
    #[error("{0}")]
    BadRequest(String),
    /// 401: a report without a valid HMAC under the device's key.
    #[error("{0}")]
    Unauthorized(String),
    /// 409: a report whose counter was already used (a replay).
    #[error("{0}")]
    Conflict(String),
    /// 404: no such file, or a MAC that is not a device.
    #[error("{0}")]
    NotFound(String),
    /// 405: only GET and HEAD read the tree.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413: a body over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 503: too busy right now; the board tries again later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: something on our side; the text is logged, not sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            Self::Internal(e) => {
                tracing::error!("internal error: {e:#}");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        (
            self.status_code(),
            Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    }
}
