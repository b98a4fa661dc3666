//! The error contract every endpoint holds.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn bodies_that_are_not_json_or_have_wrong_fields() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let url = format!("{}/_matrix/client/v3/user/{}/filter", s.base, alice.user_id);

    let resp = s.http.post(&url).bearer_auth(&alice.token).body("{not json").send().await.unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "M_NOT_JSON");

    // Valid JSON with a field of the wrong type.
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/user/{}/filter", alice.user_id),
            Some(&alice.token),
            json!({"room": {"timeline": {"limit": "ten"}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    // Login with a required field missing.
    assert_error(
        &s.post("/_matrix/client/v3/login", None, json!({"type": "m.login.password"})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    // Nothing was stored by the failed requests.
    assert_error(
        &s.get(&format!("/_matrix/client/v3/user/{}/filter/0", alice.user_id), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn invalid_utf8_is_not_json() {
    let s = TestServer::start().await;
    // serde_json would skip the unknown field without looking at its bytes.
    let resp = s
        .http
        .post(format!("{}/_matrix/client/v3/register", s.base))
        .header("Content-Type", "application/json")
        .body(b"{ \"test\":\"a\x81\" }".to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_error(&(status, resp.json().await.unwrap()), StatusCode::BAD_REQUEST, "M_NOT_JSON");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let s = TestServer::start_with(|c| c.limits.max_request_size = 4096).await;
    let alice = s.register("alice").await;
    let big = "x".repeat(10_000);
    let resp = s
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example.big", alice.user_id),
            Some(&alice.token),
            json!({"data": big}),
        )
        .await;
    assert_error(&resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example.big", alice.user_id),
            Some(&alice.token),
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Also without a Content-Length header (chunked).
    let stream = futures_stream(big.into_bytes());
    let resp = s
        .http
        .put(format!("{}/_matrix/client/v3/user/{}/account_data/org.example.big", s.base, alice.user_id))
        .bearer_auth(&alice.token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<_> = bytes.chunks(1024).map(|c| Ok(c.to_vec())).collect();
    futures_util::stream::iter(chunks)
}

#[tokio::test]
async fn missing_and_unknown_tokens() {
    let s = TestServer::start().await;
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let resp = s.get("/_matrix/client/v3/account/whoami", Some("not-a-token")).await;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // soft_logout defaults to false; a revoked token is never a soft logout.
    assert_ne!(resp.1["soft_logout"], true, "{}", resp.1);
    // The deprecated query parameter works too.
    let alice = s.register("alice").await;
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/account/whoami?access_token={}", alice.token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id);
    // An optional-auth endpoint still refuses a bad token.
    assert_error(
        &s.get("/_matrix/client/versions", Some("bad")).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
}

#[tokio::test]
async fn login_and_registration_are_rate_limited() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.login.per_second = 0.1;
        c.rate_limits.login.burst_count = 2;
        c.rate_limits.registration.per_second = 0.1;
        c.rate_limits.registration.burst_count = 2;
        c.rate_limits.registration_checks.per_second = 0.1;
        c.rate_limits.registration_checks.burst_count = 2;
    })
    .await;
    assert_eq!(s.login("nobody", "x").await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.login("nobody", "x").await.0, StatusCode::FORBIDDEN);
    let resp = s
        .http
        .post(format!("{}/_matrix/client/v3/login", s.base))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"}))
        .send()
        .await
        .unwrap();
    let retry_header: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let resp = (resp.status(), resp.json().await.unwrap());
    assert_error(&resp, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let retry_ms = resp.1["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(retry_ms > 0 && retry_ms <= 10_000, "{retry_ms}");
    // The header (whole seconds) must not send clients back before the body says.
    assert!(retry_header * 1000 >= retry_ms, "Retry-After {retry_header}s < {retry_ms}ms");

    // Fetching the flows costs nothing; each attempt at a stage costs a token.
    for _ in 0..4 {
        assert_eq!(
            s.post("/_matrix/client/v3/register", None, json!({"username": "x", "password": "p"})).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    s.register("first").await;
    s.register("second").await;
    assert_error(
        &s.post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "third", "password": "p", "auth": {"type": "m.login.dummy"}}),
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );

    // Availability checks have their own bucket.
    for _ in 0..2 {
        assert_eq!(
            s.get("/_matrix/client/v3/register/available?username=free", None).await.0,
            StatusCode::OK
        );
    }
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=free", None).await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
}

#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.login_failures.per_second = 0.01;
        c.rate_limits.login_failures.burst_count = 2;
    })
    .await;
    s.register("alice").await;
    assert_eq!(s.login("alice", "wrong").await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.login("alice", "wrong").await.0, StatusCode::FORBIDDEN);
    // Even the right password is refused while the account is locked out.
    assert_error(&s.login("alice", PASSWORD).await, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn an_empty_body_reads_as_an_empty_object() {
    // matrix-nio joins with no body at all.
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, serde_json::json!({"preset": "public_chat"})).await;
    let (status, body) = s
        .request(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    // Where `{}` is not enough, a missing body is still not JSON.
    assert_error(
        &s.request(reqwest::Method::POST, "/_matrix/client/v3/login", None, None).await,
        reqwest::StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
}

#[tokio::test]
async fn a_body_that_trips_the_parser_is_bad_json_not_a_crash() {
    let s = TestServer::start().await;
    for body in [serde_json::json!({}), serde_json::json!({"user": "alice"})] {
        assert_error(
            &s.post("/_matrix/client/v3/login", None, body).await,
            reqwest::StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
    }
    // The server is still there.
    assert_eq!(s.get("/_matrix/client/versions", None).await.0, reqwest::StatusCode::OK);
}

/// Review §2.4: room creation, membership changes, typing, to-device and
/// receipts each have their own per-user bucket, and going over one
/// changes nothing.
#[tokio::test]
async fn room_actions_are_rate_limited_per_user() {
    let s = TestServer::start_with(|c| {
        for rate in [
            &mut c.rate_limits.room_creation,
            &mut c.rate_limits.membership,
            &mut c.rate_limits.typing,
            &mut c.rate_limits.to_device,
            &mut c.rate_limits.receipts,
        ] {
            rate.per_second = 0.001;
            rate.burst_count = 2;
        }
    })
    .await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let limited =
        |resp: (StatusCode, Value)| assert_error(&resp, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");

    // Two rooms, then no third; bob's bucket is his own.
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    create_room(&s, &alice, json!({})).await;
    limited(s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({})).await);
    let (status, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 2, "the refused room was not made");

    // Membership: join, leave, then the second join is refused (and bob
    // stays out).
    let enc = urlencode(&room);
    assert_eq!(
        s.post(&format!("/_matrix/client/v3/rooms/{enc}/join"), Some(&bob.token), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.post(&format!("/_matrix/client/v3/rooms/{enc}/leave"), Some(&bob.token), json!({})).await.0,
        StatusCode::OK
    );
    limited(s.post(&format!("/_matrix/client/v3/rooms/{enc}/join"), Some(&bob.token), json!({})).await);
    let member = s
        .get(
            &format!("/_matrix/client/v3/rooms/{enc}/state/m.room.member/{}", bob.user_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(member.0, StatusCode::OK);
    assert_eq!(member.1["membership"], "leave");
    // The state endpoint for memberships shares the bucket.
    limited(
        s.put(
            &format!("/_matrix/client/v3/rooms/{enc}/state/m.room.member/{}", bob.user_id),
            Some(&bob.token),
            json!({"membership": "join"}),
        )
        .await,
    );

    // Typing.
    let typing = format!("/_matrix/client/v3/rooms/{enc}/typing/{}", alice.user_id);
    for _ in 0..2 {
        assert_eq!(s.put(&typing, Some(&alice.token), json!({"typing": false})).await.0, StatusCode::OK);
    }
    limited(s.put(&typing, Some(&alice.token), json!({"typing": true, "timeout": 1000})).await);

    // To-device.
    let message = json!({"messages": {bob.user_id.clone(): {"*": {"n": 1}}}});
    for txn in ["a", "b"] {
        let path = format!("/_matrix/client/v3/sendToDevice/m.test/{txn}");
        assert_eq!(s.put(&path, Some(&alice.token), message.clone()).await.0, StatusCode::OK);
    }
    limited(s.put("/_matrix/client/v3/sendToDevice/m.test/c", Some(&alice.token), message).await);
    let synced = sync(&s, &bob, "").await;
    assert_eq!(
        synced["to_device"]["events"].as_array().unwrap().len(),
        2,
        "the refused message was not queued"
    );

    // Receipts and read markers share one bucket.
    let (status, sent) = send(&s, &alice, &room, "m1", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let event = urlencode(sent["event_id"].as_str().unwrap());
    let receipt = format!("/_matrix/client/v3/rooms/{enc}/receipt/m.read/{event}");
    assert_eq!(s.post(&receipt, Some(&alice.token), json!({})).await.0, StatusCode::OK);
    let markers = format!("/_matrix/client/v3/rooms/{enc}/read_markers");
    let body = json!({"m.fully_read": sent["event_id"]});
    assert_eq!(s.post(&markers, Some(&alice.token), body.clone()).await.0, StatusCode::OK);
    limited(s.post(&markers, Some(&alice.token), body).await);
}
