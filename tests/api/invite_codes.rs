//! Room invite codes (a Hearth extension): made and listed by room admins
//! only, redeemed into an invite and a join, with expiry, use limits and
//! revocation each refused with its own error.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, create_room, join};

const V1: &str = "/_hearth/client/v1";

#[tokio::test]
async fn invite_codes_let_people_into_invite_only_rooms() {
    let s = TestServer::start().await;
    let (alice, bob, carol, dave, erin) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
        s.register("dave").await,
        s.register("erin").await,
    );
    let room = create_room(&s, &alice, json!({"preset": "private_chat", "name": "Club"})).await;
    let codes = format!("{V1}/rooms/{room}/invite_codes");

    // Only the room's admins make codes, and only for invite-only rooms.
    assert_error(&s.post(&codes, Some(&bob.token), json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let public = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let resp = s.post(&format!("{V1}/rooms/{public}/invite_codes"), Some(&alice.token), json!({})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let resp = s.post(&codes, Some(&alice.token), json!({"max_uses": 0})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    let (status, made) = s.post(&codes, Some(&alice.token), json!({"max_uses": 2})).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let code = made["code"].as_str().unwrap().to_owned();
    let week = made["expires_ts"].as_u64().unwrap() - made["created_ts"].as_u64().unwrap();
    assert_eq!(week, 7 * 24 * 3600 * 1000, "a week by default");
    assert_eq!((made["uses"].clone(), made["valid"].clone()), (json!(0), json!(true)));

    // What it leads to; then carol joins with it, once.
    let (status, shown) = s.get(&format!("{V1}/invite_codes/{code}"), Some(&carol.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((shown["room_id"].clone(), shown["name"].clone()), (json!(room), json!("Club")));
    let redeem = |token: String| {
        let path = format!("{V1}/invite_codes/{code}/redeem");
        let s = &s;
        async move { s.post(&path, Some(&token), json!({})).await }
    };
    let (status, body) = redeem(carol.token.clone()).await;
    assert_eq!((status, body["room_id"].clone()), (StatusCode::OK, json!(room)), "{body}");
    let (_, members) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&alice.token)).await;
    assert!(members["joined"].get(&carol.user_id).is_some(), "{members}");
    assert_eq!(redeem(carol.token.clone()).await.0, StatusCode::OK, "a member spends nothing");
    assert_eq!(redeem(dave.token.clone()).await.0, StatusCode::OK);
    let resp = redeem(erin.token.clone()).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "DEV.HEARTH.INVITE_CODE_USED_UP");
    let (_, members) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&alice.token)).await;
    assert!(members["joined"].get(&erin.user_id).is_none());

    // A non-admin member may not list or revoke.
    assert_error(&s.get(&codes, Some(&carol.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, listed) = s.get(&codes, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["invite_codes"][0]["uses"], 2);
    assert_eq!(listed["invite_codes"][0]["valid"], false);

    // Revoked: refused as such.
    let (_, second) = s.post(&codes, Some(&alice.token), json!({})).await;
    let second = second["code"].as_str().unwrap().to_owned();
    let resp = s.request(Method::DELETE, &format!("{codes}/{second}"), Some(&carol.token), None).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = s.request(Method::DELETE, &format!("{codes}/{second}"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK);
    let resp = s.post(&format!("{V1}/invite_codes/{second}/redeem"), Some(&erin.token), json!({})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "DEV.HEARTH.INVITE_CODE_REVOKED");

    // Expired: refused as such (a millisecond's code, once it is past).
    let (_, brief) = s.post(&codes, Some(&alice.token), json!({"expires_in_ms": 1})).await;
    let brief = brief["code"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.get(&format!("{V1}/invite_codes/{brief}"), Some(&erin.token)).await.1["valid"]
        != Value::Bool(false)
    {
        assert!(std::time::Instant::now() < deadline, "the code never expired");
    }
    let resp = s.post(&format!("{V1}/invite_codes/{brief}/redeem"), Some(&erin.token), json!({})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "DEV.HEARTH.INVITE_CODE_EXPIRED");

    // Unknown codes; a banned user cannot come back with a code.
    let resp = s.post(&format!("{V1}/invite_codes/nonsense/redeem"), Some(&erin.token), json!({})).await;
    assert_error(&resp, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&alice.token),
            json!({"user_id": dave.user_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, third) = s.post(&codes, Some(&alice.token), json!({})).await;
    let third = third["code"].as_str().unwrap().to_owned();
    let resp = s.post(&format!("{V1}/invite_codes/{third}/redeem"), Some(&dave.token), json!({})).await;
    assert_eq!(resp.0, StatusCode::FORBIDDEN, "{}", resp.1);
    let (_, after) = s.get(&format!("{V1}/invite_codes/{third}"), Some(&alice.token)).await;
    assert_eq!(after["valid"], true, "a failed use is given back");
    join(&s, &alice, &room).await;
}

#[tokio::test]
async fn server_admins_list_and_revoke_every_rooms_codes() {
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let root = crate::media::admin_of(&s).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "private_chat"})).await;
    let (status, made) =
        s.post(&format!("{V1}/rooms/{room}/invite_codes"), Some(&alice.token), json!({"max_uses": 3})).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let code = made["code"].as_str().unwrap().to_owned();
    const ADMIN: &str = "/_hearth/admin/v1/invite_codes";

    assert_error(&s.get(ADMIN, Some(&alice.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, listed) = s.get(ADMIN, Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(
        (listed["invite_codes"][0]["code"].as_str(), listed["invite_codes"][0]["room_id"].as_str()),
        (Some(code.as_str()), Some(room.as_str()))
    );
    let (_, other) = s.get(&format!("{ADMIN}?room_id=!other:localhost"), Some(&root.token)).await;
    assert_eq!(other["total"], 0, "{other}");

    let revoke = format!("{ADMIN}/{code}");
    assert_error(
        &s.request(Method::DELETE, &revoke, Some(&alice.token), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, body) = s.request(Method::DELETE, &revoke, Some(&root.token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        s.request(Method::DELETE, &format!("{ADMIN}/nosuchcode"), Some(&root.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, valid) = s.get(&format!("{ADMIN}?valid=true"), Some(&root.token)).await;
    assert_eq!(valid["total"], 0, "{valid}");
    assert_error(
        &s.post(&format!("{V1}/invite_codes/{code}/redeem"), Some(&bob.token), json!({})).await,
        StatusCode::FORBIDDEN,
        "DEV.HEARTH.INVITE_CODE_REVOKED",
    );
}
