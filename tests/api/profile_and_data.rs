use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn profile_fields() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let base = format!("/_matrix/client/v3/profile/{}", alice.user_id);

    let (status, body) = s.get(&base, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["displayname"], "alice", "defaults to the localpart");

    let (status, _) =
        s.put(&format!("{base}/displayname"), Some(&alice.token), json!({"displayname": "Alice A."})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .put(&format!("{base}/avatar_url"), Some(&alice.token), json!({"avatar_url": "mxc://localhost/abc"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.get(&format!("{base}/displayname"), None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"displayname": "Alice A."})));
    let (_, body) = s.get(&base, None).await;
    assert_eq!(body, json!({"displayname": "Alice A.", "avatar_url": "mxc://localhost/abc"}));

    // Extended profile keys, and deleting one.
    let (status, _) =
        s.put(&format!("{base}/m.tz"), Some(&alice.token), json!({"m.tz": "Europe/Paris"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        s.request(Method::DELETE, &format!("{base}/avatar_url"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK);
    // An unset avatar or name is `{}`, as Synapse answers; other keys are not found.
    assert_eq!(s.get(&format!("{base}/avatar_url"), None).await, (StatusCode::OK, json!({})));
    assert_error(&s.get(&format!("{base}/m.pronouns"), None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, body) = s.get(&base, None).await;
    assert_eq!(body, json!({"displayname": "Alice A.", "m.tz": "Europe/Paris"}));

    // Key names follow the spec's grammar.
    assert_error(
        &s.put(&format!("{base}/foo"), Some(&alice.token), json!({"foo": 1})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let long_key = format!("org.example.{}", "k".repeat(260));
    assert_error(
        &s.put(&format!("{base}/{long_key}"), Some(&alice.token), json!({long_key.clone(): 1})).await,
        StatusCode::BAD_REQUEST,
        "M_KEY_TOO_LARGE",
    );
    assert_error(
        &s.put(
            &format!("{base}/org.example.big"),
            Some(&alice.token),
            json!({"org.example.big": "x".repeat(70_000)}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_PROFILE_TOO_LARGE",
    );

    // Others cannot change it; unknown users have none.
    let bob = s.register("bob").await;
    assert_error(
        &s.put(&format!("{base}/displayname"), Some(&bob.token), json!({"displayname": "pwned"})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &s.put(&format!("{base}/displayname"), None, json!({"displayname": "x"})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &s.get("/_matrix/client/v3/profile/@nobody:localhost", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get("/_matrix/client/v3/profile/not-a-user-id", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.put(&format!("{base}/displayname"), Some(&alice.token), json!({"displayname": "x".repeat(300)}))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (_, body) = s.get(&format!("{base}/displayname"), None).await;
    assert_eq!(body["displayname"], "Alice A.");
}

#[tokio::test]
async fn global_and_room_account_data() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.settings", alice.user_id);
    assert_error(&s.get(&global, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, _) = s.put(&global, Some(&alice.token), json!({"theme": "dark", "n": [1, 2]})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.get(&global, Some(&alice.token)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"theme": "dark", "n": [1, 2]})));

    let room =
        format!("/_matrix/client/v3/user/{}/rooms/!room:localhost/account_data/m.tag.like", alice.user_id);
    let (status, _) = s.put(&room, Some(&alice.token), json!({"v": 1})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = s.get(&room, Some(&alice.token)).await;
    assert_eq!(body, json!({"v": 1}));
    // Room and global data of the same type are separate.
    assert_error(
        &s.get(
            &format!("/_matrix/client/v3/user/{}/account_data/m.tag.like", alice.user_id),
            Some(&alice.token),
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    let bob = s.register("bob").await;
    assert_error(&s.get(&global, Some(&bob.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.put(&global, Some(&bob.token), json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/!room:localhost/account_data/m.fully_read",
                alice.user_id
            ),
            Some(&alice.token),
            json!({"event_id": "$x"}),
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_BAD_JSON",
    );
    assert_error(
        &s.put(&global, Some(&alice.token), json!([1, 2])).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/user/{}/rooms/not-a-room/account_data/x", alice.user_id),
            Some(&alice.token),
            json!({}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (_, body) = s.get(&global, Some(&alice.token)).await;
    assert_eq!(body, json!({"theme": "dark", "n": [1, 2]}), "failed writes changed nothing");
}

#[tokio::test]
async fn filters_are_stored_per_user() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let path = format!("/_matrix/client/v3/user/{}/filter", alice.user_id);
    let filter = json!({"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": true}}});
    let (status, body) = s.post(&path, Some(&alice.token), filter.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["filter_id"].as_str().unwrap().to_owned();
    let (_, second) = s.post(&path, Some(&alice.token), json!({})).await;
    assert_ne!(second["filter_id"], id.as_str());

    let (status, body) = s.get(&format!("{path}/{id}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["room"]["timeline"]["limit"], 10);
    assert_eq!(body["room"]["state"]["lazy_load_members"], true);

    assert_error(
        &s.get(&format!("{path}/999"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&format!("{path}/abc"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let bob = s.register("bob").await;
    assert_error(
        &s.get(&format!("{path}/{id}"), Some(&bob.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(&s.post(&path, Some(&bob.token), json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}
