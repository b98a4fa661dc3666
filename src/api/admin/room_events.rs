//! Synapse's admin API for a room's events, whatever their history
//! visibility and whether the admin is in the room: pages of messages
//! (`GET /_synapse/admin/v1/rooms/{roomId}/messages`) and an event in its
//! context (`…/context/{eventId}`, for reports).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde_json::{Value, json};

use super::{Admin, Params, rooms::known_room};
use crate::{
    Error, Result,
    api::client::{gap_token, parse_gap},
    rooms::read::Gap,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const V1: &str = "/_synapse/admin/v1";
    router
        .route(&format!("{V1}/rooms/{{room_id}}/messages"), get(messages))
        .route(&format!("{V1}/rooms/{{room_id}}/context/{{event_id}}"), get(context))
}

/// `GET …/messages` (`from`, `to`, `dir`, `limit`: 10 by default).
async fn messages(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    params: Params,
) -> Result<Json<Value>> {
    let (room_short, _) = known_room(&services, &raw)?;
    let rooms = &services.rooms;
    let backwards = params.backwards("b")?;
    let from = match params.str("from") {
        Some(token) => parse_gap(token)?,
        None if backwards => Gap::Live(rooms.latest_position(room_short)? + 1),
        None => Gap::History { depth: 0, short: 0 },
    };
    let to = params.str("to").map(parse_gap).transpose()?;
    let limit = params.int("limit")?.unwrap_or(10).clamp(1, 1000) as usize;
    let page = rooms.page_all_unfiltered(room_short, &admin.user, (from, to), backwards, limit)?;
    let end = page.next.or_else(|| (!page.events.is_empty()).then_some(page.cursor));
    let mut body = json!({"chunk": page.events, "start": gap_token(from), "state": []});
    if let Some(end) = end {
        body["end"] = json!(gap_token(end));
    }
    Ok(Json(body))
}

/// `GET …/context/{eventId}` (`limit`: events before and after, 10 by
/// default, half each way), with the state at the event.
async fn context(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((raw, event_id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>> {
    let (room_short, _) = known_room(&services, &raw)?;
    let rooms = &services.rooms;
    let not_found = || Error::not_found("Event not found.");
    let event_id = ruma::EventId::parse(&event_id).map_err(|_| not_found())?;
    let short = rooms.event_short(&event_id)?.ok_or_else(not_found)?;
    let meta = rooms.event_meta(short)?.filter(|m| m.room == room_short).ok_or_else(not_found)?;
    let limit = params.int("limit")?.unwrap_or(10).clamp(0, 100) as usize;
    let (at, past) = Gap::around(short, &meta);
    let before = rooms.page_all_unfiltered(room_short, &admin.user, (at, None), true, limit / 2)?;
    let after = rooms.page_all_unfiltered(room_short, &admin.user, (past, None), false, limit - limit / 2)?;
    let state = match meta.state_after {
        Some(id) => rooms
            .state
            .load(id)?
            .values()
            .map(|s| rooms.client_event(*s, None, &admin.user))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    Ok(Json(json!({
        "event": rooms.client_event(short, None, &admin.user)?,
        "events_before": before.events,
        "events_after": after.events,
        "state": state,
        "start": gap_token(before.cursor),
        "end": gap_token(after.cursor),
    })))
}
