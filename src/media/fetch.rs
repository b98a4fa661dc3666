//! Fetching another server's media: streamed from the answer to the
//! store, never whole in memory.

use std::time::Duration;

use futures_util::Stream;
use http::{HeaderMap, StatusCode, header};
use ruma::ServerName;

use super::{Committing, Content, store::WriteError};
use crate::{Error, Result, servers::Servers, servers::client::Failure};

/// How long one fetch may take, the transfer included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) async fn fetch<'m>(
    media: &'m super::Media,
    servers: &Servers,
    server: &ServerName,
    media_id: &str,
    wait: Duration,
) -> Result<(Content, Committing<'m>)> {
    let timeout_ms = wait.as_millis();
    let path = format!("/_matrix/federation/v1/media/download/{media_id}?timeout_ms={timeout_ms}");
    let response = match servers.client.get_streamed(server, &path, FETCH_TIMEOUT).await {
        Ok(response) => response,
        // A server without the federation media endpoints (before Matrix 1.11).
        Err(failure) if failure.is_unknown_endpoint() => {
            let legacy = format!(
                "/_matrix/media/v3/download/{server}/{media_id}?allow_remote=false&timeout_ms={timeout_ms}"
            );
            let response = servers
                .client
                .get_streamed(server, &legacy, FETCH_TIMEOUT)
                .await
                .map_err(|f| failed(server, f))?;
            let (content_type, upload_name) = described(response.headers());
            return stored(media, server, response.bytes_stream(), content_type, upload_name).await;
        }
        Err(failure) => return Err(failed(server, failure)),
    };
    let boundary = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(boundary)
        .ok_or_else(|| bad_gateway(server, "the answer is not multipart"))?;
    let mut parts = multer::Multipart::new(response.bytes_stream(), boundary);
    let part = |e: multer::Error| bad_gateway(server, &format!("a bad multipart answer: {e}"));
    // The metadata (`{}` so far): nothing in it is used yet.
    let metadata = parts.next_field().await.map_err(part)?.ok_or_else(|| bad_gateway(server, "no parts"))?;
    metadata.bytes().await.map_err(part)?;
    let file = parts.next_field().await.map_err(part)?.ok_or_else(|| bad_gateway(server, "no file part"))?;
    // The file elsewhere (a CDN): fetched from there, its headers telling
    // its type and name.
    if let Some(location) = file.headers().get(header::LOCATION) {
        let url = location
            .to_str()
            .ok()
            .and_then(|l| url::Url::parse(l).ok())
            .ok_or_else(|| bad_gateway(server, "a Location that is not a URL"))?;
        let response =
            servers.client.get_url_streamed(&url, FETCH_TIMEOUT).await.map_err(|f| failed(server, f))?;
        let (content_type, upload_name) = described(response.headers());
        return stored(media, server, response.bytes_stream(), content_type, upload_name).await;
    }
    let (content_type, upload_name) = described(file.headers());
    stored(media, server, file, content_type, upload_name).await
}

/// The boundary of a `multipart/mixed` answer (multer's own parser
/// knows only `multipart/form-data`).
fn boundary(content_type: &str) -> Option<String> {
    let (essence, params) = content_type.split_once(';')?;
    if !essence.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The type and file name the headers give.
fn described(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let value = |name| headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    (value(header::CONTENT_TYPE).map(str::to_owned), value(header::CONTENT_DISPOSITION).and_then(file_name))
}

/// The file name of a `Content-Disposition`: `filename*=utf-8''…`
/// (percent-encoded) before `filename=…` (a token or a quoted string).
pub(super) fn file_name(disposition: &str) -> Option<String> {
    let params: Vec<(String, &str)> = disposition
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    let extended = params.iter().find(|(k, _)| k == "filename*").and_then(|(_, v)| {
        let (charset, encoded) = v.split_once("''")?;
        charset.eq_ignore_ascii_case("utf-8").then(|| {
            percent_encoding::percent_decode_str(encoded).decode_utf8().ok().map(|s| s.into_owned())
        })?
    });
    extended.or_else(|| {
        let (_, v) = params.iter().find(|(k, _)| k == "filename")?;
        Some(v.trim_matches('"').to_owned())
    })
}

/// The file streamed into the store, scanned.
async fn stored<'m, E: std::fmt::Display>(
    media: &'m super::Media,
    server: &ServerName,
    body: impl Stream<Item = std::result::Result<bytes::Bytes, E>>,
    content_type: Option<String>,
    upload_name: Option<String>,
) -> Result<(Content, Committing<'m>)> {
    let max = media.config.max_upload_size;
    let staged = media.store.stage(body, max).await.map_err(|e| match e {
        WriteError::TooLarge => Error::new(
            StatusCode::BAD_GATEWAY,
            ruma::api::error::ErrorKind::TooLarge,
            format!("The remote file is larger than the limit of {max} bytes"),
        ),
        WriteError::Body(why) => {
            Error::custom(StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("The remote file broke off: {why}"))
        }
        WriteError::Io(e) => Error::internal(format!("media: cannot store a remote file: {e}")),
    })?;
    let (stored, committing) = media.scanned(staged, &format!("a file from {server}"), true).await?;
    let content = Content {
        content_type: content_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into()),
        upload_name: upload_name.filter(|n| !n.is_empty()),
        size: stored.size,
        sha256: stored.sha256,
    };
    Ok((content, committing))
}

/// The other server's "not found" passes through; anything else is 502.
fn failed(server: &ServerName, failure: Failure) -> Error {
    match failure {
        Failure::Remote { status: 404, .. } => failure.to_client_error(server),
        failure => bad_gateway(server, &failure.to_string()),
    }
}

fn bad_gateway(server: &ServerName, why: &str) -> Error {
    tracing::info!("media: fetching from {server}: {why}");
    Error::custom(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "Failed to fetch remote media")
}

#[cfg(test)]
mod tests {
    use super::{boundary, file_name};

    #[test]
    fn only_multipart_mixed_has_a_boundary_here() {
        assert_eq!(boundary("multipart/mixed; boundary=abc").as_deref(), Some("abc"));
        assert_eq!(boundary("Multipart/Mixed; charset=x; boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(boundary("multipart/form-data; boundary=abc"), None);
        assert_eq!(boundary("image/png"), None);
    }

    #[test]
    fn file_names_come_from_either_form() {
        assert_eq!(file_name("inline; filename=cat.png").as_deref(), Some("cat.png"));
        assert_eq!(file_name("attachment; filename=\"my file.pdf\"").as_deref(), Some("my file.pdf"));
        assert_eq!(
            file_name("attachment; filename=x.pdf; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf").as_deref(),
            Some("résumé.pdf")
        );
        assert_eq!(file_name("inline"), None);
    }
}
