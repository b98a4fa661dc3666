//! Synapse's admin API for accounts, registration tokens and reports, over
//! HTTP: who may call it, the shapes and paging Synapse's tools read, and
//! what each action does to the account.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    common::{PASSWORD, TestServer, assert_error, create_room, send, urlencode},
    media::admin_of,
};

const V1: &str = "/_synapse/admin/v1";
const V2: &str = "/_synapse/admin/v2";

async fn admin_server() -> TestServer {
    TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await
}

#[tokio::test]
async fn only_server_admins_reach_the_admin_api() {
    let s = admin_server().await;
    let alice = s.register("alice").await;
    for path in [
        format!("{V2}/users"),
        "/_synapse/admin/v3/users".into(),
        format!("{V2}/users/@alice:localhost"),
        format!("{V1}/registration_tokens"),
        format!("{V1}/event_reports"),
        format!("{V1}/user_reports"),
        format!("{V1}/users/@alice:localhost/joined_rooms"),
    ] {
        assert_error(&s.get(&path, None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        assert_error(&s.get(&path, Some("nonsense")).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
        assert_error(&s.get(&path, Some(&alice.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // A non-admin changes nothing.
    let resp =
        s.put(&format!("{V2}/users/@mallory:localhost"), Some(&alice.token), json!({"password": "x"})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(s.login("mallory", "x").await.0, StatusCode::FORBIDDEN);
    // Whois of oneself needs no admin.
    let (status, body) = s.get(&format!("{V1}/whois/{}", alice.user_id), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], alice.user_id);
    assert!(body["devices"][&alice.device_id].is_object(), "{body}");
}

#[tokio::test]
async fn admins_list_page_filter_and_order_accounts() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    for name in ["carol", "bob", "dave", "erin"] {
        s.register(name).await;
    }
    let token = Some(root.token.as_str());
    // Default: by name, 100 a page, `total` and no next_token when all fit.
    let (status, body) = s.get(&format!("{V2}/users"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> =
        body["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["@bob:localhost", "@carol:localhost", "@dave:localhost", "@erin:localhost", "@root:localhost"]
    );
    assert_eq!(body["total"], 5);
    assert!(body.get("next_token").is_none(), "{body}");
    let root_entry = &body["users"][4];
    assert_eq!(root_entry["admin"], true);
    assert_eq!(root_entry["deactivated"], false);
    assert_eq!(root_entry["is_guest"], false);
    assert!(root_entry["creation_ts"].as_u64().unwrap() > 1_600_000_000_000, "ms: {root_entry}");
    assert!(root_entry["last_seen_ts"].is_u64(), "{root_entry}");

    // Paging: a string next_token while more follow.
    let (_, page) = s.get(&format!("{V2}/users?from=0&limit=2"), token).await;
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_token"], "2");
    assert_eq!(page["total"], 5);
    let (_, last) = s.get(&format!("{V2}/users?from=4&limit=2"), token).await;
    assert_eq!(last["users"][0]["name"], "@root:localhost");
    assert!(last.get("next_token").is_none());

    // Filters and order.
    let (_, found) = s.get(&format!("{V2}/users?name=ar"), token).await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["users"][0]["name"], "@carol:localhost");
    let (_, admins) = s.get(&format!("{V2}/users?admins=true"), token).await;
    assert_eq!(admins["total"], 1);
    let (_, reversed) = s.get(&format!("{V2}/users?order_by=name&dir=b&limit=1"), token).await;
    assert_eq!(reversed["users"][0]["name"], "@root:localhost");

    // Bad parameters are Synapse's 400s.
    for (query, errcode) in [
        ("limit=-1", "M_INVALID_PARAM"),
        ("from=x", "M_INVALID_PARAM"),
        ("order_by=shoe_size", "M_INVALID_PARAM"),
        ("dir=up", "M_INVALID_PARAM"),
        ("guests=yes", "M_INVALID_PARAM"),
    ] {
        assert_error(&s.get(&format!("{V2}/users?{query}"), token).await, StatusCode::BAD_REQUEST, errcode);
    }

    // Deactivated accounts: hidden by default; v2 `deactivated=true` adds
    // them, v3 `deactivated=true` shows only them.
    let (status, body) = s.post(&format!("{V1}/deactivate/@erin:localhost"), token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, active) = s.get(&format!("{V2}/users"), token).await;
    assert_eq!(active["total"], 4);
    let (_, with) = s.get(&format!("{V2}/users?deactivated=true"), token).await;
    assert_eq!(with["total"], 5);
    let (_, only) = s.get("/_synapse/admin/v3/users?deactivated=true", token).await;
    assert_eq!(only["total"], 1);
    assert_eq!(only["users"][0]["name"], "@erin:localhost");
}

#[tokio::test]
async fn admins_create_modify_lock_suspend_and_deactivate_accounts() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());

    // Create: 201 with the account; the new user logs in.
    let path = format!("{V2}/users/{}", urlencode("@frank:localhost"));
    let (status, body) =
        s.put(&path, token, json!({"password": "pw1", "displayname": "Frank", "user_type": "bot"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "@frank:localhost");
    assert_eq!(body["displayname"], "Frank");
    assert_eq!(body["user_type"], "bot");
    assert_eq!(body["admin"], false);
    assert!(body["creation_ts"].as_u64().unwrap() < 10_000_000_000, "seconds: {body}");
    let (status, login) = s.login("frank", "pw1").await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let frank_token = login["access_token"].as_str().unwrap().to_owned();

    // Query.
    let (status, got) = s.get(&path, token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["displayname"], "Frank");
    assert_error(
        &s.get(&format!("{V2}/users/@nobody:localhost"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&format!("{V2}/users/@x:elsewhere.org"), token).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    assert_error(
        &s.get(&format!("{V2}/users/nobody"), token).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // Modify: 200; a new password logs the devices out.
    let (status, body) = s.put(&path, token, json!({"password": "pw2", "admin": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["admin"], true);
    assert_eq!(s.whoami(&frank_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.login("frank", "pw1").await.0, StatusCode::FORBIDDEN);
    let (status, login) = s.login("frank", "pw2").await;
    assert_eq!(status, StatusCode::OK);
    let frank_token = login["access_token"].as_str().unwrap().to_owned();
    // Bad fields change nothing.
    assert_error(&s.put(&path, token, json!({"admin": "yes"})).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    assert_error(
        &s.put(&path, token, json!({"user_type": "robot"})).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    assert_error(
        &s.put(&path, token, json!({"locked": true, "deactivated": true})).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    let (_, admin_flag) = s.get(&format!("{V1}/users/@frank:localhost/admin"), token).await;
    assert_eq!(admin_flag, json!({"admin": true}));
    // No demoting oneself.
    let resp = s.put(&format!("{V1}/users/{}/admin", root.user_id), token, json!({"admin": false})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let (status, _) =
        s.put(&format!("{V1}/users/@frank:localhost/admin"), token, json!({"admin": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.get(&format!("{V1}/users/@frank:localhost/admin"), token).await.1, json!({"admin": false}));

    // Locked: every request of the account is 401 M_USER_LOCKED (soft
    // logout), and so is logging in; unlocking gives it back.
    let (status, _) = s.put(&path, token, json!({"locked": true})).await;
    assert_eq!(status, StatusCode::OK);
    let resp = s.get("/_matrix/client/v3/account/whoami", Some(&frank_token)).await;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");
    assert_eq!(resp.1["soft_logout"], true);
    assert_error(&s.login("frank", "pw2").await, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");
    let (_, listed) = s.get(&format!("{V2}/users?locked=true&name=frank"), token).await;
    assert_eq!(listed["users"][0]["locked"], true, "{listed}");
    let (_, unlisted) = s.get(&format!("{V2}/users?name=frank"), token).await;
    assert_eq!(unlisted["total"], 0, "locked accounts are left out by default");
    s.put(&path, token, json!({"locked": false})).await;
    assert_eq!(s.whoami(&frank_token).await, StatusCode::OK);

    // Suspended: reads work, sending and joining do not.
    let room = create_room(&s, &root, json!({"preset": "public_chat"})).await;
    crate::common::join(
        &s,
        &crate::common::Session {
            user_id: "@frank:localhost".into(),
            token: frank_token.clone(),
            device_id: String::new(),
        },
        &room,
    )
    .await;
    let (status, body) =
        s.put(&format!("{V1}/suspend/@frank:localhost"), token, json!({"suspend": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"user_@frank:localhost_suspended": true}));
    let frank = crate::common::Session {
        user_id: "@frank:localhost".into(),
        token: frank_token.clone(),
        device_id: String::new(),
    };
    assert_error(&send(&s, &frank, &room, "t1", "hi").await, StatusCode::FORBIDDEN, "M_USER_SUSPENDED");
    assert_eq!(
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), Some(&frank_token)).await.0,
        StatusCode::OK
    );
    assert_error(
        &s.put(&format!("{V1}/suspend/@frank:localhost"), token, json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
    );
    s.put(&format!("{V1}/suspend/@frank:localhost"), token, json!({"suspend": false})).await;
    assert_eq!(send(&s, &frank, &room, "t2", "hi").await.0, StatusCode::OK);

    // Joined rooms and memberships.
    let (_, joined) = s.get(&format!("{V1}/users/@frank:localhost/joined_rooms"), token).await;
    assert_eq!(joined, json!({"joined_rooms": [room], "total": 1}));
    let (_, memberships) = s.get(&format!("{V1}/users/@frank:localhost/memberships"), token).await;
    assert_eq!(memberships["memberships"][&room], "join");

    // Deactivate with erase: leaves the room, cannot log in.
    let resp = s.post(&format!("{V1}/deactivate/@frank:localhost"), token, json!({"erase": "yes"})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let (status, body) =
        s.post(&format!("{V1}/deactivate/@frank:localhost"), token, json!({"erase": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.login("frank", "pw2").await.0, StatusCode::FORBIDDEN);
    let (_, members) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/joined_members"), Some(&root.token)).await;
    assert!(members["joined"].get("@frank:localhost").is_none(), "{members}");
    let (_, got) = s.get(&path, token).await;
    assert_eq!((got["deactivated"].clone(), got["erased"].clone()), (json!(true), json!(true)));
    assert_error(
        &s.post(&format!("{V1}/deactivate/@ghost:localhost"), token, json!({})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Reactivation needs a password.
    assert_error(
        &s.put(&path, token, json!({"deactivated": false})).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    let (status, body) = s.put(&path, token, json!({"deactivated": false, "password": "pw3"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.login("frank", "pw3").await.0, StatusCode::OK);
}

#[tokio::test]
async fn admins_manage_devices_passwords_and_log_in_as_users() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let alice = s.register("alice").await;

    let (status, body) = s.get(&format!("{V2}/users/@alice:localhost/devices"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 1);
    assert_eq!(body["devices"][0]["device_id"], alice.device_id);
    assert_eq!(body["devices"][0]["user_id"], "@alice:localhost");
    let device = format!("{V2}/users/@alice:localhost/devices/{}", alice.device_id);
    let (status, _) = s.put(&device, token, json!({"display_name": "Phone"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.get(&device, token).await.1["display_name"], "Phone");
    assert_error(
        &s.get(&format!("{V2}/users/@alice:localhost/devices/NOPE"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Log in as alice: the token acts as her, makes no device, and logs out.
    let resp = s.post(&format!("{V1}/users/{}/login", root.user_id), token, json!({})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let (status, body) = s.post(&format!("{V1}/users/@alice:localhost/login"), token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let puppet = body["access_token"].as_str().unwrap().to_owned();
    let (_, me) = s.get("/_matrix/client/v3/account/whoami", Some(&puppet)).await;
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(s.get(&format!("{V2}/users/@alice:localhost/devices"), token).await.1["total"], 1);
    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&puppet), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.whoami(&puppet).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK, "her own device stays");
    // An expired one does not work.
    let (_, body) =
        s.post(&format!("{V1}/users/@alice:localhost/login"), token, json!({"valid_until_ms": 1})).await;
    assert_eq!(s.whoami(body["access_token"].as_str().unwrap()).await, StatusCode::UNAUTHORIZED);

    // Reset password: devices out unless asked otherwise.
    let resp = s.post(&format!("{V1}/reset_password/@alice:localhost"), token, json!({})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let (status, _) = s
        .post(
            &format!("{V1}/reset_password/@alice:localhost"),
            token,
            json!({"new_password": "new", "logout_devices": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK);
    assert_eq!(s.login("alice", PASSWORD).await.0, StatusCode::FORBIDDEN);
    assert_eq!(s.login("alice", "new").await.0, StatusCode::OK);

    // Deleting devices revokes their tokens.
    let (status, _) = s.request(Method::DELETE, &device, token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.whoami(&alice.token).await, StatusCode::UNAUTHORIZED);
    let (_, left) = s.get(&format!("{V2}/users/@alice:localhost/devices"), token).await;
    let ids: Vec<Value> =
        left["devices"].as_array().unwrap().iter().map(|d| d["device_id"].clone()).collect();
    let (status, _) =
        s.post(&format!("{V2}/users/@alice:localhost/delete_devices"), token, json!({"devices": ids})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.get(&format!("{V2}/users/@alice:localhost/devices"), token).await.1["total"], 0);
}

#[tokio::test]
async fn shadow_bans_and_rate_limit_overrides() {
    let s = TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".into());
        c.rate_limits.message.per_second = 0.001;
        c.rate_limits.message.burst_count = 2;
    })
    .await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &bob, json!({"preset": "public_chat"})).await;
    crate::common::join(&s, &alice, &room).await;

    // Override: no limit at all for alice.
    let path = format!("{V1}/users/@alice:localhost/override_ratelimit");
    assert_eq!(s.get(&path, token).await.1, json!({}));
    let resp = s.post(&path, token, json!({"messages_per_second": -1})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (status, body) = s.post(&path, token, json!({"messages_per_second": 0, "burst_count": 0})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"messages_per_second": 0, "burst_count": 0})));
    for i in 0..5 {
        assert_eq!(send(&s, &alice, &room, &format!("r{i}"), "fast").await.0, StatusCode::OK);
    }
    let (status, _) = s.request(Method::DELETE, &path, token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.get(&path, token).await.1, json!({}));

    // Shadow-banned: sends seem to work and nobody sees them.
    let (status, _) = s.post(&format!("{V1}/users/@alice:localhost/shadow_ban"), token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&s, &alice, &room, "hidden", "spam spam").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fake = body["event_id"].as_str().unwrap().to_owned();
    let (status, _) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(&fake)), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, messages) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&bob.token)).await;
    assert!(!messages.to_string().contains("spam spam"), "{messages}");
    let (_, listed) = s.get(&format!("{V2}/users?name=alice"), token).await;
    assert_eq!(listed["users"][0]["shadow_banned"], true);
    let (status, _) =
        s.request(Method::DELETE, &format!("{V1}/users/@alice:localhost/shadow_ban"), token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&s, &alice, &room, "seen", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                urlencode(body["event_id"].as_str().unwrap())
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn registration_tokens_gate_registration() {
    let s = TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".into());
        c.registration.requires_token = true;
    })
    .await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let tokens = format!("{V1}/registration_tokens");

    // Made with limits; validation errors are M_INVALID_PARAM.
    let (status, body) =
        s.post(&format!("{tokens}/new"), token, json!({"token": "abc", "uses_allowed": 1})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"token": "abc", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": null})
    );
    for bad in [
        json!({"token": "abc"}),
        json!({"token": "a b"}),
        json!({"uses_allowed": -1}),
        json!({"expiry_time": 5}),
        json!({"length": 65}),
    ] {
        assert_error(
            &s.post(&format!("{tokens}/new"), token, bad).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
    let (status, random) = s.post(&format!("{tokens}/new"), token, json!({"length": 10})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(random["token"].as_str().unwrap().len(), 10);
    let (_, soon) = s
        .post(&format!("{tokens}/new"), token, json!({"token": "soon", "expiry_time": 4_102_444_800_000u64}))
        .await;
    assert_eq!(soon["expiry_time"], 4_102_444_800_000u64);

    // Registration: the flow asks for the token; a wrong one is refused.
    let register = |auth: Value, name: &str| {
        s.post("/_matrix/client/v3/register", None, json!({"username": name, "password": "pw", "auth": auth}))
    };
    let (status, flows) =
        s.post("/_matrix/client/v3/register", None, json!({"username": "u1", "password": "pw"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(flows["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = flows["session"].as_str().unwrap().to_owned();
    let (status, body) =
        register(json!({"type": "m.login.registration_token", "token": "wrong", "session": session}), "u1")
            .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
        "{body}"
    );
    let (_, validity) =
        s.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", None).await;
    assert_eq!(validity, json!({"valid": true}));

    // The right token: pending while under way, completed after.
    let (_, other) =
        s.post("/_matrix/client/v3/register", None, json!({"username": "u2", "password": "pw"})).await;
    let other_session = other["session"].as_str().unwrap().to_owned();
    // A registration that passed the stage but not the rest holds the token.
    let (status, body) = s
        .post("/_matrix/client/v3/register", None, json!({"username": "u1", "auth": {"type": "m.login.registration_token", "token": "abc", "session": session}}))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_MISSING_PARAM")),
        "{body}"
    );
    let (_, abc) = s.get(&format!("{tokens}/abc"), token).await;
    assert_eq!((abc["pending"].clone(), abc["completed"].clone()), (json!(1), json!(0)), "{abc}");
    let (status, body) =
        register(json!({"type": "m.login.registration_token", "token": "abc", "session": session}), "u1")
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, abc) = s.get(&format!("{tokens}/abc"), token).await;
    assert_eq!((abc["pending"].clone(), abc["completed"].clone()), (json!(0), json!(1)), "{abc}");
    // Used up: another registration cannot take it.
    let (status, body) = register(
        json!({"type": "m.login.registration_token", "token": "abc", "session": other_session}),
        "u2",
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
        "{body}"
    );
    let (_, validity) =
        s.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", None).await;
    assert_eq!(validity, json!({"valid": false}));
    let (_, valid) = s.get(&format!("{tokens}?valid=false"), token).await;
    assert_eq!(valid["registration_tokens"].as_array().unwrap().len(), 1, "{valid}");

    // Raising the limit revives it; revoking kills it.
    let (status, body) = s.put(&format!("{tokens}/abc"), token, json!({"uses_allowed": 2})).await;
    assert_eq!((status, body["uses_allowed"].clone()), (StatusCode::OK, json!(2)));
    let (status, _) = s.request(Method::DELETE, &format!("{tokens}/abc"), token, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = register(
        json!({"type": "m.login.registration_token", "token": "abc", "session": other_session}),
        "u2",
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
        "{body}"
    );
    assert_error(&s.get(&format!("{tokens}/abc"), token).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.request(Method::DELETE, &format!("{tokens}/abc"), token, None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // An expired token is refused.
    let (status, _) = s.put(&format!("{tokens}/soon"), token, json!({"expiry_time": null})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, all) = s.get(&tokens, token).await;
    assert_eq!(all["registration_tokens"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn reports_reach_the_admins_queue_and_are_closed() {
    let s = TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".into());
        c.server_notices.system_mxid_localpart = Some("notices".into());
    })
    .await;
    let root = admin_of(&s).await;
    let token = Some(root.token.as_str());
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Lobby"})).await;
    crate::common::join(&s, &bob, &room).await;
    let (_, sent) = send(&s, &bob, &room, "b1", "something rude").await;
    let event = sent["event_id"].as_str().unwrap().to_owned();

    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/report/{}", urlencode(&event)),
            Some(&alice.token),
            json!({"reason": "rude", "score": -100}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .post(
            "/_matrix/client/v3/users/@bob:localhost/report",
            Some(&alice.token),
            json!({"reason": "spammer"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let resp = s
        .post("/_matrix/client/v3/users/@nobody:localhost/report", Some(&alice.token), json!({"reason": "x"}))
        .await;
    assert_error(&resp, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (status, list) = s.get(&format!("{V1}/event_reports"), token).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1);
    let report = &list["event_reports"][0];
    assert_eq!(report["event_id"], event);
    assert_eq!(report["user_id"], alice.user_id);
    assert_eq!(report["sender"], bob.user_id);
    assert_eq!(report["reason"], "rude");
    assert_eq!(report["score"], -100);
    assert_eq!(report["name"], "Lobby");
    let id = report["id"].as_u64().unwrap();
    let (status, detail) = s.get(&format!("{V1}/event_reports/{id}"), token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["event_json"]["content"]["body"], "something rude");
    assert_error(
        &s.get(&format!("{V1}/event_reports/x"), token).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.get(&format!("{V1}/event_reports/999"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    let (_, users) = s.get(&format!("{V1}/user_reports"), token).await;
    assert_eq!(users["total"], 1);
    assert_eq!(users["user_reports"][0]["target_user_id"], "@bob:localhost");

    // The admins hear of each report in their moderation room (long
    // polls until the invite, then the messages, arrive).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut since = String::new();
    let mut seen = String::new();
    let mut reports_room: Option<String> = None;
    loop {
        let query =
            if since.is_empty() { "timeout=0".to_owned() } else { format!("since={since}&timeout=5000") };
        let synced = crate::common::sync(&s, &root, &query).await;
        since = synced["next_batch"].as_str().unwrap().to_owned();
        if reports_room.is_none()
            && let Some((room, _)) = synced["rooms"]["invite"].as_object().and_then(|i| i.iter().next())
        {
            crate::common::join(&s, &root, room).await;
            reports_room = Some(room.clone());
        }
        if let Some(room) = &reports_room {
            seen.push_str(&synced["rooms"]["join"][room]["timeline"].to_string());
        }
        if seen.contains(&format!("Report #{id}")) && seen.contains("reported the user @bob:localhost") {
            assert!(seen.contains("rude"), "{seen}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reports not announced: {seen}");
    }

    // Closing a report takes it out of the queue.
    let (status, _) = s.request(Method::DELETE, &format!("{V1}/event_reports/{id}"), token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.get(&format!("{V1}/event_reports"), token).await.1["total"], 0);
}

#[tokio::test]
async fn admins_redact_all_of_a_users_messages() {
    let s = admin_server().await;
    let root = admin_of(&s).await;
    let (alice, spammer) = (s.register("alice").await, s.register("spammer").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    crate::common::join(&s, &spammer, &room).await;
    let (_, kept) = send(&s, &alice, &room, "a1", "hello").await;
    let mut spam = Vec::new();
    for i in 0..3 {
        let (_, sent) = send(&s, &spammer, &room, &format!("s{i}"), "buy now").await;
        spam.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    let path = format!("{V1}/user/{}/redact", urlencode(&spammer.user_id));
    assert_error(
        &s.post(&path, Some(&alice.token), json!({"rooms": []})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    for bad in [json!({}), json!({"rooms": "all"}), json!({"rooms": [], "limit": 0})] {
        assert_error(
            &s.post(&path, Some(&root.token), bad).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
    // Newest first, at most `limit` a room; then all of them.
    let (status, body) =
        s.post(&path, Some(&root.token), json!({"rooms": [room], "limit": 1, "reason": "spam"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status_path = format!("{V1}/user/redact_status/{}", body["redact_id"].as_str().unwrap());
    let finished = redaction_done(&s, &root.token, &status_path).await;
    assert_eq!(finished, json!({"status": "completed", "failed_redactions": {}}));
    assert_eq!(content_of(&s, &alice.token, &room, &spam[2]).await, json!({}));
    assert_eq!(content_of(&s, &alice.token, &room, &spam[1]).await["body"], "buy now");
    let (_, body) = s.post(&path, Some(&root.token), json!({"rooms": []})).await;
    redaction_done(
        &s,
        &root.token,
        &format!("{V1}/user/redact_status/{}", body["redact_id"].as_str().unwrap()),
    )
    .await;
    for id in &spam {
        assert_eq!(content_of(&s, &alice.token, &room, id).await, json!({}), "{id}");
    }
    assert_eq!(
        content_of(&s, &alice.token, &room, kept["event_id"].as_str().unwrap()).await["body"],
        "hello"
    );
    let (status, _) = s.get(&format!("{V1}/user/redact_status/nope"), Some(&root.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The redaction job's status once it ended.
async fn redaction_done(s: &TestServer, token: &str, path: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = s.get(path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] != "active" && body["status"] != "scheduled" {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn content_of(s: &TestServer, token: &str, room: &str, event: &str) -> Value {
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(event)), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["content"].clone()
}
