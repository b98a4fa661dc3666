//! URL previews (issue 17): a page the test serves on an allowed address
//! previewed with its image, and no request ever reaching a blocked
//! address, named in the URL, resolved from a name, or redirected to.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect},
    routing::get,
};
use serde_json::{Value, json};

use crate::common::TestServer;

/// The test's web site, on 127.0.0.2 (whitelisted; the rest of 127/8 is
/// blocked by default), and a listener on 127.0.0.1 that must never be
/// reached; each counts its requests.
struct Site {
    port: u16,
    hits: Arc<AtomicUsize>,
    loopback_port: u16,
    loopback_hits: Arc<AtomicUsize>,
}

/// A 279×129 PNG (SyTest's size).
fn png() -> Vec<u8> {
    let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(279, 129, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    }));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

const PAGE: &str = r#"<!doctype html><html><head>
<meta charset="utf-8">
<meta property="og:title" content="The Rock">
<meta property="og:type" content="video.movie">
<meta property="og:url" content="http://www.imdb.com/title/tt0117500/">
<meta property="og:image" content="test.png">
<title>Not the title</title></head>
<body><nav>Home | About</nav><p>A film about   a rock.</p></body></html>"#;

impl Site {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("127.0.0.2 is loopback too");
        let port = listener.local_addr().unwrap().port();
        let loopback = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let loopback_port = loopback.local_addr().unwrap().port();
        let counted = hits.clone();
        let site =
            Router::new()
                .route(
                    "/page.html",
                    get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
                )
                .route("/test.png", get(|| async { ([(header::CONTENT_TYPE, "image/png")], png()) }))
                .route(
                    "/picture",
                    get(|| async {
                        let mut headers = HeaderMap::new();
                        headers.insert(header::CONTENT_TYPE, "image/png".parse().unwrap());
                        headers.insert(
                            header::CONTENT_DISPOSITION,
                            "inline; filename=\"rock.png\"".parse().unwrap(),
                        );
                        (headers, png())
                    }),
                )
                .route(
                    "/to-loopback",
                    get(move || async move {
                        Redirect::temporary(&format!("http://127.0.0.1:{loopback_port}/page.html"))
                    }),
                )
                .route(
                    "/to-private-name",
                    get(move || async move {
                        Redirect::temporary(&format!("http://private.test:{port}/page.html"))
                    }),
                )
                .route("/big", get(|| async { ([(header::CONTENT_TYPE, "text/html")], "x".repeat(200_000)) }))
                .route("/video", get(|| async { ([(header::CONTENT_TYPE, "video/mp4")], vec![0u8; 100]) }))
                .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
                .route("/secret/page.html", get(|| async { ([(header::CONTENT_TYPE, "text/html")], PAGE) }))
                .layer(axum::middleware::from_fn(move |request, next: axum::middleware::Next| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        next.run(request).await
                    }
                }));
        tokio::spawn(async move { axum::serve(listener, site).await });
        let loopback_hits = Arc::new(AtomicUsize::new(0));
        let counted = loopback_hits.clone();
        let trap = Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                ([(header::CONTENT_TYPE, "text/html")], PAGE).into_response()
            }
        });
        tokio::spawn(async move { axum::serve(loopback, trap).await });
        Self { port, hits, loopback_port, loopback_hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://page.test:{}{path}", self.port)
    }
}

async fn preview(s: &TestServer, token: Option<&str>, url: &str) -> (StatusCode, Value) {
    let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("url", url).finish();
    s.get(&format!("/_matrix/client/v1/media/preview_url?{query}"), token).await
}

/// A server previewing URLs, with `page.test` on the site's address,
/// `private.test` on a private one, and `/secret/*` blacklisted.
async fn previewer() -> TestServer {
    TestServer::start_with(|c| {
        c.registration.guest_access = true;
        let previews = &mut c.media.url_preview;
        previews.enabled = true;
        previews.ip_range_whitelist = vec!["127.0.0.2/32".parse().unwrap()];
        previews.max_spider_size = 100_000;
        previews.resolve_overrides = [
            ("page.test".to_owned(), "127.0.0.2".parse().unwrap()),
            ("private.test".to_owned(), "192.168.10.10".parse().unwrap()),
        ]
        .into();
        previews.url_blacklist = vec![[("path".to_owned(), "/secret/*".to_owned())].into()];
    })
    .await
}

#[tokio::test]
async fn a_page_is_previewed_with_its_image_and_kept() {
    let site = Site::start().await;
    let s = previewer().await;
    let alice = s.register("alice").await;

    let (status, body) = preview(&s, None, &site.url("/page.html")).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN")));
    let (status, guest) = s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{guest}");
    let (status, body) = preview(&s, guest["access_token"].as_str(), &site.url("/page.html")).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_GUEST_ACCESS_FORBIDDEN")));

    let (status, og) = preview(&s, Some(&alice.token), &site.url("/page.html")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert_eq!(og["og:title"], "The Rock");
    assert_eq!(og["og:type"], "video.movie");
    assert_eq!(og["og:url"], "http://www.imdb.com/title/tt0117500/");
    assert_eq!(og["og:description"], "A film about a rock.");
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!((og["og:image:width"].as_u64(), og["og:image:height"].as_u64()), (Some(279), Some(129)));
    let png = png();
    assert_eq!(og["matrix:image:size"].as_u64(), Some(png.len() as u64));
    // The image is this server's media now.
    let mxc = og["og:image"].as_str().expect("og:image");
    let media = mxc.strip_prefix(&format!("mxc://{}/", s.config.server_name)).expect("local media");
    let response = s
        .http
        .get(format!("{}/_matrix/client/v1/media/download/{}/{media}", s.base, s.config.server_name))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), png);
    assert_eq!(site.hits.load(Ordering::SeqCst), 2, "the page and its image");

    // Kept: asked again (here through the legacy path, which needs a token
    // too), nothing is fetched.
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", &site.url("/page.html"))
        .finish();
    let (status, again) = s.get(&format!("/_matrix/media/v3/preview_url?{query}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, og);
    assert_eq!(site.hits.load(Ordering::SeqCst), 2);
    // The preview of a time before it was made is the first one after it;
    // one of a time after it expired is made anew.
    let (status, old) =
        s.get(&format!("/_matrix/media/v3/preview_url?{query}&ts=1000"), Some(&alice.token)).await;
    assert_eq!((status, &old), (StatusCode::OK, &og));
    let later = hearth_now() + 2 * 3600 * 1000;
    let (status, _) =
        s.get(&format!("/_matrix/media/v3/preview_url?{query}&ts={later}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(site.hits.load(Ordering::SeqCst), 4, "fetched again");

    // A URL that is an image is previewed as one.
    let (status, og) = preview(&s, Some(&alice.token), &site.url("/picture")).await;
    assert_eq!(status, StatusCode::OK, "{og}");
    assert_eq!(og["og:description"], "rock.png");
    assert!(og["og:image"].as_str().is_some_and(|i| i.starts_with("mxc://")), "{og}");
    assert_eq!((og["og:image:width"].as_u64(), og["og:image:height"].as_u64()), (Some(279), Some(129)));
}

fn hearth_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn blocked_addresses_are_never_reached() {
    let site = Site::start().await;
    let s = previewer().await;
    let alice = s.register("alice").await;
    let token = Some(alice.token.as_str());
    let loopback = site.loopback_port;
    let expect = |url: String, status: StatusCode, errcode: &'static str| (url, status, errcode);
    for (url, status, errcode) in [
        // Addresses in the URL: refused before any connection.
        expect(format!("http://127.0.0.1:{loopback}/"), StatusCode::FORBIDDEN, "M_UNKNOWN"),
        expect(format!("http://[::1]:{loopback}/"), StatusCode::FORBIDDEN, "M_UNKNOWN"),
        expect(format!("http://[::ffff:127.0.0.1]:{loopback}/"), StatusCode::FORBIDDEN, "M_UNKNOWN"),
        expect(format!("http://2130706433:{loopback}/"), StatusCode::FORBIDDEN, "M_UNKNOWN"),
        // Names resolving to blocked addresses: through DNS, and through an
        // override to a private address.
        expect(format!("http://localhost:{loopback}/"), StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
        expect(format!("http://private.test:{loopback}/"), StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
        // Redirects from an allowed page to either.
        expect(site.url("/to-loopback"), StatusCode::FORBIDDEN, "M_UNKNOWN"),
        expect(site.url("/to-private-name"), StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
        // The URL blacklist, the size limit, the types, the status.
        expect(site.url("/secret/page.html"), StatusCode::FORBIDDEN, "M_UNKNOWN"),
        expect(site.url("/big"), StatusCode::BAD_GATEWAY, "M_TOO_LARGE"),
        expect(site.url("/video"), StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
        expect(site.url("/missing"), StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
        expect("ftp://page.test/x".to_owned(), StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        expect("not a url".to_owned(), StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ] {
        let (got, body) = preview(&s, token, &url).await;
        assert_eq!((got, body["errcode"].as_str()), (status, Some(errcode)), "{url}: {body}");
    }
    assert_eq!(site.loopback_hits.load(Ordering::SeqCst), 0, "nothing reached the blocked listener");
    // Only the allowed site's pages were asked for (the blacklisted one not).
    assert_eq!(site.hits.load(Ordering::SeqCst), 5);
    let (status, body) = s.get("/_matrix/client/v1/media/preview_url", token).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_MISSING_PARAM")));
    let (status, body) =
        s.get("/_matrix/client/v1/media/preview_url?url=http://page.test/&ts=-1", token).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")));
}

#[tokio::test]
async fn previews_are_off_by_default() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = preview(&s, Some(&alice.token), "https://example.org/").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_UNRECOGNIZED")));
}
