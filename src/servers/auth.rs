//! The X-Matrix check of inbound federation requests (server-server API,
//! "Request Authentication"): the header names the origin, this server as
//! destination, and a key of the origin that signed the method, the URI,
//! the body and both names.

use http::StatusCode;
use ruma::{
    OwnedServerName,
    api::{
        error::ErrorKind,
        federation::authentication::{XMatrix, XMatrixExtractError},
    },
};

use super::Servers;
use crate::{Error, Result, util::now_ms};

fn unauthorized(message: impl Into<String>) -> Error {
    Error::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, message)
}

/// The origin of a request whose X-Matrix signature holds; 401
/// `M_UNAUTHORIZED` otherwise, 403 `M_FORBIDDEN` for a server this one does
/// not federate with.
pub async fn verify_request(
    servers: &Servers,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<OwnedServerName> {
    // As Synapse: no header is 401, a malformed one (a bad server name) 400.
    let header = XMatrix::extract_from_http_headers(&parts.headers).map_err(|e| match e {
        XMatrixExtractError::MissingAuthorizationHeader => unauthorized("Missing X-Matrix authorization"),
        e => Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized,
            format!("Malformed X-Matrix authorization: {e}"),
        ),
    })?;
    if header.destination.as_deref().is_some_and(|destination| destination != servers.server_name) {
        return Err(unauthorized("The X-Matrix destination is not this server"));
    }
    if !servers.config.allows(&header.origin) {
        return Err(Error::forbidden(format!("Federation with {} is not allowed", header.origin)));
    }
    if header.origin == servers.server_name {
        return Err(unauthorized("A request from this server's own name"));
    }
    let keys = servers.public_keys(&[(&header.origin, vec![header.key.as_str()])], now_ms()).await?;
    if !keys.get(header.origin.as_str()).is_some_and(|keys| keys.contains_key(header.key.as_str())) {
        return Err(unauthorized(format!("Cannot find key {} of {}", header.key, header.origin)));
    }
    // A body must be canonical JSON (no floats, integers within 2^53) to be
    // signed at all: anything else is bad JSON, as Synapse answers.
    if !body.is_empty() && serde_json::from_slice::<ruma::CanonicalJsonValue>(body).is_err() {
        return Err(Error::bad_json("The request body is not canonical JSON"));
    }
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    header
        .verify_http_request(&request, &servers.server_name, &keys)
        .map_err(|e| unauthorized(format!("Invalid X-Matrix signature: {e}")))?;
    // It is up: whatever waits to go to it goes now.
    servers.outbox.contacted(&header.origin);
    Ok(header.origin)
}
