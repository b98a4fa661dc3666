//! Rooms shared across servers: joins by alias and by ID, messages both ways.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{TestFederation, invite, join_via, now_token, read, wait_sync};
use crate::common::{Session, TestServer, create_room, send, urlencode};

/// Syncs `who` until an event in `room`'s timeline matches `wanted`, or
/// fails after 30 s.
pub async fn wait_for_event(
    s: &TestServer,
    who: &Session,
    room: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    wait_sync(s, who, None, &format!("the event in {room}"), |body| {
        body["rooms"]["join"][room]["timeline"]["events"].as_array()?.iter().find(|e| wanted(e)).cloned()
    })
    .await
}

fn message(body: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e: &Value| e["type"] == "m.room.message" && e["content"]["body"] == body
}

#[tokio::test]
async fn users_of_two_servers_share_rooms_both_ways() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;

    // A room on hs1, joined from hs2 by alias.
    let room = create_room(hs1, &alice, json!({"preset": "public_chat", "room_alias_name": "town"})).await;
    let (status, body) = hs2
        .get(&format!("/_matrix/client/v3/directory/room/{}", urlencode("#town:hs1.test")), Some(&bob.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["servers"][0], "hs1.test");
    let (status, body) = hs2
        .post(
            &format!("/_matrix/client/v3/join/{}", urlencode("#town:hs1.test")),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    // hs1 took bob's join in; hs2 has the room's state.
    wait_for_event(hs1, &alice, &room, |e| {
        e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()
    })
    .await;
    let (status, body) =
        hs2.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Messages both ways.
    assert_eq!(send(hs1, &alice, &room, "t1", "hello from hs1").await.0, StatusCode::OK);
    wait_for_event(hs2, &bob, &room, message("hello from hs1")).await;
    assert_eq!(send(hs2, &bob, &room, "t1", "hello from hs2").await.0, StatusCode::OK);
    wait_for_event(hs1, &alice, &room, message("hello from hs2")).await;

    // Each lists the other's published rooms.
    let listed =
        create_room(hs1, &alice, json!({"preset": "public_chat", "visibility": "public", "name": "Listed"}))
            .await;
    let (status, body) = hs2.get("/_matrix/client/v3/publicRooms?server=hs1.test", Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room_id"] == listed.as_str() && r["name"] == "Listed"),
        "{body}"
    );
    let (status, body) = hs2
        .post(
            "/_matrix/client/v3/publicRooms?server=hs1.test",
            Some(&bob.token),
            json!({"filter": {"generic_search_term": "list"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chunk"].as_array().unwrap().len(), 1, "{body}");

    // A room on hs2, joined from hs1 by ID.
    let room2 = create_room(hs2, &bob, json!({"preset": "public_chat"})).await;
    join_via(hs1, &alice, &room2, "hs2.test").await;
    assert_eq!(send(hs1, &alice, &room2, "t2", "alice was here").await.0, StatusCode::OK);
    wait_for_event(hs2, &bob, &room2, message("alice was here")).await;
    assert_eq!(send(hs2, &bob, &room2, "t2", "welcome").await.0, StatusCode::OK);
    wait_for_event(hs1, &alice, &room2, message("welcome")).await;
}

/// Every event ID of `room`'s timeline as `who` pages it back, oldest first.
pub(super) async fn timeline_ids(s: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let token = from.as_ref().map(|t| format!("&from={t}")).unwrap_or_default();
        let (status, body) = s
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100{token}"),
                Some(&who.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let chunk = body["chunk"].as_array().unwrap();
        ids.extend(chunk.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match body["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    ids.reverse();
    ids
}

/// The room's current state as (type, state key, event ID), sorted.
async fn state_ids(s: &TestServer, who: &Session, room: &str) -> Vec<(String, String, String)> {
    let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut state: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap().to_owned();
            (field("type"), field("state_key"), field("event_id"))
        })
        .collect();
    state.sort();
    state
}

#[tokio::test]
async fn a_server_that_was_down_catches_up() {
    let mut fed = TestFederation::start_with(2, |_, config| {
        config.federation.destination_min_retry_interval_ms = 100;
        config.federation.destination_max_retry_interval_ms = 200;
    })
    .await;
    let alice = fed.servers[0].register("alice").await;
    let bob = fed.servers[1].register("bob").await;
    let room = create_room(&fed.servers[0], &alice, json!({"preset": "public_chat"})).await;
    join_via(&fed.servers[1], &bob, &room, "hs1.test").await;
    let join =
        wait_for_event(&fed.servers[0], &alice, &room, |e| e["state_key"] == bob.user_id.as_str()).await;

    fed.servers[1].stop_for_now().await;
    let hs1 = &fed.servers[0];
    for i in 0..200 {
        let (status, body) = send(hs1, &alice, &room, &format!("m{i}"), &format!("message {i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if i == 100 {
            crate::common::put_state(
                hs1,
                &alice,
                &room,
                "m.room.topic",
                json!({"topic": "while bob was away"}),
            )
            .await;
        }
    }
    crate::common::put_state(hs1, &alice, &room, "m.room.name", json!({"name": "Renamed"})).await;
    fed.servers[1].start_again().await;

    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    wait_for_event(hs2, &bob, &room, |e| e["type"] == "m.room.name").await;
    let on_hs1 = timeline_ids(hs1, &alice, &room).await;
    let on_hs2 = timeline_ids(hs2, &bob, &room).await;
    let join_id = join["event_id"].as_str().unwrap();
    let since_join =
        |ids: &[String]| ids[ids.iter().position(|id| id == join_id).expect("the join")..].to_vec();
    assert_eq!(since_join(&on_hs2), since_join(&on_hs1), "the same events in the same order");
    assert_eq!(since_join(&on_hs1).len(), 1 + 200 + 2);
    assert_eq!(state_ids(hs2, &bob, &room).await, state_ids(hs1, &alice, &room).await);
}

/// `who`'s membership in `room` as `s` has it (from the room's state), if any.
async fn membership(s: &TestServer, who: &Session, asker: &Session, room: &str) -> Option<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}", urlencode(&who.user_id));
    let (status, body) = s.get(&path, Some(&asker.token)).await;
    (status == StatusCode::OK).then(|| body["membership"].as_str().unwrap_or_default().to_owned())
}

/// Syncs from `since` until `room` is in the `section` (invite, leave) of
/// `who`'s sync.
async fn wait_for_section(
    s: &TestServer,
    who: &Session,
    section: &str,
    room: &str,
    since: Option<String>,
) -> Value {
    wait_sync(s, who, since, &format!("{room} in {section}"), |body| {
        body["rooms"][section].get(room).cloned()
    })
    .await
}

#[tokio::test]
async fn invites_rejections_kicks_and_bans_cross_servers() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room = create_room(hs1, &alice, json!({"preset": "private_chat", "name": "Secret"})).await;
    let invite_path = format!("/_matrix/client/v3/rooms/{room}/invite");
    let invite_body = json!({"user_id": bob.user_id});

    // Invited: hs2 shows the invite with the room's stripped state.
    let (status, body) = hs1.post(&invite_path, Some(&alice.token), invite_body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let invited = wait_for_section(hs2, &bob, "invite", &room, None).await;
    let state = invited["invite_state"]["events"].as_array().unwrap();
    assert!(
        state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret"),
        "{invited}"
    );
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "invite"),
        "{invited}"
    );
    assert_eq!(membership(hs1, &bob, &alice, &room).await.as_deref(), Some("invite"));

    // Rejected: the leave reaches the inviter's server.
    let since = now_token(hs2, &bob).await;
    let (status, body) =
        hs2.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_section(hs2, &bob, "leave", &room, since).await;
    wait_for_event(hs1, &alice, &room, |e| {
        e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "leave"
    })
    .await;

    // Invited again and joined, through the inviter's server.
    assert_eq!(hs1.post(&invite_path, Some(&alice.token), invite_body.clone()).await.0, StatusCode::OK);
    wait_for_section(hs2, &bob, "invite", &room, None).await;
    let (status, body) =
        hs2.post(&format!("/_matrix/client/v3/join/{}", urlencode(&room)), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_event(hs1, &alice, &room, |e| {
        e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "join"
    })
    .await;
    assert_eq!(send(hs2, &bob, &room, "b1", "thanks for the invite").await.0, StatusCode::OK);
    wait_for_event(hs1, &alice, &room, message("thanks for the invite")).await;

    // Kicked: hs2 learns it, and bob can no longer send.
    let since = now_token(hs2, &bob).await;
    let (status, body) = hs1
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&alice.token),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_section(hs2, &bob, "leave", &room, since).await;
    assert_eq!(send(hs2, &bob, &room, "b2", "after the kick").await.0, StatusCode::FORBIDDEN);

    // Banned from a public room: both servers hold the ban; a rejoin fails.
    let public = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    let join_path = format!("/_matrix/client/v3/join/{}?via=hs1.test", urlencode(&public));
    assert_eq!(hs2.post(&join_path, Some(&bob.token), json!({})).await.0, StatusCode::OK);
    wait_for_event(hs1, &alice, &public, |e| e["state_key"] == bob.user_id.as_str()).await;
    let since = now_token(hs2, &bob).await;
    let (status, body) = hs1
        .post(
            &format!("/_matrix/client/v3/rooms/{public}/ban"),
            Some(&alice.token),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_section(hs2, &bob, "leave", &public, since).await;
    let (status, body) = hs2.post(&join_path, Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(membership(hs1, &bob, &alice, &public).await.as_deref(), Some("ban"));
}

/// The bodies of the messages `who` can page back through in `room`.
async fn message_bodies(s: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let token = from.as_ref().map(|t| format!("&from={t}")).unwrap_or_default();
        let (status, body) = s
            .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10{token}"), Some(&who.token))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let chunk = body["chunk"].as_array().unwrap();
        bodies.extend(chunk.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)));
        match body["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    bodies
}

#[tokio::test]
async fn history_before_a_join_is_backfilled_as_visibility_allows() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    for (visibility, visible) in [("shared", true), ("joined", false)] {
        let room = create_room(hs1, &alice, json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": visibility}}
        ]}))
        .await;
        for i in 0..25 {
            assert_eq!(
                send(hs1, &alice, &room, &format!("{visibility}{i}"), &format!("before {i}")).await.0,
                StatusCode::OK
            );
        }
        let join = format!("/_matrix/client/v3/join/{}?via=hs1.test", urlencode(&room));
        assert_eq!(hs2.post(&join, Some(&bob.token), json!({})).await.0, StatusCode::OK);
        assert_eq!(send(hs1, &alice, &room, &format!("{visibility}-after"), "after").await.0, StatusCode::OK);
        wait_for_event(hs2, &bob, &room, message("after")).await;
        let seen = message_bodies(hs2, &bob, &room).await;
        let before = seen.iter().filter(|b| b.starts_with("before ")).count();
        match visible {
            true => {
                assert_eq!(before, 25, "{visibility}: {seen:?}");
                assert_eq!(seen.last().map(String::as_str), Some("before 0"), "oldest last: {seen:?}");
            }
            false => assert_eq!(before, 0, "{visibility}: {seen:?}"),
        }
        assert_eq!(seen.first().map(String::as_str), Some("after"));

        // Search takes backfilled history too: a message sent after the
        // backfill is indexed in the same commit as the history queued
        // before it, so once it is found, all of that history is indexed.
        assert_eq!(
            send(hs1, &alice, &room, &format!("{visibility}-marker"), "marker").await.0,
            StatusCode::OK
        );
        wait_for_event(hs2, &bob, &room, message("marker")).await;
        let search = |term: &str| {
            json!({"search_categories": {"room_events": {
                "search_term": term, "order_by": "recent", "filter": {"rooms": [room], "limit": 30}
            }}})
        };
        let (status, found) = hs2.post("/_matrix/client/v3/search", Some(&bob.token), search("marker")).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["search_categories"]["room_events"]["count"], 1, "{found}");
        let (status, found) = hs2.post("/_matrix/client/v3/search", Some(&bob.token), search("before")).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        let results = found["search_categories"]["room_events"]["results"].as_array().unwrap();
        let mut bodies: Vec<&str> =
            results.iter().map(|r| r["result"]["content"]["body"].as_str().unwrap()).collect();
        let sent: Vec<u64> =
            results.iter().map(|r| r["result"]["origin_server_ts"].as_u64().unwrap()).collect();
        assert!(sent.is_sorted_by(|a, b| a >= b), "newest first: {bodies:?} {sent:?}");
        bodies.sort_by_key(|b| b[7..].parse::<u32>().unwrap());
        match visible {
            true => assert_eq!(bodies, (0..25).map(|i| format!("before {i}")).collect::<Vec<_>>(), "{found}"),
            false => assert!(bodies.is_empty(), "{visibility}: {bodies:?}"),
        }
        if visible {
            // A rebuilt index takes the backfilled history again.
            let index = hs2.server().services.search.as_ref().unwrap();
            index.request_rebuild();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while index.rebuild_pending() {
                assert!(std::time::Instant::now() < deadline, "the rebuild began");
                tokio::task::yield_now().await;
            }
            let (status, found) =
                hs2.post("/_matrix/client/v3/search", Some(&bob.token), search("before")).await;
            assert_eq!(status, StatusCode::OK, "{found}");
            assert_eq!(found["search_categories"]["room_events"]["count"], 25, "{found}");
        }
    }
}

#[tokio::test]
async fn knocks_and_restricted_joins_cross_servers() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;

    // Knock: bob knocks from hs2, alice lets him in, he joins.
    let room = create_room(
        hs1,
        &alice,
        json!({"preset": "private_chat", "name": "Knock here", "initial_state": [
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
        ]}),
    )
    .await;
    let (status, body) = hs2
        .post(
            &format!("/_matrix/client/v3/knock/{}?via=hs1.test", urlencode(&room)),
            Some(&bob.token),
            json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let knocked = wait_for_section(hs2, &bob, "knock", &room, None).await;
    assert!(
        knocked["knock_state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["name"] == "Knock here"),
        "{knocked}"
    );
    let knock = wait_for_event(hs1, &alice, &room, |e| e["state_key"] == bob.user_id.as_str()).await;
    assert_eq!(knock["content"]["membership"], "knock");
    assert_eq!(knock["content"]["reason"], "let me in");
    invite(hs1, &alice, &room, &bob.user_id).await;
    wait_for_section(hs2, &bob, "invite", &room, None).await;
    let (status, body) =
        hs2.post(&format!("/_matrix/client/v3/join/{}", urlencode(&room)), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_event(hs1, &alice, &room, |e| {
        e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "join"
    })
    .await;

    // Restricted: bob may join `inner` because he is in `outer`; hs1 names
    // alice as the authoriser and countersigns the join.
    let outer = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    let join_outer = format!("/_matrix/client/v3/join/{}?via=hs1.test", urlencode(&outer));
    assert_eq!(hs2.post(&join_outer, Some(&bob.token), json!({})).await.0, StatusCode::OK);
    wait_for_event(hs1, &alice, &outer, |e| e["state_key"] == bob.user_id.as_str()).await;
    let inner = create_room(hs1, &alice, json!({"preset": "private_chat", "initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": outer}]}}
    ]}))
    .await;
    join_via(hs2, &bob, &inner, "hs1.test").await;
    let join = wait_for_event(hs1, &alice, &inner, |e| e["state_key"] == bob.user_id.as_str()).await;
    assert_eq!(join["content"]["join_authorised_via_users_server"], alice.user_id.as_str(), "{join}");
    // Someone in no allowed room is refused.
    let carol = hs2.register("carol").await;
    let (status, body) = hs2
        .post(
            &format!("/_matrix/client/v3/join/{}?via=hs1.test", urlencode(&inner)),
            Some(&carol.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

/// A guest of hs2 in a room of hs1's leaves when hs1's user closes the room
/// to guests; a guest joins a room hs2 is not in only when the invite's
/// state says the room admits guests.
#[tokio::test]
async fn guests_follow_guest_access_across_servers() {
    let fed = TestFederation::start_with(2, |_, config| config.registration.guest_access = true).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let (status, body) = hs2.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let guest = crate::common::session(&body);

    let open = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    crate::common::put_state(hs1, &alice, &open, "m.room.guest_access", json!({"guest_access": "can_join"}))
        .await;
    join_via(hs2, &bob, &open, "hs1.test").await;
    // hs2 is in the room: the guest joins there, as the room admits guests.
    join_via(hs2, &guest, &open, "hs1.test").await;
    wait_for_event(hs1, &alice, &open, |e| e["state_key"] == guest.user_id.as_str()).await;
    crate::common::put_state(hs1, &alice, &open, "m.room.guest_access", json!({"guest_access": "forbidden"}))
        .await;
    // hs2 takes the change in and its guest leaves, by its own leave.
    let left = wait_for_event(hs1, &alice, &open, |e| {
        e["state_key"] == guest.user_id.as_str() && e["content"]["membership"] == "leave"
    })
    .await;
    assert_eq!(left["sender"], guest.user_id.as_str());

    // Rooms hs2 is not in: the invite's state decides.
    for (access, admitted) in [("forbidden", false), ("can_join", true)] {
        let room = create_room(hs1, &alice, json!({"preset": "private_chat"})).await;
        crate::common::put_state(hs1, &alice, &room, "m.room.guest_access", json!({"guest_access": access}))
            .await;
        invite(hs1, &alice, &room, &guest.user_id).await;
        wait_for_section(hs2, &guest, "invite", &room, None).await;
        let (status, body) = hs2
            .post(
                &format!("/_matrix/client/v3/join/{room}?server_name=hs1.test"),
                Some(&guest.token),
                json!({}),
            )
            .await;
        if admitted {
            assert_eq!(status, StatusCode::OK, "{access}: {body}");
            assert_eq!(membership(hs1, &guest, &alice, &room).await.as_deref(), Some("join"));
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{access}: {body}");
            assert_eq!(membership(hs1, &guest, &alice, &room).await.as_deref(), Some("invite"));
        }
    }
}

/// When hs2 first joins the room that replaces one it was in, the aliases
/// hs2 held for the old room name the new one (as Synapse moves them).
#[tokio::test]
async fn joining_an_upgraded_room_moves_this_servers_aliases() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let old = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    join_via(hs2, &bob, &old, "hs1.test").await;
    let alias = urlencode("#ours:hs2.test");
    let (status, body) = hs2
        .put(&format!("/_matrix/client/v3/directory/room/{alias}"), Some(&bob.token), json!({"room_id": old}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = hs1
        .post(
            &format!("/_matrix/client/v3/rooms/{old}/upgrade"),
            Some(&alice.token),
            json!({"new_version": "11"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    // Before hs2 is in the new room, the alias still names the old one.
    let resolve = || async {
        let (status, body) =
            hs2.get(&format!("/_matrix/client/v3/directory/room/{alias}"), Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["room_id"].as_str().unwrap().to_owned()
    };
    assert_eq!(resolve().await, old);
    join_via(hs2, &bob, &new, "hs1.test").await;
    assert_eq!(resolve().await, new);
}

/// An identity server tells hs2 that bob holds the address alice invited
/// on hs1: hs2 asks hs1 to make the invite (`exchange_third_party_invite`),
/// which hs1 checks against the identity server's key and sends to hs2.
#[tokio::test]
async fn a_third_party_invite_is_made_by_the_inviters_server() {
    use ruma::{CanonicalJsonObject, serde::Base64, signatures::Ed25519KeyPair};

    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room = create_room(hs1, &alice, json!({"preset": "private_chat"})).await;
    // The identity server's key, as an invite through it would announce it.
    let id_key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "0".into()).unwrap();
    let public_key = Base64::<ruma::serde::base64::Standard>::new(id_key.public_key().to_vec()).encode();
    let token = "sometoken";
    let (status, body) = hs1
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.third_party_invite/{token}"),
            Some(&alice.token),
            json!({"display_name": "b...@example.org", "public_key": public_key, "public_keys": [{"public_key": public_key}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (https, url) = (fed.https(), format!("{}/_matrix/federation/v1/3pid/onbind", fed.federation_url(1)));
    let onbind = |signed: Value| {
        let invite = json!({
            "address": "bob@example.org", "medium": "email", "mxid": bob.user_id,
            "room_id": room, "sender": alice.user_id, "token": token, "signed": signed,
        });
        let body = json!({"address": "bob@example.org", "medium": "email", "mxid": bob.user_id, "invites": [invite]});
        let request = https.put(&url).json(&body);
        async move { read(request.send().await.unwrap()).await }
    };
    // Signed by another key: refused by hs1, so no invite.
    let stranger = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "0".into()).unwrap();
    let mut forged: CanonicalJsonObject =
        serde_json::from_value(json!({"mxid": bob.user_id, "token": token})).unwrap();
    ruma::signatures::sign_json("id.test", &stranger, &mut forged).unwrap();
    let (status, body) = onbind(serde_json::to_value(&forged).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(membership(hs1, &bob, &alice, &room).await, None);

    let mut signed: CanonicalJsonObject =
        serde_json::from_value(json!({"mxid": bob.user_id, "token": token})).unwrap();
    ruma::signatures::sign_json("id.test", &id_key, &mut signed).unwrap();
    let (status, body) = onbind(serde_json::to_value(&signed).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // hs1 made the invite, from alice, with the display name it announced.
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}", urlencode(&bob.user_id));
    let (status, member) = hs1.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["third_party_invite"]["display_name"], "b...@example.org");
    // bob has it on hs2, and takes it.
    let invite = wait_for_section(hs2, &bob, "invite", &room, None).await;
    let events = invite["invite_state"]["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str()));
    join_via(hs2, &bob, &room, "hs1.test").await;
    assert_eq!(membership(hs1, &bob, &alice, &room).await.as_deref(), Some("join"));
}

/// Once its sender is erased (deactivated with `erase`), an event goes to
/// other servers redacted.
#[tokio::test]
async fn an_erased_users_events_reach_other_servers_redacted() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let carol = hs1.register("carol").await;
    let bob = hs2.register("bob").await;
    let room = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    crate::common::join(hs1, &carol, &room).await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    let (status, sent) = send(hs1, &alice, &room, "m1", "soon forgotten").await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let uri = format!("/_matrix/federation/v1/event/{}", urlencode(sent["event_id"].as_str().unwrap()));
    let (status, before) = fed.get_as(1, 0, &uri).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["pdus"][0]["content"]["body"], "soon forgotten");

    let auth = crate::common::password_auth(&alice.user_id, crate::common::PASSWORD, None);
    let (status, body) = hs1
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&alice.token),
            json!({"auth": auth, "erase": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, after) = fed.get_as(1, 0, &uri).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["pdus"][0]["content"], json!({}), "{after}");
    assert_eq!(
        after["pdus"][0]["event_id"].as_str().or(Some("")),
        before["pdus"][0]["event_id"].as_str().or(Some(""))
    );
}

/// Another server's user is found in the user directory by the name their
/// membership gives while they share a room with the searcher, and no
/// longer once the searcher has left it.
#[tokio::test]
async fn the_user_directory_finds_other_servers_room_mates() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", urlencode(&alice.user_id));
    let (status, body) = hs1.put(&path, Some(&alice.token), json!({"displayname": "Zebulon Quux"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    let search = || async {
        let (status, body) = hs2
            .post(
                "/_matrix/client/v3/user_directory/search",
                Some(&bob.token),
                json!({"search_term": "zebul"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["user_id"].clone(), u["display_name"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(search().await, [(json!(alice.user_id), json!("Zebulon Quux"))]);
    let (status, body) =
        hs2.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(search().await, []);
}

/// An invite from another server's user to a room this server is not in
/// reaches the invitee's phone, as Synapse pushes it.
#[tokio::test]
async fn an_invite_from_another_server_is_pushed() {
    use crate::pushers::{Gateway, http_pusher, set_pusher};

    let fed = TestFederation::start_with(2, |_, config| config.outbound.allow_private_addresses = true).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let mut gateway = Gateway::start().await;
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let (status, body) = set_pusher(hs2, &bob, http_pusher(&gateway.url, "key1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = create_room(hs1, &alice, json!({"preset": "private_chat", "name": "Secret plans"})).await;
    invite(hs1, &alice, &room, &bob.user_id).await;

    let body = gateway.next_of_type("m.room.member").await;
    let n = &body["notification"];
    assert_eq!(
        (n["room_id"].as_str(), n["sender"].as_str()),
        (Some(room.as_str()), Some(alice.user_id.as_str()))
    );
    assert_eq!((n["membership"].as_str(), n["user_is_target"].as_bool()), (Some("invite"), Some(true)));
    assert_eq!(n["content"]["membership"], "invite");
    assert_eq!(n["room_name"], "Secret plans");
    assert_eq!(n["sender_display_name"], "alice");
    assert_eq!(n["prio"], "high");
    assert!(n["event_id"].as_str().is_some_and(|id| id.starts_with('$')), "{n}");
}

/// A server admin's view of a room: its forward extremities and a hash of
/// its current state, the same on both servers once they agree, different
/// while one has a state event the other has not seen.
#[tokio::test]
async fn admins_compare_a_rooms_fingerprint_across_servers() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let mut admins = Vec::new();
    for s in [hs1, hs2] {
        let user_id =
            ruma::UserId::parse(format!("@root:{}", s.server().services.config.server_name)).unwrap();
        let hash = hearth::users::hash_password(crate::common::PASSWORD).unwrap();
        s.server().services.users.create(&user_id, Some(hash), true, None).unwrap();
        let (status, body) = s.login("root", crate::common::PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        admins.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    let (_, sent) = send(hs2, &bob, &room, "m1", "hello").await;
    let last = sent["event_id"].as_str().unwrap().to_owned();
    wait_for_event(hs1, &alice, &room, |e| e["event_id"] == last.as_str()).await;

    let fingerprint = |i: usize| {
        let (s, token) = (&fed.servers[i], admins[i].clone());
        let room = room.clone();
        async move {
            let (status, body) =
                s.get(&format!("/_hearth/admin/v1/rooms/{room}/fingerprint"), Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let (one, two) = (fingerprint(0).await, fingerprint(1).await);
    assert_eq!(one["forward_extremities"], json!([last]));
    assert_eq!(one["forward_extremities"], two["forward_extremities"]);
    assert_eq!(one["state_hash"], two["state_hash"]);
    // The create event, power levels, join rules, history visibility, alice and bob.
    assert_eq!(one["state_events"], 6, "{one}");
    // Synapse's shape of the extremities, for tools.
    let (status, body) =
        hs2.get(&format!("/_synapse/admin/v1/rooms/{room}/forward_extremities"), Some(&admins[1])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["count"].as_u64(), body["results"][0]["event_id"].as_str()),
        (Some(1), Some(last.as_str()))
    );
    // Not for other users.
    let (status, _) = hs2.get(&format!("/_hearth/admin/v1/rooms/{room}/fingerprint"), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A state change on hs1 alone changes hs1's hash, then hs2's to match.
    crate::common::put_state(hs1, &alice, &room, "m.room.topic", json!({"topic": "news"})).await;
    let changed = fingerprint(0).await;
    assert_ne!(changed["state_hash"], one["state_hash"]);
    wait_for_event(hs2, &bob, &room, |e| e["type"] == "m.room.topic").await;
    assert_eq!(fingerprint(1).await["state_hash"], changed["state_hash"]);
}
