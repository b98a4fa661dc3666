//! Typing notifications: `PUT /rooms/{roomId}/typing/{userId}`.

use std::{sync::Arc, time::Duration};

use axum::Router;
use http::StatusCode;
use ruma::api::error::ErrorKind;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

/// ruma's typing request refuses `{"typing": true}` without `timeout`;
/// clients send it, and Synapse takes it with its default of 30 s. This
/// request is ruma's with `timeout` optional.
mod endpoint {
    use ruma::{
        OwnedRoomId, OwnedUserId,
        api::{auth_scheme::AccessToken, request, response},
        metadata,
    };

    metadata! {
        method: PUT,
        authentication: AccessToken,
        rate_limited: true,
        history: {
            1.0 => "/_matrix/client/r0/rooms/{room_id}/typing/{user_id}",
            1.1 => "/_matrix/client/v3/rooms/{room_id}/typing/{user_id}",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub user_id: OwnedUserId,
        pub typing: bool,
        #[serde(default, with = "ruma::serde::duration::opt_ms")]
        pub timeout: Option<std::time::Duration>,
    }

    #[response]
    #[derive(Default)]
    pub struct Response {}
}

/// How long a user types when the request does not say (as Synapse).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(typing)
}

async fn typing(req: Ruma<endpoint::Request>) -> Result<endpoint::Response> {
    let body = &req.body;
    if req.user() != &body.user_id {
        // Synapse answers 400 with M_FORBIDDEN here.
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Forbidden,
            "Cannot set another user's typing state",
        ));
    }
    req.services.limiters.typing.check_user(req.user())?;
    if req.services.users.is_shadow_banned(req.user()) {
        return Ok(endpoint::Response {});
    }
    let rooms = &req.services.rooms;
    let not_in_room = || Error::forbidden("You are not in this room.");
    let room_short = rooms.room_short(&body.room_id)?.ok_or_else(not_in_room)?;
    if rooms.membership(req.user(), room_short)?.as_deref() != Some("join") {
        return Err(not_in_room());
    }
    let timeout = body.typing.then(|| body.timeout.unwrap_or(DEFAULT_TIMEOUT));
    rooms.typing.set(room_short, req.user(), timeout)?;
    crate::federation::edus::send_typing(&req.services, &body.room_id, room_short, req.user(), body.typing)?;
    Ok(endpoint::Response {})
}
