//! Ending a room (Hearth extension): its admin closes it and removes
//! everyone they outrank; nobody gets back in.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{TestServer, create_room, join, put_state, urlencode};

#[tokio::test]
async fn a_room_admin_ends_their_room() {
    let s = TestServer::start().await;
    let (alice, bob, carol, dave) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
        s.register("dave").await,
    );
    let room = create_room(
        &s,
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "room_alias_name": "party", "name": "Party"}),
    )
    .await;
    join(&s, &bob, &room).await;
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice.token),
            json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let end = format!("/_hearth/client/v1/rooms/{room}/end");
    let alias = format!(
        "/_matrix/client/v3/directory/room/{}",
        urlencode(&format!("#party:{}", s.config.server_name))
    );

    // Only its admins may; refused attempts change nothing.
    let (status, body) = s.post(&end, Some(&bob.token), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");
    let (status, body) = s.post(&end, Some(&alice.token), json!({"reason": 5})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, _) = s.get(&alias, None).await;
    assert_eq!(status, StatusCode::OK, "still there after refusals");

    let (status, ended) = s.post(&end, Some(&alice.token), json!({"reason": "Party's over"})).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    let mut removed: Vec<String> =
        ended["removed"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect();
    removed.sort();
    assert_eq!(removed, [bob.user_id.clone(), carol.user_id.clone()], "{ended}");
    assert_eq!((ended["not_removed"].clone(), ended["left"].clone()), (json!([]), json!(true)), "{ended}");

    // Nobody is left, nobody gets back in, nothing points at it.
    for who in [&alice, &bob] {
        let (_, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&who.token)).await;
        assert_eq!(joined["joined_rooms"], json!([]), "{joined}");
    }
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&carol.token), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the invite was withdrawn: {body}");
    let (status, _) = s.get(&alias, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, public) = s.get("/_matrix/client/v3/publicRooms", Some(&dave.token)).await;
    assert_eq!(public["chunk"], json!([]), "{public}");

    // Another admin of the same power stays, and so does the one ending it
    // (in a room version where creators are not above everyone).
    let other = create_room(&s, &alice, json!({"preset": "private_chat", "room_version": "11"})).await;
    s.post(
        &format!("/_matrix/client/v3/rooms/{other}/invite"),
        Some(&alice.token),
        json!({"user_id": dave.user_id}),
    )
    .await;
    join(&s, &dave, &other).await;
    let levels = json!({"users": {alice.user_id.clone(): 100, dave.user_id.clone(): 100}});
    put_state(&s, &alice, &other, "m.room.power_levels", levels).await;
    let (status, ended) =
        s.post(&format!("/_hearth/client/v1/rooms/{other}/end"), Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(
        (ended["not_removed"].clone(), ended["left"].clone()),
        (json!([dave.user_id]), json!(false)),
        "{ended}"
    );
}
