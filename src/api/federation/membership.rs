//! Membership across servers: joins and leaves as the resident server
//! (`make_join`, `send_join` v1 and v2, `make_leave`, `send_leave` v1 and
//! v2, `make_knock`, `send_knock`), invites as the invitee's server
//! (`invite` v2 and v1). The v1 forms are deprecated but Synapse still serves them
//! (their answers are `[200, body]`).

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::membership::{
    create_invite::v2 as invite,
    create_join_event::v2::{self as send_join, RoomState},
    create_knock_event::v1 as send_knock,
    create_leave_event::v2 as send_leave,
    prepare_join_event::v1 as make_join,
    prepare_knock_event::v1 as make_knock,
    prepare_leave_event::v1 as make_leave,
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    federation::{ingest, membership, v1},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(accept_join_v1)
        .ruma(accept_leave_v1)
        .ruma(prepare_join)
        .ruma(accept_join)
        .ruma(prepare_leave)
        .ruma(accept_leave)
        .ruma(prepare_knock)
        .ruma(accept_knock)
        .ruma(accept_invite)
        .ruma(accept_invite_v1)
}

fn raw(object: &ruma::CanonicalJsonObject) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(object).map_err(Error::internal)
}

async fn prepare_join(req: Ruma<make_join::Request>) -> Result<make_join::Response> {
    let body = &req.body;
    let (version, event) = membership::member_template(
        &req.services,
        req.origin(),
        &body.room_id,
        &body.user_id,
        "join",
        Some(&body.ver),
    )?;
    let mut response = make_join::Response::new(raw(&event)?);
    response.room_version = Some(version);
    Ok(response)
}

/// A join taken in, and the room's state and auth chain before it.
async fn join_answer(
    services: &Arc<Services>,
    origin: &ruma::ServerName,
    room_id: &ruma::RoomId,
    event_id: &ruma::OwnedEventId,
    pdu: &RawValue,
) -> Result<RoomState> {
    let object = ingest::parse_pdu(pdu).map_err(Error::bad_json)?;
    let short = membership::take_member_event(services, origin, room_id, event_id, object, "join").await?;
    let (state, chain) = services
        .rooms
        .state_and_auth_before(short)?
        .ok_or_else(|| Error::internal("a join without state"))?;
    let events = |shorts: &[u64]| -> Result<Vec<Box<RawValue>>> {
        shorts.iter().filter_map(|s| services.rooms.pdu_json(*s).transpose()).map(|o| raw(&o?)).collect()
    };
    let mut room_state = RoomState::new();
    room_state.state = events(&state)?;
    room_state.auth_chain = events(&chain)?;
    // As stored: with our signature when we authorised a restricted join.
    room_state.event = events(&[short])?.pop();
    Ok(room_state)
}

async fn accept_join(req: Ruma<send_join::Request>) -> Result<send_join::Response> {
    let body = &req.body;
    let room_state =
        join_answer(&req.services, req.origin(), &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(send_join::Response::new(room_state))
}

async fn accept_join_v1(req: Ruma<v1::send_join::Request>) -> Result<v1::Response> {
    let body = &req.body;
    let room_state =
        join_answer(&req.services, req.origin(), &body.room_id, &body.event_id, &body.pdu).await?;
    let mut answer = serde_json::to_value(&room_state).map_err(Error::internal)?;
    answer["origin"] = serde_json::json!(req.services.config.server_name);
    v1::wrap(answer)
}

async fn accept_leave_v1(req: Ruma<v1::send_leave::Request>) -> Result<v1::Response> {
    let body = &req.body;
    let object = ingest::parse_pdu(&body.pdu).map_err(Error::bad_json)?;
    membership::take_member_event(
        &req.services,
        req.origin(),
        &body.room_id,
        &body.event_id,
        object,
        "leave",
    )
    .await?;
    v1::wrap(serde_json::json!({}))
}

async fn prepare_leave(req: Ruma<make_leave::Request>) -> Result<make_leave::Response> {
    let body = &req.body;
    let (version, event) = membership::member_template(
        &req.services,
        req.origin(),
        &body.room_id,
        &body.user_id,
        "leave",
        None,
    )?;
    Ok(make_leave::Response::new(Some(version), raw(&event)?))
}

async fn accept_leave(req: Ruma<send_leave::Request>) -> Result<send_leave::Response> {
    let object = ingest::parse_pdu(&req.body.pdu).map_err(Error::bad_json)?;
    let (room_id, event_id) = (&req.body.room_id, &req.body.event_id);
    membership::take_member_event(&req.services, req.origin(), room_id, event_id, object, "leave").await?;
    Ok(send_leave::Response::new())
}

async fn prepare_knock(req: Ruma<make_knock::Request>) -> Result<make_knock::Response> {
    let body = &req.body;
    let (version, event) = membership::member_template(
        &req.services,
        req.origin(),
        &body.room_id,
        &body.user_id,
        "knock",
        Some(&body.ver),
    )?;
    Ok(make_knock::Response::new(version, raw(&event)?))
}

async fn accept_knock(req: Ruma<send_knock::Request>) -> Result<send_knock::Response> {
    let services = &req.services;
    let object = ingest::parse_pdu(&req.body.pdu).map_err(Error::bad_json)?;
    let (room_id, event_id) = (&req.body.room_id, &req.body.event_id);
    let short =
        membership::take_member_event(services, req.origin(), room_id, event_id, object, "knock").await?;
    let room_short =
        services.rooms.event_meta(short)?.ok_or_else(|| Error::internal("knock without meta"))?.room;
    let knock = services.rooms.pdu_by_short(short)?.ok_or_else(|| Error::internal("knock not stored"))?;
    Ok(send_knock::Response::new(membership::stripped_room_state(services, room_short, &knock.sender)?))
}

async fn accept_invite(req: Ruma<invite::Request>) -> Result<invite::Response> {
    let body = &req.body;
    let object = ingest::parse_pdu(&body.event).map_err(Error::bad_json)?;
    let signed = membership::take_invite(
        &req.services,
        req.origin(),
        &body.room_id,
        &body.event_id,
        &body.room_version,
        object,
        &body.invite_room_state,
    )
    .await?;
    Ok(invite::Response::new(raw(&signed)?))
}

/// The deprecated v1 `/invite`: the body is the event itself (its stripped
/// room state under `unsigned`), the room version that of rooms v1 knew
/// (the room's own when this server knows it); the answer `[200, {event}]`.
async fn accept_invite_v1(req: Ruma<v1::invite::Request>) -> Result<v1::Response> {
    let body = &req.body;
    let mut object: ruma::CanonicalJsonObject =
        serde_json::from_str(body.pdu.get()).map_err(|e| Error::bad_json(format!("Not an event: {e}")))?;
    let stripped: Vec<ruma::api::federation::membership::RawStrippedState> = match object.remove("unsigned") {
        Some(ruma::CanonicalJsonValue::Object(mut unsigned)) => match unsigned.remove("invite_room_state") {
            Some(state) => serde_json::from_value(serde_json::to_value(state).map_err(Error::internal)?)
                .unwrap_or_default(),
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    let version = match req.services.rooms.room(&body.room_id)? {
        Some((_, record)) => record.version,
        None => ruma::RoomVersionId::V1,
    };
    let signed = membership::take_invite(
        &req.services,
        req.origin(),
        &body.room_id,
        &body.event_id,
        &version,
        object,
        &stripped,
    )
    .await?;
    v1::wrap(serde_json::json!({"event": signed}))
}
