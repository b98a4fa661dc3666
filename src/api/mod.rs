//! HTTP: the axum router, the ruma adapter, and one handler file per spec
//! module. Handlers stay thin; the work happens in the services.

pub mod admin;
pub mod body;
pub mod client;
mod console;
mod error;
pub mod federation;
mod media;
mod metrics;
pub mod ruma;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
    middleware::Next,
    response::Response,
};
use http::{HeaderName, Method, StatusCode, header};
use tower_http::cors::{Any, CorsLayer};

use crate::{Error, config::Resource, services::Services};

/// Builds the HTTP application of a listener serving `resources`.
pub fn router(services: Arc<Services>, resources: &[Resource]) -> Router {
    let mut router = Router::new();
    if resources.contains(&Resource::Client) {
        router = media::client_routes(admin::routes(client::routes(router)));
        if services.config.console.enabled {
            router = console::routes(router);
        }
    }
    if resources.contains(&Resource::Media) {
        router = media::media_routes(router);
    }
    if resources.contains(&Resource::Client) || resources.contains(&Resource::Federation) {
        router = federation::public_routes(router);
    }
    if resources.contains(&Resource::Federation) {
        router = media::federation_routes(federation::routes(router));
    }
    if resources.contains(&Resource::Keys) {
        router = federation::key_routes(router);
    }
    if resources.contains(&Resource::Metrics) {
        router = metrics::metrics_routes(router);
    }
    metrics::health_routes(router)
        .route_layer(axum::middleware::from_fn_with_state(services.clone(), metrics::count))
        .fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async { Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED) })
        .with_state(services)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(cors())
        .layer(axum::middleware::from_fn(log_request))
}

/// Per-listener settings the request path needs.
#[derive(Debug, Clone, Copy)]
pub struct ListenerInfo {
    pub x_forwarded: bool,
}

/// The client's address: the peer, or the first X-Forwarded-For entry on
/// listeners configured to trust their reverse proxy.
pub fn client_ip(parts: &http::request::Parts) -> IpAddr {
    let trusts_proxy = parts.extensions.get::<ListenerInfo>().is_some_and(|l| l.x_forwarded);
    if trusts_proxy
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(Ipv4Addr::LOCALHOST.into(), |c| c.0.ip())
}

/// Parses a JSON body for the handlers that are not ruma endpoints, with
/// the same error codes: `M_NOT_JSON` for bad syntax, `M_BAD_JSON` for bad fields.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> crate::Result<T> {
    check_utf8(body)?;
    serde_json::from_slice(body).map_err(json_error)
}

/// JSON must be UTF-8 throughout; serde_json does not check the fields it skips.
pub fn check_utf8(body: &[u8]) -> crate::Result<()> {
    std::str::from_utf8(body).map(|_| ()).map_err(|e| {
        Error::new(
            StatusCode::BAD_REQUEST,
            ::ruma::api::error::ErrorKind::NotJson,
            format!("Content not UTF-8: {e}"),
        )
    })
}

/// `M_BAD_JSON` for JSON with the wrong fields, `M_NOT_JSON` for anything else.
pub fn json_error(e: serde_json::Error) -> Error {
    match e.classify() {
        serde_json::error::Category::Data => Error::bad_json(e.to_string()),
        _ => Error::new(
            StatusCode::BAD_REQUEST,
            ::ruma::api::error::ErrorKind::NotJson,
            format!("Content not JSON: {e}"),
        ),
    }
}

/// The CORS headers the spec asks for, so browser clients (Element Web) work.
/// A handler that panicked answers 500 `M_UNKNOWN` (the connection and the
/// server live on).
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    axum::response::IntoResponse::into_response(crate::Error::internal("request handler panicked"))
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
}

/// One log line per request: method, path (never the query, which may hold
/// an access token), status and duration.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(target: "hearth::request", "{method} {path} {status} {ms:.1}ms");
    response
}
