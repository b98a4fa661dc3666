//! Room state and sending: `PUT /rooms/{roomId}/send/{eventType}/{txnId}`,
//! `PUT/GET /rooms/{roomId}/state/{eventType}/{stateKey}`, `GET /rooms/{roomId}/state`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    api::client::{
        message::send_message_event,
        state::{get_state_event_for_key, get_state_events, send_state_event},
    },
    events::room::member::MembershipState,
};
use serde_json::Value;

use super::room::{check_can_read, raw};
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::{builder::PduBuilder, pipeline::Txn},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send).ruma_state_key(put_state).ruma_state_key(get_state).ruma(all_state)
}

fn content(json: &serde_json::value::RawValue) -> Result<Value> {
    match serde_json::from_str(json.get()) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(Error::bad_json("Event content must be a JSON object")),
    }
}

/// Sends a client's event, within the user's message rate limit.
pub async fn send_event(
    services: &Services,
    user: &ruma::UserId,
    room_id: &ruma::RoomId,
    builder: PduBuilder,
    txn: Option<Txn>,
) -> Result<ruma::OwnedEventId> {
    services.limiters.message.check(user.as_str()).map_err(Error::limit_exceeded)?;
    services.rooms.send(room_id, user, builder, txn).await
}

async fn send(req: Ruma<send_message_event::v3::Request>) -> Result<send_message_event::v3::Response> {
    let body = &req.body;
    let builder = PduBuilder::message(&body.event_type.to_string(), content(body.body.json())?);
    let txn = Txn { device_id: req.device().clone(), txn_id: body.txn_id.to_string() };
    let event_id = send_event(&req.services, req.user(), &body.room_id, builder, Some(txn)).await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

async fn put_state(req: Ruma<send_state_event::v3::Request>) -> Result<send_state_event::v3::Response> {
    let body = &req.body;
    let builder =
        PduBuilder::state(&body.event_type.to_string(), &body.state_key, content(body.body.json())?);
    let event_id = send_event(&req.services, req.user(), &body.room_id, builder, None).await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

async fn get_state(
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let rooms = &req.services.rooms;
    let body = &req.body;
    let room_short =
        rooms.room_short(&body.room_id)?.ok_or_else(|| Error::forbidden("You are not in this room."))?;
    check_current_reader(&req, room_short)?;
    let pdu = rooms
        .current_state_event(room_short, &body.event_type.to_string(), &body.state_key)?
        .ok_or_else(|| Error::not_found("Event not found."))?;
    let value = match body.format {
        get_state_event_for_key::v3::StateEventFormat::Event => {
            let short = rooms
                .event_short(&pdu.event_id)?
                .ok_or_else(|| Error::internal("state event without short ID"))?;
            rooms.client_event(short, req.sender_device.as_deref(), req.user())?
        }
        _ => pdu.content_value(),
    };
    Ok(get_state_event_for_key::v3::Response::new(
        serde_json::value::to_raw_value(&value).map_err(Error::internal)?,
    ))
}

/// Current state is for members (or anyone, in a world-readable room).
fn check_current_reader<T>(req: &Ruma<T>, room_short: u64) -> Result<()> {
    check_can_read(&req.services, req.user(), room_short)?;
    let membership = req.services.rooms.membership(req.user(), room_short)?;
    match membership.as_deref().map(MembershipState::from) {
        Some(MembershipState::Join) | None => Ok(()),
        // Former members see no current state (Synapse shows the state when
        // they left; Hearth does not yet).
        _ => check_world_readable(req, room_short),
    }
}

fn check_world_readable<T>(req: &Ruma<T>, room_short: u64) -> Result<()> {
    let world_readable = req
        .services
        .rooms
        .current_state_event(room_short, "m.room.history_visibility", "")?
        .is_some_and(|pdu| pdu.content_value()["history_visibility"] == "world_readable");
    if world_readable { Ok(()) } else { Err(Error::forbidden("You are not in this room.")) }
}

async fn all_state(req: Ruma<get_state_events::v3::Request>) -> Result<get_state_events::v3::Response> {
    let rooms = &req.services.rooms;
    let (room_short, record) =
        rooms.room(&req.body.room_id)?.ok_or_else(|| Error::forbidden("You are not in this room."))?;
    check_current_reader(&req, room_short)?;
    let state = rooms.current_state(&record)?;
    let mut events = Vec::with_capacity(state.len());
    for event in state.values() {
        events.push(raw(rooms.client_event(*event, req.sender_device.as_deref(), req.user())?)?);
    }
    Ok(get_state_events::v3::Response::new(events))
}
