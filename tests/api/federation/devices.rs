//! Another server's users' device lists: followed through
//! `m.device_list_update` and `m.signing_key_update` while a room is
//! shared, answered from that copy (also while their server is down), and
//! let go once no room is shared.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestFederation, join_via, now_token, rooms::wait_for_event, wait_sync};
use crate::common::{PASSWORD, Session, TestServer, create_room, password_auth, session};

/// Uploads identity keys for `who`'s device, the ed25519 key being `key`.
async fn upload_keys(s: &TestServer, who: &Session, key: &str) {
    let device_keys = json!({
        "user_id": who.user_id, "device_id": who.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("ed25519:{}", who.device_id): key},
        "signatures": {},
    });
    let (status, body) =
        s.post("/_matrix/client/v3/keys/upload", Some(&who.token), json!({"device_keys": device_keys})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Syncs `who` from `since` until `whose` is in `device_lists.changed`.
async fn wait_changed(s: &TestServer, who: &Session, since: Option<String>, whose: &Session) {
    wait_sync(s, who, since, "a device-list change", |b| {
        b["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(whose.user_id)))
            .then_some(())
    })
    .await
}

/// `who`'s `/keys/query` for all of `whose`'s devices (status checked).
async fn query(s: &TestServer, who: &Session, whose: &Session) -> Value {
    let asked = json!({"device_keys": {whose.user_id.clone(): []}});
    let (status, body) = s.post("/_matrix/client/v3/keys/query", Some(&who.token), asked).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn no_failures(body: &Value) -> bool {
    body["failures"].as_object().is_none_or(|f| f.is_empty())
}

/// The device IDs in a query answer for `whose`.
fn devices(body: &Value, whose: &Session) -> Vec<String> {
    body["device_keys"][&whose.user_id].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default()
}

/// Queries until `done` holds of the answer, waiting for a device-list
/// change of `whose` between tries.
async fn query_until(
    s: &TestServer,
    who: &Session,
    whose: &Session,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let since = now_token(s, who).await;
        let body = query(s, who, whose).await;
        if done(&body) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: still {body}");
        wait_changed(s, who, since, whose).await;
    }
}

#[tokio::test]
async fn remote_device_lists_are_followed_and_let_go() {
    let mut fed = TestFederation::start(2).await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    upload_keys(hs2, &bob, "key-one").await;
    let room = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    let since = now_token(hs1, &alice).await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    wait_for_event(hs1, &alice, &room, |e| e["state_key"] == bob.user_id.as_str()).await;
    wait_changed(hs1, &alice, since, &bob).await;

    // First asked: fetched from hs2.
    let body = query(hs1, &alice, &bob).await;
    assert!(no_failures(&body), "{body}");
    let ed25519 = format!("ed25519:{}", bob.device_id);
    assert_eq!(body["device_keys"][&bob.user_id][&bob.device_id]["keys"][&ed25519], "key-one", "{body}");

    // A new key and a device name, then a second device: each followed.
    upload_keys(hs2, &bob, "key-two").await;
    let path = format!("/_matrix/client/v3/devices/{}", bob.device_id);
    let (status, body) = hs2.put(&path, Some(&bob.token), json!({"display_name": "bob's phone"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    query_until(hs1, &alice, &bob, "the new key and name", |b| {
        let device = &b["device_keys"][&bob.user_id][&bob.device_id];
        device["keys"][&ed25519] == "key-two" && device["unsigned"]["device_display_name"] == "bob's phone"
    })
    .await;
    let laptop = session(&hs2.login("bob", PASSWORD).await.1);
    upload_keys(hs2, &laptop, "laptop-key").await;
    query_until(hs1, &alice, &bob, "the laptop", |b| devices(b, &bob).len() == 2).await;

    // Cross-signing keys.
    let master =
        json!({"user_id": bob.user_id, "usage": ["master"], "keys": {"ed25519:bobmaster": "bobmaster"}});
    let (status, body) = hs2
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&bob.token),
            json!({"master_key": master}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    query_until(hs1, &alice, &bob, "bob's master key", |b| b["master_keys"][&bob.user_id] == master).await;

    // A deleted device goes.
    let path = format!("/_matrix/client/v3/devices/{}", laptop.device_id);
    let (status, body) = hs2.request(Method::DELETE, &path, Some(&bob.token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let auth = password_auth(&bob.user_id, PASSWORD, body["session"].as_str());
    let (status, body) =
        hs2.request(Method::DELETE, &path, Some(&bob.token), Some(json!({"auth": auth}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    query_until(hs1, &alice, &bob, "the laptop gone", |b| devices(b, &bob) == [bob.device_id.clone()]).await;

    // hs2 down: the same answer, from hs1's copy.
    fed.servers[1].stop_for_now().await;
    let body = query(&fed.servers[0], &alice, &bob).await;
    assert!(no_failures(&body), "{body}");
    assert_eq!(devices(&body, &bob), std::slice::from_ref(&bob.device_id), "{body}");
    assert_eq!(body["master_keys"][&bob.user_id], master, "{body}");

    // Once bob shares no room with hs1's users, hs1 lets his list go and
    // asks hs2 again (which is down).
    fed.servers[1].start_again().await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let (status, body) =
        hs2.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_event(hs1, &alice, &room, |e| {
        e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "leave"
    })
    .await;
    fed.servers[1].stop_for_now().await;
    let body = query(&fed.servers[0], &alice, &bob).await;
    assert!(body["failures"]["hs2.test"].is_object(), "asked of hs2, not answered from a copy: {body}");

    // Changed while nobody here followed: seen once bob is back.
    fed.servers[1].start_again().await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    upload_keys(hs2, &bob, "key-three").await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    wait_for_event(hs1, &alice, &room, |e| {
        e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "join"
    })
    .await;
    let body = query(hs1, &alice, &bob).await;
    assert!(no_failures(&body), "{body}");
    assert_eq!(body["device_keys"][&bob.user_id][&bob.device_id]["keys"][&ed25519], "key-three", "{body}");
}
