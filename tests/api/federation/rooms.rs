//! Rooms shared across servers: joins by alias and by ID, messages both ways.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::TestFederation;
use crate::common::{Session, TestServer, create_room, send, urlencode};

/// Syncs `who` until an event in `room`'s timeline matches `wanted`, or
/// fails after 30 s.
pub async fn wait_for_event(
    s: &TestServer,
    who: &Session,
    room: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since: Option<String> = None;
    loop {
        let query = match &since {
            Some(token) => format!("timeout=2000&since={token}"),
            None => "timeout=0".to_owned(),
        };
        let (status, body) = s.get(&format!("/_matrix/client/v3/sync?{query}"), Some(&who.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events =
            body["rooms"]["join"][room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        if let Some(found) = events.into_iter().find(|e| wanted(e)) {
            return found;
        }
        since = body["next_batch"].as_str().map(str::to_owned);
        assert!(Instant::now() < deadline, "{} never saw the event in {room}", who.user_id);
    }
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

    // A room on hs2, joined from hs1 by ID.
    let room2 = create_room(hs2, &bob, json!({"preset": "public_chat"})).await;
    let (status, body) = hs1
        .post(
            &format!("/_matrix/client/v3/join/{}?via=hs2.test", urlencode(&room2)),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(send(hs1, &alice, &room2, "t2", "alice was here").await.0, StatusCode::OK);
    wait_for_event(hs2, &bob, &room2, message("alice was here")).await;
    assert_eq!(send(hs2, &bob, &room2, "t2", "welcome").await.0, StatusCode::OK);
    wait_for_event(hs1, &alice, &room2, message("welcome")).await;
}
