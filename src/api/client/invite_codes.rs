//! Room invite codes, a Hearth extension (`docs/ADMINISTRATION.md`):
//! `POST/GET /_hearth/client/v1/rooms/{roomId}/invite_codes` (room admins
//! make and list), `DELETE …/invite_codes/{code}` (revoke),
//! `GET /_hearth/client/v1/invite_codes/{code}` (what it leads to) and
//! `POST /_hearth/client/v1/invite_codes/{code}/redeem` (invited and joined).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{delete, get, post},
};
use ruma::OwnedRoomId;
use serde_json::{Value, json};

use crate::{Error, Result, api::ruma::Authed, rooms::invite_codes, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const V1: &str = "/_hearth/client/v1";
    router
        .route(&format!("{V1}/rooms/{{room_id}}/invite_codes"), post(create).get(list))
        .route(&format!("{V1}/rooms/{{room_id}}/invite_codes/{{code}}"), delete(revoke))
        .route(&format!("{V1}/invite_codes/{{code}}"), get(show))
        .route(&format!("{V1}/invite_codes/{{code}}/redeem"), post(redeem))
}

fn room_id(raw: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(raw).map_err(|_| Error::invalid_param("Not a room ID"))
}

/// An optional non-negative integer field of the body.
fn count(body: &serde_json::Map<String, Value>, name: &str) -> Result<Option<u64>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|&n| n > 0)
            .map(Some)
            .ok_or_else(|| Error::invalid_param(format!("{name} must be a positive integer"))),
    }
}

/// `POST …/rooms/{roomId}/invite_codes` with `expires_in_ms` (default 7
/// days) and `max_uses` (default unlimited).
async fn create(
    State(services): State<Arc<Services>>,
    auth: Authed,
    Path(raw): Path<String>,
    crate::api::body::OptionalBody(body): crate::api::body::OptionalBody,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    let lifetime = count(&body, "expires_in_ms")?;
    let max_uses = count(&body, "max_uses")?;
    let (code, record) = services.rooms.create_invite_code(&room_id, &auth.user, lifetime, max_uses)?;
    tracing::info!("{} made an invite code for {room_id}", auth.user);
    Ok(Json(record.to_json(&code)))
}

/// `GET …/rooms/{roomId}/invite_codes`
async fn list(
    State(services): State<Arc<Services>>,
    auth: Authed,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    services.rooms.check_room_admin(&room_id, &auth.user, invite_codes::MANAGERS_ONLY)?;
    let codes = services.rooms.invite_codes(Some(&room_id))?;
    Ok(Json(json!({"invite_codes": codes.iter().map(|(c, r)| r.to_json(c)).collect::<Vec<_>>()})))
}

/// `DELETE …/rooms/{roomId}/invite_codes/{code}`
async fn revoke(
    State(services): State<Arc<Services>>,
    auth: Authed,
    Path((raw, code)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    services.rooms.check_room_admin(&room_id, &auth.user, invite_codes::MANAGERS_ONLY)?;
    services.rooms.revoke_invite_code(Some(&room_id), &code)?;
    tracing::info!("{} revoked an invite code of {room_id}", auth.user);
    Ok(Json(json!({})))
}

/// `GET …/invite_codes/{code}`: the room it leads to and whether it works.
async fn show(
    State(services): State<Arc<Services>>,
    _: Authed,
    Path(code): Path<String>,
) -> Result<Json<Value>> {
    let record = services.rooms.invite_code(&code)?.ok_or_else(invite_codes::unknown_code)?;
    let mut body = json!({"room_id": record.room_id, "expires_ts": record.expires_ts, "valid": record.unusable(crate::util::now_ms()).is_none()});
    if let Some(stats) = services.rooms.stats_of(&record.room_id)? {
        body["name"] = json!(stats.name);
        body["avatar_url"] = json!(stats.avatar);
        body["topic"] = json!(stats.topic);
        body["num_joined_members"] = json!(stats.joined_members);
    }
    Ok(Json(body))
}

/// `POST …/invite_codes/{code}/redeem`
async fn redeem(
    State(services): State<Arc<Services>>,
    auth: Authed,
    Path(code): Path<String>,
) -> Result<Json<Value>> {
    services.users.check_not_suspended(&auth.user)?;
    services.limiters.membership.check_user(&auth.user)?;
    let room_id = invite_codes::redeem(&services.rooms, &code, &auth.user).await?;
    tracing::info!("{} joined {room_id} with an invite code", auth.user);
    Ok(Json(json!({"room_id": room_id})))
}
