//! Typing, receipts, presence, to-device messages and end-to-end keys
//! between users of two servers.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{TestFederation, invite, join_via, now_token, rooms::wait_for_event, wait_sync};
use crate::common::{Session, TestServer, create_room, send, urlencode};

/// Syncs `who` from `since` until `wanted` holds of a response.
async fn wait_until(s: &TestServer, who: &Session, since: Option<String>, wanted: impl Fn(&Value) -> bool) {
    wait_sync(s, who, since, "what it waited for", |body| wanted(body).then_some(())).await
}

#[tokio::test]
async fn ephemeral_events_and_keys_cross_servers() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    wait_for_event(hs1, &alice, &room, |e| e["state_key"] == bob.user_id.as_str()).await;

    // Typing.
    let since = now_token(hs2, &bob).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/typing/{}", urlencode(&alice.user_id));
    let (status, body) = hs1.put(&path, Some(&alice.token), json!({"typing": true, "timeout": 20000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(hs2, &bob, since, |b| {
        b["rooms"]["join"][&room]["ephemeral"]["events"].as_array().into_iter().flatten().any(|e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"].as_array().is_some_and(|u| u.contains(&json!(alice.user_id)))
        })
    })
    .await;

    // Read receipts.
    let (_, sent) = send(hs1, &alice, &room, "r1", "read me").await;
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    wait_for_event(hs2, &bob, &room, |e| e["event_id"] == event_id.as_str()).await;
    let since = now_token(hs1, &alice).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", urlencode(&event_id));
    let (status, body) = hs2.post(&path, Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(hs1, &alice, since, |b| {
        b["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "m.receipt" && e["content"][&event_id]["m.read"][&bob.user_id].is_object())
    })
    .await;

    // Presence.
    let since = now_token(hs2, &bob).await;
    let path = format!("/_matrix/client/v3/presence/{}/status", urlencode(&alice.user_id));
    let (status, body) =
        hs1.put(&path, Some(&alice.token), json!({"presence": "online", "status_msg": "in a meeting"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(hs2, &bob, since, |b| {
        b["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["sender"] == alice.user_id.as_str() && e["content"]["status_msg"] == "in a meeting")
    })
    .await;

    // End-to-end keys: alice's device keys and a one-time key, asked of hs1 by bob's server.
    let since = now_token(hs2, &bob).await;
    let device_keys = json!({
        "user_id": alice.user_id, "device_id": alice.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{}", alice.device_id): "curvekey", format!("ed25519:{}", alice.device_id): "edkey"},
        "signatures": {},
    });
    let upload = json!({"device_keys": device_keys, "one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "otk1", "signatures": {}}}});
    let (status, body) = hs1.post("/_matrix/client/v3/keys/upload", Some(&alice.token), upload).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(hs2, &bob, since, |b| {
        b["device_lists"]["changed"].as_array().is_some_and(|c| c.contains(&json!(alice.user_id)))
    })
    .await;
    let (status, body) = hs2
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&bob.token),
            json!({"device_keys": {alice.user_id.clone(): []}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["device_keys"][&alice.user_id][&alice.device_id]["keys"][format!("ed25519:{}", alice.device_id)],
        "edkey",
        "{body}"
    );
    assert!(body["failures"].as_object().is_none_or(|f| f.is_empty()), "{body}");
    let claim =
        json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let (status, body) = hs2.post("/_matrix/client/v3/keys/claim", Some(&bob.token), claim.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAAAQ"]["key"], "otk1",
        "{body}"
    );
    // Claimed once.
    let (_, body) = hs2.post("/_matrix/client/v3/keys/claim", Some(&bob.token), claim).await;
    assert!(
        body["one_time_keys"][&alice.user_id].is_null()
            || body["one_time_keys"][&alice.user_id][&alice.device_id].is_null(),
        "{body}"
    );
    // A server that cannot be reached is a failure, not an error.
    let (status, body) = hs2
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&bob.token),
            json!({"device_keys": {"@x:unknown.invalid": []}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["failures"]["unknown.invalid"].is_object(), "{body}");

    // To-device, from bob's device to alice's.
    let since = now_token(hs1, &alice).await;
    let path = "/_matrix/client/v3/sendToDevice/m.test.ping/t1";
    let messages =
        json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"hello": "alice"}}}});
    let (status, body) = hs2.put(path, Some(&bob.token), messages).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(hs1, &alice, since, |b| {
        b["to_device"]["events"].as_array().into_iter().flatten().any(|e| {
            e["type"] == "m.test.ping"
                && e["sender"] == bob.user_id.as_str()
                && e["content"]["hello"] == "alice"
        })
    })
    .await;
}

/// Presence set by syncing reaches the other server, and a new federated
/// chat shows each side the other's presence from the join on (as
/// Synapse), with no explicit presence change after it.
#[tokio::test]
async fn a_new_federated_chat_shows_both_sides_presence() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    // Each is online by syncing, before they share a room.
    for (s, who) in [(hs1, &alice), (hs2, &bob)] {
        let (status, body) = s.get("/_matrix/client/v3/sync?timeout=0", Some(&who.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let room = create_room(hs1, &alice, json!({"preset": "private_chat"})).await;
    invite(hs1, &alice, &room, &bob.user_id).await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    let online = |b: &Value, user: &str| {
        b["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["sender"] == user && e["content"]["presence"] == "online")
    };
    for (s, who, other) in [(hs1, &alice, &bob), (hs2, &bob, &alice)] {
        wait_sync(s, who, None, "the other's presence", |b| online(b, &other.user_id).then_some(())).await;
    }
}
