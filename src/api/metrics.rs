//! `GET /metrics` (Prometheus' text format, on listeners with the
//! `metrics` resource), `GET /health` (every listener), and the counting
//! of every routed request.

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use http::header;

use crate::services::Services;

pub fn metrics_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/metrics", get(metrics))
}

pub fn health_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/health", get(|| async { "OK" }))
}

/// Counts a routed request under its route (`/rooms/{room_id}/send/…`).
pub async fn count(State(services): State<Arc<Services>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    if let Some(route) = route {
        let seconds = started.elapsed().as_secs_f64();
        services.metrics.request(method.as_str(), &route, response.status().as_u16(), seconds);
    }
    response
}

async fn metrics(State(services): State<Arc<Services>>) -> Response {
    let metrics = &services.metrics;
    metrics.set("sync_waiters", services.stream.waiters() as u64);
    metrics.set("stream_position", services.stream.visible());
    if let Ok(destinations) = services.servers.outbox.destinations() {
        metrics.set("federation_destinations_queued", destinations.len() as u64);
    }
    for (name, value) in services.db.stats() {
        metrics.set(&format!("rocksdb_{name}"), value);
    }
    if let Some(rss) = crate::metrics::resident_bytes() {
        metrics.set("process_resident_memory_bytes", rss);
    }
    if let Ok(jobs) = services.jobs.all() {
        metrics.set("jobs_running", jobs.iter().filter(|j| !j.status.ended()).count() as u64);
    }
    if let Some(search) = &services.search {
        metrics.set("search_indexed_position", search.indexed());
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
        .into_response()
}
