//! Reporting content: `POST /rooms/{roomId}/report/{eventId}` and
//! `POST /rooms/{roomId}/report`. Reports are stored for the server's admins.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::room::{report_content, report_room};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::moderation::Report,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(report_event).ruma(report_whole_room)
}

/// Longest reason kept, in characters.
const MAX_REASON: usize = 1000;

fn reason(reason: Option<&str>) -> Result<Option<String>> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON => {
            Err(Error::invalid_param(format!("Reason is too long (max {MAX_REASON} characters)")))
        }
        r => Ok(r.map(str::to_owned)),
    }
}

async fn report_event(req: Ruma<report_content::v3::Request>) -> Result<report_content::v3::Response> {
    let rooms = &req.services.rooms;
    let body = &req.body;
    // The spec: the reporter must be in the room, and the event in it.
    let not_found = || Error::not_found("Unable to report the event: not found or not in the room");
    let room_short = rooms.room_short(&body.room_id)?.ok_or_else(not_found)?;
    if rooms.membership(req.user(), room_short)?.as_deref() != Some("join") {
        return Err(not_found());
    }
    let short = rooms.event_short(&body.event_id)?.ok_or_else(not_found)?;
    if rooms.event_meta(short)?.is_none_or(|meta| meta.room != room_short) {
        return Err(not_found());
    }
    rooms.report(Report {
        room_id: body.room_id.clone(),
        event_id: Some(body.event_id.clone()),
        reporter: req.user().clone(),
        reason: reason(body.reason.as_deref())?,
        ts: 0,
    })?;
    tracing::info!("{} reported {} in {}", req.user(), body.event_id, body.room_id);
    Ok(report_content::v3::Response::new())
}

async fn report_whole_room(req: Ruma<report_room::v3::Request>) -> Result<report_room::v3::Response> {
    let rooms = &req.services.rooms;
    let body = &req.body;
    // Room reports do not depend on membership (the spec forbids that).
    rooms.room_short(&body.room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
    rooms.report(Report {
        room_id: body.room_id.clone(),
        event_id: None,
        reporter: req.user().clone(),
        reason: reason(Some(&body.reason))?,
        ts: 0,
    })?;
    tracing::info!("{} reported room {}", req.user(), body.room_id);
    Ok(report_room::v3::Response::new())
}
