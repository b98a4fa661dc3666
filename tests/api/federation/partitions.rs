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

/// Messages each side sends while cut off.
const PER_SIDE: usize = 100;

#[tokio::test]
async fn a_partitioned_room_converges_once_healed() {
    let (fed, links) = Links::start(3).await;
    let (a, b, c) = (&fed.servers[0], &fed.servers[1], &fed.servers[2]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    join_via(b, &bob, &room, "hs1.test").await;
    join_via(c, &carol, &room, "hs1.test").await;
    for (s, who) in [(a, &alice), (b, &bob)] {
        wait_for_event(s, who, &room, |e| e["state_key"] == carol.user_id.as_str()).await;
    }

    // {A, B} | {C}: both sides talk on.
    links.partition(&[0, 1], &[2]);
    let mut sent = Vec::new();
    for i in 0..PER_SIDE {
        for (s, who, side) in [(a, &alice, "ab"), (c, &carol, "c")] {
            let (status, body) = send(s, who, &room, &format!("{side}{i}"), &format!("{side} {i}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            sent.push(body["event_id"].as_str().unwrap().to_owned());
        }
    }
    let (last_ab, last_c) = (sent[sent.len() - 2].clone(), sent[sent.len() - 1].clone());
    // While cut off, C has none of A's messages.
    assert!(!timeline_ids(c, &carol, &room).await.contains(&last_ab));

    links.heal();
    // Each side's messages reach the other.
    wait_for_event(c, &carol, &room, |e| e["event_id"] == last_ab.as_str()).await;
    for (s, who) in [(a, &alice), (b, &bob)] {
        wait_for_event(s, who, &room, |e| e["event_id"] == last_c.as_str()).await;
    }
    // The next message joins the two branches, on every server.
    let (status, body) = send(b, &bob, &room, "after", "after the partition").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = body["event_id"].as_str().unwrap().to_owned();
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let mut hashes = Vec::new();
    for (s, who) in [(a, &alice), (b, &bob), (c, &carol)] {
        wait_for_event(s, who, &room, |e| e["event_id"] == after.as_str()).await;
        let print = s.server().services.rooms.fingerprint(&room_id).unwrap().unwrap();
        let extremities: Vec<String> = print.extremities.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(
            extremities,
            std::slice::from_ref(&after),
            "one forward extremity once the branches are joined"
        );
        hashes.push(print.state_hash);
        // Every message exactly once in the timeline.
        let timeline = timeline_ids(s, who, &room).await;
        for id in sent.iter().chain([&after]) {
            assert_eq!(timeline.iter().filter(|t| *t == id).count(), 1, "{id} on {}", who.user_id);
        }
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "the same current state everywhere: {hashes:?}");
}
