//! What another server sends that it must not: each refused (or, for a bad
//! content hash, stripped to its redacted form), the room unchanged.

use hearth::rooms::builder::PduBuilder;
use reqwest::StatusCode;
use ruma::{CanonicalJsonObject, OwnedRoomId, UserId, signatures::Ed25519KeyPair};
use serde_json::{Value, json};

use super::{TestFederation, join_via, rooms::wait_for_event};
use crate::common::{TestServer, create_room, put_state, send, urlencode};

/// An event built and signed by `server` on its copy of `room` (not
/// appended there).
pub(super) fn build(
    server: &TestServer,
    room: &str,
    sender: &str,
    builder: PduBuilder,
) -> (String, CanonicalJsonObject) {
    let rooms = &server.server().services.rooms;
    let room_id = OwnedRoomId::try_from(room).unwrap();
    let (_, record) = rooms.room(&room_id).unwrap().unwrap();
    let state = rooms.current_state(&record).unwrap();
    let (id, object) =
        rooms.build(&record, &state, UserId::parse(sender).unwrap().as_ref(), &builder).unwrap();
    (id.to_string(), object)
}

/// Signs `object` afresh as `server_name` with `key` (other signatures dropped).
fn resign(
    mut object: CanonicalJsonObject,
    server_name: &str,
    key: &Ed25519KeyPair,
) -> (String, CanonicalJsonObject) {
    object.remove("signatures");
    object.remove("hashes");
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    ruma::signatures::hash_and_sign_event(server_name, key, &mut object, &rules.redaction).unwrap();
    let id = ruma::signatures::reference_hash(&object, &rules).unwrap();
    (format!("${id}"), object)
}

pub(super) fn message(text: &str) -> PduBuilder {
    PduBuilder::message("m.room.message", json!({"msgtype": "m.text", "body": text}))
}

/// The bodies of the messages in `room` as `s` shows them to `token`'s user.
async fn bodies(s: &TestServer, token: &str, room: &str) -> Vec<String> {
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("<redacted>").to_owned())
        .collect()
}

#[tokio::test]
async fn forged_and_unauthorised_pdus_change_nothing() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let room = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    join_via(hs2, &bob, &room, "hs1.test").await;
    wait_for_event(hs1, &alice, &room, |e| e["state_key"] == bob.user_id.as_str()).await;
    let levels_before = hs1
        .get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"), Some(&alice.token))
        .await;

    let forger = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "forged".into()).unwrap();
    // Content changed after signing: the hash no longer matches.
    let (tampered_id, mut tampered) = build(hs2, &room, &bob.user_id, message("signed text"));
    tampered.insert(
        "content".into(),
        serde_json::from_value(json!({"msgtype": "m.text", "body": "tampered text"})).unwrap(),
    );
    // Signed with a key hs2 never published.
    let (unknown_key_id, unknown_key) =
        resign(build(hs2, &room, &bob.user_id, message("unknown key")).1, "hs2.test", &forger);
    // Bob (power 0) making himself admin: well signed, not allowed.
    let (grab_id, grab) = build(
        hs2,
        &room,
        &bob.user_id,
        PduBuilder::state(
            "m.room.power_levels",
            "",
            json!({"users": {alice.user_id.clone(): 100, bob.user_id.clone(): 100}}),
        ),
    );
    // A user of another server, signed only by hs2.
    let (other_id, other) = build(hs2, &room, "@mallory:hs3.test", message("not hs2's user"));

    let pdus: Vec<Value> =
        [&tampered, &unknown_key, &grab, &other].iter().map(|o| serde_json::to_value(o).unwrap()).collect();
    let (status, body) = fed.send_transaction(1, 0, "forged1", pdus).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["pdus"][&unknown_key_id]["error"].is_string(), "{body}");
    assert!(body["pdus"][&other_id]["error"].is_string(), "{body}");
    // Stored, but rejected: not in the room's state or timeline.
    let rooms = &hs1.server().services.rooms;
    let grab_short = rooms.event_short(&ruma::OwnedEventId::try_from(grab_id).unwrap()).unwrap().unwrap();
    assert_eq!(rooms.event_meta(grab_short).unwrap().unwrap().status, hearth::rooms::Status::Rejected);

    // Nothing of it shows: the tampered message only in its redacted form.
    let levels_after = hs1
        .get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"), Some(&alice.token))
        .await;
    assert_eq!(levels_after, levels_before, "power levels unchanged");
    let seen = bodies(hs1, &alice.token, &room).await;
    for forged in ["signed text", "tampered text", "unknown key", "not hs2's user"] {
        assert!(!seen.iter().any(|b| b == forged), "{forged} shows: {seen:?}");
    }
    let (status, event) = hs1
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(&tampered_id)),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"], json!({}), "stored redacted");

    // The room goes on: bob's next message arrives.
    assert_eq!(send(hs2, &bob, &room, "after", "still here").await.0, StatusCode::OK);
    wait_for_event(hs1, &alice, &room, |e| e["content"]["body"] == "still here").await;

    // A room hs2 is not in: its PDU for it is refused.
    let private = create_room(hs1, &alice, json!({"preset": "public_chat"})).await;
    let (_, outside) = build(hs1, &private, &bob.user_id, message("from outside"));
    let (outside_id, outside) = resign(outside, "hs2.test", &hs2.server().services.keys.keypair);
    let (status, body) =
        fed.send_transaction(1, 0, "forged2", vec![serde_json::to_value(&outside).unwrap()]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["pdus"][&outside_id]["error"].is_string(), "{body}");
    assert!(bodies(hs1, &alice.token, &private).await.is_empty());

    // Denied by the room's server ACL: hs2's events are refused.
    put_state(
        hs1,
        &alice,
        &room,
        "m.room.server_acl",
        json!({"allow": ["*"], "deny": ["hs2.test"], "allow_ip_literals": false}),
    )
    .await;
    let (denied_id, denied) = build(hs2, &room, &bob.user_id, message("after the ACL"));
    let (status, body) =
        fed.send_transaction(1, 0, "forged3", vec![serde_json::to_value(&denied).unwrap()]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["pdus"][&denied_id]["error"].is_string(), "{body}");
    assert!(!bodies(hs1, &alice.token, &room).await.iter().any(|b| b == "after the ACL"));
}
