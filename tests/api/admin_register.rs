use hearth::users::shared_secret::{Signed, compute_mac};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const PATH: &str = "/_synapse/admin/v1/register";

async fn nonce(s: &TestServer) -> String {
    let (status, body) = s.get(PATH, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["nonce"].as_str().unwrap().to_owned()
}

fn mac(nonce: &str, user: &str, password: &str, admin: bool) -> String {
    compute_mac("s3cret", &Signed { nonce, username: user, password, admin, user_type: None })
}

#[tokio::test]
async fn shared_secret_registration() {
    let s = TestServer::start_with(|c| {
        c.registration.enabled = false;
        c.registration.shared_secret = Some("s3cret".into());
    })
    .await;
    let n = nonce(&s).await;
    let (status, body) = s
        .post(
            PATH,
            None,
            json!({"nonce": n, "username": "admin", "password": "pw", "admin": true,
                                 "displayname": "The Admin", "mac": mac(&n, "admin", "pw", true)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@admin:localhost");
    assert_eq!(body["home_server"], "localhost");
    assert_eq!(s.whoami(body["access_token"].as_str().unwrap()).await, StatusCode::OK);
    assert_eq!(s.login("admin", "pw").await.0, StatusCode::OK);
    let (_, profile) = s.get("/_matrix/client/v3/profile/@admin:localhost", None).await;
    assert_eq!(profile["displayname"], "The Admin");

    // A used nonce is gone.
    let resp = s
        .post(
            PATH,
            None,
            json!({"nonce": n, "username": "again", "password": "pw", "mac": mac(&n, "again", "pw", false)}),
        )
        .await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_UNKNOWN");

    // A MAC that signs other fields (admin flag flipped) is refused, and nothing is created.
    let n = nonce(&s).await;
    let resp = s.post(PATH, None, json!({"nonce": n, "username": "sneaky", "password": "pw", "admin": true, "mac": mac(&n, "sneaky", "pw", false)})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(s.login("sneaky", "pw").await.0, StatusCode::FORBIDDEN);

    // Capitals are lower-cased (the MAC covers the name as sent), as in Synapse.
    let n = nonce(&s).await;
    let (status, body) = s
        .post(PATH, None, json!({"nonce": n, "username": "Shouty", "password": "pw", "mac": mac(&n, "Shouty", "pw", false)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@shouty:localhost");

    let n = nonce(&s).await;
    assert_error(&s.post(PATH, None, json!({"nonce": n})).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn shared_secret_registration_off_by_default() {
    let s = TestServer::start().await;
    assert_error(&s.get(PATH, None).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
}
