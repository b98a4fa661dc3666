//! The error type services and handlers share. Every variant maps to a
//! Matrix error response (see `api::error` for the HTTP side).

use http::StatusCode;
use ruma::api::{
    client::uiaa::UiaaInfo,
    error::{ErrorKind, LimitExceededErrorData, RetryAfter, UnknownTokenErrorData},
};

use crate::storage;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A standard Matrix error: status, errcode (and its extra fields), message.
    #[error("{status} {}: {message}", kind.errcode())]
    Matrix { status: StatusCode, kind: ErrorKind, message: String },
    /// User-interactive authentication must continue (401 with the UIA body).
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// A failure that is the server's fault; the message is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix { status, kind, message: message.into() }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    pub fn too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, "Request body too large")
    }

    pub fn unrecognized(status: StatusCode) -> Self {
        Self::new(status, ErrorKind::Unrecognized, "Unrecognized request")
    }

    /// A guest's token where guests may not go.
    pub fn guest_forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::GuestAccessForbidden, "Guest access not allowed")
    }

    pub fn unknown_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(UnknownTokenErrorData::new()),
            "Unknown access token",
        )
    }

    pub fn limit_exceeded(retry_after: std::time::Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        // Whole seconds, rounded up: the Retry-After header carries seconds, and
        // clients that read it must not come back before a token is free.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        data.retry_after = Some(RetryAfter::Delay(std::time::Duration::from_secs(secs.max(1))));
        Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorKind::LimitExceeded(data), "Too many requests")
    }

    /// An error whose errcode ruma has no variant for (`M_INVALID_SIGNATURE`, …).
    pub fn custom(status: StatusCode, errcode: &str, message: impl Into<String>) -> Self {
        let kind =
            serde_json::from_value(serde_json::json!({ "errcode": errcode })).unwrap_or(ErrorKind::Unknown);
        Self::new(status, kind, message)
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        Self::Internal(what.to_string())
    }
}
