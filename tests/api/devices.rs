use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn list_get_rename_devices() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = s.get("/_matrix/client/v3/devices", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    let device = &body["devices"][0];
    assert_eq!(device["device_id"], alice.device_id.as_str());
    assert_eq!(device["last_seen_ip"], "127.0.0.1");
    assert!(device["last_seen_ts"].as_u64().unwrap() > 1_600_000_000_000);

    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    let (status, _) = s.put(&path, Some(&alice.token), json!({"display_name": "Laptop"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["display_name"], "Laptop");
    // Without display_name, the name stays.
    let (status, _) = s.put(&path, Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["display_name"], "Laptop");
    // Logging in again on the device does not rename it.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": PASSWORD, "device_id": alice.device_id, "initial_device_display_name": "Other"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = session(&body);
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["display_name"], "Laptop");

    assert_error(
        &s.get("/_matrix/client/v3/devices/NOPE", Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.put("/_matrix/client/v3/devices/NOPE", Some(&alice.token), json!({"display_name": "x"})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Another user's device is not visible.
    let bob = s.register("bob").await;
    assert_error(&s.get(&path, Some(&bob.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_a_device_needs_uia_and_revokes_its_token() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let phone = session(&s.login("alice", PASSWORD).await.1);
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);

    let (status, body) = s.request(Method::DELETE, &path, Some(&alice.token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(s.whoami(&phone.token).await, StatusCode::OK, "not deleted before UIA");
    let sid = body["session"].as_str().unwrap();

    let (status, body) = s
        .request(
            Method::DELETE,
            &path,
            Some(&alice.token),
            Some(json!({"auth": password_auth(&alice.user_id, PASSWORD, Some(sid))})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&phone.token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&s.get(&path, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn delete_devices_in_bulk() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let a = session(&s.login("alice", PASSWORD).await.1);
    let b = session(&s.login("alice", PASSWORD).await.1);
    let body = json!({"devices": [a.device_id, b.device_id, "UNKNOWN"]});
    let (status, challenge) =
        s.post("/_matrix/client/v3/delete_devices", Some(&alice.token), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut with_auth = body;
    with_auth["auth"] = password_auth("alice", PASSWORD, challenge["session"].as_str());
    let (status, resp) = s.post("/_matrix/client/v3/delete_devices", Some(&alice.token), with_auth).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(s.whoami(&a.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.whoami(&b.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK);
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&alice.token)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn another_users_valid_password_does_not_authorise() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    s.register("bob").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    let resp = s
        .request(
            Method::DELETE,
            &path,
            Some(&alice.token),
            Some(json!({"auth": password_auth("bob", PASSWORD, None)})),
        )
        .await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK, "device not deleted");
}

#[tokio::test]
async fn deletes_are_idempotent_and_completed_uia_answers_retries() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let phone = session(&s.login("alice", PASSWORD).await.1);
    let body = json!({"devices": [phone.device_id]});
    let (_, challenge) = s.post("/_matrix/client/v3/delete_devices", Some(&alice.token), body.clone()).await;
    let mut with_auth = body;
    with_auth["auth"] = password_auth("alice", PASSWORD, challenge["session"].as_str());
    assert_eq!(
        s.post("/_matrix/client/v3/delete_devices", Some(&alice.token), with_auth.clone()).await.0,
        StatusCode::OK
    );
    // The client lost the answer and retries: the same result, not an error.
    assert_eq!(
        s.post("/_matrix/client/v3/delete_devices", Some(&alice.token), with_auth).await.0,
        StatusCode::OK
    );
    assert_eq!(s.whoami(&phone.token).await, StatusCode::UNAUTHORIZED);

    // Deleting a device that does not exist (any more) succeeds after UIA.
    let path = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let (status, challenge) = s.request(Method::DELETE, &path, Some(&alice.token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = json!({"auth": password_auth("alice", PASSWORD, challenge["session"].as_str())});
    assert_eq!(s.request(Method::DELETE, &path, Some(&alice.token), Some(auth)).await.0, StatusCode::OK);
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK);
}
