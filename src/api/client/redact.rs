//! `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.

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
    router.ruma(redact)
}

async fn redact(req: Ruma<redact_event::v3::Request>) -> Result<redact_event::v3::Response> {
    let body = &req.body;
    super::state::check_may_redact(&req, &body.room_id, &body.event_id)?;
    let mut content = json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = json!(reason);
    }
    let mut builder = PduBuilder::message("m.room.redaction", content);
    builder.redacts = Some(body.event_id.clone());
    let txn = Txn { device_id: req.device().clone(), txn_id: body.txn_id.to_string(), endpoint: "redact" };
    let event_id =
        super::state::send_event(&req.services, req.user(), &body.room_id, builder, Some(txn)).await?;
    Ok(redact_event::v3::Response::new(event_id))
}
