//! Endpoints gone from the spec that Synapse still serves and older clients
//! and bots still call: `GET /events` (the event stream), `GET /initialSync`
//! and `GET /rooms/{roomId}/initialSync`. Each is a `/sync` underneath,
//! reshaped; none of them delivers or acknowledges send-to-device messages,
//! which stay for `/sync`.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::{OwnedRoomId, RoomId, UInt, api::client::filter::FilterDefinition};
use serde_json::{Value, json};

use crate::api::ruma::json_reply;
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter, response_json},
    services::Services,
    sync::{self, Params},
};

pub(super) mod endpoints {
    use ruma::{
        OwnedRoomId,
        api::{auth_scheme::AccessToken, request},
        metadata,
    };

    pub use crate::api::ruma::JsonResponse as Response;

    pub mod events {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            history: {
                1.0 => "/_matrix/client/r0/events",
                1.1 => "/_matrix/client/v3/events",
            }
        }

        #[request]
        pub struct Request {
            #[ruma_api(query)]
            #[serde(default)]
            pub from: Option<String>,
            #[ruma_api(query)]
            #[serde(default)]
            pub timeout: Option<u64>,
            #[ruma_api(query)]
            #[serde(default)]
            pub room_id: Option<OwnedRoomId>,
            #[ruma_api(query)]
            #[serde(default)]
            pub limit: Option<u32>,
        }
    }

    pub mod initial_sync {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            history: {
                1.0 => "/_matrix/client/r0/initialSync",
                1.1 => "/_matrix/client/v3/initialSync",
            }
        }

        #[request]
        pub struct Request {
            #[ruma_api(query)]
            #[serde(default)]
            pub limit: Option<u32>,
            #[ruma_api(query)]
            #[serde(default)]
            pub archived: Option<bool>,
        }
    }

    pub mod room_initial_sync {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            history: {
                1.0 => "/_matrix/client/r0/rooms/{room_id}/initialSync",
                1.1 => "/_matrix/client/v3/rooms/{room_id}/initialSync",
            }
        }

        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub room_id: OwnedRoomId,
            #[ruma_api(query)]
            #[serde(default)]
            pub limit: Option<u32>,
        }
    }
}

/// Synapse's long-poll default for `/events`.
const DEFAULT_EVENTS_TIMEOUT: Duration = Duration::from_secs(30);
/// Synapse's default number of messages per room in the initial syncs.
const DEFAULT_INITIAL_LIMIT: u32 = 10;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(events).ruma(initial_sync).ruma(room_initial_sync)
}

/// A `/sync` for the legacy endpoints, as JSON.
async fn sync_json<T>(
    req: &Ruma<T>,
    since: Option<u64>,
    timeout: Duration,
    filter: FilterDefinition,
    peek: Option<u64>,
    upto: Option<u64>,
) -> Result<Value> {
    let params = Params {
        user: req.user().clone(),
        device: req.device().clone(),
        since,
        to_device_since: None,
        full_state: false,
        filter,
        timeout,
        // The initial syncs give the state at the end of the messages.
        use_state_after: since.is_none(),
        to_device: false,
        peek,
        upto,
    };
    Ok(response_json(sync::sync(&req.services, &params).await?)?.1)
}

fn timeline_filter(
    limit: Option<u32>,
    rooms: Option<Vec<OwnedRoomId>>,
    include_leave: bool,
) -> FilterDefinition {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = limit.map(UInt::from);
    filter.room.rooms = rooms;
    filter.room.include_leave = include_leave;
    filter
}

/// The events of `section.events` in the old (v1) format clients of these
/// endpoints expect: with the room ID, and see [`v1`].
fn with_room_id(section: &Value, room_id: &str) -> Vec<Value> {
    let events = section["events"].as_array().cloned().unwrap_or_default();
    events
        .into_iter()
        .map(|mut event| {
            event["room_id"] = json!(room_id);
            v1(event)
        })
        .collect()
}

/// A client event as the v1 API sent it (Synapse still does): `user_id`
/// beside `sender`, and `age`, `prev_content`, `replaces_state` and
/// `redacted_because` at the top level as well as in `unsigned`.
fn v1(mut event: Value) -> Value {
    let Some(object) = event.as_object_mut() else { return event };
    if let Some(sender) = object.get("sender").cloned() {
        object.insert("user_id".to_owned(), sender);
    }
    if let Some(unsigned) = object.get("unsigned").and_then(Value::as_object).cloned() {
        for key in ["age", "prev_content", "replaces_state", "redacted_because"] {
            if let Some(value) = unsigned.get(key) {
                object.insert(key.to_owned(), value.clone());
            }
        }
    }
    event
}

/// Presence events as these endpoints carried them: `user_id` in the content.
fn presence_events(body: &Value) -> Vec<Value> {
    let events = body["presence"]["events"].as_array().cloned().unwrap_or_default();
    events
        .into_iter()
        .map(|mut event| {
            if event["content"].get("user_id").is_none() {
                event["content"]["user_id"] = event["sender"].clone();
            }
            event
        })
        .collect()
}

/// The user's current member event in a room, as a client event.
fn member_event<T>(req: &Ruma<T>, room_id: &RoomId) -> Result<Option<Value>> {
    let rooms = &req.services.rooms;
    let Some(room_short) = rooms.room_short(room_id)? else { return Ok(None) };
    let Some(pdu) = rooms.current_state_event(room_short, "m.room.member", req.user().as_str())? else {
        return Ok(None);
    };
    let Some(short) = rooms.event_short(&pdu.event_id)? else { return Ok(None) };
    Ok(Some(v1(rooms.client_event(short, req.sender_device.as_deref(), req.user())?)))
}

/// The stream position of the `n`th timeline event after `from` in the
/// user's rooms (or the peeked one); `None` when there are fewer.
fn nth_event_after<T>(req: &Ruma<T>, from: u64, n: u32, peek: Option<u64>) -> Result<Option<u64>> {
    let rooms = &req.services.rooms;
    let mine: std::collections::HashSet<u64> =
        rooms.memberships(req.user())?.into_iter().map(|(room, _)| room).chain(peek).collect();
    let start = from.saturating_add(1).to_be_bytes();
    let mut seen = 0;
    for (k, v) in
        req.services.db.scan_range(&crate::storage::maps::STREAM, b"", Some(&start), false, 10_000)?
    {
        let room = v.get(8..16).map(crate::storage::decode_u64).transpose()?;
        if room.is_some_and(|room| mine.contains(&room)) {
            seen += 1;
            if seen == n {
                return Ok(Some(crate::storage::decode_u64(&k)?));
            }
        }
    }
    Ok(None)
}

/// The room a user who is not in it may look into: a world-readable one.
fn peekable<T>(req: &Ruma<T>, room_id: &RoomId) -> Result<Option<u64>> {
    let rooms = &req.services.rooms;
    let Some(short) = rooms.room_short(room_id)? else { return Ok(None) };
    Ok(rooms.is_world_readable(short)?.then_some(short))
}

/// `GET /events`: what happened since `from` in the user's rooms, as one
/// list of events; long-polls up to `timeout` ms when nothing did. With
/// `room_id`, that room only: one the user is joined to, or else a
/// world-readable one to peek into (as guests do).
async fn events(req: Ruma<endpoints::events::Request>) -> Result<endpoints::Response> {
    let body = &req.body;
    let rooms = &req.services.rooms;
    let peek = match &body.room_id {
        None if req.sender_is_guest => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Guest users must specify room_id param",
            ));
        }
        None => None,
        Some(room_id) => {
            let joined = match rooms.room_short(room_id)? {
                Some(short) => rooms.membership(req.user(), short)?.as_deref() == Some("join"),
                None => false,
            };
            match joined {
                true => None,
                false => Some(
                    peekable(&req, room_id)?
                        .ok_or_else(|| Error::forbidden("Non-joined access not allowed"))?,
                ),
            }
        }
    };
    // Polling events counts as syncing: the user is online (as Synapse;
    // not guests).
    let _syncing = match req.sender_is_guest {
        true => None,
        false => {
            Some(super::sync::syncing(&req.services, req.user(), &ruma::presence::PresenceState::Online)?)
        }
    };
    // An empty `from` is no token (as Synapse, and as "END"): from now.
    let from = match body.from.as_deref().filter(|t| !t.is_empty() && *t != "END") {
        Some(token) => sync::parse_token(token)?,
        None => req.services.stream.visible(),
    };
    let timeout = body.timeout.map_or(DEFAULT_EVENTS_TIMEOUT, Duration::from_millis);
    // With a limit, the oldest events after `from` first: the window ends
    // at the limit-th event of the user's rooms, and `end` there.
    let upto = match body.limit {
        Some(limit) => nth_event_after(&req, from, limit.max(1), peek)?,
        None => None,
    };
    let filter = timeline_filter(body.limit, body.room_id.clone().map(|r| vec![r]), true);
    let synced = sync_json(&req, Some(from), timeout, filter, peek, upto).await?;
    let mut chunk = Vec::new();
    let rooms = &synced["rooms"];
    for section in ["join", "leave"] {
        for (room_id, room) in rooms[section].as_object().into_iter().flatten() {
            chunk.extend(with_room_id(&room["timeline"], room_id));
            chunk.extend(with_room_id(&room["ephemeral"], room_id));
        }
    }
    for room_id in rooms["invite"].as_object().into_iter().flatten().map(|(id, _)| id) {
        let room_id = RoomId::parse(room_id).map_err(Error::internal)?;
        chunk.extend(member_event(&req, &room_id)?);
    }
    chunk.extend(presence_events(&synced));
    // Account data (tags too) changed in the window, of the user's own rooms.
    if peek.is_none() {
        chunk.extend(synced["account_data"]["events"].as_array().into_iter().flatten().cloned());
        for (room_id, room) in rooms["join"].as_object().into_iter().flatten() {
            for mut event in room["account_data"]["events"].as_array().into_iter().flatten().cloned() {
                event["room_id"] = json!(room_id);
                chunk.push(event);
            }
        }
    }
    json_reply(&json!({"chunk": chunk, "start": sync::token(from), "end": synced["next_batch"]}))
}

/// One room of an initial sync in the old shape.
fn room_snapshot<T>(
    req: &Ruma<T>,
    room_id: &str,
    room: &Value,
    membership: &str,
    end: &Value,
) -> Result<Value> {
    let state = match room.get("state_after").or_else(|| room.get("org.matrix.msc4222.state_after")) {
        Some(state) => state,
        None => &room["state"],
    };
    let parsed = RoomId::parse(room_id).map_err(Error::internal)?;
    let visibility = if req.services.rooms.is_published(&parsed)? { "public" } else { "private" };
    Ok(json!({
        "room_id": room_id,
        "membership": membership,
        "messages": {
            "chunk": with_room_id(&room["timeline"], room_id),
            "start": room["timeline"]["prev_batch"].as_str().map_or_else(|| end.clone(), |t| json!(t)),
            "end": end,
        },
        "state": with_room_id(state, room_id),
        "account_data": room["account_data"]["events"].as_array().cloned().unwrap_or_default(),
        "visibility": visibility,
    }))
}

fn events_except(events: &Value, kind: &str) -> Vec<Value> {
    events.as_array().into_iter().flatten().filter(|event| event["type"] != kind).cloned().collect()
}

/// Whether the user left or was banned, for a room of the `leave` section.
fn left_membership<T>(req: &Ruma<T>, room_id: &RoomId) -> Result<&'static str> {
    let rooms = &req.services.rooms;
    let short = rooms.room_short(room_id)?;
    let banned = match short {
        Some(short) => rooms.membership(req.user(), short)?.as_deref() == Some("ban"),
        None => false,
    };
    Ok(if banned { "ban" } else { "leave" })
}

/// `GET /initialSync`: every room of the user with its latest messages and
/// state, presence and account data (left rooms with `archived=true`).
async fn initial_sync(req: Ruma<endpoints::initial_sync::Request>) -> Result<endpoints::Response> {
    let body = &req.body;
    let limit = body.limit.unwrap_or(DEFAULT_INITIAL_LIMIT);
    let archived = body.archived.unwrap_or(false);
    let synced =
        sync_json(&req, None, Duration::ZERO, timeline_filter(Some(limit), None, archived), None, None)
            .await?;
    let end = &synced["next_batch"];
    let mut rooms = Vec::new();
    let mut receipts = Vec::new();
    for (room_id, room) in synced["rooms"]["join"].as_object().into_iter().flatten() {
        rooms.push(room_snapshot(&req, room_id, room, "join", end)?);
        let ephemeral = with_room_id(&room["ephemeral"], room_id);
        receipts.extend(ephemeral.into_iter().filter(|e| e["type"] == "m.receipt"));
    }
    for (room_id, room) in synced["rooms"]["leave"].as_object().into_iter().flatten() {
        let membership = left_membership(&req, &RoomId::parse(room_id).map_err(Error::internal)?)?;
        rooms.push(room_snapshot(&req, room_id, room, membership, end)?);
    }
    for room_id in synced["rooms"]["invite"].as_object().into_iter().flatten().map(|(id, _)| id) {
        let parsed = RoomId::parse(room_id).map_err(Error::internal)?;
        let invite = member_event(&req, &parsed)?;
        let inviter = invite.as_ref().map(|e| e["sender"].clone());
        rooms.push(json!({"room_id": room_id, "membership": "invite", "invite": invite, "inviter": inviter}));
    }
    json_reply(&json!({
        "end": end,
        "rooms": rooms,
        "presence": presence_events(&synced),
        // Account data proper: Synapse keeps push rules apart.
        "account_data": events_except(&synced["account_data"]["events"], "m.push_rules"),
        "receipts": receipts,
    }))
}

fn members_presence(services: &Services, room_id: &RoomId) -> Result<Vec<Value>> {
    let rooms = &services.rooms;
    let Some(short) = rooms.room_short(room_id)? else { return Ok(Vec::new()) };
    let mut events = Vec::new();
    for (user, membership) in rooms.members(short)? {
        if membership != "join" {
            continue;
        }
        let mut event = sync::presence_event(services, &user)?;
        event["content"]["user_id"] = json!(user);
        events.push(event);
    }
    Ok(events)
}

/// `GET /rooms/{roomId}/initialSync`: one room's latest messages, state,
/// members' presence and receipts, for a member, a former member (as of
/// their leaving), or anyone looking into a world-readable room (without
/// `membership`).
async fn room_initial_sync(req: Ruma<endpoints::room_initial_sync::Request>) -> Result<endpoints::Response> {
    let body = &req.body;
    let limit = body.limit.unwrap_or(DEFAULT_INITIAL_LIMIT);
    let membership = match req.services.rooms.room_short(&body.room_id)? {
        Some(short) => req.services.rooms.membership(req.user(), short)?,
        None => None,
    };
    let peek = match membership.as_deref() {
        Some("join" | "leave" | "ban") => None,
        _ => peekable(&req, &body.room_id)?,
    };
    let filter = timeline_filter(Some(limit), Some(vec![body.room_id.clone()]), true);
    let synced = sync_json(&req, None, Duration::ZERO, filter, peek, None).await?;
    let end = &synced["next_batch"];
    let room_id = body.room_id.as_str();
    let rooms = &synced["rooms"];
    let (room, membership) = match (rooms["join"].get(room_id), rooms["leave"].get(room_id)) {
        (Some(room), _) if peek.is_some() => (room, "peek"),
        (Some(room), _) => (room, "join"),
        (None, Some(room)) => (room, left_membership(&req, &body.room_id)?),
        _ => return Err(Error::forbidden(format!("User {} not in room {room_id}", req.user()))),
    };
    let mut snapshot = room_snapshot(&req, room_id, room, membership, end)?;
    if peek.is_some()
        && let Some(object) = snapshot.as_object_mut()
    {
        object.remove("membership");
    }
    // Every joined member's presence (offline when never seen), as Synapse.
    let presence = match membership {
        "join" | "peek" => members_presence(&req.services, &body.room_id)?,
        _ => Vec::new(),
    };
    snapshot["presence"] = json!(presence);
    let ephemeral = with_room_id(&room["ephemeral"], room_id);
    snapshot["receipts"] =
        json!(ephemeral.into_iter().filter(|e| e["type"] == "m.receipt").collect::<Vec<_>>());
    json_reply(&snapshot)
}
