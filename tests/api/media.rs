//! The content repository (issue 17): uploads and downloads over HTTP as
//! a client sends them, what is stored, and what is refused.

use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::common::{Session, TestServer};

/// An upload as a client sends it; the status and JSON body.
async fn upload(
    s: &TestServer,
    who: &Session,
    path: &str,
    kind: &str,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    let response = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(&who.token)
        .header(header::CONTENT_TYPE, kind)
        .body(bytes)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The media ID of an `mxc://` URI of server `s`.
fn media_id(s: &TestServer, uri: &Value) -> String {
    let uri = uri.as_str().expect("content_uri");
    let prefix = format!("mxc://{}/", s.config.server_name);
    assert!(uri.starts_with(&prefix), "{uri}");
    uri[prefix.len()..].to_owned()
}

async fn download(s: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = s.http.get(format!("{}{path}", s.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

/// The files in the store (not counting half-written ones).
fn stored_files(s: &TestServer) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.file_name() != "tmp")
                .map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 })
                .sum()
        })
    }
    count(&s.config.database.path.join("media"))
}

#[tokio::test]
async fn an_upload_comes_back_with_its_type_name_and_safe_headers() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let server = s.config.server_name.to_string();
    let png: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let (status, body) =
        upload(&s, &alice, "/_matrix/media/v3/upload?filename=cat%20photo.png", "image/png", png.clone())
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = media_id(&s, &body["content_uri"]);

    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let response = download(&s, Some(&alice.token), &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(headers[header::CONTENT_DISPOSITION], "inline; filename*=utf-8''cat%20photo.png");
    assert!(headers["content-security-policy"].to_str().unwrap().starts_with("sandbox;"));
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    assert_eq!(response.bytes().await.unwrap(), png);

    // The name in the path wins; a type that could run script is an attachment.
    let (status, body) =
        upload(&s, &alice, "/_matrix/media/v3/upload", "text/html", b"<script>".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let html = media_id(&s, &body["content_uri"]);
    let response = download(
        &s,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/download/{server}/{html}/page.html"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=UTF-8");
    assert_eq!(response.headers()[header::CONTENT_DISPOSITION], "attachment; filename=page.html");

    // Part of a large file, as a video player asks for it.
    let response = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(&alice.token)
        .header(header::RANGE, "bytes=1000-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.unwrap(), png[1000..1100]);

    // An empty file is a file.
    let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let empty = media_id(&s, &body["content_uri"]);
    let response =
        download(&s, Some(&alice.token), &format!("/_matrix/client/v1/media/download/{server}/{empty}"))
            .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());

    // Everything is there after a restart.
    s.restart().await;
    let response = download(&s, Some(&alice.token), &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), png);
}

#[tokio::test]
async fn downloads_need_a_token_and_the_legacy_paths_serve_only_older_media() {
    let mut s = TestServer::start_with(|c| c.media.enable_authenticated_media = false).await;
    let alice = s.register("alice").await;
    let server = s.config.server_name.to_string();
    let (status, body) =
        upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", b"before".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = media_id(&s, &body["content_uri"]);
    // The operator turns authenticated media on.
    s.config.media.enable_authenticated_media = true;
    s.restart().await;
    let (status, body) =
        upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", b"after".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = media_id(&s, &body["content_uri"]);

    for (id, text) in [(&before, "before"), (&after, "after")] {
        let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
        let response = download(&s, None, &path).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errcode"], "M_MISSING_TOKEN");
        let response = download(&s, Some(&alice.token), &path).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.unwrap(), text.as_bytes());
    }
    for version in ["v3", "r0"] {
        let response =
            download(&s, None, &format!("/_matrix/media/{version}/download/{server}/{before}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.unwrap(), "before".as_bytes());
        let response =
            download(&s, None, &format!("/_matrix/media/{version}/download/{server}/{after}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errcode"], "M_NOT_FOUND");
    }
    // Unknown media, and IDs that could reach outside the store.
    for id in ["nothere", "..", "a%2F..%2Fb"] {
        let response =
            download(&s, Some(&alice.token), &format!("/_matrix/client/v1/media/download/{server}/{id}"))
                .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
    }
    let (status, body) = s.get("/_matrix/client/v1/media/config", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["m.upload.size"], 52428800);
}

#[tokio::test]
async fn oversize_uploads_are_refused_with_nothing_stored_and_identical_ones_stored_once() {
    let s = TestServer::start_with(|c| c.media.max_upload_size = 4096).await;
    let alice = s.register("alice").await;
    let (status, body) = s.get("/_matrix/media/v3/config", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["m.upload.size"], 4096);

    let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", "image/png", vec![7; 4097]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["errcode"], "M_TOO_LARGE");
    // The same without a Content-Length (chunked): cut off past the limit.
    let chunks = futures_util::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![7u8; 1000])));
    let response = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", s.base))
        .bearer_auth(&alice.token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(stored_files(&s), 0);

    // Five clients upload the same picture at once: five media, one file.
    let uploads = (0..5).map(|_| upload(&s, &alice, "/_matrix/media/v3/upload", "image/png", vec![9; 4096]));
    let mut ids = Vec::new();
    for (status, body) in futures_util::future::join_all(uploads).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(media_id(&s, &body["content_uri"]));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert_eq!(stored_files(&s), 1);

    // No token, no upload.
    let response = s.http.post(format!("{}/_matrix/media/v3/upload", s.base)).body("x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_reserved_media_id_waits_for_its_upload() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let server = s.config.server_name.to_string();
    let (status, body) = s.post("/_matrix/media/v1/create", Some(&alice.token), Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = media_id(&s, &body["content_uri"]);
    let expires = body["unused_expires_at"].as_u64().expect("unused_expires_at");
    assert!(expires > hearth::util::now_ms() + 23 * 3600 * 1000, "{body}");

    // Asked for too early.
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let response = download(&s, Some(&bob.token), &format!("{path}?timeout_ms=50")).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_YET_UPLOADED");

    // bob waits while alice uploads; only she may.
    let waiting = download(&s, Some(&bob.token), &path);
    let put = |who: &Session, bytes: &'static [u8]| {
        s.http
            .put(format!("{}/_matrix/media/v3/upload/{server}/{id}?filename=notes.txt", s.base))
            .bearer_auth(&who.token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(bytes)
            .send()
    };
    let by_bob = put(&bob, b"bob's").await.unwrap();
    assert_eq!(by_bob.status(), StatusCode::FORBIDDEN);
    let uploading = async {
        let response = put(&alice, b"alice's notes").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    };
    let (response, ()) = tokio::join!(waiting, uploading);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_DISPOSITION], "inline; filename=notes.txt");
    assert_eq!(response.bytes().await.unwrap(), "alice's notes".as_bytes());
    let again = put(&alice, b"other").await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["errcode"], "M_CANNOT_OVERWRITE_MEDIA");

    // Never created here.
    let response = s
        .http
        .put(format!("{}/_matrix/media/v3/upload/{server}/neverCreated", s.base))
        .bearer_auth(&alice.token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Five unused reservations at most.
    for _ in 0..5 {
        let (status, body) = s.post("/_matrix/media/v1/create", Some(&bob.token), Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = s.post("/_matrix/media/v1/create", Some(&bob.token), Value::Null).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
}
