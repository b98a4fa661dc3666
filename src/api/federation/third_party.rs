//! `PUT /_matrix/federation/v1/3pid/onbind`: an identity server tells us an
//! address was bound to one of our users, with the invites it kept for that
//! address, each signed; each becomes a real invite. Identity servers POST
//! it too (SyTest's, older Sydent): both are served.

use std::sync::Arc;

use axum::{Json, Router, body::Bytes, extract::State, routing::put};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};

use crate::{Error, Result, api::client::third_party, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_matrix/federation/v1/3pid/onbind", put(onbind).post(onbind))
}

async fn onbind(State(services): State<Arc<Services>>, body: Bytes) -> Result<Json<Value>> {
    let body: Value = crate::api::parse_json(&body)?;
    let mut last_error = None;
    for invite in body["invites"].as_array().into_iter().flatten() {
        let parsed = (
            invite["room_id"].as_str().and_then(|r| OwnedRoomId::try_from(r).ok()),
            invite["sender"].as_str().and_then(|s| OwnedUserId::try_from(s).ok()),
            invite["mxid"].as_str().and_then(|m| OwnedUserId::try_from(m).ok()),
        );
        let (Some(room_id), Some(sender), Some(target)) = parsed else {
            last_error = Some(Error::bad_json("An invite needs room_id, sender and mxid"));
            continue;
        };
        if !services.users.is_local(&target) {
            last_error = Some(Error::invalid_param("The invitee is not a user of this server"));
            continue;
        }
        if let Err(e) = third_party::accept(&services, &room_id, &sender, &target, &invite["signed"]).await {
            tracing::info!("third-party invite of {target} to {room_id} not accepted: {e}");
            last_error = Some(e);
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(Json(json!({}))),
    }
}
