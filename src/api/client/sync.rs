//! `GET /sync`: the handler parses the request; `crate::sync` builds the answer.

use std::sync::Arc;

use serde_json::{Value, json};

use axum::Router;
use ruma::api::client::{
    filter::FilterDefinition,
    sync::sync_events::{self, v3::Filter},
};

use crate::{
    Error, Result,
    api::ruma::{JsonResponse, Ruma, RumaRouter, ensure, ensure_events, json_reply, response_json},
    services::Services,
    sync::{self, Params, sliding},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_shaped(get, shape).ruma(sliding).ruma(sliding_stable)
}

/// Every key Synapse always sends, empty or not: clients (matrix-nio among
/// them) index `state.events`, `timeline.limited` or `rooms.leave` without
/// checking that they exist.
fn shape(body: &mut Value) {
    for key in ["account_data", "presence", "to_device"] {
        ensure_events(body, key);
    }
    ensure(body, "device_lists", || json!({}));
    for key in ["changed", "left"] {
        ensure(&mut body["device_lists"], key, || json!([]));
    }
    ensure(body, "rooms", || json!({}));
    let rooms = &mut body["rooms"];
    for key in ["join", "invite", "leave", "knock"] {
        ensure(rooms, key, || json!({}));
    }
    let each = |rooms: &mut Value, section: &str, f: &dyn Fn(&mut Value)| {
        if let Some(map) = rooms[section].as_object_mut() {
            map.values_mut().for_each(f);
        }
    };
    let timeline_and_state = |room: &mut Value| {
        ensure_events(room, "timeline");
        ensure(&mut room["timeline"], "limited", || json!(false));
        if room.get("state_after").is_none() && room.get("org.matrix.msc4222.state_after").is_none() {
            ensure_events(room, "state");
        }
        ensure_events(room, "account_data");
    };
    each(rooms, "join", &|room| {
        timeline_and_state(room);
        ensure_events(room, "ephemeral");
        ensure(room, "unread_notifications", || json!({"highlight_count": 0, "notification_count": 0}));
        ensure(room, "summary", || json!({}));
    });
    each(rooms, "leave", &timeline_and_state);
    each(rooms, "invite", &|room| ensure_events(room, "invite_state"));
    each(rooms, "knock", &|room| ensure_events(room, "knock_state"));
}

async fn get(req: Ruma<sync_events::v3::Request>) -> Result<sync_events::v3::Response> {
    let body = &req.body;
    let filter = match &body.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(filter)) => filter.clone(),
        Some(Filter::FilterId(id)) => {
            let json = req
                .services
                .users
                .filter(req.user(), id)?
                .ok_or_else(|| Error::invalid_param("No such filter"))?;
            serde_json::from_value(json).map_err(Error::internal)?
        }
        Some(_) => return Err(Error::invalid_param("Unsupported filter")),
    };
    let device = req.sender_device.clone().ok_or_else(|| Error::forbidden("Sync needs a device"))?;
    let since = body.since.as_deref().map(sync::parse_sync_token).transpose()?;
    let params = Params {
        user: req.user().clone(),
        device,
        since: since.map(|(position, _)| position),
        to_device_since: since.map(|(_, to_device)| to_device),
        full_state: body.full_state,
        filter,
        timeout: body.timeout.unwrap_or_default(),
        use_state_after: body.use_state_after,
        to_device: true,
        peek: None,
        upto: None,
    };
    let _syncing = syncing(&req.services, req.user(), &body.set_presence)?;
    sync::sync(&req.services, &params).await
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
async fn sliding(req: Ruma<sync_events::v5::Request>) -> Result<sync_events::v5::Response> {
    let device = req.sender_device.clone().ok_or_else(|| Error::forbidden("Sync needs a device"))?;
    let _syncing = syncing(&req.services, req.user(), &req.body.set_presence)?;
    let request = sliding::Request::unstable(&req.body);
    Ok(sliding::sync(&req.services, req.user(), &device, &request).await?.response)
}

/// `POST /_matrix/client/v4/sync`: the accepted MSC4186's shape.
async fn sliding_stable(req: Ruma<endpoints::v4_sync::Request>) -> Result<JsonResponse> {
    let device = req.sender_device.clone().ok_or_else(|| Error::forbidden("Sync needs a device"))?;
    let body: sliding::stable::Body = serde_json::from_str(req.body.body.get())
        .map_err(|e| Error::bad_json(format!("Invalid sliding sync request: {e}")))?;
    let _syncing = syncing(&req.services, req.user(), &sliding::stable::presence(&body)?)?;
    let request = sliding::Request::stable(body);
    let answer = sliding::sync(&req.services, req.user(), &device, &request).await?;
    let (_, body) = response_json(answer.response)?;
    json_reply(&sliding::stable::response(body, &answer.extras))
}

pub(super) mod endpoints {
    pub mod v4_sync {
        use ruma::{
            api::{auth_scheme::AccessToken, request},
            metadata,
        };
        use serde_json::value::RawValue;

        pub use crate::api::ruma::JsonResponse as Response;

        metadata! {
            method: POST,
            authentication: AccessToken,
            rate_limited: false,
            path: "/_matrix/client/v4/sync",
        }

        #[request]
        pub struct Request {
            #[ruma_api(body)]
            pub body: Box<RawValue>,
        }
    }
}

/// Marks `user` syncing (presence `set_presence` while the guard lives);
/// a change of presence reaches the servers sharing a room with them.
pub fn syncing<'a>(
    services: &'a Services,
    user: &ruma::UserId,
    set_presence: &ruma::presence::PresenceState,
) -> Result<crate::presence::SyncGuard<'a>> {
    let set_presence = match set_presence {
        ruma::presence::PresenceState::Offline => "offline",
        ruma::presence::PresenceState::Unavailable => "unavailable",
        _ => "online",
    };
    let guard = services.presence.synced(user, set_presence)?;
    if guard.changed {
        crate::federation::edus::announce_presence(services, user)?;
    }
    Ok(guard)
}
