//! Room state and sending: `PUT /rooms/{roomId}/send/{eventType}/{txnId}`,
//! `PUT/GET /rooms/{roomId}/state/{eventType}/{stateKey}`, `GET /rooms/{roomId}/state`.

use std::sync::Arc;

use axum::Router;
use ruma::UserId;
use ruma::api::client::{
    message::send_message_event,
    state::{get_state_event_for_key, get_state_events, send_state_event},
};
use serde_json::{Map, Value};

use super::room::readable_state;
use crate::util::raw;
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::{builder::PduBuilder, pipeline::Txn},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send).ruma(post_send).ruma_state_key(put_state).ruma_state_key(get_state).ruma(all_state)
}

fn content(json: &serde_json::value::RawValue) -> Result<Map<String, Value>> {
    serde_json::from_str(json.get()).map_err(|_| Error::bad_json("Event content must be a JSON object"))
}

/// Sends a client's event, within the user's message rate limit. A retried
/// transaction answers with its event and costs nothing.
pub async fn send_event(
    services: &Services,
    user: &ruma::UserId,
    room_id: &ruma::RoomId,
    builder: PduBuilder,
    txn: Option<Txn>,
) -> Result<ruma::OwnedEventId> {
    if let Some(txn) = &txn
        && let Some(event_id) =
            services.rooms.txn_event(user, &txn.device_id, room_id, txn.endpoint, &txn.txn_id)?
    {
        return Ok(event_id);
    }
    let moderation = services.users.moderation(user);
    moderation.check_not_suspended()?;
    match moderation.message_rate() {
        Some(rate) => services.limiters.message.check_user_at(user, rate)?,
        None => services.limiters.message.check_user(user)?,
    }
    if moderation.shadow_banned {
        // Seems sent; goes nowhere (Synapse's shadow-ban).
        return ruma::OwnedEventId::try_from(format!("${}", crate::util::random_string(43)))
            .map_err(Error::internal);
    }
    services.rooms.send(room_id, user, builder, txn).await
}

async fn send(req: Ruma<send_message_event::v3::Request>) -> Result<send_message_event::v3::Response> {
    let body = &req.body;
    let txn = Txn { device_id: req.device().clone(), txn_id: body.txn_id.to_string(), endpoint: "send" };
    let event_type = body.event_type.to_string();
    let event_id = send_message(&req, &body.room_id, &event_type, body.body.json(), Some(txn)).await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

/// `POST /rooms/{roomId}/send/{eventType}`, without a transaction ID: gone
/// from the spec, still served by Synapse and used by older bots.
pub(super) mod post_send {
    use ruma::{
        OwnedEventId, OwnedRoomId,
        api::{auth_scheme::AccessToken, request, response},
        metadata,
    };
    use serde_json::value::RawValue;

    metadata! {
        method: POST,
        authentication: AccessToken,
        rate_limited: true,
        history: {
            unstable => "/_matrix/client/api/v1/rooms/{room_id}/send/{event_type}",
            1.0 => "/_matrix/client/r0/rooms/{room_id}/send/{event_type}",
            1.1 => "/_matrix/client/v3/rooms/{room_id}/send/{event_type}",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_type: String,
        #[ruma_api(body)]
        pub body: Box<RawValue>,
    }

    #[response]
    pub struct Response {
        pub event_id: OwnedEventId,
    }
}

async fn post_send(req: Ruma<post_send::Request>) -> Result<post_send::Response> {
    let body = &req.body;
    let event_id = send_message(&req, &body.room_id, &body.event_type, &body.body, None).await?;
    Ok(post_send::Response { event_id })
}

/// A message-like event from a client; redactions may come this way in
/// every room version (the builder puts `redacts` where the version wants it).
async fn send_message<T>(
    req: &Ruma<T>,
    room_id: &ruma::RoomId,
    event_type: &str,
    content_json: &serde_json::value::RawValue,
    txn: Option<Txn>,
) -> Result<ruma::OwnedEventId> {
    let mut builder = PduBuilder::message(event_type, Value::Object(content(content_json)?));
    if builder.event_type == "m.room.redaction" {
        let target = builder.content.as_object_mut().and_then(|c| c.remove("redacts"));
        let target = target
            .and_then(|t| t.as_str().and_then(|t| ruma::OwnedEventId::try_from(t).ok()))
            .ok_or_else(|| Error::bad_json("A redaction needs `redacts`, an event ID"))?;
        check_may_redact(req, room_id, &target)?;
        builder.redacts = Some(target);
    }
    send_event(&req.services, req.user(), room_id, builder, txn).await
}

async fn put_state(req: Ruma<send_state_event::v3::Request>) -> Result<send_state_event::v3::Response> {
    let body = &req.body;
    let content = content(body.body.json())?;
    let event_type = body.event_type.to_string();
    if event_type == "m.room.member" {
        // Membership takes the membership endpoints' path: never a
        // client-named authoriser, a remote invite signed through `/invite`.
        let target = UserId::parse(body.state_key.as_str())
            .map_err(|_| Error::bad_json("The state key of m.room.member must be a user ID"))?;
        req.services.limiters.membership.check_user(req.user())?;
        let event_id = crate::federation::membership::change_membership(
            &req.services,
            &body.room_id,
            req.user(),
            &target,
            content,
        )
        .await?;
        return Ok(send_state_event::v3::Response::new(event_id));
    }
    let content = Value::Object(content);
    if event_type == "m.room.canonical_alias" {
        check_canonical_alias(&req.services, &body.room_id, &content)?;
    }
    let builder = PduBuilder::state(&event_type, &body.state_key, content);
    let event_id = send_event(&req.services, req.user(), &body.room_id, builder, None).await?;
    if event_type == "m.room.guest_access" {
        req.services.rooms.remove_guests(&body.room_id).await?;
    }
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
    if meta.room != room_short {
        return Err(Error::invalid_param("Cannot redact an event of another room"));
    }
    if !rooms.can_see(req.user(), &target, &meta)? {
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
