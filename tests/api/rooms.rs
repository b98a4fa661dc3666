//! Rooms: creation, sending, state, membership transitions under the auth
//! rules, history visibility, persistence.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn state(s: &TestServer, who: &Session, room: &str, kind: &str, key: &str) -> (StatusCode, Value) {
    s.get(&format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{key}"), Some(&who.token)).await
}

async fn messages(s: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), Some(&who.token)).await
}

fn bodies(chunk: &Value) -> Vec<String> {
    chunk["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

async fn member_action(
    s: &TestServer,
    who: &Session,
    room: &str,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    s.post(&format!("/_matrix/client/v3/rooms/{room}/{action}"), Some(&who.token), body).await
}

#[tokio::test]
async fn create_room_v12_sends_the_initial_state() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(
        &s,
        &alice,
        json!({"name": "Hearth", "topic": "Warmth", "preset": "private_chat",
               "initial_state": [{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    assert!(room.starts_with('!') && !room.contains(':'), "v12 room IDs are the create event's hash: {room}");

    let (status, all) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let types: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.guest_access",
        "m.room.encryption",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let (_, create) = state(&s, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12");
    assert!(create.get("creator").is_none(), "v11+ has no creator field");
    let (_, pl) = state(&s, &alice, &room, "m.room.power_levels", "").await;
    assert!(pl["users"].get("@alice:localhost").is_none(), "v12 creators are not in users: {pl}");
    assert_eq!(pl["events"]["m.room.tombstone"], 150);
    assert_eq!(pl["invite"], 0, "private presets let members invite");
    let (_, join_rules) = state(&s, &alice, &room, "m.room.join_rules", "").await;
    assert_eq!(join_rules["join_rule"], "invite");
    let (_, name) = state(&s, &alice, &room, "m.room.name", "").await;
    assert_eq!(name["name"], "Hearth");
    // The empty state key also works with a trailing slash and without it.
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), Some(&alice.token)).await.1["name"],
        "Hearth"
    );
    let (_, event) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name?format=event"), Some(&alice.token))
        .await;
    assert_eq!(event["content"]["name"], "Hearth");
    assert_eq!(event["room_id"], room.as_str());
    assert!(event["event_id"].as_str().unwrap().starts_with('$'));

    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(joined["joined_rooms"], json!([room]));
    let (_, member) = state(&s, &alice, &room, "m.room.member", "@alice:localhost").await;
    assert_eq!(member, json!({"membership": "join", "displayname": "alice"}));
}

#[tokio::test]
async fn older_room_versions_and_errors() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"room_version": "10"})).await;
    assert!(room.ends_with(":localhost"), "{room}");
    let (_, create) = state(&s, &alice, &room, "m.room.create", "").await;
    assert_eq!(create["creator"], "@alice:localhost");
    let (_, pl) = state(&s, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(pl["users"]["@alice:localhost"], 100);
    for version in ["3", "6", "9", "11"] {
        create_room(&s, &alice, json!({"room_version": version})).await;
    }
    // Versions 1 and 2: event IDs are `$random:server`, carried in the event.
    let bob = s.register("bob").await;
    for version in ["1", "2"] {
        let room = create_room(&s, &alice, json!({"room_version": version, "preset": "public_chat"})).await;
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
        let (status, sent) = send(&s, &bob, &room, &format!("v{version}"), "old school").await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        let event_id = sent["event_id"].as_str().unwrap();
        assert!(event_id.starts_with('$') && event_id.ends_with(":localhost"), "{event_id}");
        let (_, event) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), Some(&alice.token)).await;
        assert_eq!(event["content"]["body"], "old school");
        let (_, page) = messages(&s, &alice, &room).await;
        assert_eq!(bodies(&page), ["old school"]);
    }

    assert_error(
        &s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({"room_version": "99"})).await,
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    // A third-party invite through an identity server Hearth may not reach
    // (a private address) fails loudly, not silently.
    assert_error(
        &s.post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({"invite_3pid": [{"id_server": "127.0.0.1:9", "id_access_token": "t", "medium": "email", "address": "a@example.org"}]}),
        )
        .await,
        StatusCode::BAD_GATEWAY,
        "M_UNKNOWN",
    );
    assert_error(
        &s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({"room_alias_name": "bad alias"}))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // A name event the creator may not send (power levels say 100, creator has 50).
    assert_error(
        &s.post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({"room_version": "10", "name": "x", "power_level_content_override": {"users": {"@alice:localhost": 50}, "events": {"m.room.name": 100}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_ROOM_STATE",
    );
}

#[tokio::test]
async fn aliases_resolve_and_are_unique() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_alias_name": "lounge"})).await;
    let (_, alias) = state(&s, &alice, &room, "m.room.canonical_alias", "").await;
    assert_eq!(alias["alias"], "#lounge:localhost");
    assert_error(
        &s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({"room_alias_name": "lounge"}))
            .await,
        StatusCode::BAD_REQUEST,
        "M_ROOM_IN_USE",
    );
    let (status, body) =
        s.post("/_matrix/client/v3/join/%23lounge:localhost", Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_error(
        &s.post("/_matrix/client/v3/join/%23nowhere:localhost", Some(&bob.token), json!({})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn sending_is_idempotent_per_device_and_transaction() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let (status, first) = send(&s, &alice, &room, "txn1", "hello").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, again) = send(&s, &alice, &room, "txn1", "hello").await;
    assert_eq!(first["event_id"], again["event_id"], "a retried transaction is not sent twice");
    let phone = session(&s.login("alice", PASSWORD).await.1);
    let (_, other_device) = send(&s, &phone, &room, "txn1", "hello").await;
    assert_ne!(first["event_id"], other_device["event_id"]);
    let (_, page) = messages(&s, &alice, &room).await;
    assert_eq!(bodies(&page), ["hello", "hello"]);

    // The sending device sees its transaction ID; others do not.
    let event_id = first["event_id"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{event_id}");
    let (status, event) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["unsigned"]["transaction_id"], "txn1");
    assert_eq!(event["content"]["body"], "hello");
    let (status, seen_by_phone) = s.get(&path, Some(&phone.token)).await;
    assert_eq!(status, StatusCode::OK, "{seen_by_phone}");
    assert_eq!(seen_by_phone["content"]["body"], "hello");
    assert!(seen_by_phone["unsigned"].get("transaction_id").is_none());
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/event/$nope"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Bad content changes nothing.
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t2"),
            Some(&alice.token),
            json!([1]),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let big = "x".repeat(70_000);
    assert_error(&send(&s, &alice, &room, "t3", &big).await, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    let (_, page) = messages(&s, &alice, &room).await;
    assert_eq!(bodies(&page).len(), 2);
}

#[tokio::test]
async fn membership_follows_the_auth_rules() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "private_chat", "room_version": "10"})).await;

    // Invite-only: no join without an invite; non-members cannot send.
    assert_error(
        &member_action(&s, &bob, &room, "join", json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(&send(&s, &bob, &room, "b1", "hi").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        member_action(&s, &alice, &room, "invite", json!({"user_id": bob.user_id})).await.0,
        StatusCode::OK
    );
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(joined["joined_rooms"], json!([]), "an invite is not a join");
    assert_eq!(member_action(&s, &bob, &room, "join", json!({})).await.0, StatusCode::OK);
    assert_eq!(send(&s, &bob, &room, "b2", "hi").await.0, StatusCode::OK);

    // Bob (power 0) may not name the room, kick or ban.
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&bob.token),
            json!({"name": "mine"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &member_action(&s, &bob, &room, "kick", json!({"user_id": alice.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &member_action(&s, &bob, &room, "ban", json!({"user_id": alice.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Alice raises bob to 50: now he can name it, but still not change power levels.
    let (_, mut pl) = state(&s, &alice, &room, "m.room.power_levels", "").await;
    pl["users"]["@bob:localhost"] = json!(50);
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&alice.token),
            pl.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&bob.token),
            json!({"name": "ours"})
        )
        .await
        .0,
        StatusCode::OK
    );
    pl["users"]["@bob:localhost"] = json!(100);
    assert_error(
        &s.put(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"), Some(&bob.token), pl)
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Kick: bob is out and, the room being invite-only, cannot come back alone.
    assert_eq!(
        member_action(&s, &alice, &room, "kick", json!({"user_id": bob.user_id, "reason": "test"})).await.0,
        StatusCode::OK
    );
    let (_, member) = state(&s, &alice, &room, "m.room.member", "@bob:localhost").await;
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "test");
    assert_error(
        &member_action(&s, &bob, &room, "join", json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Ban: a banned user cannot be invited until unbanned.
    assert_eq!(
        member_action(&s, &alice, &room, "ban", json!({"user_id": bob.user_id})).await.0,
        StatusCode::OK
    );
    assert_error(
        &member_action(&s, &alice, &room, "invite", json!({"user_id": bob.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &member_action(&s, &alice, &room, "unban", json!({"user_id": carol.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(
        member_action(&s, &alice, &room, "unban", json!({"user_id": bob.user_id})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        member_action(&s, &alice, &room, "invite", json!({"user_id": bob.user_id})).await.0,
        StatusCode::OK
    );
    assert_eq!(member_action(&s, &bob, &room, "join", json!({})).await.0, StatusCode::OK);

    // Members lists.
    assert_eq!(
        member_action(&s, &alice, &room, "invite", json!({"user_id": carol.user_id})).await.0,
        StatusCode::OK
    );
    let (_, joined) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&alice.token)).await;
    let mut names: Vec<&String> = joined["joined"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["@alice:localhost", "@bob:localhost"]);
    assert_eq!(joined["joined"]["@bob:localhost"]["display_name"], "bob");
    let (_, members) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/members?membership=invite"), Some(&alice.token))
        .await;
    let invited: Vec<&str> =
        members["chunk"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(invited, ["@carol:localhost"]);
    let (_, members) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/members?not_membership=invite"), Some(&alice.token))
        .await;
    assert_eq!(members["chunk"].as_array().unwrap().len(), 2);

    // Leave.
    assert_eq!(member_action(&s, &bob, &room, "leave", json!({})).await.0, StatusCode::OK);
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(joined["joined_rooms"], json!([]));
}

#[tokio::test]
async fn public_rooms_can_be_joined_by_anyone() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, pl) = state(&s, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(pl["invite"], 50, "public rooms keep invites to moderators");
    // v12: the creator has infinite power; nobody can kick them.
    assert_error(
        &member_action(&s, &bob, &room, "kick", json!({"user_id": alice.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn history_visibility_is_enforced_on_reads() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let eve = s.register("eve").await;
    let joined_only = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    let shared = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let mut early = Vec::new();
    for room in [&joined_only, &shared] {
        let (_, sent) = send(&s, &alice, room, "early", "before bob").await;
        early.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    // Eve, never a member, can read neither.
    assert_error(&messages(&s, &eve, &shared).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{shared}/state"), Some(&eve.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    for room in [&joined_only, &shared] {
        assert_eq!(
            s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await.0,
            StatusCode::OK
        );
        send(&s, &alice, room, "late", "after bob").await;
    }
    let (_, page) = messages(&s, &bob, &joined_only).await;
    assert_eq!(bodies(&page), ["after bob"], "joined: nothing from before the join");
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{joined_only}/event/{}", early[0]), Some(&bob.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, page) = messages(&s, &bob, &shared).await;
    assert_eq!(bodies(&page), ["after bob", "before bob"], "shared: all history");
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/rooms/{shared}/event/{}", early[1]), Some(&bob.token)).await.0,
        StatusCode::OK
    );
    // Having left, bob still sees what came before his join (he joined
    // after it), but nothing sent after he left.
    s.post(&format!("/_matrix/client/v3/rooms/{shared}/leave"), Some(&bob.token), json!({})).await;
    let (_, gone) = send(&s, &alice, &shared, "gone", "after bob left").await;
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/rooms/{shared}/event/{}", early[1]), Some(&bob.token)).await.0,
        StatusCode::OK
    );
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/rooms/{shared}/event/{}", gone["event_id"].as_str().unwrap()),
            Some(&bob.token),
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, page) = messages(&s, &bob, &shared).await;
    assert_eq!(bodies(&page), ["after bob", "before bob"]);
}

#[tokio::test]
async fn messages_paginate_both_ways_with_filters() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    for i in 0..25 {
        send(&s, &alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let filter = r#"{"types":["m.room.message"],"lazy_load_members":true}"#;
    let base =
        format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10&filter={}", urlencode(filter));
    let (status, page1) = s.get(&base, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    assert_eq!(bodies(&page1), (15..25).rev().map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(page1["state"].as_array().unwrap().len(), 1, "lazy-loaded sender member event");
    let end = page1["end"].as_str().unwrap();
    let (_, page2) = s.get(&format!("{base}&from={end}"), Some(&alice.token)).await;
    assert_eq!(bodies(&page2), (5..15).rev().map(|i| format!("m{i}")).collect::<Vec<_>>());
    let (_, page3) =
        s.get(&format!("{base}&from={}", page2["end"].as_str().unwrap()), Some(&alice.token)).await;
    assert_eq!(bodies(&page3), (0..5).rev().map(|i| format!("m{i}")).collect::<Vec<_>>());
    // As Synapse: a page with events names where the next one starts; that
    // one is empty and has no `end`: the start of the room.
    let (_, page4) =
        s.get(&format!("{base}&from={}", page3["end"].as_str().unwrap()), Some(&alice.token)).await;
    assert!(page4["chunk"].as_array().unwrap().is_empty() && page4.get("end").is_none(), "{page4}");
    // Forwards from page 2's end returns what came after that point.
    let forward = format!(
        "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=3&from={}&filter={}",
        page2["end"].as_str().unwrap(),
        urlencode(filter)
    );
    let (_, fwd) = s.get(&forward, Some(&alice.token)).await;
    assert_eq!(bodies(&fwd), ["m5", "m6", "m7"]);
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=garbage"), Some(&alice.token))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn rooms_survive_restart() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"name": "Persistent"})).await;
    send(&s, &alice, &room, "a", "before restart").await;
    s.restart().await;
    let (_, name) = state(&s, &alice, &room, "m.room.name", "").await;
    assert_eq!(name["name"], "Persistent");
    assert_eq!(send(&s, &alice, &room, "b", "after restart").await.0, StatusCode::OK);
    let (_, again) = send(&s, &alice, &room, "a", "before restart").await;
    let (_, page) = messages(&s, &alice, &room).await;
    assert_eq!(bodies(&page), ["after restart", "before restart"], "{again}");
    s.stop().await;
}

#[tokio::test]
async fn redactions_follow_the_room_version() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    for version in ["1", "10", "11", "12"] {
        let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
        let (_, sent) = send(&s, &bob, &room, &format!("r{version}"), "regrettable").await;
        let target = sent["event_id"].as_str().unwrap().to_owned();
        let (_, alices) = send(&s, &alice, &room, &format!("a{version}"), "mine").await;
        let alices = alices["event_id"].as_str().unwrap().to_owned();

        // Bob (power 0) may not redact alice's message, only his own.
        assert_error(
            &s.put(
                &format!("/_matrix/client/v3/rooms/{room}/redact/{alices}/x"),
                Some(&bob.token),
                json!({}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let (status, body) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/redact/{target}/t1"),
                Some(&bob.token),
                json!({"reason": "oops"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let redaction = body["event_id"].as_str().unwrap().to_owned();

        let (_, event) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{target}"), Some(&alice.token)).await;
        assert_eq!(event["content"], json!({}), "v{version}: content redacted: {event}");
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction.as_str());
        assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "oops");
        let (_, red) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{redaction}"), Some(&alice.token)).await;
        assert_eq!(red["redacts"], target.as_str(), "top-level redacts in every version: {red}");
        let v11_or_later = matches!(version, "11" | "12");
        if v11_or_later {
            assert_eq!(red["content"]["redacts"], target.as_str());
        }
        // Alice (power 100 or creator) may redact bob's; the stored form follows the version's rules.
        let (_, pl_event) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels?format=event"),
                Some(&alice.token),
            )
            .await;
        let pl_id = pl_event["event_id"].as_str().unwrap().to_owned();
        let (status, _) = s
            .put(&format!("/_matrix/client/v3/rooms/{room}/redact/{pl_id}/t2"), Some(&alice.token), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, pl) = s
            .get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"), Some(&alice.token))
            .await;
        assert!(pl.get("ban").is_some(), "power levels keep their keys: {pl}");
        assert_eq!(pl.get("invite").is_some(), v11_or_later, "v11+ keeps `invite`: {pl}");
        assert!(pl.get("historical").is_none(), "unknown keys go: {pl}");
        assert_error(
            &s.put(
                &format!("/_matrix/client/v3/rooms/{room}/redact/$missing/t3"),
                Some(&alice.token),
                json!({}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
    }
}

#[tokio::test]
async fn context_and_timestamp_to_event() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        let (_, sent) = send(&s, &alice, &room, &format!("c{i}"), &format!("m{i}")).await;
        ids.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    let (status, ctx) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", ids[4]), Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["content"]["body"], "m4");
    let before: Vec<&str> = ctx["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    let after: Vec<&str> = ctx["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(before, ["m3", "m2"]);
    assert_eq!(after, ["m5", "m6"]);
    assert!(
        ctx["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"),
        "state at the event"
    );
    // The tokens continue from where the context stops.
    let (_, older) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=2&from={}",
                ctx["start"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(bodies(&older), ["m1", "m0"]);
    let (_, newer) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=2&from={}",
                ctx["end"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(bodies(&newer), ["m7", "m8"]);
    assert_error(
        &s.get(&format!("/_matrix/client/v3/rooms/{room}/context/$nope"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    let (_, event) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[4]), Some(&alice.token)).await;
    let ts = event["origin_server_ts"].as_u64().unwrap();
    let (status, found) = s
        .get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=b"), Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert!(found["origin_server_ts"].as_u64().unwrap() <= ts);
    let (_, found) = s
        .get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=f"), Some(&alice.token))
        .await;
    assert!(found["origin_server_ts"].as_u64().unwrap() >= ts);
    assert_error(
        &s.get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={}&dir=f", ts + 3_600_000),
            Some(&alice.token),
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, first) = s
        .get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts=0&dir=f"), Some(&alice.token))
        .await;
    let (_, create) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.create?format=event"), Some(&alice.token))
        .await;
    assert_eq!(first["event_id"], create["event_id"]);
}

#[tokio::test]
async fn forget_knock_and_reports() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(
        &s,
        &alice,
        json!({"room_version": "10", "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    // Forgetting needs a room one has left.
    assert_error(
        &member_action(&s, &alice, &room, "forget", json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );

    // Knock, then be let in.
    let (status, body) = s
        .post(&format!("/_matrix/client/v3/knock/{room}"), Some(&bob.token), json!({"reason": "let me in"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, member) = state(&s, &alice, &room, "m.room.member", "@bob:localhost").await;
    assert_eq!(member["membership"], "knock");
    assert_eq!(member["reason"], "let me in");
    assert_eq!(
        member_action(&s, &alice, &room, "invite", json!({"user_id": bob.user_id})).await.0,
        StatusCode::OK
    );
    assert_eq!(member_action(&s, &bob, &room, "join", json!({})).await.0, StatusCode::OK);
    // A knock on an invite-only room is refused.
    let closed = create_room(&s, &alice, json!({"room_version": "10"})).await;
    assert_error(
        &s.post(&format!("/_matrix/client/v3/knock/{closed}"), Some(&bob.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Reports.
    let (_, sent) = send(&s, &alice, &room, "r1", "rude").await;
    let event = sent["event_id"].as_str().unwrap();
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report/{event}"),
            Some(&bob.token),
            json!({"reason": "rude"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.post(
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            Some(&bob.token),
            json!({"reason": "whole room"})
        )
        .await
        .0,
        StatusCode::OK
    );
    let eve = s.register("eve").await;
    assert_error(
        &s.post(&format!("/_matrix/client/v3/rooms/{room}/report/{event}"), Some(&eve.token), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_eq!(
        s.post(&format!("/_matrix/client/v3/rooms/{room}/report"), Some(&eve.token), json!({"reason": ""}))
            .await
            .0,
        StatusCode::OK,
        "room reports need no membership"
    );
    assert_error(
        &s.post("/_matrix/client/v3/rooms/!nope:localhost/report", Some(&eve.token), json!({"reason": "x"}))
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let reports = s.server().services.rooms.reports().unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0].1.reason.as_deref(), Some("rude"));
    assert_eq!(reports[0].1.event_id.as_ref().map(|e| e.as_str()), Some(event));

    // Leave and forget.
    assert_eq!(member_action(&s, &bob, &room, "leave", json!({})).await.0, StatusCode::OK);
    assert_eq!(member_action(&s, &bob, &room, "forget", json!({})).await.0, StatusCode::OK);
    let room_id = ruma::OwnedRoomId::try_from(room.as_str()).unwrap();
    let short = s.server().services.rooms.room_short(&room_id).unwrap().unwrap();
    assert!(
        s.server()
            .services
            .rooms
            .is_forgotten(&ruma::OwnedUserId::try_from(bob.user_id.as_str()).unwrap(), short)
            .unwrap()
    );
}

#[tokio::test]
async fn sending_is_rate_limited_per_user() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.message.per_second = 0.1;
        c.rate_limits.message.burst_count = 3;
    })
    .await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let (status, body) = send(&s, &alice, &room, &format!("l{i}"), "ok").await;
        assert_eq!(status, StatusCode::OK);
        sent.push(body["event_id"].clone());
    }
    let resp = send(&s, &alice, &room, "l3", "too fast").await;
    assert_error(&resp, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(resp.1["retry_after_ms"].as_u64().unwrap() > 0);
    // A retried transaction creates nothing, so it answers with its event
    // even while the sender is limited.
    let (status, retried) = send(&s, &alice, &room, "l0", "ok").await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["event_id"], sent[0]);
    s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    assert_eq!(send(&s, &bob, &room, "b0", "others are not limited by alice").await.0, StatusCode::OK);
    let (_, page) = messages(&s, &alice, &room).await;
    assert!(!bodies(&page).contains(&"too fast".to_owned()), "the refused event was not stored");
}

#[tokio::test]
async fn rooms_upgrade_with_tombstone_copied_state_and_moved_aliases() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let old = create_room(
        &s,
        &alice,
        json!({"room_version": "10", "preset": "public_chat", "visibility": "public", "name": "Old hall",
               "topic": "history", "room_alias_name": "hall"}),
    )
    .await;
    s.post(&format!("/_matrix/client/v3/join/{old}"), Some(&bob.token), json!({})).await;
    let upgrade = format!("/_matrix/client/v3/rooms/{old}/upgrade");

    assert_error(
        &s.post(&upgrade, Some(&bob.token), json!({"new_version": "12"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.post(&upgrade, Some(&alice.token), json!({"new_version": "99"})).await,
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
    );

    let (status, body) = s.post(&upgrade, Some(&alice.token), json!({"new_version": "12"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();

    let (_, tombstone) = state(&s, &alice, &old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new.as_str());
    let (_, create) = state(&s, &alice, &new, "m.room.create", "").await;
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["room_version"], "12");
    let (_, name) = state(&s, &alice, &new, "m.room.name", "").await;
    assert_eq!(name["name"], "Old hall");
    let (_, topic) = state(&s, &alice, &new, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "history");
    let (_, join_rules) = state(&s, &alice, &new, "m.room.join_rules", "").await;
    assert_eq!(join_rules["join_rule"], "public");
    let (_, pl) = state(&s, &alice, &new, "m.room.power_levels", "").await;
    assert!(pl["users"].get("@alice:localhost").is_none(), "the v12 creator is not listed: {pl}");

    let (_, old_canonical) = state(&s, &alice, &old, "m.room.canonical_alias", "").await;
    assert!(old_canonical.get("alias").is_none(), "the old room no longer claims it: {old_canonical}");
    // The alias now points at the new room, which took over the directory entry.
    let (_, alias) = s.get("/_matrix/client/v3/directory/room/%23hall:localhost", None).await;
    assert_eq!(alias["room_id"], new.as_str());
    let (_, directory) = s.get("/_matrix/client/v3/publicRooms", None).await;
    let listed: Vec<&str> =
        directory["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [new.as_str()]);

    // The old room is quiet: bob may no longer post there, but can join the new one.
    assert_error(&send(&s, &bob, &old, "q", "still here?").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(
        s.post(&format!("/_matrix/client/v3/join/{new}"), Some(&bob.token), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(send(&s, &bob, &new, "n", "new home").await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_upgrade_to_a_version_with_random_room_ids_names_the_tombstone() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let old = create_room(&s, &alice, json!({"room_version": "10"})).await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{old}/upgrade"),
            Some(&alice.token),
            json!({"new_version": "11"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    let (_, tombstone) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{old}/state/m.room.tombstone/?format=event"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(tombstone["content"]["replacement_room"], new.as_str(), "{tombstone}");
    let (_, create) = state(&s, &alice, &new, "m.room.create", "").await;
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["predecessor"]["event_id"], tombstone["event_id"], "{create}");
}

// Multi-threaded, like the real server, so appends really race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_neither_fork_nor_lose_events() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let mut users = vec![alice];
    for name in ["bob", "carol", "dave"] {
        let user = s.register(name).await;
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&user.token), json!({})).await;
        users.push(user);
    }
    let sends = users.iter().flat_map(|u| (0..25).map(move |i| (u, i))).map(|(u, i)| {
        let s = &s;
        let room = &room;
        async move { send(s, u, room, &format!("c{i}"), &format!("{}-{i}", u.user_id)).await }
    });
    let results = futures_util::future::join_all(sends).await;
    assert!(results.iter().all(|(status, _)| *status == StatusCode::OK), "{results:?}");

    let (_, page) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000"), Some(&users[0].token))
        .await;
    assert_eq!(bodies(&page).len(), 100, "every acknowledged event is in the timeline");
    let room_id = ruma::OwnedRoomId::try_from(room.as_str()).unwrap();
    let (_, record) = s.server().services.rooms.room(&room_id).unwrap().unwrap();
    assert_eq!(record.forward_extremities.len(), 1, "the DAG did not fork");
    // Each event's only prev_event is the one before it: a straight line.
    let chunk = page["chunk"].as_array().unwrap();
    for pair in chunk.windows(2) {
        let newer = s
            .server()
            .services
            .rooms
            .pdu(&ruma::OwnedEventId::try_from(pair[0]["event_id"].as_str().unwrap()).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(newer.prev_events.len(), 1);
        assert_eq!(newer.prev_events[0].as_str(), pair[1]["event_id"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_room_creations_get_distinct_ids() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    // v12 room IDs are the create event's hash: identical requests in the
    // same millisecond must still make different rooms.
    let creations = (0..12).map(|_| s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({})));
    let results = futures_util::future::join_all(creations).await;
    let mut ids: Vec<&str> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["room_id"].as_str().unwrap()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 12);
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_allowed_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let space = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    s.post(&format!("/_matrix/client/v3/join/{space}"), Some(&bob.token), json!({})).await;
    let restricted = create_room(
        &s,
        &alice,
        json!({"initial_state": [{"type": "m.room.join_rules", "content": {
            "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
    )
    .await;
    // Bob is in the allowed room: he may join, authorised by alice.
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{restricted}"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, member) = state(&s, &alice, &restricted, "m.room.member", "@bob:localhost").await;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], "@alice:localhost");
    // Carol is not: refused.
    assert_error(
        &s.post(&format!("/_matrix/client/v3/join/{restricted}"), Some(&carol.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn membership_through_the_state_endpoint_takes_the_membership_path() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let space = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &space).await;
    let restricted = create_room(
        &s,
        &alice,
        json!({"initial_state": [{"type": "m.room.join_rules", "content": {
            "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
    )
    .await;
    let member_path =
        |user: &str| format!("/_matrix/client/v3/rooms/{restricted}/state/m.room.member/{user}");
    // Carol is in no allowed room: naming an authoriser herself gets her nowhere.
    assert_error(
        &s.put(
            &member_path(&carol.user_id),
            Some(&carol.token),
            json!({"membership": "join", "join_authorised_via_users_server": alice.user_id}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{restricted}/state/m.room.member/{}", carol.user_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "carol has no member event");
    // Bob is in the allowed room: the server names the authoriser, not the
    // client (who named someone who cannot invite), and custom content stays.
    let (status, body) = s
        .put(
            &member_path(&bob.user_id),
            Some(&bob.token),
            json!({"membership": "join", "join_authorised_via_users_server": carol.user_id, "custom": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, member) = state(&s, &alice, &restricted, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str());
    assert_eq!(member["custom"], 1);
    // Another server's user is invited through /invite: a server that
    // cannot be reached leaves no invite behind.
    assert_error(
        &s.put(&member_path("@eve:elsewhere.example"), Some(&alice.token), json!({"membership": "invite"}))
            .await,
        StatusCode::BAD_GATEWAY,
        "M_UNKNOWN",
    );
    let (status, _) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{restricted}/state/m.room.member/@eve:elsewhere.example"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn review_fixes_kick_forget_former_members_and_aliases() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "name": "Before", "room_alias_name": "fixes"}),
    )
    .await;

    // Kicking someone who is not in the room is refused.
    assert_error(
        &member_action(&s, &alice, &room, "kick", json!({"user_id": carol.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // ... and a kick does not lift a ban.
    assert_eq!(
        member_action(&s, &alice, &room, "ban", json!({"user_id": carol.user_id})).await.0,
        StatusCode::OK
    );
    assert_error(
        &member_action(&s, &alice, &room, "kick", json!({"user_id": carol.user_id})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (_, member) = state(&s, &alice, &room, "m.room.member", "@carol:localhost").await;
    assert_eq!(member["membership"], "ban");

    // A former member reads the state as it was when they left.
    s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    assert_eq!(member_action(&s, &bob, &room, "leave", json!({})).await.0, StatusCode::OK);
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
        Some(&alice.token),
        json!({"name": "After"}),
    )
    .await;
    let dave = s.register("dave").await;
    s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&dave.token), json!({})).await;
    let (status, name) = state(&s, &bob, &room, "m.room.name", "").await;
    assert_eq!(status, StatusCode::OK, "{name}");
    assert_eq!(name["name"], "Before");
    let (_, members) = s.get(&format!("/_matrix/client/v3/rooms/{room}/members"), Some(&bob.token)).await;
    assert!(
        !members["chunk"].as_array().unwrap().iter().any(|m| m["state_key"] == "@dave:localhost"),
        "{members}"
    );
    let (status, all) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Before")
    );

    // After forgetting, nothing is readable.
    assert_eq!(member_action(&s, &bob, &room, "forget", json!({})).await.0, StatusCode::OK);
    assert_error(&messages(&s, &bob, &room).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&state(&s, &bob, &room, "m.room.name", "").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Canonical aliases must point to the room.
    create_room(&s, &alice, json!({"room_alias_name": "elsewhere"})).await;
    let alias_path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias/");
    let put_alias = |body: Value| s.put(&alias_path, Some(&alice.token), body);
    assert_error(
        &put_alias(json!({"alias": "#missing:localhost"})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_ALIAS",
    );
    assert_error(
        &put_alias(json!({"alias": "#elsewhere:localhost"})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_ALIAS",
    );
    assert_error(
        &put_alias(json!({"alias": "#fixes:localhost", "alt_aliases": ["%invalid:localhost"]})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_eq!(put_alias(json!({"alias": "#fixes:localhost", "alt_aliases": []})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn redactions_via_send_and_transaction_echoes() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    for version in ["10", "12"] {
        let room = create_room(&s, &alice, json!({"room_version": version})).await;
        let (_, sent) = send(&s, &alice, &room, "m", "oops").await;
        let target = sent["event_id"].as_str().unwrap().to_owned();
        // A redaction sent through /send works in every room version.
        let (status, body) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.redaction/r1"),
                Some(&alice.token),
                json!({"redacts": target}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
        let (_, event) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{target}"), Some(&alice.token)).await;
        assert_eq!(event["content"], json!({}), "v{version}: {event}");
        let redaction = body["event_id"].as_str().unwrap();
        let (_, red) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{redaction}"), Some(&alice.token)).await;
        assert_eq!(red["redacts"], target.as_str());
        assert_eq!(red["unsigned"]["transaction_id"], "r1");

        // /redact echoes the client's own transaction ID, unprefixed.
        let (_, sent) = send(&s, &alice, &room, "m2", "again").await;
        let target = sent["event_id"].as_str().unwrap();
        let (_, body) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/redact/{target}/same-id"),
                Some(&alice.token),
                json!({}),
            )
            .await;
        let redaction = body["event_id"].as_str().unwrap();
        let (_, red) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{redaction}"), Some(&alice.token)).await;
        assert_eq!(red["unsigned"]["transaction_id"], "same-id");

        // The create event cannot be redacted.
        let (_, create) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create?format=event"),
                Some(&alice.token),
            )
            .await;
        let create_id = create["event_id"].as_str().unwrap();
        assert_error(
            &s.put(
                &format!("/_matrix/client/v3/rooms/{room}/redact/{create_id}/c"),
                Some(&alice.token),
                json!({}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
    }
}

#[tokio::test]
async fn context_tokens_continue_past_exhausted_sides() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, sent) = send(&s, &alice, &room, &format!("x{i}"), &format!("m{i}")).await;
        ids.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    // The last event: nothing after it; `end` must not repeat events_after.
    let (status, ctx) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=20", ids[2]), Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], ids[2].as_str());
    assert!(ctx["events_after"].as_array().is_none_or(Vec::is_empty), "{ctx}");
    let (status, older) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50&from={}",
                ctx["start"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{older}");
    assert_eq!(older["chunk"], json!([]), "start continues before events_before: {older}");
    send(&s, &alice, &room, "x3", "m3").await;
    let (_, newer) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=50&from={}",
                ctx["end"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(bodies(&newer), ["m3"]);
}

#[tokio::test]
async fn former_members_page_up_to_their_leave() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    send(&s, &alice, &room, "1", "while bob was here").await;
    member_action(&s, &bob, &room, "leave", json!({})).await;
    for i in 0..5 {
        send(&s, &alice, &room, &format!("after{i}"), "after bob left").await;
    }
    let (status, page) = messages(&s, &bob, &room).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(bodies(&page), ["while bob was here"]);
    let (_, forward) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=100"), Some(&bob.token)).await;
    assert_eq!(bodies(&forward), ["while bob was here"]);
}

/// MSC2228, when enabled: a message naming a time in
/// `org.matrix.self_destruct_after` is pruned once that time has come;
/// off (the default), nothing expires.
#[tokio::test]
async fn self_destructing_messages_are_pruned_when_enabled() {
    for enabled in [true, false] {
        let s = TestServer::start_with(|config| config.experimental.ephemeral_messages = enabled).await;
        let alice = s.register("alice").await;
        let room = create_room(&s, &alice, json!({})).await;
        let at = hearth::util::now_ms() + 60_000;
        let (status, sent) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
                Some(&alice.token),
                json!({"msgtype": "m.text", "body": "gone in a minute", "org.matrix.self_destruct_after": at}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/event/{}",
            urlencode(sent["event_id"].as_str().unwrap())
        );
        let content = || async {
            let (status, event) = s.get(&path, Some(&alice.token)).await;
            assert_eq!(status, StatusCode::OK, "{event}");
            event["content"].clone()
        };
        let rooms = &s.server().services.rooms;
        // Not yet due: kept, and the next expiry is this one's (when enabled).
        assert_eq!(rooms.expire_due(at - 1).unwrap(), enabled.then_some(at));
        assert_eq!(content().await["body"], "gone in a minute");
        rooms.expire_due(at).unwrap();
        if enabled {
            assert_eq!(content().await, json!({}));
        } else {
            assert_eq!(content().await["body"], "gone in a minute");
        }
    }
}
