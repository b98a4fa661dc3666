//! Reading a room from another server: `/event`, `/state_ids`, `/state`,
//! `/event_auth`, `/get_missing_events`, `/backfill`, `/timestamp_to_event`. The asking server
//! must be in the room (or the room world-readable); events it may not see
//! by the room's history visibility come redacted.

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, RoomId, ServerName,
    api::federation::{
        authorization::get_event_authorization::v1 as event_auth,
        backfill::get_backfill::v1 as backfill,
        event::{
            get_event::v1 as get_event, get_event_by_timestamp::v1 as by_timestamp,
            get_room_state::v1 as state, get_room_state_ids::v1 as state_ids,
        },
    },
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

/// `/get_missing_events` with `earliest_events` and `latest_events`
/// optional (the spec requires them, ruma too; Synapse takes their absence
/// as empty, and servers rely on it).
mod missing_events {
    use ruma::{
        OwnedEventId, OwnedRoomId, UInt,
        api::{federation::authentication::ServerSignatures, request},
        metadata,
    };

    pub use ruma::api::federation::event::get_missing_events::v1::Response;

    metadata! {
        method: POST,
        rate_limited: false,
        authentication: ServerSignatures,
        path: "/_matrix/federation/v1/get_missing_events/{room_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[serde(default = "ten")]
        pub limit: UInt,
        #[serde(default)]
        pub min_depth: UInt,
        #[serde(default)]
        pub earliest_events: Vec<OwnedEventId>,
        #[serde(default)]
        pub latest_events: Vec<OwnedEventId>,
    }

    fn ten() -> UInt {
        UInt::from(10u32)
    }
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(event)
        .ruma(room_state_ids)
        .ruma(room_state)
        .ruma(auth_chain)
        .ruma(get_missing_events)
        .ruma(get_backfill)
        .ruma(timestamp_to_event)
}

/// The room's short ID, if `server` may read it: in the room now, or the
/// room world-readable. The room's ACL applies.
pub fn readable_room(services: &Services, server: &ServerName, room_id: &RoomId) -> Result<u64> {
    let short = services.rooms.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    super::check_acl(services, server, short)?;
    if !services.rooms.server_in_room(server, short)? && !services.rooms.is_world_readable(short)? {
        return Err(Error::forbidden(format!("{server} is not in the room")));
    }
    Ok(short)
}

fn raw(object: &ruma::CanonicalJsonObject) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(object).map_err(Error::internal)
}

/// The events of `shorts` as `server` may see them.
fn events_for(services: &Services, server: &ServerName, shorts: &[u64]) -> Result<Vec<Box<RawValue>>> {
    let mut out = Vec::with_capacity(shorts.len());
    for short in shorts {
        if let Some(object) = services.rooms.event_for_server(server, *short)? {
            out.push(raw(&object)?);
        }
    }
    Ok(out)
}

/// The plain stored events of `shorts` (state and auth chains are served whole).
fn stored_events(services: &Services, shorts: &[u64]) -> Result<Vec<Box<RawValue>>> {
    let mut out = Vec::with_capacity(shorts.len());
    for short in shorts {
        if let Some(object) = services.rooms.pdu_json(*short)? {
            out.push(raw(&object)?);
        }
    }
    Ok(out)
}

fn event_ids(services: &Services, shorts: &[u64]) -> Result<Vec<ruma::OwnedEventId>> {
    shorts
        .iter()
        .filter_map(|s| services.rooms.pdu_by_short(*s).transpose())
        .map(|p| p.map(|p| p.event_id))
        .collect()
}

async fn event(req: Ruma<get_event::Request>) -> Result<get_event::Response> {
    let services = &req.services;
    let not_found = || Error::not_found("Event not found");
    let short = services.rooms.event_short(&req.body.event_id)?.ok_or_else(not_found)?;
    let meta = services.rooms.event_meta(short)?.ok_or_else(not_found)?;
    let room = services.rooms.room_by_short(meta.room)?;
    readable_room(services, req.origin(), &room.room_id)?;
    let object = services.rooms.event_for_server(req.origin(), short)?.ok_or_else(not_found)?;
    Ok(get_event::Response::new(
        services.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        raw(&object)?,
    ))
}

/// The state before `event_id` and its auth chain, as short IDs.
fn state_at(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &ruma::EventId,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let room_short = readable_room(services, origin, room_id)?;
    let not_found = || Error::not_found("Event not found in the room");
    let short = services.rooms.event_short(event_id)?.ok_or_else(not_found)?;
    if services.rooms.event_meta(short)?.is_none_or(|meta| meta.room != room_short) {
        return Err(not_found());
    }
    services.rooms.state_and_auth_before(short)?.ok_or_else(not_found)
}

async fn room_state_ids(req: Ruma<state_ids::Request>) -> Result<state_ids::Response> {
    let services = &req.services;
    let (state, chain) = state_at(services, req.origin(), &req.body.room_id, &req.body.event_id)?;
    Ok(state_ids::Response::new(event_ids(services, &chain)?, event_ids(services, &state)?))
}

async fn room_state(req: Ruma<state::Request>) -> Result<state::Response> {
    let services = &req.services;
    let (state, chain) = state_at(services, req.origin(), &req.body.room_id, &req.body.event_id)?;
    Ok(state::Response::new(stored_events(services, &chain)?, stored_events(services, &state)?))
}

async fn auth_chain(req: Ruma<event_auth::Request>) -> Result<event_auth::Response> {
    let services = &req.services;
    let room_short = readable_room(services, req.origin(), &req.body.room_id)?;
    let not_found = || Error::not_found("Event not found in the room");
    let short = services.rooms.event_short(&req.body.event_id)?.ok_or_else(not_found)?;
    if services.rooms.event_meta(short)?.is_none_or(|meta| meta.room != room_short) {
        return Err(not_found());
    }
    let chain = services.rooms.auth_chain_of(&[short])?;
    Ok(event_auth::Response::new(stored_events(services, &chain)?))
}

async fn get_missing_events(req: Ruma<missing_events::Request>) -> Result<missing_events::Response> {
    let services = &req.services;
    let body = &req.body;
    let room_short = readable_room(services, req.origin(), &body.room_id)?;
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX);
    let shorts = services.rooms.missing_events(
        room_short,
        &body.earliest_events,
        &body.latest_events,
        limit,
        body.min_depth.into(),
    )?;
    Ok(missing_events::Response::new(events_for(services, req.origin(), &shorts)?))
}

async fn get_backfill(req: Ruma<backfill::Request>) -> Result<backfill::Response> {
    let services = &req.services;
    let room_short = readable_room(services, req.origin(), &req.body.room_id)?;
    let limit = usize::try_from(u64::from(req.body.limit)).unwrap_or(usize::MAX);
    let shorts = services.rooms.backfill_events(room_short, &req.body.v, limit)?;
    Ok(backfill::Response::new(
        services.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        events_for(services, req.origin(), &shorts)?,
    ))
}

/// The event nearest a time that the asking server may see in full.
async fn timestamp_to_event(req: Ruma<by_timestamp::Request>) -> Result<by_timestamp::Response> {
    let services = &req.services;
    let room_short = readable_room(services, req.origin(), &req.body.room_id)?;
    let forwards = req.body.dir == ruma::api::Direction::Forward;
    let origin = req.origin();
    let (event_id, ts) = services
        .rooms
        .event_near(room_short, req.body.ts.0.into(), forwards, |_, meta| {
            Ok(meta.accepted() && services.rooms.server_can_see(origin, meta)?)
        })?
        .ok_or_else(|| Error::not_found("Unable to find an event in that direction"))?;
    Ok(by_timestamp::Response::new(
        event_id,
        MilliSecondsSinceUnixEpoch(ruma::UInt::new(ts).unwrap_or_default()),
    ))
}
