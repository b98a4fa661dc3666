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

/// `image` encoded as `format`.
fn encoded(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), format).expect("encoded");
    bytes
}

/// A picture with something in it (a gradient), `width` × `height`.
fn picture(width: u32, height: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    }))
}

/// Uploads `bytes` as `kind`; the media ID.
pub(crate) async fn uploaded(s: &TestServer, who: &Session, kind: &str, bytes: Vec<u8>) -> String {
    let (status, body) = upload(s, who, "/_matrix/media/v3/upload", kind, bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    media_id(s, &body["content_uri"])
}

/// A thumbnail's type and dimensions (its status must be 200).
async fn thumbnail_of(s: &TestServer, who: &Session, id: &str, query: &str) -> (String, (u32, u32), Vec<u8>) {
    let path = format!("/_matrix/client/v1/media/thumbnail/{}/{id}?{query}", s.config.server_name);
    let response = download(s, Some(&who.token), &path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert!(response.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("inline"));
    let kind = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    let bytes = response.bytes().await.unwrap().to_vec();
    let image = image::load_from_memory(&bytes).expect("a thumbnail is an image");
    (kind, (image.width(), image.height()), bytes)
}

/// The status and errcode of a thumbnail request that must fail.
async fn thumbnail_error(s: &TestServer, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    let response = download(s, token, path).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn thumbnails_of_jpeg_png_gif_and_webp_have_the_sizes_their_method_gives() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let server = s.config.server_name.to_string();

    // Synapse's worked examples, on a 1920×1080 photo.
    let jpeg =
        uploaded(&s, &alice, "image/jpeg", encoded(&picture(1920, 1080), image::ImageFormat::Jpeg)).await;
    for (query, dims) in [
        ("width=100&height=100&method=scale", (320, 180)),
        ("width=64&height=64&method=crop", (96, 96)),
        ("width=800&height=800&method=crop", (96, 96)),
        ("width=1000&height=1000", (800, 450)),
    ] {
        let (kind, got, _) = thumbnail_of(&s, &alice, &jpeg, query).await;
        assert_eq!((kind.as_str(), got), ("image/jpeg", dims), "{query}");
    }
    // A small PNG is never scaled up; its transparency stays PNG.
    let small =
        image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(100, 50, image::Rgba([9, 9, 9, 100])));
    let png = uploaded(&s, &alice, "image/png", encoded(&small, image::ImageFormat::Png)).await;
    for (query, dims) in [
        ("width=320&height=240&method=scale", (100, 50)),
        ("width=96&height=96&method=crop", (50, 50)),
        ("width=32&height=32&method=crop", (32, 32)),
    ] {
        let (kind, got, _) = thumbnail_of(&s, &alice, &png, query).await;
        assert_eq!((kind.as_str(), got), ("image/png", dims), "{query}");
    }
    let webp =
        uploaded(&s, &alice, "image/webp", encoded(&picture(300, 200), image::ImageFormat::WebP)).await;
    let (kind, got, _) = thumbnail_of(&s, &alice, &webp, "width=32&height=32&method=crop").await;
    assert_eq!((kind.as_str(), got), ("image/jpeg", (32, 32)));

    // An animated GIF: animated where asked, still otherwise.
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        let frames = [picture(400, 200), picture(400, 200).fliph()].map(|p| image::Frame::new(p.to_rgba8()));
        encoder.encode_frames(frames).unwrap();
    }
    let gif = uploaded(&s, &alice, "image/gif", gif).await;
    let (kind, got, bytes) = thumbnail_of(&s, &alice, &gif, "width=96&height=96&animated=true").await;
    assert_eq!((kind.as_str(), got), ("image/gif", (320, 160)));
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(image::AnimationDecoder::into_frames(decoder).count(), 2, "both frames");
    let (kind, got, _) = thumbnail_of(&s, &alice, &gif, "width=96&height=96").await;
    assert_eq!((kind.as_str(), got), ("image/png", (320, 160)));

    // A phone's photo stored sideways with EXIF orientation 6 (turn 90°).
    let mut sideways = encoded(&picture(200, 100), image::ImageFormat::Jpeg);
    let exif: &[u8] = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
    let mut segment = vec![0xFF, 0xE1, 0, (exif.len() + 2) as u8];
    segment.extend_from_slice(exif);
    sideways.splice(2..2, segment);
    let sideways = uploaded(&s, &alice, "image/jpeg", sideways).await;
    let (_, got, _) = thumbnail_of(&s, &alice, &sideways, "width=320&height=240").await;
    assert_eq!(got, (100, 200), "upright");

    // Not an image, or a broken one: no thumbnail, the file itself still there.
    let broken = uploaded(&s, &alice, "image/png", b"\x89PNG\r\n\x1a\nnot really".to_vec()).await;
    let text = uploaded(&s, &alice, "text/plain", b"hello".to_vec()).await;
    for id in [&broken, &text] {
        let path = format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32");
        let (status, body) = thumbnail_error(&s, Some(&alice.token), &path).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_UNKNOWN")),
            "{body}"
        );
    }
    let response =
        download(&s, Some(&alice.token), &format!("/_matrix/client/v1/media/download/{server}/{broken}"))
            .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Asked badly, or without a token; the legacy path serves only older media.
    let base = format!("/_matrix/client/v1/media/thumbnail/{server}/{jpeg}");
    let (status, body) = thumbnail_error(&s, Some(&alice.token), &format!("{base}?width=32")).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_MISSING_PARAM")));
    let (status, body) =
        thumbnail_error(&s, Some(&alice.token), &format!("{base}?width=32&height=32&method=stretch")).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")));
    let (status, _) = thumbnail_error(&s, None, &format!("{base}?width=32&height=32")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let legacy = format!("/_matrix/media/v3/thumbnail/{server}/{jpeg}?width=32&height=32");
    let (status, _) = thumbnail_error(&s, None, &legacy).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_image_of_too_many_pixels_gets_no_thumbnail() {
    let s = TestServer::start_with(|c| c.media.max_image_pixels = 10_000).await;
    let alice = s.register("alice").await;
    // A small file that decodes to more pixels than allowed.
    let big = uploaded(&s, &alice, "image/png", encoded(&picture(200, 100), image::ImageFormat::Png)).await;
    let path =
        format!("/_matrix/client/v1/media/thumbnail/{}/{big}?width=32&height=32", s.config.server_name);
    let (status, body) = thumbnail_error(&s, Some(&alice.token), &path).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE")),
        "{body}"
    );
    let small = uploaded(&s, &alice, "image/png", encoded(&picture(50, 50), image::ImageFormat::Png)).await;
    let (kind, dims, _) = thumbnail_of(&s, &alice, &small, "width=32&height=32&method=crop").await;
    assert_eq!((kind.as_str(), dims), ("image/png", (32, 32)));
}

#[tokio::test]
async fn only_allowed_types_are_taken_and_a_users_quota_holds() {
    let s = TestServer::start_with(|c| {
        c.media.allowed_content_types = vec!["image/*".into(), "application/pdf".into()];
        c.media.user_quota_bytes = Some(10_000);
    })
    .await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    for kind in ["application/x-msdownload", "text/html", "application/pdf-but-not"] {
        let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", kind, vec![1; 10]).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
            "{kind}"
        );
    }
    // Without a type it is application/octet-stream: not allowed here either.
    let response = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", s.base))
        .bearer_auth(&alice.token)
        .body("x")
        .send()
        .await;
    assert_eq!(response.unwrap().status(), StatusCode::FORBIDDEN);
    for kind in ["image/png", "IMAGE/JPEG", "application/pdf; version=1.7"] {
        let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", kind, vec![2; 3000]).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
    }
    assert_eq!(stored_files(&s), 1, "the same bytes three times");

    // alice has used 9,000 of her 10,000 bytes: 1,001 more is refused, by
    // its Content-Length or, sent chunked, as it streams.
    let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", "image/png", vec![3; 1001]).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");
    let chunks = futures_util::stream::iter((0..2).map(|_| Ok::<_, std::io::Error>(vec![3u8; 600])));
    let response = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", s.base))
        .bearer_auth(&alice.token)
        .header(header::CONTENT_TYPE, "image/png")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(stored_files(&s), 1, "nothing of the refused uploads");
    let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", "image/png", vec![4; 1000]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // bob's quota is his own.
    let (status, body) = upload(&s, &bob, "/_matrix/media/v3/upload", "image/png", vec![5; 9000]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The EICAR test file: harmless, and found by every virus scanner.
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A real ClamAV daemon (Debian's `clamav-daemon`, installed by `make
/// deps`) on a socket of its own, with a signature database the test
/// writes (EICAR's MD5: there is no network for freshclam); stopped on drop.
struct Clamd {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Clamd {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::create_dir(path.join("db")).unwrap();
        std::fs::write(
            path.join("db/test.hdb"),
            "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n",
        )
        .unwrap();
        let conf = format!(
            "LocalSocket {0}/clamd.sock\nDatabaseDirectory {0}/db\nForeground yes\nLogFile {0}/clamd.log\n\
             StreamMaxLength 100M\nTemporaryDirectory {0}\n",
            path.display()
        );
        std::fs::write(path.join("clamd.conf"), conf).unwrap();
        let child = std::process::Command::new("/usr/sbin/clamd")
            .args(["-c", path.join("clamd.conf").to_str().unwrap()])
            .stdout(std::fs::File::create(path.join("out.log")).unwrap())
            .stderr(std::fs::File::create(path.join("err.log")).unwrap())
            .spawn()
            .expect("clamd (Debian's clamav-daemon; `make deps` installs it)");
        let mut clamd = Self { child, dir };
        // Ready once it answers PING on its socket.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while clamd.ping().await.is_err() {
            assert!(
                clamd.child.try_wait().unwrap().is_none(),
                "clamd exited; see {}",
                clamd.dir.path().display()
            );
            assert!(std::time::Instant::now() < deadline, "clamd did not answer within 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await; // the next poll
        }
        clamd
    }

    async fn ping(&self) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::UnixStream::connect(self.dir.path().join("clamd.sock")).await?;
        socket.write_all(b"zPING\0").await?;
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await?;
        if answer.starts_with(b"PONG") { Ok(()) } else { Err(std::io::Error::other("not PONG")) }
    }

    fn address(&self) -> String {
        format!("unix:{}", self.dir.path().join("clamd.sock").display())
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_clamd_keeps_malware_out_and_a_silent_one_stops_uploads() {
    let mut clamd = Clamd::start().await;
    let s = TestServer::start_with(|c| c.media.scanner = Some(clamd.address())).await;
    let alice = s.register("alice").await;
    let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", EICAR.into()).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("Eicar-Test-Signature"), "{body}");
    assert_eq!(stored_files(&s), 0, "never stored");
    // Uploaded to a reserved ID: refused the same, and the ID stays empty.
    let (status, body) = s.post("/_matrix/media/v1/create", Some(&alice.token), Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = media_id(&s, &body["content_uri"]);
    let response = s
        .http
        .put(format!("{}/_matrix/media/v3/upload/{}/{id}", s.base, s.config.server_name))
        .bearer_auth(&alice.token)
        .body(EICAR)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let path = format!("/_matrix/client/v1/media/download/{}/{id}?timeout_ms=10", s.config.server_name);
    assert_eq!(download(&s, Some(&alice.token), &path).await.status(), StatusCode::GATEWAY_TIMEOUT);

    let (status, body) =
        upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", b"clean".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let clean = media_id(&s, &body["content_uri"]);
    let path = format!("/_matrix/client/v1/media/download/{}/{clean}", s.config.server_name);
    let response = download(&s, Some(&alice.token), &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), "clean".as_bytes());

    // clamd gone: nothing unscanned gets in (fails closed).
    clamd.child.kill().unwrap();
    clamd.child.wait().unwrap();
    let (status, body) =
        upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", b"unscanned".to_vec()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(stored_files(&s), 1, "only the clean file");

    // Unless the operator chose to let files through.
    let open = TestServer::start_with(|c| {
        c.media.scanner = Some(clamd.address());
        c.media.scanner_fail_open = true;
    })
    .await;
    let bob = open.register("bob").await;
    let (status, body) =
        upload(&open, &bob, "/_matrix/media/v3/upload", "text/plain", b"unscanned".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// moto's S3 server (installed in the test venv by `make test`, from
/// tests/clients/requirements.txt) on a port of its own, with a bucket;
/// stopped on drop.
struct Moto {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Moto {
    const BUCKET: &str = "hearth-media";

    async fn start() -> Self {
        let target = std::path::Path::new(env!("CARGO_BIN_EXE_hearth")).parent().unwrap().parent().unwrap();
        let bin = target.join("venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: `make test` installs it (tests/clients/requirements.txt)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::fs::File::create(dir.path().join("moto.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
            .spawn()
            .expect("moto_server starts");
        let mut moto = Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !http.get(format!("{}/moto-api/", moto.url)).send().await.is_ok_and(|r| r.status().is_success())
        {
            assert!(moto.child.try_wait().unwrap().is_none(), "moto_server exited");
            assert!(std::time::Instant::now() < deadline, "moto_server did not answer within 60 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await; // the next poll
        }
        let created = http.put(format!("{}/{}", moto.url, Self::BUCKET)).send().await.unwrap();
        assert!(created.status().is_success(), "bucket: {}", created.status());
        moto
    }

    /// A URL for `key` signed for the test's own access (not through Hearth).
    fn signed(&self, key: &str, put: bool) -> url::Url {
        use rusty_s3::S3Action;
        let endpoint = self.url.parse().unwrap();
        let bucket =
            rusty_s3::Bucket::new(endpoint, rusty_s3::UrlStyle::Path, Self::BUCKET, "us-east-1").unwrap();
        let credentials = rusty_s3::Credentials::new("testing", "testing");
        let valid = std::time::Duration::from_secs(60);
        match put {
            true => bucket.put_object(Some(&credentials), key).sign(valid),
            false => bucket.get_object(Some(&credentials), key).sign(valid),
        }
    }

    /// The object under `key`, read straight from moto; `None` if absent.
    async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let response = reqwest::get(self.signed(key, false)).await.unwrap();
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(response.bytes().await.unwrap().to_vec()),
            other => panic!("moto answers {other} for {key}"),
        }
    }

    /// Replaces the object under `key` behind Hearth's back.
    async fn replace(&self, key: &str, bytes: Vec<u8>) {
        let response = reqwest::Client::new()
            .put(self.signed(key, true))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `hearth media offload --older-than-days 0` on `s`'s configuration: its
/// output.
fn offload(s: &TestServer) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hearth.toml");
    std::fs::write(&file, toml::to_string(&s.config).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["--config", file.to_str().unwrap(), "media", "offload", "--older-than-days", "0"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "offload: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Whether the local store holds the content with this hash.
fn stored_here(s: &TestServer, sha: &str) -> bool {
    s.config.database.path.join("media").join(&sha[..2]).join(&sha[2..4]).join(sha).exists()
}

#[tokio::test]
async fn media_goes_to_a_real_s3_server_and_comes_back_from_it() {
    let mut moto = Moto::start().await;
    let s = TestServer::start_with(|c| {
        c.media.s3 = Some(hearth::config::S3Config {
            bucket: Moto::BUCKET.into(),
            region: "us-east-1".into(),
            endpoint: Some(moto.url.clone()),
            path_style: None,
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            prefix: "hearth/".into(),
            store_remote: true,
        })
    })
    .await;
    let alice = s.register("alice").await;
    let key = |sha: &str| format!("hearth/{}/{}/{sha}", &sha[..2], &sha[2..4]);
    let download_path = |id: &str| format!("/_matrix/client/v1/media/download/{}/{id}", s.config.server_name);

    // An upload is in the bucket once acknowledged, under its hash.
    let text = b"kept in the bucket".to_vec();
    let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", text.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text_id = media_id(&s, &body["content_uri"]);
    assert_eq!(moto.object(&key(&sha256_hex(&text))).await.as_deref(), Some(&text[..]));

    // Offloaded (it is there already: not sent again), it is gone from
    // here; a download fetches it back and keeps it.
    let out = offload(&s);
    assert!(out.starts_with("offloaded 1 files (18 bytes)") && out.contains("(0 uploaded"), "{out}");
    assert!(!stored_here(&s, &sha256_hex(&text)));
    let response = download(&s, Some(&alice.token), &download_path(&text_id)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), text);
    assert!(stored_here(&s, &sha256_hex(&text)), "kept here again");

    // Thumbnails go to the bucket too.
    let png = encoded(&picture(64, 48), image::ImageFormat::Png);
    let image_id = uploaded(&s, &alice, "image/png", png.clone()).await;
    assert_eq!(moto.object(&key(&sha256_hex(&png))).await.as_deref(), Some(&png[..]));
    let (_, dims, thumbnail) = thumbnail_of(&s, &alice, &image_id, "width=32&height=32&method=crop").await;
    assert_eq!(dims, (32, 32));
    assert_eq!(moto.object(&key(&sha256_hex(&thumbnail))).await.as_deref(), Some(&thumbnail[..]));

    // Bytes changed in the bucket are neither served nor kept.
    let other = b"a file of its own".to_vec();
    let (status, body) = upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", other.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other_id = media_id(&s, &body["content_uri"]);
    offload(&s);
    moto.replace(&key(&sha256_hex(&other)), b"forged".to_vec()).await;
    let response = download(&s, Some(&alice.token), &download_path(&other_id)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!stored_here(&s, &sha256_hex(&other)));
    assert!(!stored_here(&s, &sha256_hex(b"forged")));

    // With the bucket gone an upload is refused, not acknowledged.
    let _ = moto.child.kill();
    let _ = moto.child.wait();
    let (status, body) =
        upload(&s, &alice, "/_matrix/media/v3/upload", "text/plain", b"later".to_vec()).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("M_UNKNOWN")),
        "{body}"
    );
}

/// A server admin, registered with the shared secret (`s3cret`).
pub(crate) async fn admin_of(s: &TestServer) -> Session {
    use hearth::users::shared_secret::{Signed, compute_mac};
    const PATH: &str = "/_synapse/admin/v1/register";
    let (_, body) = s.get(PATH, None).await;
    let nonce = body["nonce"].as_str().expect("a nonce").to_owned();
    let signed = Signed { nonce: &nonce, username: "root", password: "pw", admin: true, user_type: None };
    let mac = compute_mac("s3cret", &signed);
    let (status, body) = s
        .post(PATH, None, serde_json::json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true, "mac": mac}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Session {
        user_id: body["user_id"].as_str().unwrap().into(),
        token: body["access_token"].as_str().unwrap().into(),
        device_id: body["device_id"].as_str().unwrap_or_default().into(),
    }
}

#[tokio::test]
async fn operators_quarantine_protect_and_delete_media() {
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let (alice, bob, root) = (s.register("alice").await, s.register("bob").await, admin_of(&s).await);
    let server = s.config.server_name.to_string();
    let png = encoded(&picture(64, 48), image::ImageFormat::Png);
    let a = uploaded(&s, &alice, "image/png", png.clone()).await;
    let b = uploaded(&s, &alice, "text/plain", b"notes".to_vec()).await;
    let c = uploaded(&s, &bob, "image/png", png.clone()).await; // the same bytes as a
    let get = |id: &str| {
        let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
        let s = &s;
        let token = alice.token.clone();
        async move { download(s, Some(&token), &path).await }
    };
    let admin = |method: reqwest::Method, path: String, token: &str| {
        s.http
            .request(method, format!("{}/_synapse/admin/v1{path}", s.base))
            .bearer_auth(token.to_owned())
            .send()
    };
    let json = |r: reqwest::Response| async move {
        let status = r.status();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let post = reqwest::Method::POST;

    // Admins only.
    let (status, body) =
        json(admin(post.clone(), format!("/media/quarantine/{server}/{a}"), &alice.token).await.unwrap())
            .await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));

    // Quarantined: served to nobody, nor the same bytes uploaded by bob,
    // nor a thumbnail; what else alice has is.
    let (status, body) =
        json(admin(post.clone(), format!("/media/quarantine/{server}/{a}"), &root.token).await.unwrap())
            .await;
    assert_eq!((status, &body), (StatusCode::OK, &serde_json::json!({})));
    for id in [&a, &c] {
        let response = get(id).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
    }
    let (status, _) = thumbnail_error(
        &s,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/thumbnail/{server}/{a}?width=32&height=32"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(get(&b).await.status(), StatusCode::OK);
    let (status, info) =
        json(admin(reqwest::Method::GET, format!("/media/{server}/{a}"), &root.token).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["media_info"]["quarantined_by"], root.user_id.as_str());
    assert_eq!(info["media_info"]["media_length"], png.len());
    let (status, _) =
        json(admin(post.clone(), format!("/media/unquarantine/{server}/{a}"), &root.token).await.unwrap())
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(&a).await.status(), StatusCode::OK);
    assert_eq!(get(&c).await.status(), StatusCode::OK);

    // All of alice's media, but what is protected.
    let (status, _) =
        json(admin(post.clone(), format!("/media/protect/{b}"), &root.token).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        json(admin(post.clone(), "/media/protect/nosuchmedia".to_owned(), &root.token).await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let path = format!("/user/{}/media/quarantine", alice.user_id);
    let (status, body) = json(admin(post.clone(), path, &root.token).await.unwrap()).await;
    assert_eq!(
        (status, body["num_quarantined"].as_u64()),
        (StatusCode::OK, Some(2)),
        "a, and c of the same bytes"
    );
    assert_eq!(get(&b).await.status(), StatusCode::OK);
    assert_eq!(get(&a).await.status(), StatusCode::NOT_FOUND);

    // Listed, newest first, a page at a time.
    let path = format!("/users/{}/media?limit=1", alice.user_id);
    let (status, list) = json(admin(reqwest::Method::GET, path, &root.token).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!((list["total"].as_u64(), list["next_token"].as_u64()), (Some(2), Some(1)));
    assert_eq!(list["media"][0]["media_id"], b.as_str());
    assert_eq!(list["media"][0]["safe_from_quarantine"], true);

    // Deleted: the record, its thumbnails, and the file once nothing names it.
    let stored_before = stored_files(&s);
    let (status, body) =
        json(admin(reqwest::Method::DELETE, format!("/media/{server}/{a}"), &root.token).await.unwrap())
            .await;
    assert_eq!((status, &body["deleted_media"]), (StatusCode::OK, &serde_json::json!([a])), "{body}");
    assert_eq!(get(&a).await.status(), StatusCode::NOT_FOUND);
    assert!(stored_here(&s, &sha256_hex(&png)), "c still names the bytes");
    let (status, body) = json(
        admin(reqwest::Method::DELETE, format!("/users/{}/media", bob.user_id), &root.token).await.unwrap(),
    )
    .await;
    assert_eq!((status, &body["deleted_media"]), (StatusCode::OK, &serde_json::json!([c])), "{body}");
    assert!(!stored_here(&s, &sha256_hex(&png)));
    assert!(stored_files(&s) < stored_before);
    let (status, body) =
        json(admin(reqwest::Method::DELETE, format!("/media/other.example/{b}"), &root.token).await.unwrap())
            .await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_UNKNOWN")));

    // By age: not what is protected, nor an avatar unless asked.
    let avatar = uploaded(&s, &alice, "image/png", encoded(&picture(20, 20), image::ImageFormat::Png)).await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.user_id),
            Some(&alice.token),
            serde_json::json!({"avatar_url": format!("mxc://{server}/{avatar}")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let later =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 60_000;
    let (status, body) =
        json(admin(post.clone(), "/media/delete?before_ts=1000".into(), &root.token).await.unwrap()).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")));
    let (status, body) =
        json(admin(post.clone(), format!("/media/delete?before_ts={later}"), &root.token).await.unwrap())
            .await;
    assert_eq!((status, body["total"].as_u64()), (StatusCode::OK, Some(0)), "{body}");
    let path = format!("/media/delete?before_ts={later}&keep_profiles=false");
    let (status, body) = json(admin(post.clone(), path, &root.token).await.unwrap()).await;
    assert_eq!((status, &body["deleted_media"]), (StatusCode::OK, &serde_json::json!([avatar])), "{body}");
    assert_eq!(get(&b).await.status(), StatusCode::OK, "protected");
}

#[tokio::test]
async fn admins_see_each_users_media_usage() {
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let root = admin_of(&s).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    uploaded(&s, &alice, "text/plain", vec![b'a'; 100]).await;
    uploaded(&s, &alice, "text/plain", vec![b'b'; 50]).await;
    uploaded(&s, &bob, "text/plain", vec![b'c'; 500]).await;
    const PATH: &str = "/_synapse/admin/v1/statistics/users/media";

    let (status, body) = s.get(PATH, Some(&alice.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");
    let (status, body) = s.get(&format!("{PATH}?order_by=media_count&dir=b"), Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 2, "{body}");
    assert_eq!(body["users"][0]["user_id"], alice.user_id.as_str(), "{body}");
    assert_eq!(
        (body["users"][0]["media_count"].as_u64(), body["users"][0]["media_length"].as_u64()),
        (Some(2), Some(150))
    );
    assert_eq!(
        (body["users"][1]["media_count"].as_u64(), body["users"][1]["media_length"].as_u64()),
        (Some(1), Some(500))
    );
    let (_, body) = s.get(&format!("{PATH}?order_by=media_length&dir=b&limit=1"), Some(&root.token)).await;
    assert_eq!(body["users"][0]["user_id"], bob.user_id.as_str(), "{body}");
    assert_eq!(body["next_token"], 1, "{body}");
    let (_, body) = s.get(&format!("{PATH}?search_term=BOB"), Some(&root.token)).await;
    assert_eq!(body["total"], 1, "{body}");
    for bad in ["from=-1", "until_ts=5&from_ts=10", "search_term=", "order_by=size"] {
        let (status, body) = s.get(&format!("{PATH}?{bad}"), Some(&root.token)).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn admins_list_and_quarantine_a_rooms_media() {
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let root = admin_of(&s).await;
    let alice = s.register("alice").await;
    let room = crate::common::create_room(&s, &alice, serde_json::json!({})).await;
    let media = uploaded(&s, &alice, "text/plain", b"a file".to_vec()).await;
    let local = format!("mxc://{}/{media}", s.config.server_name);
    for (txn, url) in [("a", local.as_str()), ("b", "mxc://elsewhere.example/abc")] {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let (status, _) = s
            .put(&path, Some(&alice.token), serde_json::json!({"msgtype": "m.file", "body": "f", "url": url}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let path = format!("/_synapse/admin/v1/room/{room}/media");
    let (status, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = s.get(&path, Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({"local": [local], "remote": ["mxc://elsewhere.example/abc"]}));
    let (status, body) = s.get("/_synapse/admin/v1/room/!unknown:localhost/media", Some(&root.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) =
        s.post(&format!("{path}/quarantine"), Some(&root.token), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["num_quarantined"], 1, "only the local item is kept here: {body}");
    let (status, info) =
        s.get(&format!("/_synapse/admin/v1/media/{}/{media}", s.config.server_name), Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["media_info"]["quarantined_by"], root.user_id.as_str(), "{info}");
}
