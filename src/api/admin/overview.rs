//! Hearth's `GET /_hearth/admin/v1/overview`: the figures the console's
//! first page shows (accounts, rooms, events per second, storage, open
//! reports, other servers' health, jobs); and Synapse's federation
//! destinations API (`/_synapse/admin/v1/federation/destinations`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use ruma::OwnedServerName;
use serde_json::{Value, json};

use super::{Admin, Params, paged};
use crate::{Error, Result, servers::outbox::Health, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const DESTINATIONS: &str = "/_synapse/admin/v1/federation/destinations";
    router
        .route("/_hearth/admin/v1/overview", get(overview))
        .route(DESTINATIONS, get(destinations))
        .route(&format!("{DESTINATIONS}/{{destination}}"), get(destination))
        .route(&format!("{DESTINATIONS}/{{destination}}/reset_connection"), post(reset_connection))
}

async fn overview(State(services): State<Arc<Services>>, _: Admin) -> Result<Json<Value>> {
    let (mut local, mut deactivated, mut admins) = (0, 0, 0);
    for (_, record) in services.users.records()? {
        local += 1;
        deactivated += u64::from(record.deactivated);
        admins += u64::from(record.admin);
    }
    let stats = services.db.stats();
    let stat = |name: &str| stats.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    let destinations: Vec<Value> = destination_health(&services)?.iter().map(destination_summary).collect();
    let jobs: Vec<Value> = services.jobs.all()?.iter().rev().take(20).map(Value::from).collect();
    let metrics = &services.metrics;
    Ok(Json(json!({
        "server_name": services.config.server_name,
        "server_version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": metrics.uptime().as_millis() as u64,
        "users": {"local": local, "deactivated": deactivated, "admins": admins},
        "rooms": {"total": services.rooms.all_rooms()?.len()},
        "events": {"total": metrics.events_appended.get(), "per_second": metrics.events_per_second()},
        "storage": {"database_bytes": stat("sst_files_bytes") + stat("memtable_bytes"), "media_bytes": services.media.total_usage()?},
        "reports": {"open": services.rooms.reports()?.len()},
        "federation": {"enabled": services.config.federation.enabled, "destinations": destinations},
        "jobs": jobs,
    })))
}

/// Every destination the sender has tried since the start, or that has a
/// queue, with what is queued for it.
fn destination_health(services: &Services) -> Result<Vec<(OwnedServerName, Health, usize)>> {
    let outbox = &services.servers.outbox;
    let mut all = outbox.health();
    for queued in outbox.destinations()? {
        if !all.iter().any(|(d, _)| *d == queued) {
            all.push((queued, Health::default()));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter()
        .map(|(destination, health)| {
            let queued = outbox.peek(&destination, 1000)?.len();
            Ok((destination, health, queued))
        })
        .collect()
}

fn destination_summary((destination, health, queued): &(OwnedServerName, Health, usize)) -> Value {
    json!({
        "destination": destination,
        "healthy": health.failure_ts.is_none(),
        "queued": queued,
        "last_success_ts": health.last_success_ts,
        "failing_since_ts": health.failure_ts,
        "retry_at_ts": health.failure_ts.map(|_| health.retry_last_ts + health.retry_interval),
    })
}

/// A destination as Synapse's API shows it.
fn destination_json((destination, health, _): &(OwnedServerName, Health, usize)) -> Value {
    json!({
        "destination": destination,
        "retry_last_ts": health.retry_last_ts,
        "retry_interval": health.retry_interval,
        "failure_ts": health.failure_ts,
        "last_successful_stream_ordering": Value::Null,
    })
}

/// `GET /_synapse/admin/v1/federation/destinations`
async fn destinations(
    State(services): State<Arc<Services>>,
    _: Admin,
    params: Params,
) -> Result<Json<Value>> {
    let (from, limit) = params.page()?;
    let mut all = destination_health(&services)?;
    if let Some(name) = params.str("destination") {
        all.retain(|(d, _, _)| d.as_str().contains(name));
    }
    match params.str("order_by").unwrap_or("destination") {
        "destination" => {}
        "retry_last_ts" => all.sort_by_key(|(_, h, _)| h.retry_last_ts),
        "retry_interval" => all.sort_by_key(|(_, h, _)| h.retry_interval),
        "failure_ts" => all.sort_by_key(|(_, h, _)| h.failure_ts),
        "last_successful_stream_ordering" => {}
        _ => return Err(Error::invalid_param("Unknown value for order_by")),
    }
    if params.backwards("f")? {
        all.reverse();
    }
    let total = all.len();
    let (page, next) = paged(all, from, limit);
    let mut body =
        json!({"destinations": page.iter().map(destination_json).collect::<Vec<_>>(), "total": total});
    if let Some(next) = next {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Json(body))
}

fn find(services: &Services, raw: &str) -> Result<(OwnedServerName, Health, usize)> {
    let unknown = || Error::not_found("Unknown destination");
    let name = OwnedServerName::try_from(raw).map_err(|_| Error::invalid_param("Invalid destination"))?;
    destination_health(services)?.into_iter().find(|(d, _, _)| *d == name).ok_or_else(unknown)
}

/// `GET /_synapse/admin/v1/federation/destinations/{destination}`
async fn destination(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(destination_json(&find(&services, &raw)?)))
}

/// `POST …/destinations/{destination}/reset_connection`: tried again now.
async fn reset_connection(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (destination, _, _) = find(&services, &raw)?;
    services.servers.outbox.contacted(&destination);
    Ok(Json(json!({})))
}
