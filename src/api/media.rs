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
    config::{ThumbnailMethod, ThumbnailSize},
    media::{Content, MediaRecord, Upload, valid_media_id},
    services::Services,
};

/// `/_matrix/client/v1/media/*` (a client resource).
pub fn client_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}", get(download))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}/{file_name}", get(download_named))
        .route("/_matrix/client/v1/media/thumbnail/{server}/{media_id}", get(thumbnail))
        .route("/_matrix/client/v1/media/preview_url", get(preview_url))
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
            .route(&format!("/_matrix/media/{version}/preview_url"), get(preview_url))
            .route(
                &format!("/_matrix/media/{version}/thumbnail/{{server}}/{{media_id}}"),
                get(legacy_thumbnail),
            )
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

/// `/_matrix/federation/v1/media/*` (the federation resource): this
/// server's media for other servers, whatever `enable_authenticated_media`
/// says (their users' downloads are authenticated by their servers).
pub fn federation_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/federation/v1/media/download/{media_id}", get(federation_download))
        .route("/_matrix/federation/v1/media/thumbnail/{media_id}", get(federation_thumbnail))
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
    pregenerate(&services, &media_id);
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
    pregenerate(&services, &media_id);
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/preview_url` (and the legacy paths, which
/// need a token too): 404 `M_UNRECOGNIZED` unless previews are enabled.
async fn preview_url(
    State(services): State<Arc<Services>>,
    auth: Authed,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let Some(previewer) = &services.media.previewer else {
        return Err(Error::unrecognized(StatusCode::NOT_FOUND));
    };
    let url = query_param(query.as_deref(), "url").ok_or_else(|| {
        Error::custom(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", "Missing string query parameter 'url'")
    })?;
    let ts = match query_param(query.as_deref(), "ts") {
        Some(ts) => {
            ts.parse::<u64>().map_err(|_| Error::invalid_param("ts must be a non-negative integer"))?
        }
        None => crate::util::now_ms(),
    };
    let og = previewer.preview(&services.media, &auth.user, &url, ts).await?;
    let ours = format!("mxc://{}/", services.config.server_name);
    if let Some(media_id) = og.get("og:image").and_then(Value::as_str).and_then(|i| i.strip_prefix(&ours)) {
        pregenerate(&services, media_id);
    }
    Ok(Json(Value::Object(og)))
}

/// Makes the thumbnails of new local media in the background.
fn pregenerate(services: &Arc<Services>, media_id: &str) {
    let (services, media_id) = (services.clone(), media_id.to_owned());
    tokio::spawn(async move {
        let media = &services.media;
        if let Ok(Some(record)) = media.record(media.server_name(), &media_id)
            && let Some(content) = record.content
        {
            media.pregenerate(media.server_name(), &media_id, &content).await;
        }
    });
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
    let (_, content) = find(services, server, media_id, authenticated, request.uri().query()).await?;
    let name = file_name.or(content.upload_name.as_deref());
    let path = services.media.file(&content.sha256).await?;
    let disposition = disposition(&content.content_type, name);
    serve(&path, content_type(&content.content_type), disposition, request).await
}

/// The content of media `media_id` of `server` (and the server name,
/// checked), waiting (`timeout_ms`) for a reserved ID's upload; on a
/// legacy endpoint (`authenticated` false) not what is served only with a token.
async fn find<'a>(
    services: &Services,
    server: &'a str,
    media_id: &str,
    authenticated: bool,
    query: Option<&str>,
) -> Result<(&'a ServerName, Content)> {
    let server = media_of(server, media_id)?;
    let frozen = !authenticated && services.media.config.enable_authenticated_media;
    let wait = wait_of(query)?;
    if !services.media.is_local(server) {
        if frozen {
            // As Synapse: the legacy endpoints fetch nothing new from other
            // servers, and serve only what was kept before the switch.
            return match services.media.kept_remote(server, media_id)? {
                Some(MediaRecord { content: Some(content), authenticated: false, .. }) => {
                    Ok((server, content))
                }
                _ => Err(Error::not_found("Not found")),
            };
        }
        let content = services.media.remote_content(&services.servers, server, media_id, wait).await?;
        return Ok((server, content));
    }
    let (record, content) = services.media.local_content(media_id, wait).await?;
    if frozen && record.authenticated {
        return Err(Error::not_found("Not found"));
    }
    Ok((server, content))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(
    State(services): State<Arc<Services>>,
    _viewer: Viewer,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response> {
    thumbnail_of(&services, &server, &media_id, true, request).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`: no token.
async fn legacy_thumbnail(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response> {
    thumbnail_of(&services, &server, &media_id, false, request).await
}

async fn thumbnail_of(
    services: &Services,
    server: &str,
    media_id: &str,
    authenticated: bool,
    request: Request,
) -> Result<Response> {
    let query = request.uri().query();
    let (wanted, animated) = thumbnail_query(query)?;
    let (server, content) = find(services, server, media_id, authenticated, query).await?;
    let (made, path) = services.media.thumbnail(server, media_id, &content, wanted, animated).await?;
    serve(&path, content_type(&made.content_type), thumbnail_disposition(&made.content_type), request).await
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`, signed by the
/// asking server: a `multipart/mixed` answer of the metadata (`{}`) and the file.
async fn federation_download(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    request: Request,
) -> Result<Response> {
    let (content, _) = federation_media(&services, &media_id, request).await?;
    let name = content.upload_name.as_deref();
    let path = services.media.file(&content.sha256).await?;
    multipart(&path, content_type(&content.content_type), disposition(&content.content_type, name)).await
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`, signed: the
/// thumbnail as `download` gives the file.
async fn federation_thumbnail(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    request: Request,
) -> Result<Response> {
    let (content, query) = federation_media(&services, &media_id, request).await?;
    let (wanted, animated) = thumbnail_query(query.as_deref())?;
    let server = services.media.server_name();
    let (made, path) = services.media.thumbnail(server, &media_id, &content, wanted, animated).await?;
    multipart(&path, content_type(&made.content_type), thumbnail_disposition(&made.content_type)).await
}

/// The local media a signed federation request asks for, and the query.
async fn federation_media(
    services: &Services,
    media_id: &str,
    request: Request,
) -> Result<(Content, Option<String>)> {
    let (parts, _) = request.into_parts();
    crate::servers::auth::verify_request(&services.servers, &parts, b"").await?;
    if !valid_media_id(media_id) {
        return Err(Error::not_found("Not found"));
    }
    let query = parts.uri.query();
    let (_, content) = services.media.local_content(media_id, wait_of(query)?).await?;
    Ok((content, query.map(str::to_owned)))
}

/// The spec's federation media answer: `multipart/mixed` of a JSON part
/// (the metadata, `{}`) and the file's part, which streams.
async fn multipart(path: &std::path::Path, kind: HeaderValue, disposition: HeaderValue) -> Result<Response> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::internal(format!("media: reading {}: {e}", path.display())))?;
    let boundary = crate::util::random_string(32);
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {}\r\nContent-Disposition: {}\r\n\r\n",
        kind.to_str().unwrap_or("application/octet-stream"),
        disposition.to_str().unwrap_or("attachment"),
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    use futures_util::StreamExt;
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) })
        .chain(tokio_util::io::ReaderStream::new(file))
        .chain(futures_util::stream::once(async move { Ok(bytes::Bytes::from(tail)) }));
    Response::builder()
        .header(header::CONTENT_TYPE, format!("multipart/mixed; boundary={boundary}"))
        .body(Body::from_stream(body))
        .map_err(Error::internal)
}

/// `inline`, named for the thumbnail's type (the spec asks for a name).
fn thumbnail_disposition(kind: &str) -> HeaderValue {
    let extension = kind.strip_prefix("image/").unwrap_or("png").replace("jpeg", "jpg");
    HeaderValue::from_str(&format!("inline; filename=thumbnail.{extension}"))
        .unwrap_or(HeaderValue::from_static("inline"))
}

/// `width`, `height` (required), `method` (`scale` by default) and
/// `animated` (false by default) of a thumbnail request.
fn thumbnail_query(query: Option<&str>) -> Result<(ThumbnailSize, bool)> {
    let dimension = |name: &str| -> Result<u32> {
        let value = query_param(query, name).ok_or_else(|| {
            Error::new(
                StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::MissingParam,
                format!("Missing required integer query parameter {name}"),
            )
        })?;
        value.parse().map_err(|_| Error::invalid_param(format!("{name} must be a positive integer")))
    };
    let (width, height) = (dimension("width")?, dimension("height")?);
    let method = match query_param(query, "method").as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(_) => return Err(Error::invalid_param("method must be scale or crop")),
    };
    let animated = match query_param(query, "animated").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid_param("animated must be true or false")),
    };
    Ok((ThumbnailSize { width, height, method }, animated))
}

/// The file at `path`, with range requests and conditional requests
/// (tower-http's `ServeFile`), under the headers the spec asks for.
async fn serve(
    path: &std::path::Path,
    kind: HeaderValue,
    disposition: HeaderValue,
    request: Request,
) -> Result<Response> {
    let response = tower_http::services::ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(|e| Error::internal(format!("media: reading {}: {e}", path.display())))?;
    if response.status() == StatusCode::NOT_FOUND {
        tracing::error!("media: the file {} of stored media is missing", path.display());
        return Err(Error::not_found("Not found"));
    }
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    headers.insert(header::CONTENT_TYPE, kind);
    headers.insert(header::CONTENT_DISPOSITION, disposition);
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
