//! Synapse's admin API for rooms and server notices, over HTTP: listing
//! with order, search and paging; details, members, state; blocking;
//! making a room admin; joining a user; shutting a room down (its local
//! users moved to a new room) and purging it; background jobs; notices.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    common::{Session, TestServer, assert_error, create_room, join, send, sync, urlencode},
    media::admin_of,
};

const V1: &str = "/_synapse/admin/v1";
const V2: &str = "/_synapse/admin/v2";

async fn admin_server() -> TestServer {
    TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".into());
        c.server_notices.system_mxid_localpart = Some("notices".into());
    })
    .await
}

#[tokio::test]
async fn admins_list_and_inspect_rooms() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let big = create_room(&s, &alice, json!({"name": "Big Hall", "preset": "public_chat", "visibility": "public", "room_alias_name": "hall"})).await;
    join(&s, &bob, &big).await;
    let small = create_room(&s, &bob, json!({"name": "attic"})).await;

    // Non-admins are refused; the version needs nobody.
    assert_error(
        &s.get(&format!("{V1}/rooms"), Some(&alice.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, version) = s.get(&format!("{V1}/server_version"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(version["server_version"].as_str().unwrap().starts_with("Hearth"), "{version}");

    let (status, body) = s.get(&format!("{V1}/rooms"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_rooms"], 2);
    assert_eq!(body["offset"], 0);
    let hall =
        body["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == big).expect("listed").clone();
    assert_eq!(hall["name"], "Big Hall");
    assert_eq!(hall["canonical_alias"], "#hall:localhost");
    assert_eq!(hall["joined_members"], 2);
    assert_eq!(hall["joined_local_members"], 2);
    assert_eq!(hall["public"], true);
    assert_eq!(hall["creator"], alice.user_id);
    assert_eq!(hall["join_rules"], "public");
    assert!(hall["state_events"].as_u64().unwrap() >= 6, "{hall}");

    // Order, search, paging.
    let (_, by_size) = s.get(&format!("{V1}/rooms?order_by=joined_members"), token).await;
    assert_eq!(by_size["rooms"][0]["room_id"], big);
    let (_, reversed) = s.get(&format!("{V1}/rooms?order_by=joined_members&dir=b"), token).await;
    assert_eq!(reversed["rooms"][0]["room_id"], small);
    let (_, found) = s.get(&format!("{V1}/rooms?search_term=HALL"), token).await;
    assert_eq!(found["total_rooms"], 1);
    let (_, by_id) = s.get(&format!("{V1}/rooms?search_term={}", urlencode(small.as_str())), token).await;
    assert_eq!(
        (by_id["total_rooms"].clone(), by_id["rooms"][0]["room_id"].clone()),
        (json!(1), json!(small)),
        "{by_id}"
    );
    // A server admin sees the aliases of a room they are not in (synadm needs it); others do not.
    let aliases = format!("/_matrix/client/v3/rooms/{big}/aliases");
    let (status, listed) = s.get(&aliases, token).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["aliases"], json!([format!("#hall:{}", s.config.server_name)]));
    let carol = s.register("carol").await;
    let (status, _) = s.get(&aliases, Some(&carol.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, page) = s.get(&format!("{V1}/rooms?limit=1"), token).await;
    assert_eq!((page["rooms"].as_array().unwrap().len(), page["next_batch"].clone()), (1, json!(1)));
    let (_, second) = s.get(&format!("{V1}/rooms?from=1&limit=1"), token).await;
    assert_eq!(second["prev_batch"], 0);
    assert!(second.get("next_batch").is_none());
    let (_, public) = s.get(&format!("{V1}/rooms?public_rooms=true"), token).await;
    assert_eq!(public["total_rooms"], 1);
    assert_error(
        &s.get(&format!("{V1}/rooms?search_term="), token).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(&format!("{V1}/rooms?order_by=colour"), token).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // Details, members, state.
    let (status, details) = s.get(&format!("{V1}/rooms/{big}"), token).await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["joined_local_devices"], 2);
    assert_eq!(details["tombstoned"], false);
    let (_, members) = s.get(&format!("{V1}/rooms/{big}/members"), token).await;
    assert_eq!(members["total"], 2);
    let (_, state) = s.get(&format!("{V1}/rooms/{big}/state?type=m.room.name"), token).await;
    assert_eq!(state["state"].as_array().unwrap().len(), 1, "{state}");
    assert_eq!(state["state"][0]["content"]["name"], "Big Hall");
    assert_error(
        &s.get(&format!("{V1}/rooms/!nope:localhost"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(&s.get(&format!("{V1}/rooms/nope"), token).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
}

#[tokio::test]
async fn blocked_rooms_cannot_be_joined_and_admins_take_rooms_over() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;

    assert_eq!(s.get(&format!("{V1}/rooms/{room}/block"), token).await.1, json!({"block": false}));
    let (status, body) = s.put(&format!("{V1}/rooms/{room}/block"), token, json!({"block": true})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"block": true})));
    assert_eq!(
        s.get(&format!("{V1}/rooms/{room}/block"), token).await.1,
        json!({"block": true, "user_id": root.user_id})
    );
    let resp = s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.put(&format!("{V1}/rooms/{room}/block"), token, json!({"block": "yes"})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    s.put(&format!("{V1}/rooms/{room}/block"), token, json!({"block": false})).await;

    // Join a user; make another the room's admin.
    let (status, body) = s.post(&format!("{V1}/join/{room}"), token, json!({"user_id": bob.user_id})).await;
    assert_eq!((status, body["room_id"].clone()), (StatusCode::OK, json!(room)));
    let (status, body) =
        s.post(&format!("{V1}/rooms/{room}/make_room_admin"), token, json!({"user_id": bob.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, levels) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"), Some(&bob.token)).await;
    assert_eq!(levels["users"][&bob.user_id], 100, "{levels}");
}

#[tokio::test]
async fn shutting_a_room_down_moves_local_users_to_a_new_room_and_purges_it() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "bad", "visibility": "public"}),
    )
    .await;
    join(&s, &bob, &room).await;
    for i in 0..5 {
        send(&s, &bob, &room, &format!("m{i}"), "illegal content").await;
    }
    let before = sync(&s, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    // Synapse's v2: a job, then its status.
    let (status, body) = s
        .request(
            Method::DELETE,
            &format!("{V2}/rooms/{room}"),
            token,
            Some(json!({"new_room_user_id": root.user_id, "room_name": "Moved", "message": "This room was shut down", "block": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let delete_id = body["delete_id"].as_str().unwrap().to_owned();
    let status_path = format!("{V2}/rooms/delete_status/{delete_id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let (status, body) = s.get(&status_path, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] == "complete" || body["status"] == "failed" {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "the delete job never ended: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "complete", "{done}");
    let shutdown = &done["shutdown_room"];
    let mut kicked: Vec<&str> =
        shutdown["kicked_users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    kicked.sort();
    assert_eq!(kicked, [alice.user_id.as_str(), bob.user_id.as_str()]);
    assert_eq!(shutdown["local_aliases"], json!(["#bad:localhost"]));
    let new_room = shutdown["new_room_id"].as_str().unwrap().to_owned();
    let (_, by_room) = s.get(&format!("{V2}/rooms/{room}/delete_status"), token).await;
    assert_eq!(by_room["results"][0]["delete_id"], delete_id);
    let (_, tasks) = s.get(&format!("{V1}/scheduled_tasks?resource_id={}", urlencode(&room)), token).await;
    assert_eq!(tasks["scheduled_tasks"][0]["action"], "shutdown_and_purge_room", "{tasks}");
    assert_eq!(tasks["scheduled_tasks"][0]["status"], "complete");

    // Local users are in the new room, which says why; the alias follows.
    let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(joined["joined_rooms"], json!([new_room]));
    let (_, messages) =
        s.get(&format!("/_matrix/client/v3/rooms/{new_room}/messages?dir=b"), Some(&bob.token)).await;
    assert!(messages.to_string().contains("This room was shut down"), "{messages}");
    let (_, alias) =
        s.get(&format!("/_matrix/client/v3/directory/room/{}", urlencode("#bad:localhost")), None).await;
    assert_eq!(alias["room_id"], new_room);
    // The room is gone: not listed, no history, not joinable (blocked);
    // sync from before goes on.
    let (_, listed) = s.get(&format!("{V1}/rooms"), token).await;
    assert!(!listed.to_string().contains(&room), "{listed}");
    assert_error(&s.get(&format!("{V1}/rooms/{room}"), token).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let resp = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), Some(&bob.token)).await;
    assert_eq!(resp.0, StatusCode::FORBIDDEN, "{}", resp.1);
    let resp = s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let after = sync(&s, &bob, &format!("since={before}&timeout=0")).await;
    assert!(!after.to_string().contains("illegal content"), "{after}");
    sync(&s, &bob, "").await;
    let (status, _) =
        s.get(&format!("/_matrix/client/v3/rooms/{new_room}/messages?dir=b"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);

    // v1 answers when done; an unknown room is fine; a bad body is not.
    let other = create_room(&s, &alice, json!({})).await;
    let (status, body) =
        s.request(Method::DELETE, &format!("{V1}/rooms/{other}"), token, Some(json!({"purge": false}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kicked_users"], json!([alice.user_id]));
    assert!(body["new_room_id"].is_null());
    let (status, _) =
        s.request(Method::DELETE, &format!("{V1}/rooms/!unknown:localhost"), token, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    let resp =
        s.request(Method::DELETE, &format!("{V1}/rooms/{other}"), token, Some(json!({"block": 1}))).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let resp = s.request(Method::DELETE, &format!("{V1}/rooms/{other}"), token, None).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_NOT_JSON");
}

#[tokio::test]
async fn server_notices_reach_the_user_in_a_room_they_cannot_reject() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let alice = s.register("alice").await;
    let path = format!("{V1}/send_server_notice");

    assert_error(
        &s.post(&path, token, json!({"user_id": alice.user_id})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    let resp = s
        .post(
            &path,
            token,
            json!({"user_id": "@nobody:localhost", "content": {"msgtype": "m.text", "body": "x"}}),
        )
        .await;
    assert_error(&resp, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let resp = s.post(&path, Some(&alice.token), json!({"user_id": alice.user_id, "content": {}})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let notice =
        json!({"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "Maintenance tonight"}});
    let (status, body) = s.put(&format!("{path}/t1"), token, notice.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event = body["event_id"].as_str().unwrap().to_owned();
    let (_, again) = s.put(&format!("{path}/t1"), token, notice.clone()).await;
    assert_eq!(again["event_id"], event, "a retried transaction sends nothing new");

    // Alice is invited to a room tagged m.server_notice; she cannot reject it.
    let synced = sync(&s, &alice, "").await;
    let invites = synced["rooms"]["invite"].as_object().expect("an invite");
    let room = invites.keys().next().unwrap().clone();
    let resp = s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&alice.token), json!({})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM");
    join(&s, &alice, &room).await;
    let (_, tags) = s
        .get(&format!("/_matrix/client/v3/user/{}/rooms/{room}/tags", alice.user_id), Some(&alice.token))
        .await;
    assert!(tags["tags"]["m.server_notice"].is_object(), "{tags}");
    let (_, messages) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), Some(&alice.token)).await;
    assert!(messages.to_string().contains("Maintenance tonight"), "{messages}");
    // She cannot talk there.
    let alice_session = Session { device_id: alice.device_id.clone(), ..alice.clone() };
    assert_eq!(send(&s, &alice_session, &room, "x", "hi").await.0, StatusCode::FORBIDDEN);

    // The next notice goes to the same room; the notices user is reserved.
    let (_, second) = s
        .post(
            &path,
            token,
            json!({"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "Done"}}),
        )
        .await;
    let (_, context) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                urlencode(second["event_id"].as_str().unwrap())
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(context["content"]["body"], "Done");
    let resp = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "notices", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
}
