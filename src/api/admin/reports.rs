//! Synapse's admin API for reports: `GET /_synapse/admin/v1/event_reports`
//! (the queue, newest first), one report with its event, and deleting it
//! once dealt with; the same for user reports (`/v1/user_reports`). And
//! Hearth's one-click actions on an event report (the console's):
//! `POST /_hearth/admin/v1/event_reports/{id}/action` with `action` one of
//! `redact`, `kick`, `ban` (the event's sender) or `dismiss`; and
//! Synapse's redaction of all of a user's events
//! (`POST /_synapse/admin/v1/user/{userId}/redact`, a job with its status).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{Admin, Body, Params, paged, string_field, user_id};
use crate::{
    Error, Result,
    admin::moderation::{REDACT_USER, ReportAction, act_on_report, redact_user_events},
    rooms::moderation::Report,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const V1: &str = "/_synapse/admin/v1";
    router
        .route(&format!("{V1}/event_reports"), get(list_events))
        .route(&format!("{V1}/event_reports/{{id}}"), get(event_report).delete(delete_event_report))
        .route(&format!("{V1}/user_reports"), get(list_users))
        .route(&format!("{V1}/user_reports/{{id}}"), get(user_report).delete(delete_user_report))
        .route("/_hearth/admin/v1/event_reports/{id}/action", post(act))
        .route(&format!("{V1}/user/{{user_id}}/redact"), post(redact_user))
        .route(&format!("{V1}/user/redact_status/{{redact_id}}"), get(redact_status))
}

/// An event report as Synapse lists it: with the reported event's sender
/// and the room's name and canonical alias.
fn event_report_json(services: &Services, id: u64, report: &Report) -> Result<Value> {
    let rooms = &services.rooms;
    let room_short = match &report.room_id {
        Some(room_id) => rooms.room_short(room_id)?,
        None => None,
    };
    let field = |kind: &str, name: &str| -> Result<Option<String>> {
        match room_short {
            Some(short) => rooms.current_state_field(short, kind, "", name),
            None => Ok(None),
        }
    };
    let sender = match &report.event_id {
        Some(event_id) => rooms.pdu(event_id)?.map(|pdu| pdu.sender),
        None => None,
    };
    Ok(json!({
        "id": id,
        "received_ts": report.ts,
        "room_id": report.room_id,
        "event_id": report.event_id,
        "user_id": report.reporter,
        "score": report.score,
        "reason": report.reason,
        "sender": sender,
        "canonical_alias": field("m.room.canonical_alias", "alias")?,
        "name": field("m.room.name", "name")?,
    }))
}

fn user_report_json(id: u64, report: &Report) -> Value {
    json!({
        "id": id,
        "received_ts": report.ts,
        "target_user_id": report.user_id,
        "user_id": report.reporter,
        "reason": report.reason,
    })
}

/// A page of numbered reports, how many matched, and the next `from`.
type Page = (Vec<(u64, Report)>, usize, Option<usize>);

/// The reports of a kind matching the list's filters, in the asked order
/// (newest first by default), paged.
fn page(services: &Services, params: &Params, keep: impl Fn(&Report) -> bool) -> Result<Page> {
    let (from, limit) = params.page()?;
    let backwards = params.backwards("b")?;
    let reporter = params.str("user_id");
    let mut reports: Vec<(u64, Report)> = services
        .rooms
        .reports()?
        .into_iter()
        .filter(|(_, r)| keep(r) && reporter.is_none_or(|who| r.reporter.as_str().contains(who)))
        .collect();
    if backwards {
        reports.reverse();
    }
    let total = reports.len();
    let (page, next) = paged(reports, from, limit);
    Ok((page, total, next))
}

/// `GET /_synapse/admin/v1/event_reports`
async fn list_events(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Result<Json<Value>> {
    let room = params.str("room_id");
    let sender = params.str("event_sender_user_id");
    let (page, total, next) = page(&services, &params, |r| {
        r.is_event_report()
            && room.is_none_or(|room| r.room_id.as_ref().is_some_and(|id| id.as_str().contains(room)))
            && sender.is_none_or(|sender| {
                let event = r.event_id.as_deref().and_then(|id| services.rooms.pdu(id).ok().flatten());
                event.is_some_and(|pdu| pdu.sender.as_str() == sender)
            })
    })?;
    let reports: Vec<Value> =
        page.iter().map(|(id, r)| event_report_json(&services, *id, r)).collect::<Result<_>>()?;
    let mut body = json!({"event_reports": reports, "total": total});
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/user_reports`
async fn list_users(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Result<Json<Value>> {
    let target = params.str("target_user_id");
    let (page, total, next) = page(&services, &params, |r| {
        r.is_user_report()
            && target.is_none_or(|t| r.user_id.as_ref().is_some_and(|u| u.as_str().contains(t)))
    })?;
    let reports: Vec<Value> = page.iter().map(|(id, r)| user_report_json(*id, r)).collect();
    let mut body = json!({"user_reports": reports, "total": total});
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    Ok(Json(body))
}

/// A report's number from the path (Synapse's error when it is not one).
fn report_id(raw: &str) -> Result<u64> {
    raw.parse().map_err(|_| {
        Error::invalid_param("The report_id parameter must be a string representing a positive integer.")
    })
}

/// The report of that number when it is of the kind asked for.
fn find(services: &Services, raw: &str, kind: fn(&Report) -> bool, missing: &str) -> Result<(u64, Report)> {
    let id = report_id(raw)?;
    match services.rooms.get_report(id)? {
        Some(report) if kind(&report) => Ok((id, report)),
        _ => Err(Error::not_found(missing)),
    }
}

/// `GET /_synapse/admin/v1/event_reports/{reportId}`: with the event.
async fn event_report(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (id, report) = find(&services, &raw, Report::is_event_report, "Event report not found")?;
    let mut body = event_report_json(&services, id, &report)?;
    let rooms = &services.rooms;
    let short = match &report.event_id {
        Some(event_id) => rooms.event_short(event_id)?,
        None => None,
    };
    let event = match short {
        Some(short) => rooms.pdu_json(short)?.map(|json| serde_json::to_value(json).unwrap_or_default()),
        None => None,
    };
    body["event_json"] = event.unwrap_or(Value::Null);
    Ok(Json(body))
}

/// `DELETE /_synapse/admin/v1/event_reports/{reportId}`
async fn delete_event_report(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (id, _) = find(&services, &raw, Report::is_event_report, "Event report not found")?;
    services.rooms.delete_report(id)?;
    tracing::info!("{} closed report {id}", admin.user);
    Ok(Json(json!({})))
}

/// `GET /_synapse/admin/v1/user_reports/{reportId}`
async fn user_report(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (id, report) = find(&services, &raw, Report::is_user_report, "User report not found")?;
    Ok(Json(user_report_json(id, &report)))
}

/// `DELETE /_synapse/admin/v1/user_reports/{reportId}`
async fn delete_user_report(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (id, _) = find(&services, &raw, Report::is_user_report, "User report not found")?;
    services.rooms.delete_report(id)?;
    tracing::info!("{} closed user report {id}", admin.user);
    Ok(Json(json!({})))
}

/// `POST /_hearth/admin/v1/event_reports/{reportId}/action`
async fn act(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let id = report_id(&raw)?;
    let action = body
        .get("action")
        .and_then(Value::as_str)
        .and_then(ReportAction::parse)
        .ok_or_else(|| Error::invalid_param("'action' must be one of redact, kick, ban, dismiss"))?;
    let event_id = act_on_report(&services, id, action, &admin.user).await?;
    Ok(Json(json!({"action": action.done(), "event_id": event_id})))
}

/// `POST /_synapse/admin/v1/user/{userId}/redact` `{rooms, reason?, limit?}`
async fn redact_user(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let user = user_id(&raw)?;
    let rooms = match body.get("rooms") {
        None | Some(Value::Null) => return Err(Error::invalid_param("Must provide a value for rooms.")),
        Some(Value::Array(rooms)) => rooms
            .iter()
            .map(|room| room.as_str().and_then(|r| ruma::OwnedRoomId::try_from(r).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::invalid_param("rooms must be a list of room IDs"))?,
        Some(_) => return Err(Error::invalid_param("rooms must be a list of room IDs")),
    };
    let reason = string_field(&body, "reason")?.map(str::to_owned);
    let limit = match body.get("limit") {
        None | Some(Value::Null) => 1000,
        Some(limit) => limit.as_u64().filter(|&l| l > 0).ok_or_else(|| {
            Error::invalid_param("If limit is provided it must be a non-negative integer greater than 0.")
        })? as usize,
    };
    let worker = services.clone();
    let job_user = user.clone();
    let redact_id = services.jobs.start(REDACT_USER, user.as_str(), move |progress| async move {
        let failed = redact_user_events(&worker, &job_user, rooms, reason, limit, &progress).await?;
        Ok(json!({"failed_redactions": failed}))
    })?;
    Ok(Json(json!({"redact_id": redact_id})))
}

/// `GET /_synapse/admin/v1/user/redact_status/{redactId}`
async fn redact_status(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let job = services.jobs.get(&id)?.filter(|job| job.action == REDACT_USER);
    let job = job.ok_or_else(|| Error::not_found(format!("redact id '{id}' not found")))?;
    let status = match job.status {
        crate::jobs::Status::Complete => "completed",
        other => other.as_str(),
    };
    let failed = job.result.as_ref().map_or(json!({}), |r| r["failed_redactions"].clone());
    Ok(Json(json!({"status": status, "failed_redactions": failed})))
}
