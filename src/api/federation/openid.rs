//! `GET /_matrix/federation/v1/openid/userinfo`: which user an OpenID token
//! belongs to. Served on every listener: integrations and widgets ask the
//! client address too (SyTest does).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde_json::{Value, json};

use crate::{Error, Result, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_matrix/federation/v1/openid/userinfo", get(userinfo))
}

/// A missing token is 401 `M_MISSING_TOKEN`, an unknown or expired one 401
/// `M_UNKNOWN_TOKEN` (as Synapse; ruma's typed endpoint would say 400).
async fn userinfo(
    State(services): State<Arc<Services>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let token = query.get("access_token").ok_or_else(|| {
        Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Access Token required")
    })?;
    let user = services.users.openid_user(token).ok_or_else(Error::unknown_token)?;
    Ok(Json(json!({ "sub": user })))
}
