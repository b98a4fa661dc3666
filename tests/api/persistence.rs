use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn accounts_tokens_and_keys_survive_restart() {
    let mut s = TestServer::start().await;
    let alice = s.register("alice").await;
    let key_id = s.server().services.keys.key_id.clone();
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example", alice.user_id),
            Some(&alice.token),
            json!({"kept": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    s.restart().await;

    assert_eq!(s.server().services.keys.key_id, key_id, "signing key is stable");
    assert_eq!(s.whoami(&alice.token).await, StatusCode::OK, "tokens persist");
    assert_eq!(s.login("alice", PASSWORD).await.0, StatusCode::OK);
    let (_, body) = s
        .get(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example", alice.user_id),
            Some(&alice.token),
        )
        .await;
    assert_eq!(body, json!({"kept": true}));
    s.stop().await;
}
