//! Aliases, room directory visibility, /publicRooms, space hierarchies.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn aliases_can_be_added_resolved_listed_and_removed() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "room_alias_name": "main"})).await;
    let path = "/_matrix/client/v3/directory/room/%23extra:localhost";

    // Bob is not in the room: no alias for him.
    assert_error(
        &s.put(path, Some(&bob.token), json!({"room_id": room})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(s.put(path, Some(&alice.token), json!({"room_id": room})).await.0, StatusCode::OK);
    assert_error(
        &s.put(path, Some(&alice.token), json!({"room_id": room})).await,
        StatusCode::CONFLICT,
        "M_UNKNOWN",
    );
    assert_error(
        &s.put(
            "/_matrix/client/v3/directory/room/%23x:elsewhere.org",
            Some(&alice.token),
            json!({"room_id": room}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(
            "/_matrix/client/v3/directory/room/%23y:localhost",
            Some(&alice.token),
            json!({"room_id": "!nope:localhost"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    let (status, body) = s.get(path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"room_id": room, "servers": ["localhost"]}));
    let (_, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/aliases"), Some(&alice.token)).await;
    let mut aliases: Vec<&str> =
        body["aliases"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    aliases.sort();
    assert_eq!(aliases, ["#extra:localhost", "#main:localhost"]);

    // Bob joins; as an ordinary member he may not delete alice's alias.
    s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    assert_error(
        &s.request(Method::DELETE, path, Some(&bob.token), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(s.request(Method::DELETE, path, Some(&alice.token), None).await.0, StatusCode::OK);
    assert_error(&s.get(path, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.request(Method::DELETE, path, Some(&alice.token), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/aliases"), Some(&alice.token)).await;
    assert_eq!(body["aliases"], json!(["#main:localhost"]));
}

#[tokio::test]
async fn directory_visibility_and_public_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let public = create_room(
        &s,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Garden", "topic": "Plants", "room_alias_name": "garden"}),
    )
    .await;
    let private = create_room(&s, &alice, json!({"name": "Secret"})).await;
    s.post(&format!("/_matrix/client/v3/join/{public}"), Some(&bob.token), json!({})).await;

    let vis = |room: &str| format!("/_matrix/client/v3/directory/list/room/{room}");
    assert_eq!(s.get(&vis(&public), None).await.1, json!({"visibility": "public"}));
    assert_eq!(s.get(&vis(&private), None).await.1, json!({"visibility": "private"}));
    assert_error(&s.get(&vis("!nope:localhost"), None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (status, body) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chunk"].as_array().unwrap().len(), 1, "{body}");
    let entry = &body["chunk"][0];
    assert_eq!(entry["room_id"], public.as_str());
    assert_eq!(entry["name"], "Garden");
    assert_eq!(entry["topic"], "Plants");
    assert_eq!(entry["canonical_alias"], "#garden:localhost");
    assert_eq!(entry["num_joined_members"], 2);
    assert_eq!(entry["world_readable"], false);
    assert!(entry["join_rule"].is_null() || entry["join_rule"] == "public", "absent means public: {entry}");

    // Bob may not publish alice's private room; alice may.
    assert_error(
        &s.put(&vis(&private), Some(&bob.token), json!({"visibility": "public"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(
        s.put(&vis(&private), Some(&alice.token), json!({"visibility": "public"})).await.0,
        StatusCode::OK
    );

    // Filtered search and pagination (largest room first).
    let (status, body) = s
        .post(
            "/_matrix/client/v3/publicRooms",
            Some(&alice.token),
            json!({"filter": {"generic_search_term": "secr"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(body["chunk"][0]["room_id"], private.as_str());
    let (_, first) = s.get("/_matrix/client/v3/publicRooms?limit=1", None).await;
    assert_eq!(first["chunk"][0]["room_id"], public.as_str());
    assert_eq!(first["total_room_count_estimate"], 2);
    assert!(first.get("prev_batch").is_none());
    let next = first["next_batch"].as_str().unwrap();
    let (_, second) = s.get(&format!("/_matrix/client/v3/publicRooms?limit=1&since={next}"), None).await;
    assert_eq!(second["chunk"][0]["room_id"], private.as_str());
    assert!(second.get("next_batch").is_none());
    assert!(second["prev_batch"].is_string());
    assert_error(
        &s.post("/_matrix/client/v3/publicRooms", Some(&alice.token), json!({"since": "bogus"})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // Review §2.3: an offset at the end of the number range is an empty
    // page, not an overflow.
    let (status, far) = s.get(&format!("/_matrix/client/v3/publicRooms?since=o{}", usize::MAX), None).await;
    assert_eq!(status, StatusCode::OK, "{far}");
    assert!(far["chunk"].as_array().unwrap().is_empty() && far.get("next_batch").is_none(), "{far}");

    assert_eq!(
        s.put(&vis(&private), Some(&alice.token), json!({"visibility": "private"})).await.0,
        StatusCode::OK
    );
    let (_, body) = s.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(body["chunk"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn public_rooms_filter_by_room_type() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let space = create_room(
        &s,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let room = create_room(&s, &alice, json!({"visibility": "public", "preset": "public_chat"})).await;
    let list = |types: serde_json::Value| {
        let s = &s;
        let token = alice.token.clone();
        async move {
            let (_, body) = s
                .post(
                    "/_matrix/client/v3/publicRooms",
                    Some(&token),
                    json!({"filter": {"room_types": types}}),
                )
                .await;
            body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["room_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(json!(["m.space"])).await, std::slice::from_ref(&space));
    assert_eq!(list(json!([null])).await, std::slice::from_ref(&room));
    assert_eq!(list(json!([])).await.len(), 2);
}

#[tokio::test]
async fn space_hierarchies_walk_children_the_user_may_see() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let space =
        |name: &str| json!({"preset": "public_chat", "name": name, "creation_content": {"type": "m.space"}});
    let root = create_room(&s, &alice, space("Root")).await;
    let sub = create_room(&s, &alice, space("Sub")).await;
    let public = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Public"})).await;
    let secret = create_room(&s, &alice, json!({"preset": "private_chat", "name": "Secret"})).await;
    let deep = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Deep"})).await;
    let child = |parent: &str, child: &str, content: Value| {
        let path = format!("/_matrix/client/v3/rooms/{parent}/state/m.space.child/{child}");
        let token = alice.token.clone();
        let s = &s;
        async move {
            let (status, body) = s.put(&path, Some(&token), content).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    child(&root, &public, json!({"via": ["localhost"], "order": "b", "suggested": true})).await;
    child(&root, &sub, json!({"via": ["localhost"], "order": "a"})).await;
    child(&root, &secret, json!({"via": ["localhost"], "order": "c"})).await;
    child(&sub, &deep, json!({"via": ["localhost"]})).await;
    // No `via`: not a child.
    child(&root, &deep, json!({})).await;

    let get = |who: &Session, query: &str| {
        let path = format!("/_matrix/client/v1/rooms/{root}/hierarchy{query}");
        let token = who.token.clone();
        let s = &s;
        async move { s.get(&path, Some(&token)).await }
    };
    let names = |body: &Value| -> Vec<String> {
        body["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
    };
    // Depth first, children by `order`; bob may not preview the private room.
    let (status, body) = get(&bob, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(names(&body), ["Root", "Sub", "Deep", "Public"]);
    assert!(body.get("next_batch").is_none());
    let root_entry = &body["rooms"][0];
    assert_eq!(
        (root_entry["room_type"].as_str(), root_entry["join_rule"].as_str()),
        (Some("m.space"), Some("public"))
    );
    assert_eq!(root_entry["num_joined_members"], 1);
    assert_eq!(root_entry["children_state"].as_array().unwrap().len(), 3, "{root_entry}");
    let (_, mine) = get(&alice, "").await;
    assert_eq!(names(&mine), ["Root", "Sub", "Deep", "Public", "Secret"]);
    let (_, shallow) = get(&alice, "?max_depth=1").await;
    assert_eq!(names(&shallow), ["Root", "Sub", "Public", "Secret"]);
    let (_, suggested) = get(&alice, "?suggested_only=true").await;
    assert_eq!(names(&suggested), ["Root", "Public"]);

    // Pages.
    let (_, first) = get(&alice, "?limit=2").await;
    assert_eq!(names(&first), ["Root", "Sub"]);
    let next = first["next_batch"].as_str().unwrap().to_owned();
    let (_, second) = get(&alice, &format!("?limit=2&from={next}")).await;
    assert_eq!(names(&second), ["Deep", "Public"]);
    assert_error(
        &get(&alice, &format!("?limit=2&from={next}&max_depth=1")).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // A space one may not preview is forbidden.
    let closed =
        create_room(&s, &alice, json!({"preset": "private_chat", "creation_content": {"type": "m.space"}}))
            .await;
    assert_error(
        &s.get(&format!("/_matrix/client/v1/rooms/{closed}/hierarchy"), Some(&bob.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}
