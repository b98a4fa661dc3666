//! `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::redact::redact_event;
use serde_json::json;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::{builder::PduBuilder, pipeline::Txn},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(redact)
}

async fn redact(req: Ruma<redact_event::v3::Request>) -> Result<redact_event::v3::Response> {
    let body = &req.body;
    check_may_redact(&req, &body.room_id, &body.event_id)?;
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

/// The target exists in the room and is visible to the user, is not the
/// create event, and the user may redact it.
pub fn check_may_redact<T>(req: &Ruma<T>, room_id: &ruma::RoomId, event_id: &ruma::EventId) -> Result<()> {
    let rooms = &req.services.rooms;
    let not_found = || Error::not_found("Event not found.");
    let (room_short, record) = rooms.room(room_id)?.ok_or_else(not_found)?;
    let short = rooms.event_short(event_id)?.ok_or_else(not_found)?;
    let (Some(meta), Some(target)) = (rooms.event_meta(short)?, rooms.pdu_by_short(short)?) else {
        return Err(not_found());
    };
    if meta.room != room_short || !rooms.can_see(req.user(), &target, &meta)? {
        return Err(not_found());
    }
    if target.kind == ruma::events::TimelineEventType::RoomCreate {
        return Err(Error::forbidden("The create event cannot be redacted"));
    }
    let state = rooms.current_state(&record)?;
    if !rooms.may_redact(&state, req.user(), &target, &record.rules()?)? {
        return Err(Error::forbidden("You don't have permission to redact events from other users"));
    }
    Ok(())
}
