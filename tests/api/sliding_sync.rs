//! Simplified sliding sync (MSC4186) over HTTP, as matrix-rust-sdk and
//! Element X speak it: lists, windows and counts; what each room's
//! configuration asks for, first and then as changes; subscriptions;
//! connections and their `pos`; the long poll; the extensions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// Element X's room list `required_state`.
fn room_list_state() -> Value {
    json!([
        ["m.room.name", ""],
        ["m.room.encryption", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
        ["m.room.topic", ""],
        ["m.room.avatar", ""],
        ["m.room.canonical_alias", ""],
        ["m.room.power_levels", ""],
        ["m.room.join_rules", ""],
        ["m.room.create", ""],
        ["m.room.history_visibility", ""],
        ["m.space.parent", "*"],
        ["m.space.child", "*"]
    ])
}

fn list(ranges: Value, timeline_limit: u64) -> Value {
    json!({"ranges": ranges, "timeline_limit": timeline_limit, "required_state": room_list_state(), "filters": {}})
}

/// A sliding sync request; the status and body.
async fn request(
    s: &TestServer,
    who: &Session,
    pos: Option<&str>,
    timeout: u64,
    body: Value,
) -> (StatusCode, Value) {
    let mut path = format!("{PATH}?timeout={timeout}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", urlencode(pos)));
    }
    s.post(&path, Some(&who.token), body).await
}

/// A successful one.
async fn ok(s: &TestServer, who: &Session, pos: Option<&str>, body: Value) -> Value {
    let (status, response) = request(s, who, pos, 0, body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert!(response["pos"].is_string(), "{response}");
    response
}

fn pos(response: &Value) -> String {
    response["pos"].as_str().unwrap().to_owned()
}

fn rooms(response: &Value) -> Vec<String> {
    response["rooms"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn state_pairs(room: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = room["required_state"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs
}

async fn named_room(s: &TestServer, who: &Session, name: &str) -> String {
    create_room(s, who, json!({"name": name, "preset": "public_chat"})).await
}

#[tokio::test]
async fn lists_are_windows_of_the_rooms_by_recent_activity_with_a_count() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (a, b, c) = (
        named_room(&s, &alice, "A").await,
        named_room(&s, &alice, "B").await,
        named_room(&s, &alice, "C").await,
    );
    send(&s, &alice, &b, "1", "in b").await;
    send(&s, &alice, &a, "2", "in a").await;
    // State does not move a room up (c is newer, but only by its creation).
    put_state(&s, &alice, &c, "m.room.topic", json!({"topic": "quiet"})).await;

    let body = json!({"conn_id": "room-list", "lists": {"all_rooms": list(json!([[0, 1]]), 1)}});
    let first = ok(&s, &alice, None, body.clone()).await;
    assert_eq!(first["lists"]["all_rooms"]["count"], 3, "{first}");
    let mut sent = rooms(&first);
    sent.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(sent, expected, "the two most recent: {first}");
    let room_a = &first["rooms"][&a];
    assert_eq!(room_a["initial"], true);
    assert_eq!(room_a["name"], "A");
    assert_eq!(bodies(room_a), ["in a"]);
    assert_eq!(room_a["limited"], true, "{room_a}");
    assert_eq!(room_a["joined_count"], 1);
    assert!(room_a["prev_batch"].is_string());
    assert!(room_a["bump_stamp"].as_u64().unwrap() > first["rooms"][&b]["bump_stamp"].as_u64().unwrap());
    let pairs = state_pairs(room_a);
    for wanted in ["m.room.create", "m.room.name", "m.room.power_levels", "m.room.join_rules"] {
        assert!(pairs.iter().any(|(t, _)| t == wanted), "{wanted} in {pairs:?}");
    }
    assert!(pairs.contains(&("m.room.member".into(), alice.user_id.clone())), "$ME");
    assert_eq!(pairs.iter().filter(|(t, _)| t == "m.room.member").count(), 1);

    // A message in c moves it into the window: new to the connection, it
    // comes whole; b, out of the window, does not come.
    send(&s, &alice, &c, "3", "in c").await;
    let second = ok(&s, &alice, Some(&pos(&first)), body.clone()).await;
    assert_eq!(rooms(&second), std::slice::from_ref(&c), "{second}");
    assert_eq!(second["rooms"][&c]["initial"], true);
    assert!(state_pairs(&second["rooms"][&c]).contains(&("m.room.topic".into(), String::new())));

    // A message in a: only what is new, and no state.
    send(&s, &alice, &a, "4", "again in a").await;
    let third = ok(&s, &alice, Some(&pos(&second)), body.clone()).await;
    assert_eq!(rooms(&third), std::slice::from_ref(&a));
    let room_a = &third["rooms"][&a];
    assert_eq!(bodies(room_a), ["again in a"]);
    assert!(room_a.get("initial").is_none(), "{room_a}");
    // Of the state, only the sender's membership ($LAZY: sent with each
    // timeline, not remembered per connection).
    assert_eq!(state_pairs(room_a), [("m.room.member".to_owned(), alice.user_id.clone())]);
    assert_eq!(room_a["num_live"], 1);
    // A state change it asks for: in required_state, and the new name.
    put_state(&s, &alice, &a, "m.room.name", json!({"name": "A2"})).await;
    let fourth = ok(&s, &alice, Some(&pos(&third)), body.clone()).await;
    let room_a = &fourth["rooms"][&a];
    assert!(state_pairs(room_a).contains(&("m.room.name".to_owned(), String::new())), "{room_a}");
    assert!(!state_pairs(room_a).iter().any(|(t, _)| t == "m.room.topic" || t == "m.room.create"));
    assert_eq!(room_a["name"], "A2");
    // Nothing new: no rooms, the count still.
    let fifth = ok(&s, &alice, Some(&pos(&fourth)), body.clone()).await;
    assert_eq!(rooms(&fifth), Vec::<String>::new(), "{fifth}");
    assert_eq!(fifth["lists"]["all_rooms"]["count"], 3);

    // b comes back into the window: it had news while out of it (none
    // here), so it is not sent again; once it has, it is, from where the
    // connection had it.
    send(&s, &alice, &b, "5", "b while away").await;
    let wide = json!({"conn_id": "room-list", "lists": {"all_rooms": list(json!([[0, 9]]), 1)}});
    let sixth = ok(&s, &alice, Some(&pos(&fifth)), wide.clone()).await;
    assert_eq!(rooms(&sixth), std::slice::from_ref(&b), "{sixth}");
    assert_eq!(bodies(&sixth["rooms"][&b]), ["b while away"]);
    assert!(sixth["rooms"][&b].get("initial").is_none());

    // A new display name is a member event in each room, not a new
    // membership: the change, not the rooms whole again.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&alice.token),
            json!({"displayname": "Alice A."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let seventh = ok(&s, &alice, Some(&pos(&sixth)), wide).await;
    assert_eq!(rooms(&seventh).len(), 3, "{seventh}");
    for room in [&a, &b, &c] {
        let sent = &seventh["rooms"][room];
        assert!(sent.get("initial").is_none(), "{sent}");
        assert_eq!(state_pairs(sent), [("m.room.member".to_owned(), alice.user_id.clone())]);
    }
}

#[tokio::test]
async fn filters_invites_and_leaves() {
    let s = TestServer::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let mine = named_room(&s, &alice, "mine").await;
    let space = create_room(&s, &alice, json!({"creation_content": {"type": "m.space"}})).await;
    let theirs = named_room(&s, &bob, "theirs").await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{theirs}/invite"),
            Some(&bob.token),
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let lists = json!({
        "invites": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"is_invite": true}},
        "spaces": {"ranges": [[0, 9]], "timeline_limit": 0, "filters": {"room_types": ["m.space"]}},
        "rooms": {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": [["m.room.member", "$ME"]],
                  "filters": {"is_invite": false, "not_room_types": ["m.space"]}},
    });
    let first = ok(&s, &alice, None, json!({"lists": lists})).await;
    assert_eq!(first["lists"]["invites"]["count"], 1, "{first}");
    assert_eq!(first["lists"]["spaces"]["count"], 1);
    assert_eq!(first["lists"]["rooms"]["count"], 1);
    let invite = &first["rooms"][&theirs];
    let stripped = invite["invite_state"].as_array().expect("invite_state");
    assert!(stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "theirs"));
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == alice.user_id.as_str()
        && e["content"]["membership"] == "invite"));
    assert!(invite.get("timeline").is_none());
    assert!(first["rooms"][&space].is_object() && first["rooms"][&mine].is_object());

    // Joined: the room comes whole, now in the other list.
    join(&s, &alice, &theirs).await;
    let second = ok(&s, &alice, Some(&pos(&first)), json!({"lists": lists})).await;
    assert_eq!(
        (second["lists"]["invites"]["count"].as_u64(), second["lists"]["rooms"]["count"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(second["rooms"][&theirs]["initial"], true, "{second}");
    assert!(second["rooms"][&theirs].get("invite_state").is_none());

    // Left: once, with the leave; then gone from the list.
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{mine}/leave"), Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let third = ok(&s, &alice, Some(&pos(&second)), json!({"lists": lists})).await;
    let left = &third["rooms"][&mine];
    let own =
        left["required_state"].as_array().unwrap().iter().find(|e| e["state_key"] == alice.user_id.as_str());
    assert_eq!(own.map(|e| &e["content"]["membership"]), Some(&json!("leave")), "{third}");
    let fourth = ok(&s, &alice, Some(&pos(&third)), json!({"lists": lists})).await;
    assert_eq!(fourth["lists"]["rooms"]["count"], 1, "{fourth}");
    assert!(fourth["rooms"].get(&mine).is_none());
}

#[tokio::test]
async fn subscriptions_lazy_members_and_a_growing_timeline() {
    let s = TestServer::start().await;
    let (alice, bob, carol) = (s.register("alice").await, s.register("bob").await, s.register("carol").await);
    let room = named_room(&s, &alice, "busy").await;
    join(&s, &bob, &room).await;
    join(&s, &carol, &room).await;
    for i in 0..12 {
        let who = if i % 2 == 0 { &bob } else { &carol };
        send(&s, who, &room, &format!("m{i}"), &format!("message {i}")).await;
    }
    let subscription = |limit: u64| {
        json!({"room_subscriptions": {room.clone(): {"timeline_limit": limit,
            "required_state": [["m.room.member", "$LAZY"], ["m.room.member", "$ME"], ["m.room.name", ""]]}}})
    };
    let first = ok(&s, &alice, None, subscription(1)).await;
    let sent = &first["rooms"][&room];
    assert_eq!(bodies(sent), ["message 11"]);
    // Lazy members: the timeline's sender and the user, not bob.
    let members: Vec<String> =
        state_pairs(sent).into_iter().filter(|(t, _)| t == "m.room.member").map(|(_, k)| k).collect();
    let mut expected = vec![alice.user_id.clone(), carol.user_id.clone()];
    expected.sort();
    assert_eq!(members, expected);
    assert_eq!(sent["joined_count"], 3);

    // A larger timeline: the latest events again, at once.
    let second = ok(&s, &alice, Some(&pos(&first)), subscription(5)).await;
    let sent = &second["rooms"][&room];
    assert_eq!(bodies(sent), ["message 7", "message 8", "message 9", "message 10", "message 11"], "{second}");
    assert!(state_pairs(sent).iter().any(|(_, k)| k == &bob.user_id), "bob's membership now");
    // A room the user is not in: ignored.
    let elsewhere = create_room(&s, &bob, json!({"preset": "private_chat"})).await;
    let third = ok(
        &s,
        &alice,
        Some(&pos(&second)),
        json!({"room_subscriptions": {elsewhere.clone(): {"timeline_limit": 5}}}),
    )
    .await;
    assert!(third["rooms"].get(&elsewhere).is_none(), "{third}");
}

#[tokio::test]
async fn a_pos_is_the_connections_own_and_survives_a_restart() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = named_room(&s, &alice, "R").await;
    let body = json!({"conn_id": "room-list", "lists": {"all_rooms": list(json!([[0, 9]]), 1)}});
    let first = ok(&s, &alice, None, body.clone()).await;
    send(&s, &alice, &room, "1", "hello").await;
    // The same pos again (a retried request): the same answer.
    let again = ok(&s, &alice, Some(&pos(&first)), body.clone()).await;
    let retried = ok(&s, &alice, Some(&pos(&first)), body.clone()).await;
    assert_eq!(bodies(&again["rooms"][&room]), ["hello"]);
    assert_eq!(bodies(&retried["rooms"][&room]), ["hello"]);

    // Unknown, unreadable, another connection's, another device's.
    let (status, other_device) = s.login(&alice.user_id, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let other_device = session(&other_device);
    let current = pos(&retried);
    let cases = [
        (&alice, "nonsense".to_owned(), body.clone()),
        (&alice, "999_1".to_owned(), body.clone()),
        (&alice, current.clone(), json!({"conn_id": "other", "lists": body["lists"]})),
        (&other_device, current.clone(), body.clone()),
    ];
    for (who, token, request_body) in cases {
        let response = request(&s, who, Some(&token), 0, request_body).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    }
    // Once the client comes back with the newer pos, the first is gone.
    ok(&s, &alice, Some(&current), body.clone()).await;
    let response = request(&s, &alice, Some(&pos(&first)), 0, body.clone()).await;
    assert_error(&response, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");

    s.restart().await;
    send(&s, &alice, &room, "2", "after the restart").await;
    let after = ok(&s, &alice, Some(&current), body.clone()).await;
    assert_eq!(bodies(&after["rooms"][&room]), ["after the restart"], "{after}");
}

#[tokio::test]
async fn the_long_poll_waits_for_news_and_times_out_with_the_counts() {
    let s = TestServer::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = named_room(&s, &alice, "R").await;
    join(&s, &bob, &room).await;
    let body = json!({"lists": {"all_rooms": list(json!([[0, 9]]), 1)}});
    let first = ok(&s, &alice, None, body.clone()).await;

    let (status, quiet) = request(&s, &alice, Some(&pos(&first)), 300, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{quiet}");
    assert_eq!(rooms(&quiet), Vec::<String>::new());
    assert_eq!(quiet["lists"]["all_rooms"]["count"], 1);

    let quiet_pos = pos(&quiet);
    let poll = request(&s, &alice, Some(&quiet_pos), 30_000, body.clone());
    let speak = async {
        // The message lands whether the poll is waiting yet or not.
        send(&s, &bob, &room, "1", "wake up").await
    };
    let ((status, woken), _) = tokio::join!(poll, speak);
    assert_eq!(status, StatusCode::OK, "{woken}");
    assert_eq!(bodies(&woken["rooms"][&room]), ["wake up"]);
}

#[tokio::test]
async fn extensions_deliver_device_messages_keys_account_data_receipts_and_typing() {
    let s = TestServer::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = named_room(&s, &alice, "R").await;
    join(&s, &bob, &room).await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/user/{}/rooms/{room}/tags/u.work", alice.user_id),
            Some(&alice.token),
            json!({"order": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The encryption connection: no lists, device messages and keys.
    let message = json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"secret": 1}}}});
    let (status, _) = s.put("/_matrix/client/v3/sendToDevice/m.test/t1", Some(&bob.token), message).await;
    assert_eq!(status, StatusCode::OK);
    let encryption = |since: Option<&str>| {
        let mut to_device = json!({"enabled": true});
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({"conn_id": "encryption", "extensions": {"to_device": to_device, "e2ee": {"enabled": true}}})
    };
    let first = ok(&s, &alice, None, encryption(None)).await;
    let to_device = &first["extensions"]["to_device"];
    assert_eq!(to_device["events"][0]["content"]["secret"], 1, "{first}");
    assert_eq!(to_device["events"][0]["sender"], bob.user_id.as_str());
    assert!(first["extensions"]["e2ee"]["device_one_time_keys_count"]["signed_curve25519"].is_u64());
    assert!(first["extensions"]["e2ee"]["device_unused_fallback_key_types"].is_array());
    assert!(first.get("rooms").is_none());
    let next_batch = to_device["next_batch"].as_str().unwrap().to_owned();
    let second = ok(&s, &alice, Some(&pos(&first)), encryption(Some(&next_batch))).await;
    assert!(
        second["extensions"]["to_device"]["events"].as_array().is_none_or(|e| e.is_empty()),
        "acknowledged"
    );
    assert!(second["extensions"]["to_device"]["next_batch"].is_string());
    // A pos without stored state never expires.
    assert!(pos(&second).starts_with("0_"));
    // Bob (who shares a room) uploads his device keys: his device list
    // changed, since the last pos.
    let d = &bob.device_id;
    let keys = json!({"device_keys": {
        "user_id": bob.user_id, "device_id": d, "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{d}"): "curve", format!("ed25519:{d}"): "ed"},
        "signatures": {bob.user_id.as_str(): {format!("ed25519:{d}"): "c2ln"}},
    }});
    let (status, body) = s.post("/_matrix/client/v3/keys/upload", Some(&bob.token), keys).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let third = ok(&s, &alice, Some(&pos(&second)), encryption(Some(&next_batch))).await;
    assert_eq!(third["extensions"]["e2ee"]["device_lists"]["changed"], json!([bob.user_id]), "{third}");

    // The room list connection: account data, receipts, typing.
    let body = json!({
        "conn_id": "room-list",
        "lists": {"all_rooms": list(json!([[0, 9]]), 1)},
        "extensions": {"account_data": {"enabled": true}, "receipts": {"enabled": true, "rooms": ["*"]},
                       "typing": {"enabled": true}},
    });
    let (_, sent) = send(&s, &bob, &room, "1", "read me").await;
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let (status, _) = s
        .post(&format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = ok(&s, &alice, None, body.clone()).await;
    let extensions = &first["extensions"];
    let global = extensions["account_data"]["global"].as_array().unwrap();
    assert!(global.iter().any(|e| e["type"] == "m.push_rules"), "{extensions}");
    let room_data = extensions["account_data"]["rooms"][&room].as_array().unwrap();
    assert!(room_data.iter().any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"]["order"] == 0.5));
    assert!(extensions["receipts"]["rooms"][&room]["content"][&event]["m.read"][&bob.user_id].is_object());

    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", bob.user_id),
            Some(&bob.token),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = ok(&s, &alice, Some(&pos(&first)), body.clone()).await;
    assert_eq!(second["extensions"]["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob.user_id]));
    assert!(second["extensions"].get("receipts").is_none(), "nothing new: {second}");
}

/// The accepted MSC's own shape, at `/_matrix/client/v4/sync`.
async fn stable(s: &TestServer, who: &Session, body: Value) -> Value {
    let (status, response) = s.post("/_matrix/client/v4/sync", Some(&who.token), body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert!(response["pos"].is_string(), "{response}");
    response
}

#[tokio::test]
async fn the_stable_shape_over_the_same_engine() {
    let s = TestServer::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let space =
        create_room(&s, &alice, json!({"name": "space", "creation_content": {"type": "m.space"}})).await;
    let child = named_room(&s, &alice, "child").await;
    let loose = named_room(&s, &alice, "loose").await;
    let server = alice.user_id.split(':').nth(1).unwrap().to_owned();
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}"),
            Some(&alice.token),
            json!({"via": [server]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/user/{}/rooms/{loose}/tags/m.favourite", alice.user_id),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let invited = named_room(&s, &bob, "invited").await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{invited}/invite"),
            Some(&bob.token),
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let all_but_create =
        json!({"include": [{}], "exclude": [{"type": "m.room.create"}], "lazy_members": true});
    let lists = json!({
        "all": {"timeline_limit": 1, "required_state": all_but_create},
        "in_space": {"timeline_limit": 1, "required_state": {}, "filters": {"spaces": [space]}},
        "favourites": {"timeline_limit": 1, "required_state": {}, "filters": {"tags": ["m.favourite"]}},
        "not_favourites": {"timeline_limit": 1, "required_state": {}, "filters": {"not_tags": ["m.favourite"], "is_invited": false}},
        "invites": {"range": [0, 0], "timeline_limit": 1, "required_state": {}, "filters": {"is_invited": true}},
    });
    let first = stable(&s, &alice, json!({"lists": lists})).await;
    let count = |list: &str| first["lists"][list]["count"].as_u64();
    assert_eq!(count("all"), Some(4), "{first}");
    assert_eq!(
        (count("in_space"), count("favourites"), count("not_favourites"), count("invites")),
        (Some(1), Some(1), Some(2), Some(1))
    );
    let room = &first["rooms"][&child];
    assert_eq!(room["membership"], "join");
    let mut in_lists: Vec<&str> =
        room["lists"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    in_lists.sort();
    assert_eq!(in_lists, ["all", "in_space", "not_favourites"]);
    let pairs = state_pairs(room);
    assert!(
        pairs.iter().any(|(t, _)| t == "m.room.power_levels")
            && !pairs.iter().any(|(t, _)| t == "m.room.create"),
        "{pairs:?}"
    );
    assert!(room.get("notification_count").is_none());
    let invite = &first["rooms"][&invited];
    assert_eq!(invite["membership"], "invite");
    assert!(
        invite["stripped_state"].as_array().is_some_and(|s| !s.is_empty())
            && invite.get("invite_state").is_none()
    );

    // The pos and timeout in the body; a removed name is null; a larger
    // timeline is an expanded one.
    for i in 0..3 {
        send(&s, &alice, &loose, &format!("m{i}"), &format!("message {i}")).await;
    }
    put_state(&s, &alice, &loose, "m.room.name", json!({})).await;
    let subscription = |limit: u64| json!({loose.clone(): {"timeline_limit": limit, "required_state": {"include": [{"type": "m.room.name", "state_key": ""}]}}});
    let second = stable(
        &s,
        &alice,
        json!({"pos": first["pos"], "timeout": 0, "lists": lists, "room_subscriptions": subscription(1)}),
    )
    .await;
    assert_eq!(second["rooms"][&loose]["name"], Value::Null, "{second}");
    let third = stable(
        &s,
        &alice,
        json!({"pos": second["pos"], "timeout": 0, "lists": lists, "room_subscriptions": subscription(3)}),
    )
    .await;
    let room = &third["rooms"][&loose];
    assert_eq!(room["expanded_timeline"], true, "{third}");
    assert_eq!(
        bodies(room),
        ["message 1", "message 2"],
        "the latest three: two messages and the name change"
    );

    let bad = s.post("/_matrix/client/v4/sync", Some(&alice.token), json!({"set_presence": "busy"})).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let unknown = s.post("/_matrix/client/v4/sync", Some(&alice.token), json!({"pos": "5_1"})).await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
}
