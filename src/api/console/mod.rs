//! The built-in web console at `/_hearth/console/` (only when
//! `[console] enabled`): three static files compiled into the binary, no
//! build step and nothing from elsewhere. The page holds no data: it logs
//! in and reads everything through the admin API, which answers server
//! admins only. Same-origin and locked by its Content-Security-Policy.

use std::sync::Arc;

use axum::{
    Router,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use http::{HeaderName, HeaderValue, header};

use crate::services::Services;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// Scripts, styles and requests from this origin only; no frames, forms
/// posted elsewhere, plugins or base-URL tricks.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_hearth/console", get(|| async { Redirect::permanent("/_hearth/console/") }))
        .route("/_hearth/console/", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route(
            "/_hearth/console/console.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route("/_hearth/console/console.css", get(|| async { file("text/css; charset=utf-8", STYLE) }))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 8] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
        (HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin")),
    ];
    (headers, body).into_response()
}
