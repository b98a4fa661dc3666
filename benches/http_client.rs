//! HTTP helpers the benchmarks share: any homeserver that offers Synapse's
//! shared-secret registration can be measured the same way.

#![allow(dead_code)]

use hearth::users::shared_secret::{Signed, compute_mac};
use serde_json::{Value, json};

/// Registers a user through shared-secret registration; returns its token.
pub async fn register(client: &reqwest::Client, url: &str, secret: &str, name: &str) -> String {
    let nonce: Value =
        client.get(format!("{url}/_synapse/admin/v1/register")).send().await.unwrap().json().await.unwrap();
    let nonce = nonce["nonce"].as_str().unwrap();
    let mac = compute_mac(
        secret,
        &Signed { nonce, username: name, password: "bench-password", admin: false, user_type: None },
    );
    let body =
        json!({"nonce": nonce, "username": name, "password": "bench-password", "admin": false, "mac": mac});
    let resp = post_json(client, format!("{url}/_synapse/admin/v1/register"), None, &body).await;
    resp["access_token"].as_str().unwrap_or_else(|| panic!("registration failed: {resp}")).to_owned()
}

pub async fn create_http_room(client: &reqwest::Client, url: &str, token: &str) -> String {
    create_room(client, url, token, json!({"preset": "private_chat"})).await
}

pub async fn create_room(client: &reqwest::Client, url: &str, token: &str, body: Value) -> String {
    let resp = post_json(client, format!("{url}/_matrix/client/v3/createRoom"), Some(token), &body).await;
    resp["room_id"].as_str().unwrap_or_else(|| panic!("createRoom failed: {resp}")).to_owned()
}

pub async fn send_http(client: &reqwest::Client, url: &str, token: &str, room: &str, txn: &str, i: usize) {
    let resp = client
        .put(format!("{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"))
        .bearer_auth(token)
        .json(&json!({"msgtype": "m.text", "body": format!("benchmark message number {i}")}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "send failed: {} {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
}

/// POSTs JSON (with an access token, if given) and returns the JSON answer.
async fn post_json(client: &reqwest::Client, url: String, token: Option<&str>, body: &Value) -> Value {
    let mut request = client.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}
