//! JSON-object request bodies read with Synapse's rules (its admin API and
//! Hearth's own endpoints): `Body` requires an object (an empty body is
//! 400 `M_NOT_JSON`), `OptionalBody` takes an empty body as `{}`.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value};

use crate::{Error, Result, services::Services};

/// A JSON object body, required.
pub struct Body(pub Map<String, Value>);

/// The body, possibly empty (then `{}`).
pub struct OptionalBody(pub Map<String, Value>);

async fn read_object(
    req: axum::extract::Request,
    services: &Services,
    optional: bool,
) -> Result<Map<String, Value>> {
    let limit = services.config.limits.max_request_size;
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| Error::too_large())?;
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match crate::api::parse_json::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Error::bad_json("Content must be a JSON object.")),
        Err(_) => Err(Error::new(
            StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::NotJson,
            "Content not JSON.",
        )),
    }
}

impl axum::extract::FromRequest<Arc<Services>> for Body {
    type Rejection = Error;

    async fn from_request(req: axum::extract::Request, services: &Arc<Services>) -> Result<Self> {
        read_object(req, services, false).await.map(Self)
    }
}

impl axum::extract::FromRequest<Arc<Services>> for OptionalBody {
    type Rejection = Error;

    async fn from_request(req: axum::extract::Request, services: &Arc<Services>) -> Result<Self> {
        read_object(req, services, true).await.map(Self)
    }
}

/// An optional string field (absent or `null`: none), else 400
/// `M_INVALID_PARAM`.
pub fn string_field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid_param(format!("{name} must be a string"))),
    }
}
