//! `PUT /_matrix/federation/v1/3pid/onbind`: an identity server tells us an
//! address was bound to one of our users, with the invites it kept for that
//! address, each signed; each becomes a real invite (made by the inviter's
//! server when that is another). Identity servers POST it too (SyTest's,
//! older Sydent): both are served. `exchange_third_party_invite`: another
//! server asks us, the inviter's, to make such an invite.

use std::sync::Arc;

use axum::{Json, Router, body::Bytes, extract::State, routing::put};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};

use ruma::{api::federation::thirdparty::exchange_invite, events::StateEventType};

use crate::{
    Error, Result,
    api::{
        client::third_party,
        ruma::{Ruma, RumaRouter},
    },
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_matrix/federation/v1/3pid/onbind", put(onbind).post(onbind)).ruma(exchange)
}

async fn exchange(req: Ruma<exchange_invite::v1::Request>) -> Result<exchange_invite::v1::Response> {
    let services = &req.services;
    let body = &req.body;
    if body.kind != StateEventType::RoomMember || !services.users.is_local(&body.sender) {
        return Err(Error::bad_json("Not a third-party invite by a user of this server"));
    }
    let room_short =
        services.rooms.room_short(&body.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    super::check_acl(services, req.origin(), room_short)?;
    let content: Value =
        serde_json::from_str(body.content.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if content["membership"] != "invite" {
        return Err(Error::bad_json("Not an invite"));
    }
    let signed = &content["third_party_invite"]["signed"];
    third_party::accept(services, &body.room_id, &body.sender, &body.state_key, signed).await?;
    Ok(exchange_invite::v1::Response::default())
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
        let in_room = match services.rooms.room_short(&room_id)? {
            Some(short) => services.rooms.server_in_room(&services.config.server_name, short)?,
            None => false,
        };
        if !services.users.is_local(&sender) && in_room {
            // The inviter's server makes the invite, which reaches us with
            // the room's events: the identity server need not wait on it
            // (as with Synapse, which makes it here and sends it there).
            // Not in the room, we wait: the invite is here when we answer.
            let (services, signed) = (services.clone(), invite["signed"].clone());
            tokio::spawn(async move {
                if let Err(e) = third_party::accept(&services, &room_id, &sender, &target, &signed).await {
                    tracing::info!(
                        "third-party invite of {target} to {room_id} not made by {sender}'s server: {e}"
                    );
                }
            });
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
