//! What a user may learn of a room: the review's history-visibility leaks
//! (REVIEW-2026-12 §2.2), each fixed and kept fixed here.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

fn member_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_former_member_reads_no_member_list_past_their_leaving() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    join(&s, &carol, &room).await;
    // Bob names a point after carol joined: he still sees the room as he left it.
    let now = sync(&s, &alice, "").await["next_batch"].as_str().unwrap().to_owned();
    for path in [
        format!("/_matrix/client/v3/rooms/{room}/members?at={now}"),
        format!("/_matrix/client/v3/rooms/{room}/members"),
    ] {
        let (status, body) = s.get(&path, Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids = member_ids(&body);
        assert!(!ids.contains(&carol.user_id), "{path}: {ids:?}");
        assert!(ids.contains(&alice.user_id) && ids.contains(&bob.user_id), "{path}: {ids:?}");
    }
    // A member sees carol.
    let (_, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/members?at={now}"), Some(&alice.token)).await;
    assert!(member_ids(&body).contains(&carol.user_id));
}

#[tokio::test]
async fn receipts_and_read_markers_only_on_events_one_may_see() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    put_state(&s, &alice, &room, "m.room.history_visibility", json!({"history_visibility": "joined"})).await;
    let (_, before) = send(&s, &alice, &room, "m1", "before bob").await;
    let hidden = before["event_id"].as_str().unwrap().to_owned();
    join(&s, &bob, &room).await;
    let (_, after) = send(&s, &alice, &room, "m2", "after bob").await;
    let seen = after["event_id"].as_str().unwrap().to_owned();

    // On an event bob could not see: as if it did not exist.
    for (path, body) in [
        (format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{hidden}"), json!({})),
        (format!("/_matrix/client/v3/rooms/{room}/receipt/m.fully_read/{hidden}"), json!({})),
        (format!("/_matrix/client/v3/rooms/{room}/read_markers"), json!({"m.fully_read": hidden})),
        (format!("/_matrix/client/v3/rooms/{room}/read_markers"), json!({"m.read": hidden})),
    ] {
        assert_error(&s.post(&path, Some(&bob.token), body).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    let (status, data) = s
        .get(
            &format!("/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read", bob.user_id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{data}");
    // On one he saw: fine.
    let (status, _) = s
        .post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{seen}"), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn lazy_loaded_members_are_as_of_the_events() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    send(&s, &alice, &room, "m1", "hello").await;
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // Alice renames herself after bob left: bob may not learn the new name.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&alice.token),
            json!({"displayname": "Secret Name"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let filter = urlencode(r#"{"lazy_load_members":true,"types":["m.room.message"]}"#);
    let (status, page) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&filter={filter}"), Some(&bob.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let state = page["state"].as_array().unwrap();
    let alices =
        state.iter().find(|e| e["state_key"] == alice.user_id.as_str()).expect("alice's member event");
    assert_eq!(alices["content"]["displayname"], "alice", "{alices}");
}

/// Blocking someone (ignoring them) means they cannot DM you: their
/// invites are dropped, by `/invite` and by `createRoom`, and do not come
/// back when the block is lifted.
#[tokio::test]
async fn people_you_ignore_cannot_invite_you() {
    let s = TestServer::start().await;
    let (alice, mallory, carol) =
        (s.register("alice").await, s.register("mallory").await, s.register("carol").await);
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", alice.user_id),
            Some(&alice.token),
            json!({"ignored_users": {mallory.user_id.clone(): {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let dm = create_room(&s, &mallory, json!({"is_direct": true, "invite": [alice.user_id, carol.user_id], "preset": "trusted_private_chat"})).await;
    let room = create_room(&s, &mallory, json!({"preset": "private_chat"})).await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&mallory.token),
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the inviter cannot tell");
    for room in [&dm, &room] {
        let (_, members) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/members"), Some(&mallory.token)).await;
        assert!(!members.to_string().contains(&alice.user_id), "{members}");
    }
    let (_, members) = s.get(&format!("/_matrix/client/v3/rooms/{dm}/members"), Some(&mallory.token)).await;
    assert!(members.to_string().contains(&carol.user_id), "others are invited: {members}");
    // Lifting the block brings nothing back.
    s.put(
        &format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", alice.user_id),
        Some(&alice.token),
        json!({"ignored_users": {}}),
    )
    .await;
    let synced = sync(&s, &alice, "").await;
    assert!(synced["rooms"]["invite"].as_object().is_none_or(|i| i.is_empty()), "{synced}");
}
