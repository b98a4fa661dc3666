//! A room as an operator checks it, for server admins:
//! `GET /_synapse/admin/v1/rooms/{roomId}/forward_extremities` (Synapse's
//! shape) and `GET /_hearth/admin/v1/rooms/{roomId}/fingerprint` (the
//! extremities and a hash of the current state, to compare servers).

use std::sync::Arc;

use axum::Router;
use serde_json::json;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::inspect::Fingerprint,
    services::Services,
};

mod endpoints {
    use ruma::{
        OwnedRoomId,
        api::{auth_scheme::AccessToken, request},
        metadata,
    };

    pub use crate::api::ruma::JsonResponse as Response;

    pub mod extremities {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            path: "/_synapse/admin/v1/rooms/{room_id}/forward_extremities",
        }

        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub room_id: OwnedRoomId,
        }
    }

    pub mod fingerprint {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            path: "/_hearth/admin/v1/rooms/{room_id}/fingerprint",
        }

        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub room_id: OwnedRoomId,
        }
    }
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(extremities).ruma(fingerprint)
}

/// The room's fingerprint, for a server admin only.
fn fingerprint_for<T>(req: &Ruma<T>, room_id: &ruma::RoomId) -> Result<Fingerprint> {
    super::require_admin(&req.services, req.user())?;
    req.services.rooms.fingerprint(room_id)?.ok_or_else(|| Error::not_found("Room not found"))
}

async fn extremities(req: Ruma<endpoints::extremities::Request>) -> Result<endpoints::Response> {
    let found = fingerprint_for(&req, &req.body.room_id)?;
    let results: Vec<_> = found
        .extremities
        .iter()
        .map(|(event_id, depth)| json!({"event_id": event_id, "depth": depth}))
        .collect();
    crate::api::ruma::json_reply(&json!({"count": results.len(), "results": results}))
}

async fn fingerprint(req: Ruma<endpoints::fingerprint::Request>) -> Result<endpoints::Response> {
    let found = fingerprint_for(&req, &req.body.room_id)?;
    let extremities: Vec<_> = found.extremities.iter().map(|(event_id, _)| event_id).collect();
    crate::api::ruma::json_reply(&json!({
        "room_id": req.body.room_id,
        "forward_extremities": extremities,
        "state_hash": found.state_hash,
        "state_events": found.state_events,
    }))
}
