//! Ending a room, a Hearth extension (`docs/ADMINISTRATION.md`):
//! `POST /_hearth/client/v1/rooms/{roomId}/end` `{"reason"?}` by one of
//! the room's admins (`rooms/ending.rs`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::post,
};
use ruma::OwnedRoomId;
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::{
        body::{OptionalBody, string_field},
        ruma::Authed,
    },
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_hearth/client/v1/rooms/{room_id}/end", post(end))
}

async fn end(
    State(services): State<Arc<Services>>,
    auth: Authed,
    Path(raw): Path<String>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    let room_id = OwnedRoomId::try_from(raw).map_err(|_| Error::invalid_param("Not a room ID"))?;
    let reason = string_field(&body, "reason")?;
    services.users.check_not_suspended(&auth.user)?;
    let ended = services.rooms.end_room(&room_id, &auth.user, reason).await?;
    Ok(Json(json!({"removed": ended.removed, "not_removed": ended.not_removed, "left": ended.left})))
}
