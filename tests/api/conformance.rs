//! What SyTest and real clients expect of a Synapse-like server: response
//! shapes, the legacy endpoints older bots call, and the details where
//! Hearth used to differ.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

fn events(list: &Value) -> Vec<Value> {
    list.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn sync_sends_every_key_synapse_sends_even_when_empty() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let initial = sync(&s, &alice, "").await;
    for key in ["account_data", "presence", "to_device"] {
        assert!(initial[key]["events"].is_array(), "{key}: {initial}");
    }
    for key in ["join", "invite", "leave", "knock"] {
        assert!(initial["rooms"][key].is_object(), "{key}: {initial}");
    }
    let joined = &initial["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], false, "{joined}");
    for key in ["ephemeral", "account_data", "state"] {
        assert!(joined[key]["events"].is_array(), "{key}: {joined}");
    }
    assert_eq!(joined["unread_notifications"]["notification_count"], 0, "{joined}");

    // A left room: matrix-nio reads `state.events` of it unchecked.
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let since = initial["next_batch"].as_str().unwrap();
    let after = sync(&s, &alice, &format!("since={since}")).await;
    let left = &after["rooms"]["leave"][&room];
    assert!(left["state"]["events"].is_array(), "{after}");
    assert!(left["timeline"]["limited"].is_boolean(), "{after}");
}

#[tokio::test]
async fn a_timeline_limit_of_zero_returns_no_events() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"name": "zero"})).await;
    send(&s, &alice, &room, "t1", "hello").await;
    let filter = urlencode(&json!({"room": {"timeline": {"limit": 0}}}).to_string());
    let body = sync(&s, &alice, &format!("filter={filter}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(events(&joined["timeline"]["events"]), Vec::<Value>::new(), "{joined}");
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");
    let state = events(&joined["state"]["events"]);
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "the state is all there: {joined}");
}

#[tokio::test]
async fn capabilities_and_joined_members_name_their_defaults() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (status, body) = s.get("/_matrix/client/v3/capabilities", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["capabilities"]["m.change_password"]["enabled"], true, "{body}");
    let room = create_room(&s, &alice, json!({})).await;
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    let member = &body["joined"][&alice.user_id];
    assert!(member.get("avatar_url").is_some_and(Value::is_null), "{body}");
}

#[tokio::test]
async fn typing_without_timeout_and_sending_without_a_transaction() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_id),
            Some(&alice.token),
            json!({"typing": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let synced = sync(&s, &alice, "").await;
    let ephemeral = events(&synced["rooms"]["join"][&room]["ephemeral"]["events"]);
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").expect("typing event");
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));

    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message"),
            Some(&alice.token),
            json!({"msgtype": "m.text", "body": "no txn"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event_id = body["event_id"].as_str().unwrap();
    let (status, event) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["content"]["body"], "no txn");

    // A redaction without a transaction ID, as Synapse still takes it.
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/redact/{}", urlencode(event_id)),
            Some(&alice.token),
            json!({"reason": "typo"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redaction = body["event_id"].as_str().unwrap();
    let (status, event) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["content"], json!({}), "{event}");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction, "{event}");
    assert_eq!(event["unsigned"]["redacted_by"], redaction, "{event}");
}

#[tokio::test]
async fn the_legacy_event_stream_and_initial_syncs() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"name": "Old school"})).await;

    let (status, first) = s.get("/_matrix/client/r0/events?timeout=0", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first["chunk"].is_array() && first["start"].is_string(), "{first}");
    let end = first["end"].as_str().unwrap().to_owned();
    let (_, sent) = send(&s, &alice, &room, "e1", "streamed").await;
    let (status, next) =
        s.get(&format!("/_matrix/client/r0/events?from={end}&timeout=5000"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let chunk = events(&next["chunk"]);
    let message = chunk.iter().find(|e| e["event_id"] == sent["event_id"]).expect("the message");
    assert_eq!(message["room_id"], room.as_str());
    assert_ne!(next["end"], first["end"]);

    let (status, body) = s.get("/_matrix/client/v3/initialSync?limit=5", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["end"].is_string() && body["presence"].is_array(), "{body}");
    let rooms = events(&body["rooms"]);
    let entry = rooms.iter().find(|r| r["room_id"] == room.as_str()).expect("the room");
    assert_eq!(entry["membership"], "join");
    assert!(events(&entry["messages"]["chunk"]).iter().any(|e| e["content"]["body"] == "streamed"));
    assert!(events(&entry["state"]).iter().any(|e| e["type"] == "m.room.name"), "{entry}");

    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/initialSync"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert!(body["messages"]["start"].is_string() && body["messages"]["end"].is_string(), "{body}");
    assert!(events(&body["state"]).iter().any(|e| e["type"] == "m.room.name"), "{body}");

    // Someone never in the room learns nothing of it.
    let bob = s.register("bob").await;
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/initialSync"), Some(&bob.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn the_same_state_again_and_profile_changes_in_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let topic = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/");
    let (status, first) = s.put(&topic, Some(&alice.token), json!({"topic": "same"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = s.put(&topic, Some(&alice.token), json!({"topic": "same"})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(first["event_id"], again["event_id"], "no new event for identical state");
    // A repeated join is no new event either.
    let member_path =
        format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}?format=event", alice.user_id);
    let member = async |s: &TestServer| s.get(&member_path, Some(&alice.token)).await.1;
    let before = member(&s).await;
    join(&s, &alice, &room).await;
    assert_eq!(member(&s).await["event_id"], before["event_id"]);

    // A new display name reaches the member event.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&alice.token),
            json!({"displayname": "Alice Liddell"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let after = member(&s).await;
    assert_ne!(after["event_id"], before["event_id"]);
    assert_eq!(after["content"]["displayname"], "Alice Liddell");
    assert_eq!(after["content"]["membership"], "join");
}

#[tokio::test]
async fn a_deleted_alias_leaves_the_canonical_alias_event() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"room_alias_name": "gone"})).await;
    let canonical = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/");
    let (_, content) = s.get(&canonical, Some(&alice.token)).await;
    assert_eq!(content["alias"], "#gone:localhost", "{content}");
    let (status, body) = s
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/directory/room/%23gone:localhost",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, content) = s.get(&canonical, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content.get("alias").is_none(), "{content}");
}

fn changed(body: &Value) -> Vec<String> {
    events(&body["device_lists"]["changed"]).iter().map(|u| u.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn device_changes_backups_and_the_old_password_stage() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = |body: &Value| format!("since={}", body["next_batch"].as_str().unwrap());

    // A new login, a renamed device and a deleted one are device-list
    // changes for those who share a room, keys or not.
    let start = sync(&s, &alice, "").await;
    let (status, login) = s.login("bob", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let after_login = sync(&s, &alice, &since(&start)).await;
    assert_eq!(changed(&after_login), std::slice::from_ref(&bob.user_id), "{after_login}");
    let device = login["device_id"].as_str().unwrap();
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/devices/{device}"),
            Some(&bob.token),
            json!({"display_name": "Tablet"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let after_rename = sync(&s, &alice, &since(&after_login)).await;
    assert_eq!(changed(&after_rename), std::slice::from_ref(&bob.user_id), "{after_rename}");
    let token = login["access_token"].as_str().unwrap();
    let (status, _) = s.post("/_matrix/client/v3/logout", Some(token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let after_logout = sync(&s, &alice, &since(&after_rename)).await;
    assert_eq!(changed(&after_logout), std::slice::from_ref(&bob.user_id), "{after_logout}");

    // A backup's auth_data is whatever JSON the client keeps there.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/room_keys/version",
            Some(&alice.token),
            json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": "opaque"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, info) = s.get("/_matrix/client/v3/room_keys/version", Some(&alice.token)).await;
    assert_eq!(info["auth_data"], "opaque", "{info}");
    // ... and so is a session's `session_data`.
    let version = body["version"].as_str().unwrap();
    let session = format!("/_matrix/client/v3/room_keys/keys/{room}/sess1?version={version}");
    let key =
        json!({"first_message_index": 3, "forwarded_count": 0, "is_verified": false, "session_data": "blob"});
    let (status, body) = s.put(&session, Some(&alice.token), key.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, stored) = s.get(&session, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored, key);

    // The password stage with `user` instead of `identifier`.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/account/password",
            Some(&alice.token),
            json!({"new_password": "another secret",
                   "auth": {"type": "m.login.password", "user": alice.user_id, "password": PASSWORD}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.login("alice", "another secret").await.0, StatusCode::OK);
}

#[tokio::test]
async fn joins_keep_their_content_and_other_rooms_events_stay_out_of_reach() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_alias_name": "lobby"})).await;
    let private = create_room(&s, &alice, json!({})).await;

    // A join keeps the body's own keys, by ID and by alias.
    for (target, key) in [(room.clone(), "foo"), ("#lobby:localhost".replace('#', "%23"), "bar")] {
        let (status, body) = s
            .post(
                &format!("/_matrix/client/v3/join/{target}"),
                Some(&bob.token),
                json!({key: "x", "reason": "hi"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, member) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}", bob.user_id),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (member[key].as_str(), member["membership"].as_str()),
            (Some("x"), Some("join")),
            "{member}"
        );
    }
    // A join whose `reason` is no string is refused and changes nothing.
    let state_ids = || async {
        let (_, state) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), Some(&bob.token)).await;
        events(&state).iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>()
    };
    let before = state_ids().await;
    assert_error(
        &s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({"reason": 1})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_eq!(state_ids().await, before);

    // An event of a room bob may not read is not found; redacting an event
    // through another room is a bad request.
    let (status, sent) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{private}/send/m.room.message/t1"),
            Some(&alice.token),
            json!({"msgtype": "m.text", "body": "secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let secret = sent["event_id"].as_str().unwrap();
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{private}/event/{secret}"), Some(&bob.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, _) = s
        .put(&format!("/_matrix/client/v3/rooms/{room}/redact/{secret}/r1"), Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, event) =
        s.get(&format!("/_matrix/client/v3/rooms/{private}/event/{secret}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["content"]["body"], "secret", "not redacted");
}

#[tokio::test]
async fn legacy_events_carry_the_v1_fields_presence_and_account_data() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let put_account_data = |path: String, who: &Session, body: Value| {
        let token = who.token.clone();
        let s = &s;
        async move {
            let (status, response) = s.put(&path, Some(&token), body).await;
            assert_eq!(status, StatusCode::OK, "{response}");
        }
    };
    put_account_data(
        format!("/_matrix/client/v3/user/{}/account_data/my.type", alice.user_id),
        &alice,
        json!({"cats": 1}),
    )
    .await;

    // Room initialSync: v1 fields, and the presence of every joined member
    // (offline for bob, who never synced).
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/initialSync"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let own = events(&body["state"])
        .into_iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
        .expect("own member event");
    assert_eq!(own["user_id"], alice.user_id.as_str(), "{own}");
    assert!(own["age"].is_u64(), "{own}");
    let presence = events(&body["presence"]);
    let of_bob =
        presence.iter().find(|p| p["content"]["user_id"] == bob.user_id.as_str()).expect("bob's presence");
    assert_eq!(of_bob["content"]["presence"], "offline");

    // Global initialSync: account data, not push rules.
    let (_, body) = s.get("/_matrix/client/v3/initialSync", Some(&alice.token)).await;
    let types: Vec<_> = events(&body["account_data"]).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, [json!("my.type")]);

    // /events: account data and tags changed since `from`.
    let (_, first) = s.get("/_matrix/client/r0/events?timeout=0", Some(&alice.token)).await;
    let end = first["end"].as_str().unwrap().to_owned();
    put_account_data(
        format!("/_matrix/client/v3/user/{}/rooms/{room}/tags/u.work", alice.user_id),
        &alice,
        json!({}),
    )
    .await;
    put_account_data(
        format!("/_matrix/client/v3/user/{}/account_data/my.type", alice.user_id),
        &alice,
        json!({"rats": 2}),
    )
    .await;
    let (status, next) =
        s.get(&format!("/_matrix/client/r0/events?from={end}&timeout=5000"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let chunk = events(&next["chunk"]);
    assert!(
        chunk.iter().any(|e| e["type"] == "m.tag"
            && e["room_id"] == room.as_str()
            && e["content"]["tags"]["u.work"].is_object()),
        "{next}"
    );
    assert!(chunk.iter().any(|e| e["type"] == "my.type" && e["content"]["rats"] == 2), "{next}");
}

#[tokio::test]
async fn sync_marks_new_rooms_limited_and_gives_full_state_to_a_join_and_leave() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/a.madeup.test.state/"),
            Some(&alice.token),
            json!({"x": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let since = sync(&s, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    // Joined between two syncs: a room new to the client, limited.
    join(&s, &bob, &room).await;
    let after = sync(&s, &bob, &format!("since={since}")).await;
    assert_eq!(after["rooms"]["join"][&room]["timeline"]["limited"], true, "{after}");
    assert!(after["rooms"]["join"][&room]["timeline"]["prev_batch"].is_string());

    // Joined and left between two syncs: the left room comes with its state.
    let room2 = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room2}/state/a.madeup.test.state/"),
            Some(&alice.token),
            json!({"y": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let since = after["next_batch"].as_str().unwrap().to_owned();
    join(&s, &bob, &room2).await;
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{room2}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // With no timeline, the state event can only come as state.
    let filter = urlencode(&json!({"room": {"timeline": {"types": []}, "include_leave": true}}).to_string());
    let after = sync(&s, &bob, &format!("since={since}&filter={filter}")).await;
    let left = &after["rooms"]["leave"][&room2];
    let madeup: Vec<_> =
        events(&left["state"]["events"]).into_iter().filter(|e| e["type"] == "a.madeup.test.state").collect();
    assert_eq!(madeup.len(), 1, "{left}");
}

#[tokio::test]
async fn upgrades_carry_bans_tags_direct_chats_and_room_rules() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_version": "10"})).await;
    join(&s, &bob, &room).await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&alice.token),
            json!({"user_id": carol.user_id, "reason": "spam"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let user = format!("/_matrix/client/v3/user/{}", bob.user_id);
    for (path, body) in [
        (format!("{user}/rooms/{room}/tags/u.work"), json!({"order": 0.5})),
        (format!("{user}/account_data/m.direct"), json!({alice.user_id.clone(): [room.clone()]})),
        (
            format!("/_matrix/client/v3/pushrules/global/override/{room}"),
            json!({"actions": [], "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room}]}),
        ),
    ] {
        let (status, response) = s.put(&path, Some(&bob.token), body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {response}");
    }

    let upgrade = format!("/_matrix/client/v3/rooms/{room}/upgrade");
    for version in ["my_bad_version", "999"] {
        assert_error(
            &s.post(&upgrade, Some(&alice.token), json!({"new_version": version})).await,
            StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
        );
    }
    let (status, body) = s.post(&upgrade, Some(&alice.token), json!({"new_version": "11"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_room = body["replacement_room"].as_str().unwrap().to_owned();

    let (status, ban) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.member/{}", carol.user_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ban}");
    assert_eq!((ban["membership"].as_str(), ban["reason"].as_str()), (Some("ban"), Some("spam")));
    let (_, tags) = s.get(&format!("{user}/rooms/{new_room}/tags"), Some(&bob.token)).await;
    assert_eq!(tags["tags"], json!({"u.work": {"order": 0.5}}));
    let (_, direct) = s.get(&format!("{user}/account_data/m.direct"), Some(&bob.token)).await;
    assert_eq!(direct[&alice.user_id], json!([room, new_room]));
    let (status, rule) =
        s.get(&format!("/_matrix/client/v3/pushrules/global/override/{new_room}"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(rule["conditions"][0]["pattern"], new_room.as_str());
}

#[tokio::test]
async fn paging_back_from_a_whole_initial_timeline_returns_it_again() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    send(&s, &alice, &room, "m1", "hello").await;
    let initial = sync(&s, &alice, "").await;
    let timeline = &initial["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], false);
    let prev = timeline["prev_batch"].as_str().unwrap();
    // As Synapse: the token of a whole history is the end of it, so a client
    // paging back gets the same events (and then the start of the room).
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b");
    let (status, page) = s.get(&format!("{path}&from={prev}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    let ids = |list: &Value| events(list).iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>();
    let mut synced = ids(&timeline["events"]);
    synced.reverse();
    assert_eq!(ids(&page["chunk"]), synced);
    let end = page["end"].as_str().expect("an end after a page of events");
    let (status, last) = s.get(&format!("{path}&from={end}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((events(&last["chunk"]).len(), last.get("end")), (0, None));
}

#[tokio::test]
async fn openid_tokens_and_whois() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;

    let request = |who: &Session, user: &str| {
        let path = format!("/_matrix/client/v3/user/{user}/openid/request_token");
        let token = who.token.clone();
        let s = &s;
        async move { s.post(&path, Some(&token), json!({})).await }
    };
    let (status, issued) = request(&alice, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(
        (issued["token_type"].as_str(), issued["matrix_server_name"].as_str()),
        (Some("Bearer"), Some("localhost"))
    );
    assert_eq!(issued["expires_in"], 3600);
    assert_error(&request(&alice, &bob.user_id).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let userinfo = "/_matrix/federation/v1/openid/userinfo";
    let token = issued["access_token"].as_str().unwrap();
    let (status, info) = s.get(&format!("{userinfo}?access_token={token}"), None).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info, json!({"sub": alice.user_id}));
    // An access token of the client API is no OpenID token.
    assert_error(
        &s.get(&format!("{userinfo}?access_token={}", alice.token), None).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&s.get(userinfo, None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    // whois: about oneself, with where and with what each device was seen.
    let whois = |who: &Session, user: &str| {
        let path = format!("/_matrix/client/v3/admin/whois/{user}");
        let token = who.token.clone();
        let s = &s;
        async move {
            let response = s
                .http
                .get(format!("{}{path}", s.base))
                .bearer_auth(token)
                .header("User-Agent", "hearth-test/1")
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    whois(&alice, &alice.user_id).await;
    let (status, body) = whois(&alice, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id.as_str());
    let connection = &body["devices"][&alice.device_id]["sessions"][0]["connections"][0];
    assert_eq!(
        (connection["ip"].as_str(), connection["user_agent"].as_str()),
        (Some("127.0.0.1"), Some("hearth-test/1")),
        "{body}"
    );
    assert!(connection["last_seen"].is_u64());
    assert_eq!(whois(&bob, &alice.user_id).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sync_timelines_show_the_current_state_whatever_the_history_visibility() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    put_state(&s, &alice, &room, "m.room.history_visibility", json!({"history_visibility": "joined"})).await;
    join(&s, &bob, &room).await;
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let since = sync(&s, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    // Carol joins while bob is away: hidden from him by the visibility...
    join(&s, &carol, &room).await;
    send(&s, &alice, &room, "m1", "while bob was away").await;
    join(&s, &bob, &room).await;
    let after = sync(&s, &bob, &format!("since={since}")).await;
    let timeline = events(&after["rooms"]["join"][&room]["timeline"]["events"]);
    // ...but her join is the room's current state, which bob must learn.
    assert!(
        timeline.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == carol.user_id.as_str()),
        "{after}"
    );
    assert!(!timeline.iter().any(|e| e["content"]["body"] == "while bob was away"), "{after}");
}

#[tokio::test]
async fn sync_brings_the_presence_of_users_just_met() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let senders = |body: &Value| -> Vec<String> {
        events(&body["presence"]["events"])
            .iter()
            .filter_map(|e| e["sender"].as_str().map(str::to_owned))
            .collect()
    };
    // Neither ever synced with presence on: no presence record at all.
    let quiet = "set_presence=offline";
    let bob_since = sync(&s, &bob, quiet).await["next_batch"].as_str().unwrap().to_owned();
    let alice_since = sync(&s, &alice, quiet).await["next_batch"].as_str().unwrap().to_owned();
    join(&s, &bob, &room).await;

    // Bob joined a room: he gets its members' presence, once.
    let first = sync(&s, &bob, &format!("{quiet}&since={bob_since}")).await;
    assert_eq!(senders(&first), vec![alice.user_id.clone()], "{first}");
    assert_eq!(events(&first["presence"]["events"])[0]["content"]["presence"], "offline");
    let again =
        sync(&s, &bob, &format!("{quiet}&since={}&timeout=0", first["next_batch"].as_str().unwrap())).await;
    assert_eq!(senders(&again), Vec::<String>::new());
    // Alice: a new member's presence comes with the join.
    let seen = sync(&s, &alice, &format!("{quiet}&since={alice_since}")).await;
    assert_eq!(senders(&seen), vec![bob.user_id.clone()], "{seen}");
}

#[tokio::test]
async fn turn_credentials_from_the_shared_secret() {
    let unset = TestServer::start().await;
    let alice = unset.register("alice").await;
    let path = "/_matrix/client/v3/voip/turnServer";
    assert_eq!(unset.get(path, Some(&alice.token)).await, (StatusCode::OK, json!({})));
    assert_error(&unset.get(path, None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    let s = TestServer::start_with(|config| {
        config.registration.guest_access = true;
        config.turn.uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        config.turn.shared_secret = Some("secret".into());
        config.turn.user_lifetime_secs = 3600;
    })
    .await;
    let alice = s.register("alice").await;
    let (status, body) = s.get(path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["uris"], json!(["turn:turn.example.org:3478?transport=udp"]));
    assert_eq!(body["ttl"], 3600);
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice.user_id);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 3590..=now + 3610).contains(&expiry.parse::<u64>().unwrap()), "{username}");
    assert_eq!(body["password"].as_str().unwrap().len(), 28, "base64 of an HMAC-SHA1, padded");
    // Guests may call (turn.allow_guests).
    let (status, guest) = s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.get(path, Some(guest["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_filter_can_ask_for_events_in_the_federation_format() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let (_, sent) = send(&s, &alice, &room, "t1", "as a server sees it").await;
    let filter = urlencode(r#"{"event_format":"federation","room":{"timeline":{"limit":1}}}"#);
    let body = sync(&s, &alice, &format!("filter={filter}")).await;
    let event = &body["rooms"]["join"][&room]["timeline"]["events"][0];
    for key in [
        "event_id",
        "content",
        "room_id",
        "sender",
        "origin_server_ts",
        "type",
        "prev_events",
        "auth_events",
        "depth",
        "hashes",
        "signatures",
    ] {
        assert!(event.get(key).is_some(), "{key} in {event}");
    }
    assert_eq!(event["event_id"], sent["event_id"]);
    assert_eq!(event["unsigned"]["transaction_id"], "t1");
    // The state section too.
    let state = events(&body["rooms"]["join"][&room]["state"]["events"]);
    // (In room version 12 the create event names no room: its hash is the room ID.)
    assert!(
        state.iter().all(|e| e.get("auth_events").is_some()
            && (e["type"] == "m.room.create" || e.get("room_id").is_some())),
        "{state:?}"
    );
}

#[tokio::test]
async fn the_event_stream_with_a_limit_catches_up_in_order() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let (_, start) = s.get("/_matrix/client/r0/events?timeout=0", Some(&alice.token)).await;
    let mut from = start["end"].as_str().unwrap().to_owned();
    for i in 0..12 {
        send(&s, &alice, &room, &format!("m{i}"), &format!("message {i}")).await;
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        let (status, page) = s
            .get(&format!("/_matrix/client/r0/events?from={from}&limit=5&timeout=0"), Some(&alice.token))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let bodies: Vec<String> = events(&page["chunk"])
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        assert!(bodies.len() <= 5, "{page}");
        got.extend(bodies);
        from = page["end"].as_str().unwrap().to_owned();
    }
    let expected: Vec<String> = (0..12).map(|i| format!("message {i}")).collect();
    assert_eq!(got, expected);
}
