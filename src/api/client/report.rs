//! Reporting content: `POST /rooms/{roomId}/report/{eventId}` and
//! `POST /rooms/{roomId}/report`, `POST /users/{userId}/report`. Reports
//! are stored for the server's admins (their queue: Synapse's admin API and
//! the console).

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::moderation::Report,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(report_event).ruma(report_whole_room).ruma(report_a_user)
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
    let id = rooms.report(Report {
        room_id: Some(body.room_id.clone()),
        event_id: Some(body.event_id.clone()),
        user_id: None,
        reporter: req.user().clone(),
        reason: reason(body.reason.as_deref())?,
        score: serde_json::from_slice::<serde_json::Value>(&req.raw_body)
            .ok()
            .and_then(|b| b["score"].as_i64()),
        ts: 0,
    })?;
    tracing::info!("{} reported {} in {}", req.user(), body.event_id, body.room_id);
    announce(&req.services, id);
    Ok(report_content::v3::Response::new())
}

async fn report_whole_room(req: Ruma<report_room::v3::Request>) -> Result<report_room::v3::Response> {
    let rooms = &req.services.rooms;
    let body = &req.body;
    // Room reports do not depend on membership (the spec forbids that).
    rooms.room_short(&body.room_id)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let id = rooms.report(Report {
        room_id: Some(body.room_id.clone()),
        event_id: None,
        user_id: None,
        reporter: req.user().clone(),
        reason: reason(Some(&body.reason))?,
        score: None,
        ts: 0,
    })?;
    tracing::info!("{} reported room {}", req.user(), body.room_id);
    announce(&req.services, id);
    Ok(report_room::v3::Response::new())
}

async fn report_a_user(req: Ruma<report_user::v3::Request>) -> Result<report_user::v3::Response> {
    let services = &req.services;
    let target = &req.body.user_id;
    if services.users.is_local(target) && !services.users.exists(target)? {
        return Err(Error::not_found("The user was not found."));
    }
    let id = services.rooms.report(Report {
        room_id: None,
        event_id: None,
        user_id: Some(target.clone()),
        reporter: req.user().clone(),
        reason: reason(Some(&req.body.reason))?,
        score: None,
        ts: 0,
    })?;
    tracing::info!("{} reported user {target}", req.user());
    announce(services, id);
    Ok(report_user::v3::Response::new())
}

/// Tells the server's admins, in the background (the reporter does not wait).
fn announce(services: &Arc<Services>, id: u64) {
    let services = services.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::admin::notices::announce_report(&services, id).await {
            tracing::warn!("report {id} could not be announced to the admins: {e}");
        }
    });
}
