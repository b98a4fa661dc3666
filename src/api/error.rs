//! Matrix error responses: how an [`Error`] becomes HTTP.

use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::{StatusCode, header};
use ruma::api::{
    OutgoingResponseExt,
    error::{ErrorBody, ErrorKind, StandardErrorBody},
};

use crate::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind, message) = match self {
            Error::Matrix { status, kind, message } => (status, kind, message),
            Error::Uiaa(info) => {
                let body = serde_json::to_vec(&info).expect("UIA info serialises");
                return (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], body)
                    .into_response();
            }
            Error::Storage(e) => {
                tracing::error!("storage error: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Unknown, "Internal server error".into())
            }
            Error::Internal(e) => {
                tracing::error!("internal error: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Unknown, "Internal server error".into())
            }
        };
        if kind == ErrorKind::UserLocked {
            // A locked account's clients keep their data (the spec's soft logout).
            let body = serde_json::json!({"errcode": "M_USER_LOCKED", "error": message, "soft_logout": true});
            return (status, axum::Json(body)).into_response();
        }
        let error =
            ruma::api::error::Error::new(status, ErrorBody::Standard(StandardErrorBody::new(kind, message)));
        match error.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|b| axum::body::Body::from(b.freeze())),
            Err(e) => {
                tracing::error!("cannot serialise an error response: {e}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
