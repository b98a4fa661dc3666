//! `GET /sync`: the handler parses the request; `crate::sync` builds the answer.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    filter::FilterDefinition,
    sync::sync_events::{self, v3::Filter},
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
    sync::{self, Params},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get)
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
    };
    let set_presence = match &body.set_presence {
        ruma::presence::PresenceState::Offline => "offline",
        ruma::presence::PresenceState::Unavailable => "unavailable",
        _ => "online",
    };
    let _syncing = req.services.presence.synced(req.user(), set_presence)?;
    sync::sync(&req.services, &params).await
}
