//! Content repository endpoints (media): uploads, downloads and the
//! upload limit. Plain axum handlers, not ruma endpoints: uploads and
//! downloads stream, never whole in memory.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, RawQuery, Request, State},
    response::Response,
    routing::{get, post, put},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ruma::ServerName;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{
    Error, Result,
    api::ruma::{Authed, Viewer},
    media::{Content, Upload, valid_media_id},
    services::Services,
};

/// `/_matrix/client/v1/media/*` (a client resource).
pub fn client_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}", get(download))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}/{file_name}", get(download_named))
}

/// `/_matrix/media/*` (the media resource): uploads, and the legacy
/// unauthenticated downloads under each version Synapse serves.
pub fn media_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let mut router = router
        .route("/_matrix/media/v1/create", post(create))
        .route("/_matrix/media/v3/upload/{server}/{media_id}", put(upload_to));
    for version in ["r0", "v1", "v3"] {
        router = router
            .route(&format!("/_matrix/media/{version}/upload"), post(upload))
            .route(&format!("/_matrix/media/{version}/config"), get(config))
            .route(
                &format!("/_matrix/media/{version}/download/{{server}}/{{media_id}}"),
                get(legacy_download),
            )
            .route(
                &format!("/_matrix/media/{version}/download/{{server}}/{{media_id}}/{{file_name}}"),
                get(legacy_download_named),
            );
    }
    router
}

fn content_uri(services: &Services, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", services.config.server_name)
}

/// What the headers and the `filename` parameter say of an upload.
fn upload_of(headers: &HeaderMap, query: Option<&str>) -> Result<Upload> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let declared_size = match headers.get(header::CONTENT_LENGTH) {
        Some(length) => Some(
            length
                .to_str()
                .ok()
                .and_then(|l| l.parse::<u64>().ok())
                .ok_or_else(|| Error::invalid_param("Content-Length is not a number"))?,
        ),
        None => None,
    };
    let upload_name = query_param(query, "filename");
    Ok(Upload { content_type, upload_name, declared_size })
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `POST /_matrix/media/v3/upload`
async fn upload(
    State(services): State<Arc<Services>>,
    auth: Authed,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Value>> {
    let upload = upload_of(&headers, query.as_deref())?;
    let media_id = services.media.upload(&auth.user, upload, body.into_data_stream()).await?;
    Ok(Json(json!({ "content_uri": content_uri(&services, &media_id) })))
}

/// `POST /_matrix/media/v1/create`
async fn create(State(services): State<Arc<Services>>, auth: Authed) -> Result<Json<Value>> {
    let (media_id, expires_at) = services.media.create(&auth.user)?;
    Ok(Json(json!({ "content_uri": content_uri(&services, &media_id), "unused_expires_at": expires_at })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to(
    State(services): State<Arc<Services>>,
    auth: Authed,
    Path((server, media_id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Value>> {
    if server != services.config.server_name.as_str() {
        return Err(Error::not_found("Non-local server name specified"));
    }
    if !valid_media_id(&media_id) {
        return Err(Error::not_found("Unknown media ID"));
    }
    let upload = upload_of(&headers, query.as_deref())?;
    services.media.upload_to(&auth.user, &media_id, upload, body.into_data_stream()).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/config` (and the legacy paths).
async fn config(State(services): State<Arc<Services>>, _viewer: Viewer) -> Json<Value> {
    Json(json!({ "m.upload.size": services.media.config.max_upload_size }))
}

/// How long a download waits for a reserved ID's upload: `timeout_ms`,
/// 20 s by default, at most 60 s (as Synapse).
fn wait_of(query: Option<&str>) -> Result<Duration> {
    let Some(ms) = query_param(query, "timeout_ms") else { return Ok(Duration::from_secs(20)) };
    let ms: u64 = ms.parse().map_err(|_| Error::invalid_param("timeout_ms must be a positive integer"))?;
    Ok(Duration::from_millis(ms.min(60_000)))
}

/// Which media a path names: its server and ID, checked.
fn media_of<'a>(server: &'a str, media_id: &str) -> Result<&'a ServerName> {
    let server = <&ServerName>::try_from(server).map_err(|_| Error::invalid_param("Invalid server name"))?;
    if !valid_media_id(media_id) {
        return Err(Error::not_found("Not found"));
    }
    Ok(server)
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    State(services): State<Arc<Services>>,
    _viewer: Viewer,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response> {
    fetch(&services, &server, &media_id, None, true, request).await
}

/// `…/download/{serverName}/{mediaId}/{fileName}`: served under that name.
async fn download_named(
    State(services): State<Arc<Services>>,
    _viewer: Viewer,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response> {
    fetch(&services, &server, &media_id, Some(&file_name), true, request).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}`: no token;
/// media uploaded while authenticated media is on is not found here.
async fn legacy_download(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response> {
    fetch(&services, &server, &media_id, None, false, request).await
}

async fn legacy_download_named(
    State(services): State<Arc<Services>>,
    Path((server, media_id, file_name)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response> {
    fetch(&services, &server, &media_id, Some(&file_name), false, request).await
}

async fn fetch(
    services: &Services,
    server: &str,
    media_id: &str,
    file_name: Option<&str>,
    authenticated: bool,
    request: Request,
) -> Result<Response> {
    let server = media_of(server, media_id)?;
    let frozen = !authenticated && services.media.config.enable_authenticated_media;
    if !services.media.is_local(server) {
        if frozen {
            // As Synapse: the legacy endpoints fetch nothing new from other servers.
            return Err(Error::not_found("Not found"));
        }
        return Err(Error::custom(
            StatusCode::BAD_GATEWAY,
            "M_UNKNOWN",
            "Media of other servers cannot be fetched yet",
        ));
    }
    let wait = wait_of(request.uri().query())?;
    let (record, content) = services.media.local_content(media_id, wait).await?;
    if frozen && record.authenticated {
        return Err(Error::not_found("Not found"));
    }
    let name = file_name.or(content.upload_name.as_deref());
    serve(services, &content, name, request).await
}

/// The file of `content`, with range requests and conditional requests
/// (tower-http's `ServeFile`), under the headers the spec asks for.
async fn serve(
    services: &Services,
    content: &Content,
    name: Option<&str>,
    request: Request,
) -> Result<Response> {
    let path = services.media.file(content);
    let response = tower_http::services::ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(|e| Error::internal(format!("media: reading {}: {e}", path.display())))?;
    if response.status() == StatusCode::NOT_FOUND {
        tracing::error!("media: the file {} of stored media is missing", path.display());
        return Err(Error::not_found("Not found"));
    }
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    headers.insert(header::CONTENT_TYPE, content_type(&content.content_type));
    headers.insert(header::CONTENT_DISPOSITION, disposition(&content.content_type, name));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Served with every file: the browser runs nothing of it, sends no
/// referrer, may embed it from any origin (CORP, for Element Web), caches
/// it a day; search engines index nothing.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
         style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
    ),
    ("x-content-security-policy", "sandbox;"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "cross-origin"),
    ("cache-control", "public,max-age=86400,s-maxage=0,proxy-revalidate"),
    ("x-robots-tag", "noindex, nofollow, noarchive, noimageindex"),
];

/// The types a browser may show inline (the spec's list): nothing that
/// can run script (no HTML, no SVG).
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Text types served with `charset=UTF-8` when uploaded without one (as Synapse).
const TEXT_TYPES: &[&str] = &[
    "text/css",
    "text/csv",
    "text/html",
    "text/calendar",
    "text/plain",
    "text/javascript",
    "application/json",
    "application/ld+json",
    "application/rtf",
    "image/svg+xml",
    "text/xml",
];

fn content_type(stored: &str) -> HeaderValue {
    let lower = stored.to_ascii_lowercase();
    let value = if TEXT_TYPES.contains(&lower.as_str()) {
        format!("{stored}; charset=UTF-8")
    } else {
        stored.to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `inline` for the spec's safe types, `attachment` otherwise, with the
/// file name: bare when it is an HTTP token, else RFC 5987 UTF-8.
fn disposition(content_type: &str, name: Option<&str>) -> HeaderValue {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) { "inline" } else { "attachment" };
    let value = match name {
        None => kind.to_owned(),
        Some(name) if name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) => {
            format!("{kind}; filename={name}")
        }
        Some(name) => {
            const KEEP: &percent_encoding::AsciiSet =
                &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
            format!("{kind}; filename*=utf-8''{}", percent_encoding::utf8_percent_encode(name, KEEP))
        }
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_are_inline_only_for_safe_types_and_encode_names() {
        assert_eq!(disposition("image/png", Some("cat.png")), "inline; filename=cat.png");
        assert_eq!(disposition("text/html", Some("page.html")), "attachment; filename=page.html");
        assert_eq!(disposition("image/svg+xml", None), "attachment");
        assert_eq!(disposition("Text/Plain; charset=UTF-16", None), "inline");
        assert_eq!(
            disposition("application/pdf", Some("résumé final.pdf")),
            "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20final.pdf"
        );
        assert_eq!(content_type("text/plain"), "text/plain; charset=UTF-8");
        assert_eq!(content_type("text/plain; charset=UTF-16"), "text/plain; charset=UTF-16");
        assert_eq!(content_type("image/png"), "image/png");
    }
}
