//! Room state and sending: `PUT /rooms/{roomId}/send/{eventType}/{txnId}`,
//! `PUT/GET /rooms/{roomId}/state/{eventType}/{stateKey}`, `GET /rooms/{roomId}/state`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    message::send_message_event,
    state::{get_state_event_for_key, get_state_events, send_state_event},
};
use serde_json::Value;

use super::room::readable_state;
use crate::util::raw;
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
    let mut builder = PduBuilder::message(&body.event_type.to_string(), content(body.body.json())?);
    if builder.event_type == "m.room.redaction" {
        // Clients may send redactions here in every room version; the
        // builder puts `redacts` where the version wants it.
        let target = builder.content.as_object_mut().and_then(|c| c.remove("redacts"));
        let target = target
            .and_then(|t| t.as_str().and_then(|t| ruma::OwnedEventId::try_from(t).ok()))
            .ok_or_else(|| Error::bad_json("A redaction needs `redacts`, an event ID"))?;
        check_may_redact(&req, &body.room_id, &target)?;
        builder.redacts = Some(target);
    }
    let txn = Txn { device_id: req.device().clone(), txn_id: body.txn_id.to_string(), endpoint: "send" };
    let event_id = send_event(&req.services, req.user(), &body.room_id, builder, Some(txn)).await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

async fn put_state(req: Ruma<send_state_event::v3::Request>) -> Result<send_state_event::v3::Response> {
    let body = &req.body;
    let content = content(body.body.json())?;
    if body.event_type.to_string() == "m.room.canonical_alias" {
        check_canonical_alias(&req.services, &body.room_id, &content)?;
    }
    let builder = PduBuilder::state(&body.event_type.to_string(), &body.state_key, content);
    let event_id = send_event(&req.services, req.user(), &body.room_id, builder, None).await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

async fn get_state(
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let rooms = &req.services.rooms;
    let body = &req.body;
    let (_, state) = readable_state(&req.services, req.user(), &body.room_id)?;
    let pdu = rooms
        .state_event(&state, &body.event_type.to_string(), &body.state_key)?
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

async fn all_state(req: Ruma<get_state_events::v3::Request>) -> Result<get_state_events::v3::Response> {
    let rooms = &req.services.rooms;
    let (_, state) = readable_state(&req.services, req.user(), &req.body.room_id)?;
    let mut events = Vec::with_capacity(state.len());
    for event in state.values() {
        events.push(raw(rooms.client_event(*event, req.sender_device.as_deref(), req.user())?)?);
    }
    Ok(get_state_events::v3::Response::new(events))
}

/// New aliases in an `m.room.canonical_alias` event must be valid and, when
/// local, point to this room (`M_BAD_ALIAS`). Remote ones need federation
/// to check and are taken as they are.
fn check_canonical_alias(services: &Services, room_id: &ruma::RoomId, content: &Value) -> Result<()> {
    let rooms = &services.rooms;
    let room_short = rooms.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let current =
        rooms.current_state_event(room_short, "m.room.canonical_alias", "")?.map(|p| p.content_value());
    let listed = |c: &Value| -> Vec<String> {
        let mut all: Vec<String> = c["alias"].as_str().map(str::to_owned).into_iter().collect();
        if let Some(alt) = c["alt_aliases"].as_array() {
            all.extend(alt.iter().filter_map(|a| a.as_str().map(str::to_owned)));
        }
        all
    };
    if !content["alt_aliases"].is_null() && !content["alt_aliases"].is_array() {
        return Err(Error::invalid_param("alt_aliases must be a list"));
    }
    let existing = current.as_ref().map(listed).unwrap_or_default();
    for alias in listed(content).into_iter().filter(|a| !existing.contains(a)) {
        let alias = ruma::OwnedRoomAliasId::try_from(alias.as_str())
            .map_err(|_| Error::invalid_param(format!("{alias} is not a valid room alias")))?;
        if alias.server_name() == rooms.server_name()
            && rooms.alias(&alias)?.is_none_or(|r| r.room_id != room_id)
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::BadAlias,
                format!("{alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

/// The target exists in the room and is visible to the user, is not the
/// create event, and the user may redact it.
pub fn check_may_redact<T>(req: &Ruma<T>, room_id: &ruma::RoomId, event_id: &ruma::EventId) -> Result<()> {
    let rooms = &req.services.rooms;
    let not_found = || Error::not_found("Event not found.");
    let (room_short, record) = rooms.room(room_id)?.ok_or_else(not_found)?;
    let short = rooms.event_short(event_id)?.ok_or_else(not_found)?;
    let (Some(meta), Some(target)) = (rooms.event_meta(short)?, rooms.pdu_by_short(short)?) else {
        return Err(not_found());
    };
    if meta.room != room_short || !rooms.can_see(req.user(), &target, &meta)? {
        return Err(not_found());
    }
    if target.kind == ruma::events::TimelineEventType::RoomCreate {
        return Err(Error::forbidden("The create event cannot be redacted"));
    }
    let state = rooms.current_state(&record)?;
    if !rooms.may_redact(&state, req.user(), &target, &record.rules()?)? {
        return Err(Error::forbidden("You don't have permission to redact events from other users"));
    }
    Ok(())
}
