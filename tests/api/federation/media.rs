//! This server's media for other servers (issue 17): the federation
//! media endpoints, signed requests, multipart answers.

use reqwest::{StatusCode, header};

use super::{TestFederation, server_name, x_matrix};

/// `GET uri` of server `to`, signed as server `from` (or unsigned): the
/// status, the Content-Type and the body.
async fn get(
    fed: &TestFederation,
    from: Option<usize>,
    to: usize,
    uri: &str,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = fed.https().get(format!("{}{uri}", fed.federation_url(to)));
    if let Some(from) = from {
        let key = &fed.servers[from].server().services.keys.keypair;
        request = request
            .header("authorization", x_matrix("GET", uri, None, &server_name(from), &server_name(to), key));
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let kind = response.headers().get(header::CONTENT_TYPE).map_or("", |v| v.to_str().unwrap()).to_owned();
    (status, kind, response.bytes().await.unwrap().to_vec())
}

/// A part of a `multipart/mixed` answer: its headers (lower-cased names) and body.
type Part = (Vec<(String, String)>, Vec<u8>);

/// The parts of a `multipart/mixed` answer.
fn parts(kind: &str, body: &[u8]) -> Vec<Part> {
    let boundary = kind.strip_prefix("multipart/mixed; boundary=").unwrap_or_else(|| panic!("{kind}"));
    let delimiter = format!("\r\n--{boundary}");
    // The body begins with the first delimiter (without the CRLF before it).
    let body = [b"\r\n".as_slice(), body].concat();
    let mut found = Vec::new();
    let mut rest = &body[..];
    loop {
        let at = rest.windows(delimiter.len()).position(|w| w == delimiter.as_bytes()).expect("delimiter");
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            return found;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a delimiter");
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("end of the part's headers");
        let headers = std::str::from_utf8(&rest[..end])
            .unwrap()
            .split("\r\n")
            .map(|h| {
                let (name, value) = h.split_once(':').expect("a header");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        rest = &rest[end + 4..];
        let next =
            rest.windows(delimiter.len()).position(|w| w == delimiter.as_bytes()).expect("next delimiter");
        found.push((headers, rest[..next].to_vec()));
    }
}

/// `bytes` uploaded to `s` by `who` as `kind` named `name` (URL-encoded); the media ID.
async fn uploaded(
    s: &crate::common::TestServer,
    who: &crate::common::Session,
    name: &str,
    kind: &str,
    bytes: Vec<u8>,
) -> String {
    let response = s
        .http
        .post(format!("{}/_matrix/media/v3/upload?filename={name}", s.base))
        .bearer_auth(&who.token)
        .header(header::CONTENT_TYPE, kind)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let uri: serde_json::Value = response.json().await.unwrap();
    uri["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn another_server_downloads_and_thumbnails_our_media_with_a_signed_request() {
    let fed = TestFederation::start(2).await;
    let hs1 = &fed.servers[0];
    let alice = hs1.register("alice").await;
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(400, 300, image::Rgb([200, 10, 10])))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let id = uploaded(hs1, &alice, "red.png", "image/png", png.clone()).await;

    let download = format!("/_matrix/federation/v1/media/download/{id}");
    let (status, kind, body) = get(&fed, Some(1), 0, &download).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let found = parts(&kind, &body);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].0, [("content-type".to_owned(), "application/json".to_owned())]);
    assert_eq!(found[0].1, b"{}");
    assert!(found[1].0.contains(&("content-type".to_owned(), "image/png".to_owned())), "{:?}", found[1].0);
    assert!(found[1].0.contains(&("content-disposition".to_owned(), "inline; filename=red.png".to_owned())));
    assert_eq!(found[1].1, png);

    let thumbnail = format!("/_matrix/federation/v1/media/thumbnail/{id}?width=96&height=96&method=crop");
    let (status, kind, body) = get(&fed, Some(1), 0, &thumbnail).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let found = parts(&kind, &body);
    let image = image::load_from_memory(&found[1].1).expect("an image");
    assert_eq!((image.width(), image.height()), (96, 96));

    // Unsigned: refused; unknown: not found.
    let (status, _, _) = get(&fed, None, 0, &download).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get(&fed, Some(1), 0, "/_matrix/federation/v1/media/download/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn a_user_of_another_server_downloads_and_thumbnails_our_media_kept_there_once_fetched() {
    let mut fed =
        TestFederation::start_with(2, |_, c| c.registration.shared_secret = Some("s3cret".into())).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([x as u8, y as u8, 7])
    }))
    .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
    .unwrap();
    let id = uploaded(hs1, &alice, "%C3%A9t%C3%A9.jpg", "image/jpeg", jpeg.clone()).await;

    let get = async |s: &crate::common::TestServer, token: Option<&str>, path: &str| {
        let mut request = s.http.get(format!("{}{path}", s.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    };
    let download = format!("/_matrix/client/v1/media/download/hs1.test/{id}");
    let thumbnail = format!("/_matrix/client/v1/media/thumbnail/hs1.test/{id}?width=320&height=240");
    let legacy = format!("/_matrix/media/v3/download/hs1.test/{id}");
    // The legacy path fetches nothing from another server.
    assert_eq!(get(hs2, None, &legacy).await.status(), StatusCode::NOT_FOUND);
    // bob's server fetches it (the name and type come along), and thumbnails it itself.
    let response = get(hs2, Some(&bob.token), &download).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(response.headers()[header::CONTENT_DISPOSITION], "inline; filename*=utf-8''%C3%A9t%C3%A9.jpg");
    assert_eq!(response.bytes().await.unwrap(), jpeg);
    let response = get(hs2, Some(&bob.token), &thumbnail).await;
    assert_eq!(response.status(), StatusCode::OK);
    let image = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (320, 240));
    // Unknown there: not found here either.
    let response = get(hs2, Some(&bob.token), "/_matrix/client/v1/media/download/hs1.test/nothingHere").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Purged by hs2's admin (the copy and its thumbnail, files included):
    // fetched again when asked for.
    let root = crate::media::admin_of(hs2).await;
    let later =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 60_000;
    let response = hs2
        .http
        .post(format!("{}/_synapse/admin/v1/purge_media_cache?before_ts={later}", hs2.base))
        .bearer_auth(&root.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["deleted"], 1);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&jpeg))
    };
    let file = hs2.config.database.path.join("media").join(&sha[..2]).join(&sha[2..4]).join(&sha);
    assert!(!file.exists(), "the purged copy's file");
    let response = get(hs2, Some(&bob.token), &download).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), jpeg);
    assert!(file.exists(), "fetched again");

    // Kept: served with hs1 gone.
    fed.servers[0].stop_for_now().await;
    let hs2 = &fed.servers[1];
    let response = get(hs2, Some(&bob.token), &download).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), jpeg);
    let response = get(hs2, Some(&bob.token), "/_matrix/client/v1/media/download/hs1.test/notKeptHere").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

/// A server that answers the federation media download with a `Location`
/// (its files on a CDN): the file is fetched from there, with the type and
/// name the CDN gives, and kept.
#[tokio::test]
async fn media_another_server_keeps_elsewhere_is_fetched_from_its_location() {
    use axum::{Router, response::IntoResponse, routing::get as route_get};
    let file: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();

    // The CDN, plain HTTP on loopback.
    let cdn = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cdn_addr = cdn.local_addr().unwrap();
    let served = file.clone();
    let cdn_app = Router::new().route(
        "/files/abc",
        route_get(move || {
            let served = served.clone();
            async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/pdf"),
                        (header::CONTENT_DISPOSITION, "attachment; filename=\"r.pdf\""),
                    ],
                    served,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(cdn, cdn_app).await });

    // fake.test: TLS with a certificate of a CA of its own, which the
    // Hearth server is given to trust beside the federation's.
    let certificates = super::Certificates::new();
    let (cert, key) = certificates.issue("fake.test");
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fake.set_nonblocking(true).unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let bundle_dir = tempfile::tempdir().unwrap();
    let bundle = bundle_dir.path().join("bundle.pem");
    let ours = certificates.ca.pem();
    let fed = TestFederation::start_with(1, |_, c| {
        let theirs = std::fs::read_to_string(c.federation.ca_file.as_ref().unwrap()).unwrap();
        std::fs::write(&bundle, format!("{theirs}\n{ours}")).unwrap();
        c.federation.ca_file = Some(bundle.clone());
        c.federation.resolve_overrides.insert("fake.test".try_into().unwrap(), fake_addr);
    })
    .await;
    let location = format!("http://{cdn_addr}/files/abc");
    let fake_app = Router::new().route(
        "/_matrix/federation/v1/media/download/{id}",
        route_get(move || {
            let location = location.clone();
            async move {
                let body = format!(
                    "--b\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--b\r\nLocation: {location}\r\n\r\n\r\n--b--\r\n"
                );
                ([(header::CONTENT_TYPE, "multipart/mixed; boundary=b")], body).into_response()
            }
        }),
    );
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await.unwrap();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(fake, tls).unwrap().serve(fake_app.into_make_service()).await
    });

    let hs1 = &fed.servers[0];
    let alice = hs1.register("alice").await;
    let response = hs1
        .http
        .get(format!("{}/_matrix/client/v1/media/download/fake.test/abc", hs1.base))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/pdf");
    assert!(response.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().contains("r.pdf"));
    assert_eq!(response.bytes().await.unwrap(), file);
}
