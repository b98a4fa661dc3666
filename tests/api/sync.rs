//! /sync: initial, incremental, gappy and long-polling syncs; invites,
//! joins and leaves; account data; filters and lazy loading.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn sync_since(s: &TestServer, who: &Session, since: &Value) -> Value {
    sync(s, who, &format!("since={}&timeout=0", since.as_str().unwrap())).await
}

fn timeline_bodies(room: &Value) -> Vec<String> {
    room["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn state_types(room: &Value) -> Vec<String> {
    room["state"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| format!("{} {}", e["type"].as_str().unwrap(), e["state_key"].as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn initial_then_incremental_sync() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"name": "Hearth"})).await;
    for i in 0..5 {
        send(&s, &alice, &room, &format!("m{i}"), &format!("hello {i}")).await;
    }

    let initial = sync(&s, &alice, "").await;
    let joined = &initial["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(joined), (0..5).map(|i| format!("hello {i}")).collect::<Vec<_>>());
    let events = joined["timeline"]["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e.get("room_id").is_none()), "sync events carry no room_id");
    assert_eq!(events.len(), 10, "default timeline limit");
    assert_eq!(joined["timeline"]["limited"], true);
    // The state at the start of the timeline includes the create event.
    assert!(state_types(joined).contains(&"m.room.create ".to_owned()), "{joined}");
    assert_eq!(joined["summary"]["m.joined_member_count"], 1);
    // Our own send carries the transaction ID.
    assert_eq!(events.last().unwrap()["unsigned"]["transaction_id"], "m4");

    // Nothing new: an incremental sync leaves the room out.
    let next = &initial["next_batch"];
    let empty = sync_since(&s, &alice, next).await;
    assert!(empty["rooms"]["join"].get(&room).is_none(), "{empty}");

    send(&s, &alice, &room, "m5", "hello 5").await;
    let incremental = sync_since(&s, &alice, next).await;
    let joined = &incremental["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(joined), ["hello 5"]);
    assert_ne!(joined["timeline"]["limited"], true);
    assert!(state_types(joined).is_empty(), "no state delta without a gap: {joined}");
    assert_ne!(incremental["next_batch"], *next);

    // A bad token is refused.
    assert_error(
        &s.get("/_matrix/client/v3/sync?since=garbage", Some(&alice.token)).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
}

#[tokio::test]
async fn a_long_poll_wakes_on_a_message_from_someone_else() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = sync(&s, &alice, "").await["next_batch"].clone();

    let started = Instant::now();
    let query = format!("since={}&timeout=30000", since.as_str().unwrap());
    // The message is sent once the poll is waiting, so the test exercises
    // the wake-up (not a poll that finds the message already there).
    let stream = s.server().services.stream.clone();
    let idle = stream.waiters();
    let (poll, _) = tokio::join!(sync(&s, &alice, &query), async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while stream.waiters() <= idle {
            assert!(Instant::now() < deadline, "the poll never started waiting");
            tokio::task::yield_now().await;
        }
        send(&s, &bob, &room, "b1", "wake up").await
    });
    assert!(started.elapsed() < Duration::from_secs(20), "the poll returned on the message, not the timeout");
    assert_eq!(timeline_bodies(&poll["rooms"]["join"][&room]), ["wake up"]);

    // With nothing relevant, the poll returns empty when the timeout passes.
    let since = poll["next_batch"].clone();
    let other = create_room(&s, &bob, json!({})).await;
    send(&s, &bob, &other, "b2", "not for alice").await;
    let idle = sync(&s, &alice, &format!("since={}&timeout=200", since.as_str().unwrap())).await;
    assert!(idle["rooms"]["join"].as_object().is_none_or(|j| j.is_empty()), "{idle}");
}

#[tokio::test]
async fn gappy_sync_is_limited_with_the_state_delta() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = sync(&s, &bob, "").await["next_batch"].clone();

    // While bob is away: a topic change, then 15 messages.
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
        Some(&alice.token),
        json!({"topic": "gap"}),
    )
    .await;
    for i in 0..15 {
        send(&s, &alice, &room, &format!("g{i}"), &format!("gap {i}")).await;
    }
    let gappy = sync(
        &s,
        &bob,
        &format!(
            "since={}&filter={}",
            since.as_str().unwrap(),
            urlencode(r#"{"room":{"timeline":{"limit":5}}}"#)
        ),
    )
    .await;
    let joined = &gappy["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(joined), (10..15).map(|i| format!("gap {i}")).collect::<Vec<_>>());
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(state_types(joined), ["m.room.topic "], "the state delta covers the gap");

    // prev_batch pages back through the gap with /messages.
    let prev = joined["timeline"]["prev_batch"].as_str().unwrap();
    let (status, page) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=3&from={prev}"), Some(&bob.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let bodies: Vec<_> =
        page["chunk"].as_array().unwrap().iter().map(|e| e["content"]["body"].clone()).collect();
    assert_eq!(bodies, [json!("gap 9"), json!("gap 8"), json!("gap 7")]);
    // A sync token works as a /messages token too.
    let (status, _) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&from={}",
                gappy["next_batch"].as_str().unwrap()
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn invites_joins_and_leaves_move_between_sections() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"name": "Invite only"})).await;
    let since = sync(&s, &carol, "").await["next_batch"].clone();

    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(&alice.token),
        json!({"user_id": carol.user_id}),
    )
    .await;
    let invited = sync_since(&s, &carol, &since).await;
    let state = invited["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap().clone();
    let kinds: Vec<_> = state.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"m.room.create") && kinds.contains(&"m.room.name"), "{state:?}");
    let own = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == carol.user_id.as_str())
        .unwrap();
    // The inviter's member event comes too, for the inviter's name.
    assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str()));
    assert_eq!(own["content"]["membership"], "invite");
    assert_eq!(own["sender"], alice.user_id.as_str());
    assert_eq!(own.as_object().unwrap().len(), 4, "stripped: type, state_key, content, sender");
    assert!(invited["rooms"]["join"].get(&room).is_none());

    // Joining: the room arrives with its full state.
    let since = invited["next_batch"].clone();
    join(&s, &carol, &room).await;
    let joined = sync_since(&s, &carol, &since).await;
    let section = &joined["rooms"]["join"][&room];
    let mut all: Vec<String> = state_types(section);
    for e in section["timeline"]["events"].as_array().unwrap() {
        if let Some(key) = e["state_key"].as_str() {
            all.push(format!("{} {key}", e["type"].as_str().unwrap()));
        }
    }
    assert!(all.contains(&"m.room.create ".to_owned()), "full state for a newly joined room: {section}");
    assert!(all.contains(&format!("m.room.member {}", carol.user_id)));
    assert_eq!(section["summary"]["m.joined_member_count"], 2);

    // Leaving: the room moves to `leave` with the leave event.
    let since = joined["next_batch"].clone();
    s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&carol.token), json!({})).await;
    send(&s, &alice, &room, "after", "after carol left").await;
    let left = sync_since(&s, &carol, &since).await;
    let section = &left["rooms"]["leave"][&room];
    let events = section["timeline"]["events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["content"]["membership"], "leave", "{section}");
    assert!(timeline_bodies(section).is_empty(), "nothing after the leave");
    assert!(left["rooms"]["join"].get(&room).is_none());
    // An initial sync leaves the left room out unless asked.
    let initial = sync(&s, &carol, "").await;
    assert!(initial["rooms"]["leave"].get(&room).is_none());
    let with_leave =
        sync(&s, &carol, &format!("filter={}", urlencode(r#"{"room":{"include_leave":true}}"#))).await;
    assert!(with_leave["rooms"]["leave"].get(&room).is_some());
}

#[tokio::test]
async fn account_data_reaches_sync_once() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let since = sync(&s, &alice, "").await["next_batch"].clone();
    let user = &alice.user_id;
    s.put(
        &format!("/_matrix/client/v3/user/{user}/account_data/org.example.one"),
        Some(&alice.token),
        json!({"n": 1}),
    )
    .await;
    s.put(
        &format!("/_matrix/client/v3/user/{user}/account_data/org.example.one"),
        Some(&alice.token),
        json!({"n": 2}),
    )
    .await;
    s.put(
        &format!("/_matrix/client/v3/user/{user}/rooms/{room}/account_data/m.tag"),
        Some(&alice.token),
        json!({"tags": {"u.work": {}}}),
    )
    .await;
    let changed = sync_since(&s, &alice, &since).await;
    let global = changed["account_data"]["events"].as_array().unwrap();
    assert_eq!(global, &[json!({"type": "org.example.one", "content": {"n": 2}})], "latest value, once");
    let room_data = changed["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert_eq!(room_data[0]["type"], "m.tag");
    // Seen: the next sync has none.
    let again = sync_since(&s, &alice, &changed["next_batch"]).await;
    assert!(again["account_data"]["events"].as_array().is_none_or(|e| e.is_empty()), "{again}");
    // The initial sync has all of it.
    let initial = sync(&s, &alice, "").await;
    assert!(
        initial["account_data"]["events"].as_array().unwrap().iter().any(|e| e["type"] == "org.example.one")
    );
}

#[tokio::test]
async fn filters_and_lazy_loaded_members() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Named, so no heroes"})).await;
    let mut others = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let user = s.register(name).await;
        join(&s, &user, &room).await;
        others.push(user);
    }
    for i in 0..5 {
        send(&s, &alice, &room, &format!("a{i}"), &format!("a {i}")).await;
    }
    send(&s, &others[0], &room, "b", "from bob").await;

    // Stored filter: lazy-load members, timeline of messages only.
    let filter = json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 3, "types": ["m.room.message"]}}});
    let (status, created) = s
        .post(&format!("/_matrix/client/v3/user/{}/filter", alice.user_id), Some(&alice.token), filter)
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = created["filter_id"].as_str().unwrap();
    let lazy = sync(&s, &alice, &format!("filter={id}")).await;
    let joined = &lazy["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(joined), ["a 3", "a 4", "from bob"]);
    let members: Vec<_> =
        state_types(joined).into_iter().filter(|t| t.starts_with("m.room.member")).collect();
    let mut expected =
        vec![format!("m.room.member {}", alice.user_id), format!("m.room.member {}", others[0].user_id)];
    expected.sort();
    let mut members = members;
    members.sort();
    assert_eq!(members, expected, "only the senders' and our own membership");

    // Without lazy loading every member is there.
    let full = sync(&s, &alice, "").await;
    let count =
        state_types(&full["rooms"]["join"][&room]).iter().filter(|t| t.starts_with("m.room.member")).count()
            + full["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "m.room.member")
                .count();
    assert!(count >= 4, "{count} member events");

    // Room filters.
    let none = sync(
        &s,
        &alice,
        &format!("filter={}", urlencode(&json!({"room": {"not_rooms": [room]}}).to_string())),
    )
    .await;
    assert!(none["rooms"]["join"].get(&room).is_none());
    assert_error(
        &s.get("/_matrix/client/v3/sync?filter=12345", Some(&alice.token)).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn summary_heroes_for_unnamed_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    s.post(
        &format!("/_matrix/client/v3/rooms/{room}/invite"),
        Some(&alice.token),
        json!({"user_id": carol.user_id}),
    )
    .await;
    let summary = sync(&s, &alice, "").await["rooms"]["join"][&room]["summary"].clone();
    assert_eq!(summary["m.joined_member_count"], 2);
    assert_eq!(summary["m.invited_member_count"], 1);
    assert_eq!(summary["m.heroes"], json!([bob.user_id, carol.user_id]), "joined or invited, us excluded");
}

fn ephemeral<'a>(response: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    response["rooms"]["join"][room]["ephemeral"]["events"].as_array()?.iter().find(|e| e["type"] == kind)
}

#[tokio::test]
async fn receipts_and_read_markers_reach_sync() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let (_, sent) = send(&s, &bob, &room, "b1", "read me").await;
    let event = sent["event_id"].as_str().unwrap();
    let bob_since = sync(&s, &bob, "").await["next_batch"].clone();
    let alice_since = sync(&s, &alice, "").await["next_batch"].clone();

    let receipt = |kind: &str, body: Value| {
        let path = format!("/_matrix/client/v3/rooms/{room}/receipt/{kind}/{event}");
        let token = alice.token.clone();
        let s = &s;
        async move { s.post(&path, Some(&token), body).await }
    };
    assert_eq!(receipt("m.read", json!({})).await.0, StatusCode::OK);
    assert_eq!(receipt("m.read.private", json!({"thread_id": "main"})).await.0, StatusCode::OK);

    let bobs = sync_since(&s, &bob, &bob_since).await;
    let content = &ephemeral(&bobs, &room, "m.receipt").expect("receipt in bob's sync")["content"];
    assert!(content[event]["m.read"][&alice.user_id]["ts"].is_u64(), "{content}");
    assert!(content[event].get("m.read.private").is_none(), "private receipts stay private: {content}");
    let alices = sync_since(&s, &alice, &alice_since).await;
    let content = &ephemeral(&alices, &room, "m.receipt").unwrap()["content"];
    assert_eq!(content[event]["m.read.private"][&alice.user_id]["thread_id"], "main");

    // Read markers: m.fully_read is room account data the client cannot set directly.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
            Some(&alice.token),
            json!({"m.fully_read": event}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let next = sync_since(&s, &alice, &alices["next_batch"]).await;
    let data = next["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert_eq!(data[0], json!({"type": "m.fully_read", "content": {"event_id": event}}));
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read", alice.user_id),
            Some(&alice.token),
            json!({"event_id": event}),
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_BAD_JSON",
    );
    // Bad receipts change nothing.
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/$nope"),
            Some(&alice.token),
            json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let eve = s.register("eve").await;
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
            Some(&eve.token),
            json!({}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn typing_starts_stops_and_expires() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = sync(&s, &bob, "").await["next_batch"].clone();
    let typing = |body: Value| {
        let path = format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.user_id);
        let (s, token) = (&s, alice.token.clone());
        async move { s.put(&path, Some(&token), body).await }
    };

    assert_eq!(typing(json!({"typing": true, "timeout": 30000})).await.0, StatusCode::OK);
    let started = sync_since(&s, &bob, &since).await;
    assert_eq!(
        ephemeral(&started, &room, "m.typing").unwrap()["content"]["user_ids"],
        json!([alice.user_id])
    );
    assert_eq!(typing(json!({"typing": false})).await.0, StatusCode::OK);
    let stopped = sync_since(&s, &bob, &started["next_batch"]).await;
    assert_eq!(ephemeral(&stopped, &room, "m.typing").unwrap()["content"]["user_ids"], json!([]));
    // A fresh sync shows that nobody types now (as Synapse): a client that
    // last saw someone typing learns they stopped.
    let fresh = sync(&s, &bob, "").await;
    assert_eq!(ephemeral(&fresh, &room, "m.typing").unwrap()["content"]["user_ids"], json!([]));

    // A short timeout expires on its own: bob's long poll sees the list empty.
    typing(json!({"typing": true, "timeout": 200})).await;
    let mut since = stopped["next_batch"].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    // (Every change after `since` is this typing notice or its expiry.)
    loop {
        assert!(Instant::now() < deadline, "typing never expired");
        let poll = sync(&s, &bob, &format!("since={}&timeout=5000", since.as_str().unwrap())).await;
        since = poll["next_batch"].clone();
        if ephemeral(&poll, &room, "m.typing").is_some_and(|e| e["content"]["user_ids"] == json!([])) {
            break;
        }
    }

    // Only for oneself, only in one's rooms.
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", bob.user_id),
            Some(&alice.token),
            json!({"typing": false}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_FORBIDDEN",
    );
    let eve = s.register("eve").await;
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", eve.user_id),
            Some(&eve.token),
            json!({"typing": true, "timeout": 1000}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn presence_reaches_users_who_share_a_room() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let eve = s.register("eve").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let since = sync(&s, &bob, "set_presence=offline").await["next_batch"].clone();

    let path = format!("/_matrix/client/v3/presence/{}/status", alice.user_id);
    let (status, _) =
        s.put(&path, Some(&alice.token), json!({"presence": "online", "status_msg": "brewing"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, seen) = s.get(&path, Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["presence"], "online");
    assert_eq!(seen["status_msg"], "brewing");
    assert_eq!(seen["currently_active"], true);
    assert!(seen["last_active_ago"].as_u64().unwrap() < 60_000);
    assert_error(&s.get(&path, Some(&eve.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.put(&path, Some(&bob.token), json!({"presence": "offline"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    let update = sync(&s, &bob, &format!("since={}&set_presence=offline", since.as_str().unwrap())).await;
    let events = update["presence"]["events"].as_array().expect("presence in sync");
    let alices = events.iter().find(|e| e["sender"] == alice.user_id.as_str()).expect("alice's presence");
    assert_eq!(alices["content"]["presence"], "online");
    assert_eq!(alices["content"]["status_msg"], "brewing");
    assert_eq!(alices["content"]["displayname"], "alice");
    // Eve shares no room with alice: nothing about alice reaches her.
    let eves = sync(&s, &eve, "set_presence=offline").await;
    let eve_events = eves["presence"]["events"].as_array().cloned().unwrap_or_default();
    assert!(eve_events.iter().all(|e| e["sender"] != alice.user_id.as_str()), "{eves}");
}

#[tokio::test]
async fn presence_can_be_turned_off() {
    let s = TestServer::start_with(|c| c.presence.enabled = false).await;
    let alice = s.register("alice").await;
    let path = format!("/_matrix/client/v3/presence/{}/status", alice.user_id);
    assert_eq!(s.put(&path, Some(&alice.token), json!({"presence": "online"})).await.0, StatusCode::OK);
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["presence"], "offline");
    let synced = sync(&s, &alice, "").await;
    assert!(synced["presence"]["events"].as_array().is_none_or(|e| e.is_empty()), "{synced}");
}

#[tokio::test]
async fn tags_are_room_account_data() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({})).await;
    let since = sync(&s, &alice, "").await["next_batch"].clone();
    let base = format!("/_matrix/client/v3/user/{}/rooms/{room}/tags", alice.user_id);
    assert_eq!(
        s.put(&format!("{base}/m.favourite"), Some(&alice.token), json!({"order": 0.5})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.put(&format!("{base}/u.work"), Some(&alice.token), json!({})).await.0, StatusCode::OK);
    let (_, tags) = s.get(&base, Some(&alice.token)).await;
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    assert!(tags["tags"].get("u.work").is_some());
    let synced = sync_since(&s, &alice, &since).await;
    let data = synced["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    let tag_event = data.iter().find(|e| e["type"] == "m.tag").expect("m.tag in sync");
    assert!(tag_event["content"]["tags"].get("m.favourite").is_some());
    assert_eq!(
        s.request(reqwest::Method::DELETE, &format!("{base}/u.work"), Some(&alice.token), None).await.0,
        StatusCode::OK
    );
    let (_, tags) = s.get(&base, Some(&alice.token)).await;
    assert!(tags["tags"].get("u.work").is_none());
    assert_error(&s.get(&base, Some(&bob.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.put(&format!("{base}/{}", "x".repeat(256)), Some(&alice.token), json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn ignored_users_disappear() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    for who in [&bob, &carol] {
        join(&s, who, &room).await;
    }
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", bob.user_id),
            Some(&bob.token),
            json!({"ignored_users": {carol.user_id.clone(): {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let since = sync(&s, &bob, "").await["next_batch"].clone();
    send(&s, &carol, &room, "c1", "from carol").await;
    send(&s, &alice, &room, "a1", "from alice").await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}", carol.user_id),
            Some(&carol.token),
            json!({"membership": "join", "displayname": "Carol"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let synced = sync_since(&s, &bob, &since).await;
    let joined = &synced["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(joined), ["from alice"]);
    let events = joined["timeline"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member" && e["content"]["displayname"] == "Carol"),
        "their state events still arrive"
    );
    let (_, page) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&bob.token)).await;
    assert!(page["chunk"].as_array().unwrap().iter().all(|e| e["content"]["body"] != "from carol"));

    // Invites from carol are not shown to bob.
    let private = create_room(&s, &carol, json!({})).await;
    let since = synced["next_batch"].clone();
    s.post(
        &format!("/_matrix/client/v3/rooms/{private}/invite"),
        Some(&carol.token),
        json!({"user_id": bob.user_id}),
    )
    .await;
    let synced = sync_since(&s, &bob, &since).await;
    assert!(synced["rooms"]["invite"].get(&private).is_none(), "{synced}");
}

#[tokio::test]
async fn the_user_directory_finds_visible_users() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let dave = s.register("dave").await;
    let _eve = s.register("eve").await;
    let private = create_room(&s, &alice, json!({})).await;
    s.post(
        &format!("/_matrix/client/v3/rooms/{private}/invite"),
        Some(&alice.token),
        json!({"user_id": bob.user_id}),
    )
    .await;
    join(&s, &bob, &private).await;
    s.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
        Some(&bob.token),
        json!({"displayname": "Bobby Tables"}),
    )
    .await;
    create_room(&s, &dave, json!({"preset": "public_chat"})).await;

    let search = |term: &str| {
        let (s, token, term) = (&s, alice.token.clone(), term.to_owned());
        async move {
            let (status, body) = s
                .post("/_matrix/client/v3/user_directory/search", Some(&token), json!({"search_term": term}))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["user_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search("TABLES").await, std::slice::from_ref(&bob.user_id), "display names, any case");
    assert_eq!(search("dave").await, std::slice::from_ref(&dave.user_id), "users in public rooms");
    assert!(search("eve").await.is_empty(), "nobody shares a room with eve");
    assert!(search("alice").await.is_empty(), "the searcher, in no public room, is not found");
    create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(search("alice").await, std::slice::from_ref(&alice.user_id), "... until in one");
}

#[tokio::test]
async fn receipts_never_move_backwards_and_sync_presence_follows_the_client() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let (_, first) = send(&s, &alice, &room, "m1", "one").await;
    let (_, second) = send(&s, &alice, &room, "m2", "two").await;
    let receipt = |event: &Value| {
        let path =
            format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", event["event_id"].as_str().unwrap());
        let (s, token) = (&s, alice.token.clone());
        async move { s.post(&path, Some(&token), json!({})).await.0 }
    };
    assert_eq!(receipt(&second).await, StatusCode::OK);
    assert_eq!(receipt(&first).await, StatusCode::OK);
    let synced = sync(&s, &alice, "").await;
    let content = &ephemeral(&synced, &room, "m.receipt").unwrap()["content"];
    assert!(
        content.get(second["event_id"].as_str().unwrap()).is_some(),
        "still on the later event: {content}"
    );

    // An idle client syncs as unavailable, then online again.
    let path = format!("/_matrix/client/v3/presence/{}/status", alice.user_id);
    sync(&s, &alice, "set_presence=unavailable").await;
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["presence"], "unavailable");
    sync(&s, &alice, "set_presence=online").await;
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["presence"], "online");
}

#[tokio::test]
async fn lazy_loading_includes_the_heroes() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    for i in 0..12 {
        send(&s, &alice, &room, &format!("a{i}"), "only alice speaks").await;
    }
    let filter = urlencode(r#"{"room":{"state":{"lazy_load_members":true}}}"#);
    let synced = sync(&s, &alice, &format!("filter={filter}")).await;
    let joined = &synced["rooms"]["join"][&room];
    assert_eq!(joined["summary"]["m.heroes"], json!([bob.user_id]));
    assert!(state_types(joined).contains(&format!("m.room.member {}", bob.user_id)), "{joined}");
}

#[tokio::test]
async fn lazy_loading_sends_each_member_once_per_device() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    send(&s, &alice, &room, "a0", "hello").await;
    let members_in = |body: &Value| -> Vec<String> {
        state_types(&body["rooms"]["join"][&room])
            .into_iter()
            .filter(|t| t.starts_with("m.room.member"))
            .collect()
    };
    let lazy = urlencode(
        r#"{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1,"types":["m.room.message"]}}}"#,
    );
    let redundant = urlencode(
        r#"{"room":{"state":{"lazy_load_members":true,"include_redundant_members":true},"timeline":{"limit":1,"types":["m.room.message"]}}}"#,
    );
    // Bob comes as a hero of the (unnamed) room: the device has him.
    let initial = sync(&s, &alice, &format!("filter={lazy}")).await;
    let mut got = members_in(&initial);
    got.sort();
    let mut expected =
        vec![format!("m.room.member {}", alice.user_id), format!("m.room.member {}", bob.user_id)];
    expected.sort();
    assert_eq!(got, expected);

    // Bob speaks, twice: his member event is not sent again.
    send(&s, &bob, &room, "b1", "one").await;
    let first =
        sync(&s, &alice, &format!("filter={lazy}&since={}", initial["next_batch"].as_str().unwrap())).await;
    assert_eq!(timeline_bodies(&first["rooms"]["join"][&room]), ["one"]);
    assert_eq!(members_in(&first), Vec::<String>::new(), "{first}");
    send(&s, &bob, &room, "b2", "two").await;
    let second =
        sync(&s, &alice, &format!("filter={lazy}&since={}", first["next_batch"].as_str().unwrap())).await;
    assert_eq!(timeline_bodies(&second["rooms"]["join"][&room]), ["two"]);
    assert_eq!(members_in(&second), Vec::<String>::new(), "bob's membership again: {second}");
    // Asked for, redundant members come all the same.
    send(&s, &bob, &room, "b3", "three").await;
    let third =
        sync(&s, &alice, &format!("filter={redundant}&since={}", second["next_batch"].as_str().unwrap()))
            .await;
    assert_eq!(members_in(&third), [format!("m.room.member {}", bob.user_id)]);
    // A changed membership is news again.
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            Some(&bob.token),
            json!({"displayname": "Bobby"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    send(&s, &bob, &room, "b4", "four").await;
    let fourth =
        sync(&s, &alice, &format!("filter={lazy}&since={}", third["next_batch"].as_str().unwrap())).await;
    assert_eq!(members_in(&fourth), [format!("m.room.member {}", bob.user_id)]);
}
