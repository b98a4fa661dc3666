//! Room creation and reading: `POST /createRoom`, `GET /rooms/{roomId}/event/{eventId}`,
//! `GET /rooms/{roomId}/messages`, `GET /joined_rooms`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    RoomAliasId, UInt, UserId,
    api::client::{
        context::get_context,
        membership::joined_rooms,
        message::get_message_events,
        room::{
            create_room::{self, v3::RoomPreset},
            get_event_by_timestamp, get_room_event,
        },
    },
    serde::Raw,
};
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::{
        DEFAULT_ROOM_VERSION,
        create::{CreateRoom, Preset},
        read::{self, Gap},
    },
    services::Services,
    util::raw,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(create)
        .ruma(get_event)
        .ruma(messages)
        .ruma(joined)
        .ruma(context)
        .ruma(timestamp_to_event)
        .ruma(upgrade)
}

fn object(raw: Option<&serde_json::value::RawValue>, what: &str) -> Result<Map<String, Value>> {
    match raw {
        None => Ok(Map::new()),
        Some(raw) => match serde_json::from_str(raw.get()) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(Error::bad_json(format!("{what} must be a JSON object"))),
        },
    }
}

async fn create(req: Ruma<create_room::v3::Request>) -> Result<create_room::v3::Response> {
    let services = &req.services;
    services.limiters.room_creation.check_user(req.user())?;
    let body = &req.body;
    let server = services.rooms.server_name();
    let alias = match &body.room_alias_name {
        Some(name) => {
            if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
                return Err(Error::invalid_param("Invalid characters in room alias"));
            }
            Some(
                RoomAliasId::parse(format!("#{name}:{server}"))
                    .map_err(|e| Error::invalid_param(format!("Invalid room alias: {e}")))?,
            )
        }
        None => None,
    };
    for invitee in &body.invite {
        if invitee.server_name() != server && !services.config.federation.allows(invitee.server_name()) {
            return Err(Error::forbidden(format!(
                "Federation with {} is not allowed",
                invitee.server_name()
            )));
        }
    }
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event = object(Some(raw.json()), "initial_state event")?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state event needs a type"))?;
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = event.get("content").cloned().unwrap_or_else(|| Value::Object(Map::new()));
        initial_state.push((kind.to_owned(), state_key.to_owned(), content));
    }
    let preset = match (&body.preset, &body.visibility) {
        (Some(RoomPreset::PrivateChat), _) => Preset::PrivateChat,
        (Some(RoomPreset::TrustedPrivateChat), _) => Preset::TrustedPrivateChat,
        (Some(RoomPreset::PublicChat), _) => Preset::PublicChat,
        (Some(_), _) => return Err(Error::bad_json("Unknown preset")),
        (None, ruma::api::client::room::Visibility::Public) => Preset::PublicChat,
        (None, _) => Preset::PrivateChat,
    };
    let profile = services.users.profile(req.user())?.unwrap_or_default();
    let invite = invitees(services, req.user(), &body.invite)?;
    let request = CreateRoom {
        version: body.room_version.clone().unwrap_or(DEFAULT_ROOM_VERSION),
        creation_content: object(body.creation_content.as_ref().map(Raw::json), "creation_content")?,
        preset,
        power_level_override: body
            .power_level_content_override
            .as_ref()
            .map(|raw| object(Some(raw.json()), "power_level_content_override"))
            .transpose()?,
        alias,
        initial_state,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite: invite.clone(),
        is_direct: body.is_direct,
        displayname: profile.get("displayname").and_then(Value::as_str).map(str::to_owned),
        avatar_url: profile.get("avatar_url").and_then(Value::as_str).map(str::to_owned),
        publish: body.visibility == ruma::api::client::room::Visibility::Public,
        room_id: None,
    };
    let room_id = services.rooms.create_room(req.user(), request).await?;
    tracing::info!("{} created {room_id}", req.user());
    // Other servers' users and invites by address once the room exists
    // (as Synapse; a failed remote invite does not undo the room).
    for invitee in invite.iter().filter(|i| i.server_name() != server) {
        let mut content = Map::new();
        content.insert("membership".to_owned(), serde_json::json!("invite"));
        if body.is_direct {
            content.insert("is_direct".to_owned(), serde_json::json!(true));
        }
        if let Err(e) =
            crate::federation::membership::invite_remote(services, &room_id, req.user(), invitee, content)
                .await
        {
            tracing::info!("inviting {invitee} to the new room {room_id}: {e}");
        }
    }
    for invite in &body.invite_3pid {
        super::third_party::invite(services, &room_id, req.user(), invite).await?;
    }
    Ok(create_room::v3::Response::new(room_id))
}

async fn get_event(req: Ruma<get_room_event::v3::Request>) -> Result<get_room_event::v3::Response> {
    let rooms = &req.services.rooms;
    let not_found = || Error::not_found("Event not found.");
    let room_short = rooms.room_short(&req.body.room_id)?.ok_or_else(not_found)?;
    // An event one may not see is not found (Synapse), not forbidden.
    check_can_read(&req.services, req.user(), room_short).map_err(|_| not_found())?;
    let short = rooms.event_short(&req.body.event_id)?.ok_or_else(not_found)?;
    let meta = rooms.event_meta(short)?.ok_or_else(not_found)?;
    let pdu = rooms.pdu_by_short(short)?.ok_or_else(not_found)?;
    if meta.room != room_short || !rooms.can_see(req.user(), &pdu, &meta)? {
        return Err(not_found());
    }
    let mut event = rooms.client_event(short, req.sender_device.as_deref(), req.user())?;
    rooms.bundle(short, req.user(), req.sender_device.as_deref(), &mut event)?;
    Ok(get_room_event::v3::Response::new(Raw::from_json(
        serde_json::value::to_raw_value(&event).map_err(Error::internal)?,
    )))
}

async fn joined(req: Ruma<joined_rooms::v3::Request>) -> Result<joined_rooms::v3::Response> {
    Ok(joined_rooms::v3::Response::new(req.services.rooms.rooms_with_membership(req.user(), "join")?))
}

/// A pagination token: `t<p>` is the gap just before position `p`; a sync
/// token `s<p>` (or `s<p>_<t>`, see `crate::sync`) is the gap just after `p`.
pub fn parse_token(token: &str) -> Result<u64> {
    let parsed = match token.split_at_checked(1) {
        Some(("t", n)) => n.parse().ok(),
        Some(("s", _)) => crate::sync::parse_token(token).ok().and_then(|n| n.checked_add(1)),
        _ => None,
    };
    parsed.ok_or_else(|| Error::invalid_param("Invalid pagination token"))
}

pub fn token(position: u64) -> String {
    format!("t{position}")
}

/// A pagination token over the room's whole order: `t<p>` (and `s<p>`) in
/// the live timeline, `h<depth>_<short>` in backfilled history.
pub fn parse_gap(token: &str) -> Result<Gap> {
    if let Some(history) = token.strip_prefix('h') {
        let parsed = history
            .split_once('_')
            .and_then(|(depth, short)| Some((depth.parse().ok()?, short.parse().ok()?)));
        let (depth, short) = parsed.ok_or_else(|| Error::invalid_param("Invalid pagination token"))?;
        return Ok(Gap::History { depth, short });
    }
    parse_token(token).map(Gap::Live)
}

pub fn gap_token(gap: Gap) -> String {
    match gap {
        Gap::History { depth, short } => format!("h{depth}_{short}"),
        Gap::Live(position) => token(position),
    }
}

/// A user who never belonged to a room may read it only if it is
/// world-readable; nobody reads a room they have forgotten.
/// The short ID of a room the user may read (`M_FORBIDDEN` otherwise, also
/// for a room this server does not know).
pub fn readable_room(services: &Services, user: &UserId, room_id: &ruma::RoomId) -> Result<u64> {
    let room_short =
        services.rooms.room_short(room_id)?.ok_or_else(|| Error::forbidden("You are not in this room."))?;
    check_can_read(services, user, room_short)?;
    Ok(room_short)
}

pub fn check_can_read(services: &Services, user: &UserId, room_short: u64) -> Result<()> {
    let rooms = &services.rooms;
    if rooms.is_forgotten(user, room_short)? {
        return Err(Error::forbidden("You have forgotten this room."));
    }
    if rooms.membership(user, room_short)?.is_some() {
        return Ok(());
    }
    if rooms.is_world_readable(room_short)? {
        Ok(())
    } else {
        Err(Error::forbidden("You are not in this room."))
    }
}

/// The state a user may read in a room, or 403.
pub fn readable_state(
    services: &Services,
    user: &UserId,
    room_id: &ruma::RoomId,
) -> Result<(u64, std::sync::Arc<crate::rooms::state::StateMap>)> {
    let rooms = &services.rooms;
    let not_member =
        || Error::forbidden("You aren't a member of the room and weren't previously a member of the room.");
    let (room_short, record) = rooms.room(room_id)?.ok_or_else(not_member)?;
    let state = rooms.readable_state(user, room_short, &record)?.ok_or_else(not_member)?;
    Ok((room_short, state))
}

async fn messages(req: Ruma<get_message_events::v3::Request>) -> Result<get_message_events::v3::Response> {
    let services = &req.services;
    let rooms = &services.rooms;
    let body = &req.body;
    let room_short = readable_room(services, req.user(), &body.room_id)?;
    let backwards = body.dir == ruma::api::Direction::Backward;
    // The room's whole order: backfilled history, then the live timeline.
    let from = match &body.from {
        Some(t) => parse_gap(t)?,
        None if backwards => Gap::Live(rooms.latest_position(room_short)? + 1),
        None => Gap::History { depth: 0, short: 0 },
    };
    let mut to = body.to.as_deref().map(parse_gap).transpose()?;
    // Nothing after a user's leave (or ban) is theirs to see: do not scan it.
    let mut from = from;
    if let Some(end) = rooms.visible_end(req.user(), room_short)? {
        let end = Gap::Live(end);
        if backwards {
            from = from.min(end);
        } else {
            to = Some(to.map_or(end, |t| t.min(end)));
        }
    }
    let limit = u64::from(body.limit).clamp(1, 1000) as usize;
    let filter = &body.filter;
    let page_at = || {
        rooms.page_all(
            room_short,
            req.user(),
            req.sender_device.as_deref(),
            from,
            to,
            backwards,
            limit,
            |pdu| read::filter_allows(filter, pdu),
        )
    };
    let mut page = page_at()?;
    // Paged back to the start of what we have: the room's other servers
    // may have more (a room joined late).
    if backwards
        && to.is_none()
        && page.next.is_none()
        && page.events.len() < limit
        && crate::federation::backfill::backfill(services, room_short).await? > 0
    {
        page = page_at()?;
    }
    rooms.bundle_all(&mut page.events, &page.shorts, req.user(), req.sender_device.as_deref())?;

    // Lazy loading: the member events of the senders in the chunk.
    let state = if filter.lazy_load_options.is_disabled() {
        Vec::new()
    } else {
        sender_members(services, req.user(), &page.events)?.into_iter().map(raw).collect::<Result<_>>()?
    };
    let mut response = get_message_events::v3::Response::new();
    response.start = gap_token(from);
    // As Synapse: a page with events always says where the next starts
    // (which then comes back empty, without `end`).
    let end = page.next.or_else(|| (!page.events.is_empty()).then_some(page.cursor));
    response.end = end.map(gap_token);
    response.chunk = page.events.into_iter().map(raw).collect::<Result<_>>()?;
    response.state = state;
    Ok(response)
}

/// The member events of the senders of `events` (lazy loading), as of the
/// newest of those events: not later profile changes a former member may
/// not see (review §2.2).
pub(super) fn sender_members(services: &Services, viewer: &UserId, events: &[Value]) -> Result<Vec<Value>> {
    let rooms = &services.rooms;
    let mut newest: Option<crate::rooms::EventMeta> = None;
    for event in events {
        let Some(id) = event["event_id"].as_str().and_then(|id| ruma::EventId::parse(id).ok()) else {
            continue;
        };
        if let Some(short) = rooms.event_short(&id)?
            && let Some(meta) = rooms.event_meta(short)?
            && newest.as_ref().is_none_or(|n| meta.stream > n.stream)
        {
            newest = Some(meta);
        }
    }
    let Some(state) = newest.and_then(|meta| meta.state_after) else { return Ok(Vec::new()) };
    let state = rooms.state.load(state)?;
    let mut senders: Vec<&str> = events.iter().filter_map(|e| e["sender"].as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut members = Vec::new();
    for sender in senders {
        if let Some(pdu) = rooms.state_event(&state, "m.room.member", sender)?
            && let Some(short) = rooms.event_short(&pdu.event_id)?
        {
            members.push(rooms.client_event(short, None, viewer)?);
        }
    }
    Ok(members)
}

/// The events `viewer` may see before and after an event (newest first
/// before it, oldest first after it), aggregations bundled: `/context` and
/// search results' context.
pub(super) fn events_around(
    services: &Services,
    (viewer, device): (&UserId, Option<&ruma::DeviceId>),
    (short, meta): (u64, &crate::rooms::EventMeta),
    (before_limit, after_limit): (usize, usize),
    keep: impl Fn(&crate::rooms::pdu::Pdu) -> bool + Copy,
) -> Result<(read::GapPage, read::GapPage)> {
    let rooms = &services.rooms;
    let (at, past) = Gap::around(short, meta);
    let mut before = rooms.page_all(meta.room, viewer, device, at, None, true, before_limit, keep)?;
    let mut after = rooms.page_all(meta.room, viewer, device, past, None, false, after_limit, keep)?;
    rooms.bundle_all(&mut before.events, &before.shorts, viewer, device)?;
    rooms.bundle_all(&mut after.events, &after.shorts, viewer, device)?;
    Ok((before, after))
}

async fn context(req: Ruma<get_context::v3::Request>) -> Result<get_context::v3::Response> {
    let services = &req.services;
    let rooms = &services.rooms;
    let body = &req.body;
    let not_found = || Error::not_found("Event not found.");
    let room_short = rooms.room_short(&body.room_id)?.ok_or_else(not_found)?;
    check_can_read(services, req.user(), room_short)?;
    let short = rooms.event_short(&body.event_id)?.ok_or_else(not_found)?;
    let (Some(meta), Some(pdu)) = (rooms.event_meta(short)?, rooms.pdu_by_short(short)?) else {
        return Err(not_found());
    };
    if meta.room != room_short || !rooms.can_see(req.user(), &pdu, &meta)? {
        return Err(not_found());
    }
    let limit = u64::from(body.limit).min(100) as usize;
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let filter = &body.filter;
    let device = req.sender_device.as_deref();
    let user = req.user();
    let (before, after) =
        events_around(services, (user, device), (short, &meta), (before_limit, after_limit), |p| {
            read::filter_allows(filter, p)
        })?;
    let mut event = rooms.client_event(short, device, req.user())?;
    rooms.bundle(short, req.user(), device, &mut event)?;

    let state = if filter.lazy_load_options.is_disabled() {
        let state_id = meta.state_after.ok_or_else(not_found)?;
        rooms
            .state
            .load(state_id)?
            .values()
            .map(|s| rooms.client_event(*s, None, req.user()))
            .collect::<Result<Vec<_>>>()?
    } else {
        let mut shown = before.events.clone();
        shown.extend(after.events.iter().cloned());
        shown.push(event.clone());
        sender_members(services, req.user(), &shown)?
    };
    let mut response = get_context::v3::Response::new();
    response.start = Some(gap_token(before.cursor));
    response.end = Some(gap_token(after.cursor));
    response.events_before = before.events.into_iter().map(raw).collect::<Result<_>>()?;
    response.event = Some(raw(event)?);
    response.events_after = after.events.into_iter().map(raw).collect::<Result<_>>()?;
    response.state = state.into_iter().map(raw).collect::<Result<_>>()?;
    Ok(response)
}

async fn timestamp_to_event(
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let rooms = &req.services.rooms;
    let body = &req.body;
    let room_short = readable_room(&req.services, req.user(), &body.room_id)?;
    let forwards = body.dir == ruma::api::Direction::Forward;
    let (event_id, ts) = rooms
        .event_at_timestamp(room_short, req.user(), body.ts.0.into(), forwards)?
        .ok_or_else(|| Error::not_found("Unable to find an event in that direction"))?;
    Ok(get_event_by_timestamp::v1::Response::new(
        event_id,
        ruma::MilliSecondsSinceUnixEpoch(UInt::new(ts).unwrap_or_default()),
    ))
}

/// `POST /rooms/{roomId}/upgrade`, with the new version read as any string:
/// ruma's type refuses some that are no room version at all, and those
/// must be `M_UNSUPPORTED_ROOM_VERSION`, not bad JSON.
mod upgrade_request {
    use ruma::{
        OwnedRoomId, OwnedUserId,
        api::{auth_scheme::AccessToken, request, response},
        metadata,
    };

    metadata! {
        method: POST,
        authentication: AccessToken,
        rate_limited: false,
        history: {
            unstable => "/_matrix/client/unstable/rooms/{room_id}/upgrade",
            1.0 => "/_matrix/client/r0/rooms/{room_id}/upgrade",
            1.1 => "/_matrix/client/v3/rooms/{room_id}/upgrade",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        pub new_version: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub additional_creators: Vec<OwnedUserId>,
    }

    #[response]
    pub struct Response {
        pub replacement_room: OwnedRoomId,
    }
}

async fn upgrade(req: Ruma<upgrade_request::Request>) -> Result<upgrade_request::Response> {
    let body = &req.body;
    req.services.limiters.room_creation.check_user(req.user())?;
    let version = ruma::RoomVersionId::try_from(body.new_version.as_str())
        .ok()
        .filter(|version| crate::rooms::SUPPORTED_ROOM_VERSIONS.contains(version))
        .ok_or_else(|| {
            Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {} is not supported", body.new_version),
            )
        })?;
    let new_room = req
        .services
        .rooms
        .upgrade_room(req.user(), &body.room_id, version.clone(), body.additional_creators.clone())
        .await?;
    tracing::info!("{} upgraded {} to {new_room} (version {version})", req.user(), body.room_id);
    Ok(upgrade_request::Response { replacement_room: new_room })
}

/// The local users a new room invites: not those who ignore its creator
/// (their invites are dropped), nor anyone when the creator is
/// shadow-banned.
fn invitees(
    services: &Services,
    creator: &UserId,
    invite: &[ruma::OwnedUserId],
) -> Result<Vec<ruma::OwnedUserId>> {
    if services.users.is_shadow_banned(creator) {
        return Ok(Vec::new());
    }
    let mut kept = Vec::new();
    for user in invite {
        if !services.users.is_local(user) || !services.users.ignored_users(user)?.contains(creator) {
            kept.push(user.clone());
        }
    }
    Ok(kept)
}
