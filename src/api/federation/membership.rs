//! Membership across servers: joins and leaves as the resident server
//! (`make_join`, `send_join` v2, `make_leave`, `send_leave` v2), invites as
//! the invitee's server (`invite` v2).

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::membership::{
    create_invite::v2 as invite,
    create_join_event::v2::{self as send_join, RoomState},
    create_leave_event::v2 as send_leave,
    prepare_join_event::v1 as make_join,
    prepare_leave_event::v1 as make_leave,
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    federation::{ingest, membership},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(prepare_join).ruma(accept_join).ruma(prepare_leave).ruma(accept_leave).ruma(accept_invite)
}

fn raw(object: &ruma::CanonicalJsonObject) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(object).map_err(Error::internal)
}

async fn prepare_join(req: Ruma<make_join::Request>) -> Result<make_join::Response> {
    let body = &req.body;
    let (version, event) =
        membership::join_template(&req.services, req.origin(), &body.room_id, &body.user_id, &body.ver)?;
    let mut response = make_join::Response::new(raw(&event)?);
    response.room_version = Some(version);
    Ok(response)
}

async fn accept_join(req: Ruma<send_join::Request>) -> Result<send_join::Response> {
    let services = &req.services;
    let object = ingest::parse_pdu(&req.body.pdu).map_err(Error::bad_json)?;
    let (event, state, chain) =
        membership::take_join(services, req.origin(), &req.body.room_id, &req.body.event_id, object).await?;
    let events = |shorts: &[u64]| -> Result<Vec<Box<RawValue>>> {
        shorts.iter().filter_map(|s| services.rooms.pdu_json(*s).transpose()).map(|o| raw(&o?)).collect()
    };
    let mut room_state = RoomState::new();
    room_state.state = events(&state)?;
    room_state.auth_chain = events(&chain)?;
    room_state.event = Some(raw(&event)?);
    Ok(send_join::Response::new(room_state))
}

async fn prepare_leave(req: Ruma<make_leave::Request>) -> Result<make_leave::Response> {
    let (version, event) =
        membership::leave_template(&req.services, req.origin(), &req.body.room_id, &req.body.user_id)?;
    Ok(make_leave::Response::new(Some(version), raw(&event)?))
}

async fn accept_leave(req: Ruma<send_leave::Request>) -> Result<send_leave::Response> {
    let object = ingest::parse_pdu(&req.body.pdu).map_err(Error::bad_json)?;
    membership::take_leave(&req.services, req.origin(), &req.body.room_id, &req.body.event_id, object)
        .await?;
    Ok(send_leave::Response::new())
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
