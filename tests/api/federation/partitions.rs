//! Rooms across a network partition (issue 16): servers cut off from each
//! other keep going on both sides, and agree once the network heals.

use reqwest::StatusCode;
use serde_json::json;

use super::{
    join_via,
    links::Links,
    rooms::{timeline_ids, wait_for_event},
};
use crate::common::{create_room, send};

/// Messages each side sends in each room while cut off.
const PER_SIDE: usize = 100;

/// {A, B} | {C} in a room of each of versions 10, 11 and 12 (v12: state
/// resolution v2.1): both sides talk on; once healed, every server holds
/// every message once, the next message leaves one forward extremity, and
/// the current state hashes the same everywhere.
#[tokio::test]
async fn partitioned_rooms_converge_once_healed() {
    let (fed, links) = Links::start(3).await;
    let (a, b, c) = (&fed.servers[0], &fed.servers[1], &fed.servers[2]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    let mut rooms = Vec::new();
    for version in ["10", "11", "12"] {
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        join_via(b, &bob, &room, "hs1.test").await;
        join_via(c, &carol, &room, "hs1.test").await;
        for (s, who) in [(a, &alice), (b, &bob)] {
            wait_for_event(s, who, &room, |e| e["state_key"] == carol.user_id.as_str()).await;
        }
        rooms.push(room);
    }

    links.partition(&[0, 1], &[2]);
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); rooms.len()];
    for i in 0..PER_SIDE {
        for (r, room) in rooms.iter().enumerate() {
            for (s, who, side) in [(a, &alice, "ab"), (c, &carol, "c")] {
                let txn = format!("{side}{r}-{i}");
                let (status, body) = send(s, who, room, &txn, &format!("{side} {i}")).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                sent[r].push(body["event_id"].as_str().unwrap().to_owned());
            }
        }
    }
    // While cut off, C has none of A's messages.
    let last_ab = |r: usize| sent[r][sent[r].len() - 2].clone();
    assert!(!timeline_ids(c, &carol, &rooms[0]).await.contains(&last_ab(0)));

    links.heal();
    for (r, room) in rooms.iter().enumerate() {
        let (last_ab, last_c) = (last_ab(r), sent[r].last().unwrap().clone());
        wait_for_event(c, &carol, room, |e| e["event_id"] == last_ab.as_str()).await;
        for (s, who) in [(a, &alice), (b, &bob)] {
            wait_for_event(s, who, room, |e| e["event_id"] == last_c.as_str()).await;
        }
        // The next message joins the two branches, on every server.
        let (status, body) = send(b, &bob, room, &format!("after{r}"), "after the partition").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let after = body["event_id"].as_str().unwrap().to_owned();
        let room_id = ruma::RoomId::parse(room).unwrap();
        let mut hashes = Vec::new();
        for (s, who) in [(a, &alice), (b, &bob), (c, &carol)] {
            wait_for_event(s, who, room, |e| e["event_id"] == after.as_str()).await;
            let print = s.server().services.rooms.fingerprint(&room_id).unwrap().unwrap();
            let extremities: Vec<String> = print.extremities.iter().map(|(id, _)| id.to_string()).collect();
            assert_eq!(
                extremities,
                std::slice::from_ref(&after),
                "one extremity once the branches are joined"
            );
            hashes.push(print.state_hash);
            let timeline = timeline_ids(s, who, room).await;
            for id in sent[r].iter().chain([&after]) {
                assert_eq!(timeline.iter().filter(|t| *t == id).count(), 1, "{id} on {}", who.user_id);
            }
        }
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "the same state everywhere in {room}: {hashes:?}");
    }
}

/// What one server sent while another was cut off reaches that server out
/// of order and twice (here straight from the test, signed as the sender):
/// it ends with the same events, once each, and the same state as the rest.
#[tokio::test]
async fn events_out_of_order_and_twice_give_the_same_room() {
    let (fed, links) = Links::start(3).await;
    let (a, b, c) = (&fed.servers[0], &fed.servers[1], &fed.servers[2]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    for version in ["10", "11", "12"] {
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        join_via(b, &bob, &room, "hs1.test").await;
        join_via(c, &carol, &room, "hs1.test").await;
        wait_for_event(a, &alice, &room, |e| e["state_key"] == carol.user_id.as_str()).await;
        let before = timeline_ids(a, &alice, &room).await.len();

        links.partition(&[0, 1], &[2]);
        for i in 0..10 {
            let (status, body) =
                send(a, &alice, &room, &format!("m{version}-{i}"), &format!("message {i}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if i == 4 {
                crate::common::put_state(
                    a,
                    &alice,
                    &room,
                    "m.room.topic",
                    json!({"topic": "while C was away"}),
                )
                .await;
            }
        }
        crate::common::put_state(a, &alice, &room, "m.room.name", json!({"name": "Renamed"})).await;
        let missed: Vec<String> = timeline_ids(a, &alice, &room).await.split_off(before);
        let rooms = &a.server().services.rooms;
        let pdu = |id: &String| {
            let short = rooms.event_short(&ruma::EventId::parse(id).unwrap()).unwrap().unwrap();
            serde_json::to_value(rooms.pdu_json(short).unwrap().unwrap()).unwrap()
        };
        // Newest first (C cannot fetch what precedes: its links are cut),
        // then oldest first, in transactions of three.
        let mut order: Vec<&String> = missed.iter().rev().collect();
        order.extend(missed.iter());
        for (t, batch) in order.chunks(3).enumerate() {
            let (status, body) = fed
                .send_transaction(
                    0,
                    2,
                    &format!("ooo{version}-{t}"),
                    batch.iter().map(|id| pdu(id)).collect(),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        links.heal();

        let (status, body) = send(b, &bob, &room, &format!("after{version}"), "after").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let after = body["event_id"].as_str().unwrap().to_owned();
        let room_id = ruma::RoomId::parse(&room).unwrap();
        let mut hashes = Vec::new();
        for (s, who) in [(a, &alice), (b, &bob), (c, &carol)] {
            wait_for_event(s, who, &room, |e| e["event_id"] == after.as_str()).await;
            let print = s.server().services.rooms.fingerprint(&room_id).unwrap().unwrap();
            assert_eq!(print.extremities.len(), 1, "v{version} on {}", who.user_id);
            hashes.push(print.state_hash);
            let timeline = timeline_ids(s, who, &room).await;
            for id in missed.iter().chain([&after]) {
                assert_eq!(
                    timeline.iter().filter(|t| *t == id).count(),
                    1,
                    "v{version}: {id} on {}",
                    who.user_id
                );
            }
        }
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "v{version}: {hashes:?}");
    }
}
