//! `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`, and the form without a
//! transaction ID (`POST`) that Synapse still serves.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::redact::redact_event;
use serde_json::json;

use crate::{
    Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::{builder::PduBuilder, pipeline::Txn},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(redact).ruma(post_redact)
}

async fn redact(req: Ruma<redact_event::v3::Request>) -> Result<redact_event::v3::Response> {
    let body = &req.body;
    let txn = Txn { device_id: req.device().clone(), txn_id: body.txn_id.to_string(), endpoint: "redact" };
    let event_id =
        send_redaction(&req, &body.room_id, &body.event_id, body.reason.as_deref(), Some(txn)).await?;
    Ok(redact_event::v3::Response::new(event_id))
}

async fn post_redact(req: Ruma<post_redact::Request>) -> Result<post_redact::Response> {
    let body = &req.body;
    let event_id = send_redaction(&req, &body.room_id, &body.event_id, body.reason.as_deref(), None).await?;
    Ok(post_redact::Response { event_id })
}

async fn send_redaction<T>(
    req: &Ruma<T>,
    room_id: &ruma::RoomId,
    target: &ruma::EventId,
    reason: Option<&str>,
    txn: Option<Txn>,
) -> Result<ruma::OwnedEventId> {
    super::state::check_may_redact(req, room_id, target)?;
    let mut content = json!({});
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    let mut builder = PduBuilder::message("m.room.redaction", content);
    builder.redacts = Some(target.to_owned());
    super::state::send_event(&req.services, req.user(), room_id, builder, txn).await
}

/// `POST /rooms/{roomId}/redact/{eventId}`, without a transaction ID: gone
/// from the spec, still served by Synapse (and used by SyTest).
mod post_redact {
    use ruma::{
        OwnedEventId, OwnedRoomId,
        api::{auth_scheme::AccessToken, request, response},
        metadata,
    };

    metadata! {
        method: POST,
        authentication: AccessToken,
        rate_limited: false,
        history: {
            unstable => "/_matrix/client/api/v1/rooms/{room_id}/redact/{event_id}",
            1.0 => "/_matrix/client/r0/rooms/{room_id}/redact/{event_id}",
            1.1 => "/_matrix/client/v3/rooms/{room_id}/redact/{event_id}",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    #[response]
    pub struct Response {
        pub event_id: OwnedEventId,
    }
}
