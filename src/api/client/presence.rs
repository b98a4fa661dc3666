//! Presence: `PUT/GET /presence/{userId}/status`.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    presence::share_a_room,
    services::Services,
    util,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(set).ruma(get)
}

async fn set(req: Ruma<set_presence::v3::Request>) -> Result<set_presence::v3::Response> {
    let body = &req.body;
    if req.user() != &body.user_id {
        return Err(Error::forbidden("You cannot set the presence state of another user."));
    }
    let state = match &body.presence {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
        _ => return Err(Error::invalid_param("presence must be online, unavailable or offline")),
    };
    req.services.presence.set(req.user(), state, body.status_msg.clone())?;
    if req.services.presence.enabled {
        crate::federation::edus::send_presence(&req.services, req.user(), state, body.status_msg.as_deref())?;
    }
    Ok(set_presence::v3::Response::new())
}

async fn get(req: Ruma<get_presence::v3::Request>) -> Result<get_presence::v3::Response> {
    let services = &req.services;
    let target = &req.body.user_id;
    if !services.users.exists(target)? {
        return Err(Error::not_found("Unknown user"));
    }
    if req.user() != target && !share_a_room(&services.rooms, req.user(), target)? {
        return Err(Error::forbidden("You do not share a room with this user."));
    }
    let record = if services.presence.enabled { services.presence.record(target)? } else { None };
    let Some(record) = record else { return Ok(get_presence::v3::Response::new(PresenceState::Offline)) };
    let mut response = get_presence::v3::Response::new(PresenceState::from(record.presence.as_str()));
    let ago = util::now_ms().saturating_sub(record.last_active_ts);
    response.last_active_ago = Some(Duration::from_millis(ago));
    response.currently_active = Some(record.presence == "online" && ago < 60_000);
    response.status_msg = record.status_msg;
    Ok(response)
}
