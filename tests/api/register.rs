use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn disabled_registration_is_forbidden() {
    let s = TestServer::start_with(|c| c.registration.enabled = false).await;
    assert_error(
        &s.post(REGISTER, None, json!({"username": "alice", "password": "pw"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=alice", None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=x", None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn dummy_flow_registers_and_logs_in() {
    let s = TestServer::start().await;
    // First call: the UIA challenge.
    let (status, body) = s.post(REGISTER, None, json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["flows"], json!([{"stages": ["m.login.dummy"]}]));
    let session_id = body["session"].as_str().expect("session").to_owned();
    assert!(body["params"].is_object());

    let (status, body) = s
        .post(
            REGISTER,
            None,
            json!({"username": "Alice", "password": PASSWORD, "initial_device_display_name": "Phone",
                   "device_id": "MYDEVICE", "auth": {"type": "m.login.dummy", "session": session_id}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = session(&body);
    assert_eq!(alice.user_id, "@alice:localhost", "localparts are lower-cased");
    assert_eq!(alice.device_id, "MYDEVICE");
    assert!(alice.token.len() >= 32);
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&alice.token)).await;
    assert_eq!(devices["devices"][0]["display_name"], "Phone");

    // The name is taken now, whatever the case.
    assert_error(
        &s.post(
            REGISTER,
            None,
            json!({"username": "alice", "password": "x", "auth": {"type": "m.login.dummy"}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=alice", None).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    let (status, body) = s.get("/_matrix/client/v3/register/available?username=bob", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"available": true})));
}

#[tokio::test]
async fn invalid_usernames_and_guests_are_refused() {
    let s = TestServer::start().await;
    for bad in ["al ice", "al:ice", "_bridge", "1234", "ümlaut"] {
        assert_error(
            &s.post(
                REGISTER,
                None,
                json!({"username": bad, "password": "pw", "auth": {"type": "m.login.dummy"}}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_USERNAME",
        );
    }
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=no%20spaces", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &s.get("/_matrix/client/v3/register/available", None).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    // Without a password the account could never be re-entered.
    assert_error(
        &s.post(REGISTER, None, json!({"username": "nopass", "auth": {"type": "m.login.dummy"}})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    // An empty request (how web clients open their sign-up page) learns the
    // flows before any field is checked.
    let (status, body) = s.post(REGISTER, None, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["flows"][0]["stages"][0], "m.login.dummy", "{body}");
    assert!(body["session"].is_string(), "{body}");
    assert_error(
        &s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await,
        StatusCode::FORBIDDEN,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
}

#[tokio::test]
async fn inhibit_login_and_generated_username() {
    let s = TestServer::start().await;
    let (status, body) = s
        .post(REGISTER, None, json!({"username": "quiet", "password": PASSWORD, "inhibit_login": true, "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@quiet:localhost");
    assert!(body["access_token"].is_null() && body["device_id"].is_null(), "{body}");
    assert_eq!(s.login("quiet", PASSWORD).await.0, StatusCode::OK);

    let (status, body) =
        s.post(REGISTER, None, json!({"password": PASSWORD, "auth": {"type": "m.login.dummy"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["user_id"].as_str().unwrap().ends_with(":localhost"));
}

#[tokio::test]
async fn registration_token_flow() {
    let s = TestServer::start_with(|c| c.registration.token = Some("let-me-in".into())).await;
    let (status, body) = s.post(REGISTER, None, json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session_id = body["session"].as_str().unwrap().to_owned();

    // The dummy stage is not offered.
    let (status, body) = s
        .post(REGISTER, None, json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session_id}}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["completed"].as_array().is_none_or(|c| c.is_empty()), "{body}");

    // A wrong token is refused with the stage error.
    let (status, body) = s
        .post(
            REGISTER,
            None,
            json!({"username": "alice", "password": PASSWORD,
            "auth": {"type": "m.login.registration_token", "token": "guess", "session": session_id}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");

    // Element checks a token before using it.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    let (status, body) = s.get(&format!("{validity}?token=guess"), None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"valid": false})));
    let (status, body) = s.get(&format!("{validity}?token=let-me-in"), None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"valid": true})));

    let (status, body) = s
        .post(
            REGISTER,
            None,
            json!({"username": "alice", "password": PASSWORD,
            "auth": {"type": "m.login.registration_token", "token": "let-me-in", "session": session_id}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
}

#[tokio::test]
async fn unknown_uia_session_is_refused() {
    let s = TestServer::start().await;
    let resp = s
        .post(REGISTER, None, json!({"username": "alice", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": "made-up"}}))
        .await;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST, "{}", resp.1);
    assert_eq!(s.login("alice", PASSWORD).await.0, StatusCode::FORBIDDEN, "no account was created");
}
