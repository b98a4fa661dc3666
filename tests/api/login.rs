use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn login_flows_and_password_login() {
    let s = TestServer::start().await;
    let (status, body) = s.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.password"), "{body}");

    let alice = s.register("alice").await;
    for name in ["alice", "@alice:localhost", "ALICE"] {
        let (status, body) = s.login(name, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["user_id"], alice.user_id);
        assert_eq!(body["home_server"], "localhost");
        assert_eq!(body["well_known"]["m.homeserver"]["base_url"], s.base.as_str());
        let token = body["access_token"].as_str().unwrap();
        assert_ne!(token, alice.token);
        assert_eq!(s.whoami(token).await, StatusCode::OK);
    }
    // The deprecated top-level `user` field.
    let (status, _) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    assert_error(&s.login("alice", "wrong").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.login("nobody", PASSWORD).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.login("@alice:elsewhere.org", PASSWORD).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.post("/_matrix/client/v3/login", None, json!({"type": "m.login.token", "token": "abc"})).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
}

#[tokio::test]
async fn whoami_reports_user_and_device() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = s.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], alice.user_id.as_str());
    assert_eq!(body["device_id"], alice.device_id.as_str());
    assert_ne!(body["is_guest"], true, "{body}");

    let (status, body) = s.get("/_matrix/client/v3/account/3pid", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["threepids"].as_array().is_none_or(Vec::is_empty), "{body}");
}

#[tokio::test]
async fn relogin_on_a_known_device_replaces_its_token() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": PASSWORD, "device_id": alice.device_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], alice.device_id.as_str());
    assert_eq!(s.whoami(&alice.token).await, StatusCode::UNAUTHORIZED, "old token revoked");
    assert_eq!(s.whoami(body["access_token"].as_str().unwrap()).await, StatusCode::OK);
    let (_, devices) =
        s.get("/_matrix/client/v3/devices", Some(body["access_token"].as_str().unwrap())).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn logout_and_logout_all() {
    let s = TestServer::start().await;
    let first = s.register("alice").await;
    let second = session(&s.login("alice", PASSWORD).await.1);
    let third = session(&s.login("alice", PASSWORD).await.1);

    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&first.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&first.token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(s.whoami(&second.token).await, StatusCode::OK);
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&second.token)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "logout deletes the device");

    let (status, _) = s.post("/_matrix/client/v3/logout/all", Some(&second.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.whoami(&second.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.whoami(&third.token).await, StatusCode::UNAUTHORIZED);
}
