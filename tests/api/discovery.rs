use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn versions_well_known_and_capabilities() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&str> =
        body["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(versions.contains(&"v1.1") && versions.contains(&"r0.6.1"), "{versions:?}");

    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, StatusCode::OK);
    // Unset in the config: the first listener, on the port it really bound.
    assert_eq!(body["m.homeserver"]["base_url"], s.base.as_str());

    assert_error(
        &s.get("/_matrix/client/v3/capabilities", None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let alice = s.register("alice").await;
    let (status, body) = s.get("/_matrix/client/v3/capabilities", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let caps = &body["capabilities"];
    // ruma leaves out capabilities at their spec default (enabled), which clients read as enabled.
    assert_ne!(caps["m.change_password"]["enabled"], false, "{body}");
    assert_ne!(caps["m.set_displayname"]["enabled"], false, "{body}");
    assert_eq!(caps["m.room_versions"]["default"], "12");
    assert_eq!(caps["m.room_versions"]["available"]["3"], "stable");
    assert_eq!(caps["m.room_versions"]["available"]["12"], "stable");
    assert_eq!(caps["m.3pid_changes"]["enabled"], false, "{body}");
}

#[tokio::test]
async fn well_known_configured_or_from_a_usable_listener() {
    let s = TestServer::start_with(|c| c.well_known.client = Some("https://matrix.example.org".into())).await;
    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["m.homeserver"]["base_url"], "https://matrix.example.org");

    // A first listener on a wildcard address names no host: no default.
    let s = TestServer::start_with(|c| {
        let mut loopback = c.listeners[0].clone();
        c.listeners[0].address = "0.0.0.0".parse().unwrap();
        loopback.port = 0;
        c.listeners.push(loopback);
    })
    .await;
    let url = format!("http://{}/.well-known/matrix/client", s.server().addrs[1]);
    let response = s.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_FOUND");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_unrecognized() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_matrix/client/v3/no/such/endpoint", None).await,
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
    );
    assert_error(&s.get("/", None).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(
        &s.request(Method::DELETE, "/_matrix/client/v3/login", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &s.put("/_matrix/client/versions", None, json!({})).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn cors_headers_on_responses_and_preflight() {
    let s = TestServer::start().await;
    let resp = s
        .http
        .get(format!("{}/_matrix/client/versions", s.base))
        .header("Origin", "https://app.element.io")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");

    // Preflight works for any path, including ones needing auth.
    let resp = s
        .http
        .request(Method::OPTIONS, format!("{}/_matrix/client/v3/account/whoami", s.base))
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let methods = h["access-control-allow-methods"].to_str().unwrap().to_uppercase();
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = h["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for name in ["x-requested-with", "content-type", "authorization"] {
        assert!(headers.contains(name), "{headers}");
    }
}
