//! Guest accounts: registration, what they may call, guest access to
//! rooms, peeking into world-readable rooms, and upgrading to a full user.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn guests_allowed() -> TestServer {
    TestServer::start_with(|config| config.registration.guest_access = true).await
}

async fn register_guest(s: &TestServer) -> Session {
    let (status, body) = s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    session(&body)
}

async fn member_state(s: &TestServer, who: &Session, room: &str, user: &str) -> Value {
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}"), Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn guests_are_off_unless_configured() {
    let s = TestServer::start().await;
    assert_error(
        &s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await,
        StatusCode::FORBIDDEN,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
}

#[tokio::test]
async fn guests_join_only_rooms_that_admit_them_and_leave_when_that_ends() {
    let s = guests_allowed().await;
    let alice = s.register("alice").await;
    let guest = register_guest(&s).await;
    let localpart = guest.user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
    assert!(localpart.bytes().all(|b| b.is_ascii_digit()), "{}", guest.user_id);
    let (status, me) = s.get("/_matrix/client/v3/account/whoami", Some(&guest.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["user_id"].as_str(), me["is_guest"].as_bool()),
        (Some(guest.user_id.as_str()), Some(true))
    );

    // Most endpoints refuse a guest's token.
    assert_error(
        &s.post("/_matrix/client/v3/createRoom", Some(&guest.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    assert_error(
        &s.get("/_matrix/client/v3/pushrules/", Some(&guest.token)).await,
        StatusCode::FORBIDDEN,
        "M_GUEST_ACCESS_FORBIDDEN",
    );

    // A public room without guest access: no join, nothing changes.
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    assert_error(
        &s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&guest.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (_, members) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&alice.token)).await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 1);

    // With guest access the guest joins, talks and names itself.
    put_state(&s, &alice, &room, "m.room.guest_access", json!({"guest_access": "can_join"})).await;
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&guest.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let member = member_state(&s, &alice, &room, &guest.user_id).await;
    assert_eq!((member["membership"].as_str(), member["kind"].as_str()), (Some("join"), Some("guest")));
    let (status, _) = send(&s, &guest, &room, "g1", "sup").await;
    assert_eq!(status, StatusCode::OK);
    let profile = format!("/_matrix/client/v3/profile/{}", guest.user_id);
    let (status, _) =
        s.put(&format!("{profile}/displayname"), Some(&guest.token), json!({"displayname": "creeper"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(member_state(&s, &alice, &room, &guest.user_id).await["displayname"], "creeper");
    assert_error(
        &s.put(&format!("{profile}/avatar_url"), Some(&guest.token), json!({"avatar_url": "mxc://x/y"}))
            .await,
        StatusCode::FORBIDDEN,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    // Guests invite nobody.
    let bob = s.register("bob").await;
    assert_error(
        &s.post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&guest.token),
            json!({"user_id": bob.user_id}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "M_GUEST_ACCESS_FORBIDDEN",
    );

    // Revoking guest access makes the guest leave, by its own event.
    put_state(&s, &alice, &room, "m.room.guest_access", json!({"guest_access": "forbidden"})).await;
    let (status, left) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}?format=event", guest.user_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(left["content"]["membership"], "leave", "{left}");
    assert_eq!(left["sender"], guest.user_id.as_str());
    assert_eq!(
        s.get("/_matrix/client/v3/joined_rooms", Some(&guest.token)).await.1["joined_rooms"],
        json!([])
    );
}

#[tokio::test]
async fn a_guest_becomes_a_full_user_keeping_its_id() {
    let s = guests_allowed().await;
    let alice = s.register("alice").await;
    let guest = register_guest(&s).await;
    let other = register_guest(&s).await;
    let localpart = guest.user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
    let upgrade = |token: &str| json!({"username": localpart, "password": PASSWORD, "guest_access_token": token, "auth": {"type": "m.login.dummy"}});
    // Another guest's token does not do.
    assert_error(
        &s.post("/_matrix/client/v3/register", None, upgrade(&other.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, body) = s.post("/_matrix/client/v3/register", None, upgrade(&guest.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let upgraded = session(&body);
    assert_eq!(upgraded.user_id, guest.user_id);
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", Some(&upgraded.token)).await;
    assert_eq!(me["is_guest"], false);
    // Now a full user: joins rooms without guest access, logs in by password.
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&upgraded.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(member_state(&s, &alice, &room, &guest.user_id).await.get("kind").is_none());
    assert_eq!(s.login(&localpart, PASSWORD).await.0, StatusCode::OK);
    // Only once.
    assert_error(
        &s.post("/_matrix/client/v3/register", None, upgrade(&guest.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn non_members_peek_into_world_readable_rooms_only() {
    let s = guests_allowed().await;
    let alice = s.register("alice").await;
    let guest = register_guest(&s).await;
    let carol = s.register("carol").await;
    let shared = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let open = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    send(&s, &alice, &open, "m0", "private").await;
    put_state(
        &s,
        &alice,
        &open,
        "m.room.history_visibility",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    send(&s, &alice, &open, "m1", "public").await;

    for who in [&guest, &carol] {
        // Not world-readable: refused at once, for guests and users alike.
        assert_error(
            &s.get(&format!("/_matrix/client/v3/events?room_id={shared}&timeout=5000"), Some(&who.token))
                .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        assert_error(
            &s.get(&format!("/_matrix/client/v3/rooms/{shared}/initialSync"), Some(&who.token)).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        // World-readable: the world-readable part of the history.
        let (status, snapshot) =
            s.get(&format!("/_matrix/client/v3/rooms/{open}/initialSync"), Some(&who.token)).await;
        assert_eq!(status, StatusCode::OK, "{snapshot}");
        assert!(snapshot.get("membership").is_none(), "{snapshot}");
        let chunk = snapshot["messages"]["chunk"].as_array().unwrap();
        let kinds: Vec<_> =
            chunk.iter().map(|e| (e["type"].as_str().unwrap(), e["content"]["body"].as_str())).collect();
        assert_eq!(kinds[..2], [("m.room.history_visibility", None), ("m.room.message", Some("public"))]);
        assert!(kinds[2..].iter().all(|kind| kind == &("m.room.message", Some("mice"))), "{kinds:?}");

        // New messages come through /events with that room.
        let end = snapshot["messages"]["end"].as_str().unwrap().to_owned();
        let (status, _) = send(&s, &alice, &open, &format!("n-{}", who.device_id), "mice").await;
        assert_eq!(status, StatusCode::OK);
        let (status, events) = s
            .get(
                &format!("/_matrix/client/v3/events?room_id={open}&from={end}&timeout=5000"),
                Some(&who.token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{events}");
        let bodies: Vec<_> = events["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        assert_eq!(bodies, ["mice"]);
    }
    // Guests must name a room.
    assert_eq!(
        s.get("/_matrix/client/v3/events?timeout=0", Some(&guest.token)).await.0,
        StatusCode::BAD_REQUEST
    );
    // A guest cannot send into a room it has not joined.
    assert_eq!(send(&s, &guest, &open, "g", "hi").await.0, StatusCode::FORBIDDEN);
}
