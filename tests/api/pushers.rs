//! Pushers and delivery to a push gateway (a fake one here, speaking the
//! Push Gateway API; `tests/clients/push_gateway.py` runs the real Sygnal).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode as AxumStatus, routing::post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::*;

const ACCEPT: u8 = 0;
const REJECT: u8 = 1;
const FAIL: u8 = 2;
const HANG: u8 = 3;

/// A push gateway on 127.0.0.1 that reports every request it gets and
/// answers as `mode` says.
pub struct Gateway {
    pub url: String,
    mode: Arc<AtomicU8>,
    received: mpsc::UnboundedReceiver<Value>,
}

impl Gateway {
    pub async fn start() -> Self {
        let (sender, received) = mpsc::unbounded_channel();
        let mode = Arc::new(AtomicU8::new(ACCEPT));
        let state = (sender, mode.clone());
        let app = Router::new()
            .route(
                "/_matrix/push/v1/notify",
                post(
                    |State((sender, mode)): State<(mpsc::UnboundedSender<Value>, Arc<AtomicU8>)>,
                     Json(body): Json<Value>| async move {
                        let pushkey = body["notification"]["devices"][0]["pushkey"].clone();
                        let _ = sender.send(body);
                        match mode.load(Ordering::SeqCst) {
                            REJECT => (AxumStatus::OK, Json(json!({"rejected": [pushkey]}))),
                            FAIL => (AxumStatus::INTERNAL_SERVER_ERROR, Json(json!({}))),
                            _ => (AxumStatus::OK, Json(json!({"rejected": []}))),
                        }
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url: format!("http://{addr}/_matrix/push/v1/notify"), mode, received }
    }

    /// The next request the gateway got (10 s at most).
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("a push within 10 s")
            .expect("gateway running")
    }

    /// The next request about an event of this type.
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        loop {
            let body = self.next().await;
            if body["notification"]["type"] == kind {
                return body;
            }
        }
    }
}

pub async fn set_pusher(s: &TestServer, who: &Session, body: Value) -> (StatusCode, Value) {
    s.post("/_matrix/client/v3/pushers/set", Some(&who.token), body).await
}

pub fn http_pusher(url: &str, pushkey: &str) -> Value {
    json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "profile_tag": "tag", "lang": "en",
        "data": {"url": url, "extra": "for the gateway"},
    })
}

#[tokio::test]
async fn pushers_are_validated_listed_and_removed() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    for bad in [
        json!({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en", "data": {}}),
        http_pusher("ftp://example.com/_matrix/push/v1/notify", "k"),
        http_pusher("https://example.com/somewhere/else", "k"),
        json!({"kind": "email", "app_id": "m.email", "pushkey": "a@example.com", "app_display_name": "E", "device_display_name": "D", "lang": "en", "data": {}}),
        json!({"kind": "http", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en", "data": {"url": "https://example.com/_matrix/push/v1/notify"}}),
    ] {
        let (status, body) = set_pusher(&s, &alice, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, listed) = s.get("/_matrix/client/v3/pushers", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!({"pushers": []}));

    let pusher = http_pusher("https://push.example.com/_matrix/push/v1/notify", "key1");
    assert_eq!(set_pusher(&s, &alice, pusher.clone()).await.0, StatusCode::OK);
    let (_, listed) = s.get("/_matrix/client/v3/pushers", Some(&alice.token)).await;
    assert_eq!(listed["pushers"][0]["data"], pusher["data"]);
    assert_eq!(listed["pushers"][0]["profile_tag"], "tag");
    // The same key set by another user without `append` moves to them.
    let bob = s.register("bob").await;
    assert_eq!(set_pusher(&s, &bob, pusher.clone()).await.0, StatusCode::OK);
    assert_eq!(s.get("/_matrix/client/v3/pushers", Some(&alice.token)).await.1["pushers"], json!([]));
    // kind null deletes; logging out removes the device's pushers.
    let (status, _) =
        set_pusher(&s, &bob, json!({"kind": null, "app_id": "org.example.app", "pushkey": "key1"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.get("/_matrix/client/v3/pushers", Some(&bob.token)).await.1["pushers"], json!([]));
    assert_eq!(set_pusher(&s, &alice, pusher).await.0, StatusCode::OK);
    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.login("alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let alice = session(&body);
    assert_eq!(s.get("/_matrix/client/v3/pushers", Some(&alice.token)).await.1["pushers"], json!([]));
}

#[tokio::test]
async fn notifications_reach_the_gateway_with_counts_retries_and_rejection() {
    let s = TestServer::start_with(|config| config.outbound.allow_private_addresses = true).await;
    let mut gateway = Gateway::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &bob, json!({"preset": "public_chat", "name": "Lounge"})).await;
    join(&s, &alice, &room).await;
    assert_eq!(set_pusher(&s, &alice, http_pusher(&gateway.url, "key1")).await.0, StatusCode::OK);

    let (_, sent) = send(&s, &bob, &room, "m1", "hello alice").await;
    let body = gateway.next_of_type("m.room.message").await;
    let n = &body["notification"];
    assert_eq!(n["event_id"], sent["event_id"]);
    assert_eq!(n["id"], sent["event_id"]);
    assert_eq!(
        (n["room_id"].as_str(), n["sender"].as_str()),
        (Some(room.as_str()), Some(bob.user_id.as_str()))
    );
    assert_eq!((n["room_name"].as_str(), n["sender_display_name"].as_str()), (Some("Lounge"), Some("bob")));
    assert_eq!(n["content"]["body"], "hello alice");
    assert_eq!(n["counts"]["unread"], 1);
    let device = &n["devices"][0];
    assert_eq!(
        (device["app_id"].as_str(), device["pushkey"].as_str()),
        (Some("org.example.app"), Some("key1"))
    );
    assert_eq!(device["data"], json!({"extra": "for the gateway"}), "url is Hearth's, not the gateway's");
    assert!(device["pushkey_ts"].is_u64() && device["tweaks"].is_object(), "{device}");

    // Reading sends the new count.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", sent["event_id"].as_str().unwrap()),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let badge = gateway.next().await;
    assert_eq!(badge["notification"]["counts"]["unread"], 0, "{badge}");
    assert!(badge["notification"].get("event_id").is_none());

    // A failing gateway gets the notification again, later.
    gateway.mode.store(FAIL, Ordering::SeqCst);
    let (_, sent) = send(&s, &bob, &room, "m2", "again").await;
    let first = gateway.next_of_type("m.room.message").await;
    assert_eq!(first["notification"]["event_id"], sent["event_id"]);
    gateway.mode.store(ACCEPT, Ordering::SeqCst);
    let retried = gateway.next_of_type("m.room.message").await;
    assert_eq!(retried["notification"]["event_id"], sent["event_id"], "the same notification, retried");

    // A rejected pushkey removes the pusher.
    gateway.mode.store(REJECT, Ordering::SeqCst);
    send(&s, &bob, &room, "m3", "gone?").await;
    gateway.next_of_type("m.room.message").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, listed) = s.get("/_matrix/client/v3/pushers", Some(&alice.token)).await;
        if listed["pushers"] == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pusher not removed: {listed}");
        tokio::task::yield_now().await;
        gateway.received.try_recv().ok();
    }
}

#[tokio::test]
async fn a_gateway_that_hangs_holds_up_no_one_else() {
    let s = TestServer::start_with(|config| config.outbound.allow_private_addresses = true).await;
    let mut slow = Gateway::start().await;
    slow.mode.store(HANG, Ordering::SeqCst);
    let mut fast = Gateway::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &bob, json!({"preset": "public_chat"})).await;
    join(&s, &alice, &room).await;
    join(&s, &carol, &room).await;
    assert_eq!(set_pusher(&s, &alice, http_pusher(&slow.url, "slow")).await.0, StatusCode::OK);
    assert_eq!(set_pusher(&s, &carol, http_pusher(&fast.url, "fast")).await.0, StatusCode::OK);
    for (txn, body) in [("m1", "one"), ("m2", "two"), ("m3", "three")] {
        let (_, sent) = send(&s, &bob, &room, txn, body).await;
        let pushed = fast.next_of_type("m.room.message").await;
        assert_eq!(pushed["notification"]["event_id"], sent["event_id"]);
    }
    // The slow gateway got its first request and is still sitting on it.
    assert_eq!(slow.next().await["notification"]["content"]["body"], "one");
}
