use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const PASSWORD_URL: &str = "/_matrix/client/v3/account/password";

#[tokio::test]
async fn password_change_runs_uia_and_logs_out_other_devices() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let other = session(&s.login("alice", PASSWORD).await.1);

    // No auth: the challenge.
    let (status, body) = s.post(PASSWORD_URL, Some(&alice.token), json!({"new_password": "new pass"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]));
    let sid = body["session"].as_str().unwrap().to_owned();

    // Wrong password: still 401, with the stage's error.
    let (status, body) = s
        .post(
            PASSWORD_URL,
            Some(&alice.token),
            json!({"new_password": "new pass", "auth": password_auth(&alice.user_id, "wrong", Some(&sid))}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert_eq!(body["session"], sid.as_str());

    // Another user's valid password does not authenticate alice: a plain 403.
    s.register("mallory").await;
    let resp = s
        .post(
            PASSWORD_URL,
            Some(&alice.token),
            json!({"new_password": "new pass", "auth": password_auth("@mallory:localhost", PASSWORD, Some(&sid))}),
        )
        .await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let (status, body) = s
        .post(
            PASSWORD_URL,
            Some(&alice.token),
            json!({"new_password": "new pass", "auth": password_auth(&alice.user_id, PASSWORD, Some(&sid))}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK, "the requesting device stays logged in");
    assert_eq!(s.whoami(&other.token).await, StatusCode::UNAUTHORIZED, "other devices are logged out");
    assert_eq!(s.login("alice", PASSWORD).await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.login("alice", "new pass").await.0, StatusCode::OK);
}

#[tokio::test]
async fn password_change_can_keep_devices() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let other = session(&s.login("alice", PASSWORD).await.1);
    let (status, body) = s
        .post(PASSWORD_URL, Some(&alice.token), json!({"new_password": "n", "logout_devices": false, "auth": password_auth("alice", PASSWORD, None)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.whoami(&other.token).await, StatusCode::OK);
}

#[tokio::test]
async fn uia_session_is_bound_to_its_operation() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (_, body) = s.post(PASSWORD_URL, Some(&alice.token), json!({"new_password": "x"})).await;
    let sid = body["session"].as_str().unwrap().to_owned();
    // The password-change session cannot authorise a deactivation.
    let resp = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            json!({"auth": password_auth(&alice.user_id, PASSWORD, Some(&sid))}),
        )
        .await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK);
}

#[tokio::test]
async fn deactivation_revokes_everything_and_reserves_the_id() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let other = session(&s.login("alice", PASSWORD).await.1);
    let (status, body) = s.post("/_matrix/client/v3/account/deactivate", Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK, "nothing happens before UIA completes");

    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            json!({"auth": password_auth(&alice.user_id, PASSWORD, None)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");
    assert_eq!(s.whoami(&alice.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.whoami(&other.token).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.login("alice", PASSWORD).await, StatusCode::FORBIDDEN, "M_USER_DEACTIVATED");
    assert_error(
        &s.post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    // The profile is gone.
    assert_error(
        &s.get("/_matrix/client/v3/profile/@alice:localhost", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn an_erased_users_messages_stay_only_with_who_was_there() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &bob, json!({"preset": "public_chat"})).await;
    join(&s, &alice, &room).await;
    let (_, sent) = send(&s, &alice, &room, "m1", "my secret").await;
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            json!({"erase": true, "auth": password_auth(&alice.user_id, PASSWORD, None)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    join(&s, &carol, &room).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{event_id}");
    for restarted in [false, true] {
        if restarted {
            // The erasure holds across a restart.
            s.restart().await;
        }
        let (status, seen_by_bob) = s.get(&path, Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{seen_by_bob}");
        assert_eq!(seen_by_bob["content"]["body"], "my secret", "bob was there");
        let (status, seen_by_carol) = s.get(&path, Some(&carol.token)).await;
        assert_eq!(status, StatusCode::OK, "{seen_by_carol}");
        assert_eq!(seen_by_carol["content"], json!({}), "carol came later");
    }
}
