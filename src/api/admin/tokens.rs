//! Synapse's admin API for registration tokens
//! (`/_synapse/admin/v1/registration_tokens`): list, make, change, revoke;
//! and Hearth's for every room's invite codes
//! (`/_hearth/admin/v1/invite_codes`): list, revoke.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{self, get, post},
};
use ruma::OwnedRoomId;
use serde_json::{Map, Value, json};

use super::{Admin, Body, Params};
use crate::{
    Error, Result,
    services::Services,
    users::registration_tokens::{Limits, RegistrationToken},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const PATH: &str = "/_synapse/admin/v1/registration_tokens";
    router
        .route(PATH, get(list))
        .route(&format!("{PATH}/new"), post(create))
        .route(&format!("{PATH}/{{token}}"), get(one).put(update).delete(delete))
        .route("/_hearth/admin/v1/invite_codes", get(invite_codes))
        .route("/_hearth/admin/v1/invite_codes/{code}", routing::delete(revoke_invite_code))
}

fn described(token: &str, record: &RegistrationToken) -> Value {
    json!({
        "token": token,
        "uses_allowed": record.uses_allowed,
        "pending": record.pending,
        "completed": record.completed,
        "expiry_time": record.expiry_time,
    })
}

fn no_such(token: &str) -> Error {
    Error::not_found(format!("No such registration token: {token}"))
}

/// An optional non-negative integer field: absent `None`, null `Some(None)`.
fn nullable_int(body: &Map<String, Value>, name: &str, error: &str) -> Result<Option<Option<u64>>> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => value.as_u64().map(|n| Some(Some(n))).ok_or_else(|| Error::invalid_param(error)),
    }
}

const USES_ALLOWED: &str = "uses_allowed must be a non-negative integer or null";
const EXPIRY_TIME: &str = "expiry_time must be an integer or null";

/// `GET /_synapse/admin/v1/registration_tokens[?valid=true|false]`
async fn list(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Result<Json<Value>> {
    let valid = params.bool("valid")?;
    let tokens = services.users.registration_tokens.list(valid)?;
    let tokens: Vec<Value> = tokens.iter().map(|(token, record)| described(token, record)).collect();
    Ok(Json(json!({"registration_tokens": tokens})))
}

/// `POST /_synapse/admin/v1/registration_tokens/new`
async fn create(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Body(body): Body,
) -> Result<Json<Value>> {
    let token = match body.get("token") {
        None => None,
        Some(Value::String(token)) => Some(token.clone()),
        Some(_) => return Err(Error::invalid_param("token must be a string")),
    };
    let length = match body.get("length") {
        None => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| Error::invalid_param("length must be an integer"))?),
    };
    let uses_allowed = nullable_int(&body, "uses_allowed", USES_ALLOWED)?.flatten();
    let expiry_time = nullable_int(&body, "expiry_time", EXPIRY_TIME)?.flatten();
    let (token, record) =
        services.users.registration_tokens.create(token, length, uses_allowed, expiry_time)?;
    tracing::info!(
        "{} made a registration token (uses: {uses_allowed:?}, expiry: {expiry_time:?})",
        admin.user
    );
    Ok(Json(described(&token, &record)))
}

/// `GET /_synapse/admin/v1/registration_tokens/{token}`
async fn one(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(token): Path<String>,
) -> Result<Json<Value>> {
    let record = services.users.registration_tokens.get(&token)?.ok_or_else(|| no_such(&token))?;
    Ok(Json(described(&token, &record)))
}

/// `PUT /_synapse/admin/v1/registration_tokens/{token}`
async fn update(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(token): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let limits = Limits {
        uses_allowed: nullable_int(&body, "uses_allowed", USES_ALLOWED)?,
        expiry_time: nullable_int(&body, "expiry_time", EXPIRY_TIME)?,
    };
    let record = services.users.registration_tokens.update(&token, limits)?.ok_or_else(|| no_such(&token))?;
    Ok(Json(described(&token, &record)))
}

/// `DELETE /_synapse/admin/v1/registration_tokens/{token}`
async fn delete(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(token): Path<String>,
) -> Result<Json<Value>> {
    if !services.users.registration_tokens.delete(&token)? {
        return Err(no_such(&token));
    }
    tracing::info!("{} revoked a registration token", admin.user);
    Ok(Json(json!({})))
}

/// `GET /_hearth/admin/v1/invite_codes` (`room_id`, `valid`): every room's
/// invite codes, newest first.
async fn invite_codes(
    State(services): State<Arc<Services>>,
    _: Admin,
    params: Params,
) -> Result<Json<Value>> {
    let room = params
        .str("room_id")
        .map(OwnedRoomId::try_from)
        .transpose()
        .map_err(|_| Error::invalid_param("Not a room ID"))?;
    let valid = params.bool("valid")?;
    let codes: Vec<Value> = services
        .rooms
        .invite_codes(room.as_deref())?
        .iter()
        .map(|(code, record)| record.to_json(code))
        .filter(|code| valid.is_none_or(|valid| code["valid"] == valid))
        .collect();
    Ok(Json(json!({"total": codes.len(), "invite_codes": codes})))
}

/// `DELETE /_hearth/admin/v1/invite_codes/{code}`: revoked.
async fn revoke_invite_code(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(code): Path<String>,
) -> Result<Json<Value>> {
    services.rooms.revoke_invite_code(None, &code)?;
    tracing::info!("{} revoked invite code {code}", admin.user);
    Ok(Json(json!({})))
}
