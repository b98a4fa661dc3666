//! Joins across servers, as the resident server:
//! `GET /_matrix/federation/v1/make_join/{roomId}/{userId}` and
//! `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::membership::{
    create_join_event::v2::{self as send_join, RoomState},
    prepare_join_event::v1 as make_join,
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    federation::{ingest, membership},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(prepare_join).ruma(accept_join)
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
