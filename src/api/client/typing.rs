//! Typing notifications: `PUT /rooms/{roomId}/typing/{userId}`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::api::{
    client::typing::create_typing_event::{self, v3::Typing},
    error::ErrorKind,
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(typing)
}

async fn typing(req: Ruma<create_typing_event::v3::Request>) -> Result<create_typing_event::v3::Response> {
    let body = &req.body;
    if req.user() != &body.user_id {
        // Synapse answers 400 with M_FORBIDDEN here.
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Forbidden,
            "Cannot set another user's typing state",
        ));
    }
    let rooms = &req.services.rooms;
    let not_in_room = || Error::forbidden("You are not in this room.");
    let room_short = rooms.room_short(&body.room_id)?.ok_or_else(not_in_room)?;
    if rooms.membership(req.user(), room_short)?.as_deref() != Some("join") {
        return Err(not_in_room());
    }
    let timeout = match body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    rooms.typing.set(room_short, req.user(), timeout)?;
    Ok(create_typing_event::v3::Response::new())
}
