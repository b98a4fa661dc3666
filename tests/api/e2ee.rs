//! End-to-end encryption: device, one-time and fallback keys, claims,
//! send-to-device, device-list changes, cross-signing and key backup.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use ruma::{
    canonical_json::try_from_json_map,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use crate::common::*;

const V3: &str = "/_matrix/client/v3";
const OTK: &str = "signed_curve25519";

// ---------------------------------------------------------------- helpers

async fn sync_since(s: &TestServer, who: &Session, since: &str) -> Value {
    sync(s, who, &format!("since={since}&timeout=0")).await
}

fn next(body: &Value) -> String {
    body["next_batch"].as_str().unwrap().to_owned()
}

/// Device keys for the session's device, with a field Hearth does not know.
fn device_keys(who: &Session, curve: &str) -> Value {
    let d = &who.device_id;
    json!({
        "user_id": who.user_id,
        "device_id": d,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{d}"): curve, format!("ed25519:{d}"): format!("ed-{d}")},
        "signatures": {who.user_id.as_str(): {format!("ed25519:{d}"): "c2lnbmF0dXJl"}},
        "dehydrated": true,
        "org.example.extra": {"nested": [1, "twö", null, {"deep": false}]},
    })
}

/// Signed one-time keys `signed_curve25519:<id>` (fallback-flagged if asked).
fn keys(ids: &[&str], fallback: bool) -> Value {
    let mut map = serde_json::Map::new();
    for id in ids {
        let mut key = json!({"key": format!("key-{id}"), "signatures": {"@someone:x": {"ed25519:D": "sig"}}});
        if fallback {
            key["fallback"] = json!(true);
        }
        map.insert(format!("{OTK}:{id}"), key);
    }
    Value::Object(map)
}

async fn upload(s: &TestServer, who: &Session, body: Value) -> (StatusCode, Value) {
    s.post(&format!("{V3}/keys/upload"), Some(&who.token), body).await
}

/// Uploads, asserts 200, returns the `signed_curve25519` count.
async fn upload_ok(s: &TestServer, who: &Session, body: Value) -> Value {
    let (status, resp) = upload(s, who, body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["one_time_key_counts"][OTK].clone()
}

async fn query(s: &TestServer, who: &Session, users: &[&str]) -> Value {
    let wanted: serde_json::Map<String, Value> = users.iter().map(|u| (u.to_string(), json!([]))).collect();
    let (status, body) =
        s.post(&format!("{V3}/keys/query"), Some(&who.token), json!({"device_keys": wanted})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn claim(s: &TestServer, who: &Session, wanted: Value) -> Value {
    let (status, body) =
        s.post(&format!("{V3}/keys/claim"), Some(&who.token), json!({"one_time_keys": wanted})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The one key claimed for a device, as `(key ID, key)`, if any.
fn claimed(body: &Value, user: &str, device: &str) -> Option<(String, Value)> {
    let keys = body["one_time_keys"].get(user)?.get(device)?.as_object()?;
    assert_eq!(keys.len(), 1, "one key per device and algorithm: {body}");
    keys.iter().next().map(|(id, key)| (id.clone(), key.clone()))
}

async fn send_to_device(s: &TestServer, who: &Session, txn: &str, messages: Value) -> (StatusCode, Value) {
    s.put(
        &format!("{V3}/sendToDevice/org.example.test/{txn}"),
        Some(&who.token),
        json!({"messages": messages}),
    )
    .await
}

fn to_device(body: &Value) -> Vec<Value> {
    body["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

fn changed(body: &Value) -> Vec<String> {
    body["device_lists"]["changed"]
        .as_array()
        .map(|a| a.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn left(body: &Value) -> Vec<String> {
    body["device_lists"]["left"]
        .as_array()
        .map(|a| a.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

async fn login_device(s: &TestServer, user: &str, name: &str) -> Session {
    let (status, body) = s
        .post(
            &format!("{V3}/login"),
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                   "password": PASSWORD, "initial_device_display_name": name}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    session(&body)
}

/// An ed25519 key pair whose key ID is `ed25519:<unpadded base64 public key>`.
struct SigningKey {
    pair: Ed25519KeyPair,
    public: String,
}

impl SigningKey {
    fn generate() -> Self {
        let der = Ed25519KeyPair::generate();
        let public = Ed25519KeyPair::from_der(&der, String::new()).unwrap().public_key();
        let public = Base64::<Standard, _>::new(public.to_vec()).encode();
        Self { pair: Ed25519KeyPair::from_der(&der, public.clone()).unwrap(), public }
    }

    fn id(&self) -> String {
        format!("ed25519:{}", self.public)
    }

    /// `object` with this key's signature added under `signer`.
    fn sign(&self, signer: &str, object: &Value) -> Value {
        let mut canonical = try_from_json_map(object.as_object().unwrap().clone()).unwrap();
        sign_json(signer, &self.pair, &mut canonical).unwrap();
        serde_json::to_value(&canonical).unwrap()
    }

    /// A cross-signing key object for this key.
    fn cross_signing(&self, user: &str, usage: &str) -> Value {
        json!({"user_id": user, "usage": [usage], "keys": {self.id(): self.public}})
    }
}

/// A user's master, self-signing and user-signing keys, the latter two
/// signed by the master.
struct CrossSigning {
    master: SigningKey,
    ssk: SigningKey,
    usk: SigningKey,
    body: Value,
}

fn cross_signing(user: &str) -> CrossSigning {
    let (master, ssk, usk) = (SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
    let body = json!({
        "master_key": master.cross_signing(user, "master"),
        "self_signing_key": master.sign(user, &ssk.cross_signing(user, "self_signing")),
        "user_signing_key": master.sign(user, &usk.cross_signing(user, "user_signing")),
    });
    CrossSigning { master, ssk, usk, body }
}

async fn upload_signing(s: &TestServer, who: &Session, body: Value) -> (StatusCode, Value) {
    s.post(&format!("{V3}/keys/device_signing/upload"), Some(&who.token), body).await
}

async fn upload_signatures(s: &TestServer, who: &Session, body: Value) -> Value {
    let (status, resp) = s.post(&format!("{V3}/keys/signatures/upload"), Some(&who.token), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp
}

fn no_failures(body: &Value) -> bool {
    body.get("failures").is_none_or(|f| f.as_object().is_some_and(|f| f.is_empty()))
}

// ----------------------------------------------------------- /keys/upload

#[tokio::test]
async fn device_keys_round_trip_through_query() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (status, _) = s
        .put(
            &format!("{V3}/devices/{}", alice.device_id),
            Some(&alice.token),
            json!({"display_name": "Laptop"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut uploaded = device_keys(&alice, "curve-1");
    let mut with_unsigned = uploaded.clone();
    with_unsigned["unsigned"] = json!({"device_display_name": "Forged", "foo": 1});
    // No one-time keys: the count is there, at 0.
    assert_eq!(upload_ok(&s, &alice, json!({"device_keys": with_unsigned})).await, 0);

    for viewer in [&alice, &bob] {
        let body = query(&s, viewer, &[&alice.user_id]).await;
        let devices = body["device_keys"][&alice.user_id].as_object().unwrap();
        assert_eq!(devices.len(), 1, "{body}");
        let mut got = devices[&alice.device_id].clone();
        // The server owns `unsigned`; everything else is as uploaded.
        assert_eq!(got["unsigned"], json!({"device_display_name": "Laptop"}), "{got}");
        got.as_object_mut().unwrap().remove("unsigned");
        assert_eq!(got, uploaded);
    }
    // Asking for the device by ID gives the same; an unknown device is left out.
    let (status, body) = s
        .post(
            &format!("{V3}/keys/query"),
            Some(&bob.token),
            json!({"device_keys": {alice.user_id.as_str(): [alice.device_id, "NOPE"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let devices = body["device_keys"][&alice.user_id].as_object().unwrap();
    assert_eq!(devices.keys().collect::<Vec<_>>(), [&alice.device_id]);
    assert_eq!(devices[&alice.device_id]["dehydrated"], true);
    // A local user without keys is an empty object; a remote one a failure.
    let body = query(&s, &alice, &[&bob.user_id, "@x:elsewhere.example"]).await;
    assert_eq!(body["device_keys"][&bob.user_id], json!({}), "{body}");
    assert!(body["failures"]["elsewhere.example"].is_object(), "{body}");
    assert!(body["failures"].get(s.config.server_name.as_str()).is_none());

    // Changed keys replace the old ones.
    uploaded = device_keys(&alice, "curve-2");
    upload_ok(&s, &alice, json!({"device_keys": uploaded})).await;
    let body = query(&s, &bob, &[&alice.user_id]).await;
    assert_eq!(body["device_keys"][&alice.user_id][&alice.device_id]["keys"], uploaded["keys"]);
}

#[tokio::test]
async fn invalid_device_keys_are_refused() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;

    let mut wrong_user = device_keys(&alice, "c");
    wrong_user["user_id"] = json!(bob.user_id);
    let mut wrong_device = device_keys(&alice, "c");
    wrong_device["device_id"] = json!("OTHERDEVICE");
    let mut no_algorithms = device_keys(&alice, "c");
    no_algorithms.as_object_mut().unwrap().remove("algorithms");
    let mut no_keys = device_keys(&alice, "c");
    no_keys.as_object_mut().unwrap().remove("keys");
    let bare = json!({"user_id": alice.user_id, "device_id": alice.device_id});
    for bad in [wrong_user, wrong_device, no_algorithms, no_keys, bare] {
        assert_error(
            &upload(&s, &alice, json!({"device_keys": bad})).await,
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        );
    }
    // Nothing was stored.
    let body = query(&s, &bob, &[&alice.user_id]).await;
    assert_eq!(body["device_keys"][&alice.user_id], json!({}), "{body}");
}

#[tokio::test]
async fn one_time_key_uploads_are_counted_and_idempotent() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;

    assert_eq!(upload_ok(&s, &alice, json!({})).await, 0);
    assert_eq!(upload_ok(&s, &alice, json!({"one_time_keys": keys(&["A", "B", "C"], false)})).await, 3);
    // The same keys again are skipped; overlapping ones add only the new.
    assert_eq!(upload_ok(&s, &alice, json!({"one_time_keys": keys(&["A", "B", "C"], false)})).await, 3);
    assert_eq!(upload_ok(&s, &alice, json!({"one_time_keys": keys(&["B", "C", "D"], false)})).await, 4);
    // Other signatures on the same key are still the same key.
    let mut resigned = keys(&["A"], false);
    resigned[format!("{OTK}:A")]["signatures"] = json!({"@other:x": {"ed25519:E": "other"}});
    assert_eq!(upload_ok(&s, &alice, json!({"one_time_keys": resigned})).await, 4);

    // The same ID with another key is refused, and nothing of it is stored.
    let mut conflict = keys(&["A", "E"], false);
    conflict[format!("{OTK}:A")]["key"] = json!("a different key");
    let resp = upload(&s, &alice, json!({"one_time_keys": conflict})).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    assert_eq!(upload_ok(&s, &alice, json!({})).await, 4);
    // Fallback keys are not counted.
    assert_eq!(upload_ok(&s, &alice, json!({"fallback_keys": keys(&["F"], true)})).await, 4);
}

#[tokio::test]
async fn one_time_keys_past_the_limit_are_refused() {
    let s = TestServer::start_with(|c| c.limits.max_one_time_keys = 5).await;
    let alice = s.register("alice").await;

    let six = keys(&["1", "2", "3", "4", "5", "6"], false);
    assert_error(
        &upload(&s, &alice, json!({"one_time_keys": six})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_eq!(upload_ok(&s, &alice, json!({})).await, 0, "nothing stored");

    assert_eq!(upload_ok(&s, &alice, json!({"one_time_keys": keys(&["1", "2", "3"], false)})).await, 3);
    let three_more = keys(&["4", "5", "6"], false);
    assert_error(
        &upload(&s, &alice, json!({"one_time_keys": three_more})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_eq!(upload_ok(&s, &alice, json!({})).await, 3, "nothing of the refused upload stored");
    assert_eq!(upload_ok(&s, &alice, json!({"one_time_keys": keys(&["4", "5"], false)})).await, 5);
}

// ------------------------------------------------------------ /keys/claim

#[tokio::test]
async fn claims_hand_out_keys_in_upload_order_then_the_fallback() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (a, d) = (alice.user_id.as_str(), alice.device_id.as_str());
    let want = json!({a: {d: OTK}});

    // Key 1 is uploaded before key 0, so it goes first.
    upload_ok(&s, &alice, json!({"one_time_keys": keys(&["1"], false)})).await;
    upload_ok(&s, &alice, json!({"one_time_keys": keys(&["0"], false), "fallback_keys": keys(&["F"], true)}))
        .await;
    let initial = sync(&s, &alice, "").await;
    assert_eq!(initial["device_one_time_keys_count"][OTK], 2, "{initial}");
    assert_eq!(initial["device_unused_fallback_key_types"], json!([OTK]));

    let first = claimed(&claim(&s, &bob, want.clone()).await, a, d).unwrap();
    assert_eq!(first, (format!("{OTK}:1"), keys(&["1"], false)[format!("{OTK}:1")].clone()));
    let second = claimed(&claim(&s, &bob, want.clone()).await, a, d).unwrap();
    assert_eq!(second.0, format!("{OTK}:0"));
    let body = sync_since(&s, &alice, &next(&initial)).await;
    assert_eq!(body["device_one_time_keys_count"][OTK], 0, "{body}");
    assert_eq!(body["device_unused_fallback_key_types"], json!([OTK]), "fallback not used yet");

    // No one-time keys left: the fallback key, as uploaded, again and again.
    let fallback = (format!("{OTK}:F"), keys(&["F"], true)[format!("{OTK}:F")].clone());
    assert_eq!(fallback.1["fallback"], true);
    assert_eq!(claimed(&claim(&s, &bob, want.clone()).await, a, d).unwrap(), fallback);
    let body = sync_since(&s, &alice, &next(&body)).await;
    assert_eq!(body["device_unused_fallback_key_types"], json!([]), "{body}");
    assert_eq!(claimed(&claim(&s, &bob, want.clone()).await, a, d).unwrap(), fallback);

    // Uploading the same fallback key keeps it used; a new one is unused.
    upload_ok(&s, &alice, json!({"fallback_keys": keys(&["F"], true)})).await;
    assert_eq!(sync(&s, &alice, "").await["device_unused_fallback_key_types"], json!([]));
    upload_ok(&s, &alice, json!({"fallback_keys": keys(&["G"], true)})).await;
    assert_eq!(sync(&s, &alice, "").await["device_unused_fallback_key_types"], json!([OTK]));
    assert_eq!(claimed(&claim(&s, &bob, want).await, a, d).unwrap().0, format!("{OTK}:G"));
}

#[tokio::test]
async fn claims_leave_out_what_they_cannot_give() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (a, d) = (alice.user_id.as_str(), alice.device_id.as_str());
    upload_ok(&s, &alice, json!({"one_time_keys": keys(&["only"], false)})).await;

    let body = claim(
        &s,
        &bob,
        json!({a: {d: OTK, "NOPE": OTK}, bob.user_id.as_str(): {bob.device_id.as_str(): OTK},
               "@x:elsewhere.example": {"DEV": OTK}}),
    )
    .await;
    assert_eq!(claimed(&body, a, d).unwrap().0, format!("{OTK}:only"));
    assert!(body["one_time_keys"][a].get("NOPE").is_none(), "{body}");
    assert!(body["one_time_keys"].get(&bob.user_id).is_none(), "bob has no keys: {body}");
    assert!(body["failures"]["elsewhere.example"].is_object(), "{body}");
    assert!(body["failures"].get(s.config.server_name.as_str()).is_none());

    // Each key at most once; no fallback, so nothing more.
    let body = claim(&s, &bob, json!({a: {d: OTK}})).await;
    assert!(body["one_time_keys"].get(a).is_none(), "{body}");
}

// ------------------------------------------------------------------- /sync

#[tokio::test]
async fn sync_always_reports_key_counts_and_fallback_types() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;

    let initial = sync(&s, &alice, "").await;
    assert_eq!(initial["device_one_time_keys_count"], json!({OTK: 0}), "{initial}");
    assert_eq!(initial["device_unused_fallback_key_types"], json!([]), "{initial}");
    let empty = sync_since(&s, &alice, &next(&initial)).await;
    assert_eq!(empty["device_one_time_keys_count"], json!({OTK: 0}), "{empty}");
    assert_eq!(empty["device_unused_fallback_key_types"], json!([]), "{empty}");

    upload_ok(
        &s,
        &alice,
        json!({"one_time_keys": keys(&["A", "B"], false), "fallback_keys": keys(&["F"], true)}),
    )
    .await;
    let body = sync_since(&s, &alice, &next(&empty)).await;
    assert_eq!(body["device_one_time_keys_count"][OTK], 2, "{body}");
    assert_eq!(body["device_unused_fallback_key_types"], json!([OTK]), "{body}");
    // Another device of the same user has its own counts.
    let phone = login_device(&s, "alice", "Phone").await;
    let body = sync(&s, &phone, "").await;
    assert_eq!(body["device_one_time_keys_count"], json!({OTK: 0}), "{body}");
    assert_eq!(body["device_unused_fallback_key_types"], json!([]), "{body}");
}

// ---------------------------------------------------------- send-to-device

#[tokio::test]
async fn to_device_messages_stay_until_acknowledged() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let t0 = next(&sync(&s, &bob, "").await);

    let content = json!({"secret": "s3cr3t", "nested": {"n": [1, 2]}});
    let (status, body) =
        send_to_device(&s, &alice, "t1", json!({bob.user_id.as_str(): {bob.device_id.as_str(): content}}))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let expected = vec![json!({"sender": alice.user_id, "type": "org.example.test", "content": content})];

    // Two initial syncs both return it.
    assert_eq!(to_device(&sync(&s, &bob, "").await), expected);
    let initial = sync(&s, &bob, "").await;
    assert_eq!(to_device(&initial), expected);
    // A retried incremental sync from an older token gets it again.
    assert_eq!(to_device(&sync_since(&s, &bob, &t0).await), expected);
    let first = sync_since(&s, &bob, &t0).await;
    assert_eq!(to_device(&first), expected);

    // Coming back with next_batch acknowledges it: gone for good.
    let after = sync_since(&s, &bob, &next(&first)).await;
    assert!(to_device(&after).is_empty(), "{after}");
    assert!(to_device(&sync(&s, &bob, "").await).is_empty());
    assert!(to_device(&sync_since(&s, &bob, &t0).await).is_empty());
    // Nobody else got it.
    assert!(to_device(&sync(&s, &alice, "").await).is_empty());
}

#[tokio::test]
async fn to_device_retries_and_all_devices() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let phone = login_device(&s, "bob", "Phone").await;
    let (b, d) = (bob.user_id.as_str(), bob.device_id.as_str());

    // The same transaction ID twice is one message.
    for _ in 0..2 {
        let (status, _) = send_to_device(&s, &alice, "once", json!({b: {d: {"n": 1}}})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let body = sync(&s, &bob, "").await;
    assert_eq!(to_device(&body).len(), 1, "{body}");
    assert!(to_device(&sync(&s, &phone, "").await).is_empty());
    let since = next(&body);

    // `*` reaches every device of the user; unknown devices are dropped.
    let (status, _) = send_to_device(&s, &alice, "all", json!({b: {"*": {"n": 2}}})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send_to_device(&s, &alice, "nope", json!({b: {"NOPE": {"n": 3}}})).await;
    assert_eq!(status, StatusCode::OK);
    for (who, query) in [(&bob, format!("since={since}&timeout=0")), (&phone, String::new())] {
        let body = sync(&s, who, &query).await;
        let contents: Vec<_> = to_device(&body).iter().map(|e| e["content"].clone()).collect();
        assert_eq!(contents, [json!({"n": 2})], "{}: {body}", who.device_id);
    }
}

#[tokio::test]
async fn to_device_message_wakes_a_long_poll() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let since = next(&sync(&s, &bob, "").await);

    let started = Instant::now();
    let query = format!("since={since}&timeout=30000");
    let message = json!({bob.user_id.as_str(): {bob.device_id.as_str(): {"wake": "up"}}});
    let (poll, (status, _)) = tokio::join!(sync(&s, &bob, &query), send_to_device(&s, &alice, "w", message));
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(20), "woken by the message, not the timeout");
    let contents: Vec<_> = to_device(&poll).iter().map(|e| e["content"].clone()).collect();
    assert_eq!(contents, [json!({"wake": "up"})], "{poll}");
}

#[tokio::test]
async fn more_than_a_hundred_to_device_messages_span_two_syncs() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let since = next(&sync(&s, &bob, "").await);
    for n in 0..150 {
        let message = json!({bob.user_id.as_str(): {bob.device_id.as_str(): {"n": n}}});
        let (status, body) = send_to_device(&s, &alice, &format!("m{n}"), message).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let numbers = |body: &Value| -> Vec<u64> {
        to_device(body).iter().map(|e| e["content"]["n"].as_u64().unwrap()).collect()
    };

    let first = sync_since(&s, &bob, &since).await;
    assert_eq!(numbers(&first), (0..100).collect::<Vec<_>>());
    // The rest is there at once, without waiting out the long poll.
    let started = Instant::now();
    let second = sync(&s, &bob, &format!("since={}&timeout=30000", next(&first))).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(numbers(&second), (100..150).collect::<Vec<_>>());
    let third = sync_since(&s, &bob, &next(&second)).await;
    assert!(numbers(&third).is_empty(), "{third}");
}

#[tokio::test]
async fn oversized_to_device_messages_are_refused() {
    let s = TestServer::start_with(|c| c.limits.max_to_device_message_size = 1024).await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let (b, d) = (bob.user_id.as_str(), bob.device_id.as_str());

    let big = json!({b: {d: {"blob": "x".repeat(2000)}}});
    assert_error(&send_to_device(&s, &alice, "big", big).await, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    let (status, _) = send_to_device(&s, &alice, "small", json!({b: {d: {"blob": "x".repeat(500)}}})).await;
    assert_eq!(status, StatusCode::OK);
    let events = to_device(&sync(&s, &bob, "").await);
    assert_eq!(events.len(), 1, "only the small one");
    assert_eq!(events[0]["content"]["blob"].as_str().unwrap().len(), 500);
}

// ------------------------------------------------------------ device lists

#[tokio::test]
async fn device_list_changes_follow_shared_rooms() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let t0 = next(&sync(&s, &alice, "").await);

    // A long poll is woken by the key upload of someone sharing a room.
    let started = Instant::now();
    let query = format!("since={t0}&timeout=30000");
    let (poll, _) = tokio::join!(
        sync(&s, &alice, &query),
        upload_ok(&s, &bob, json!({"device_keys": device_keys(&bob, "b1")})),
    );
    assert!(started.elapsed() < Duration::from_secs(20), "woken by the key change");
    // Carol shares no room with alice: not reported.
    upload_ok(&s, &carol, json!({"device_keys": device_keys(&carol, "c1")})).await;
    let body = sync_since(&s, &alice, &t0).await;
    assert_eq!(changed(&body), [bob.user_id.as_str()], "{body}");
    assert!(changed(&poll).contains(&bob.user_id), "{poll}");
    let t1 = next(&body);
    let (status, changes) = s.get(&format!("{V3}/keys/changes?from={t0}&to={t1}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    assert_eq!(changes["changed"], json!([bob.user_id]), "{changes}");
    assert_eq!(changes["left"], json!([]), "{changes}");

    // Bob leaves the only shared room.
    let (status, _) = s.post(&format!("{V3}/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let body = sync_since(&s, &alice, &t1).await;
    assert_eq!(left(&body), [bob.user_id.as_str()], "{body}");
    assert!(!changed(&body).contains(&bob.user_id), "{body}");
    let t2 = next(&body);
    let (_, changes) = s.get(&format!("{V3}/keys/changes?from={t1}&to={t2}"), Some(&alice.token)).await;
    assert_eq!(changes["left"], json!([bob.user_id]), "{changes}");

    // After that, bob's key changes are not alice's business.
    upload_ok(&s, &bob, json!({"device_keys": device_keys(&bob, "b2")})).await;
    let body = sync_since(&s, &alice, &t2).await;
    assert!(changed(&body).is_empty() && left(&body).is_empty(), "{body}");
}

#[tokio::test]
async fn own_key_changes_and_logout_are_device_list_changes() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let phone = login_device(&s, "alice", "Phone").await;
    let alice_t = next(&sync(&s, &alice, "").await);
    let bob_t = next(&sync(&s, &bob, "").await);

    upload_ok(&s, &alice, json!({"device_keys": device_keys(&alice, "a")})).await;
    upload_ok(
        &s,
        &phone,
        json!({"device_keys": device_keys(&phone, "p"), "one_time_keys": keys(&["1"], false)}),
    )
    .await;
    let body = sync_since(&s, &alice, &alice_t).await;
    assert_eq!(changed(&body), [alice.user_id.as_str()], "own upload: {body}");
    let alice_t = next(&body);
    let body = sync_since(&s, &bob, &bob_t).await;
    assert_eq!(changed(&body), [alice.user_id.as_str()], "{body}");
    let bob_t = next(&body);
    let devices = query(&s, &bob, &[&alice.user_id]).await["device_keys"][&alice.user_id].clone();
    assert_eq!(devices.as_object().unwrap().len(), 2, "{devices}");
    assert_eq!(devices[&phone.device_id]["unsigned"]["device_display_name"], "Phone");

    // Logging out deletes the device's keys, and says so.
    let (status, _) = s.post(&format!("{V3}/logout"), Some(&phone.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let devices = query(&s, &bob, &[&alice.user_id]).await["device_keys"][&alice.user_id].clone();
    assert_eq!(devices.as_object().unwrap().keys().collect::<Vec<_>>(), [&alice.device_id], "{devices}");
    let a = alice.user_id.as_str();
    let body = claim(&s, &bob, json!({a: {phone.device_id.as_str(): OTK}})).await;
    assert!(body["one_time_keys"].get(a).is_none(), "its one-time keys went too: {body}");
    assert_eq!(changed(&sync_since(&s, &alice, &alice_t).await), [alice.user_id.as_str()]);
    assert_eq!(changed(&sync_since(&s, &bob, &bob_t).await), [alice.user_id.as_str()]);
}

// ---------------------------------------------------------- cross-signing

#[tokio::test]
async fn cross_signing_keys_upload() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let a = alice.user_id.as_str();
    let keys = cross_signing(a);

    // A self-signing key with no master to check it against.
    let ssk_only = json!({"self_signing_key": keys.body["self_signing_key"]});
    assert_error(&upload_signing(&s, &alice, ssk_only).await, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    // A self-signing key whose signature does not cover it.
    let mut tampered = keys.body.clone();
    tampered["self_signing_key"]["org.example.added"] = json!(1);
    assert_error(&upload_signing(&s, &alice, tampered).await, StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE");
    assert!(query(&s, &alice, &[a]).await["master_keys"].get(a).is_none(), "nothing stored");

    // Setting up needs no UIA; uploading the same again neither.
    let (status, body) = upload_signing(&s, &alice, keys.body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = upload_signing(&s, &alice, keys.body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Replacing the master key needs the password.
    let other = SigningKey::generate();
    let replace = json!({"master_key": other.cross_signing(a, "master")});
    let (status, uia) = upload_signing(&s, &alice, replace.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
    assert_eq!(uia["flows"], json!([{"stages": ["m.login.password"]}]), "{uia}");
    let sid = uia["session"].as_str().unwrap();
    let body = query(&s, &alice, &[a]).await;
    assert_eq!(body["master_keys"][a], keys.body["master_key"], "unchanged before UIA");
    let mut with_auth = replace;
    with_auth["auth"] = password_auth(a, PASSWORD, Some(sid));
    let (status, body) = upload_signing(&s, &alice, with_auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = query(&s, &alice, &[a]).await;
    assert_eq!(body["master_keys"][a]["keys"], json!({other.id(): other.public}), "{body}");
}

#[tokio::test]
async fn signatures_upload_and_visibility() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let phone = login_device(&s, "alice", "Phone").await;
    let (a, b) = (alice.user_id.as_str(), bob.user_id.as_str());
    let alice_keys = cross_signing(a);
    let bob_keys = cross_signing(b);
    for (who, keys) in [(&alice, &alice_keys), (&bob, &bob_keys)] {
        let (status, body) = upload_signing(&s, who, keys.body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let device = device_keys(&alice, "a");
    upload_ok(&s, &alice, json!({"device_keys": device})).await;
    upload_ok(&s, &phone, json!({"device_keys": device_keys(&phone, "p")})).await;

    // Master and self-signing keys for everyone; the user-signing key only for its owner.
    let by_bob = query(&s, &bob, &[a]).await;
    assert_eq!(by_bob["master_keys"][a], alice_keys.body["master_key"], "{by_bob}");
    assert_eq!(by_bob["self_signing_keys"][a], alice_keys.body["self_signing_key"], "{by_bob}");
    assert!(by_bob.get("user_signing_keys").is_none_or(|k| k.get(a).is_none()), "{by_bob}");
    let own = query(&s, &alice, &[a]).await;
    assert_eq!(own["user_signing_keys"][a], alice_keys.body["user_signing_key"], "{own}");

    // Alice's self-signing key signs her device.
    let signed = alice_keys.ssk.sign(a, &device);
    let body = upload_signatures(&s, &alice, json!({a: {alice.device_id.as_str(): signed}})).await;
    assert!(no_failures(&body), "{body}");
    let got = &query(&s, &bob, &[a]).await["device_keys"][a][&alice.device_id];
    assert_eq!(got["signatures"][a][alice_keys.ssk.id()], signed["signatures"][a][alice_keys.ssk.id()]);
    assert_eq!(got["signatures"][a][format!("ed25519:{}", alice.device_id)], "c2lnbmF0dXJl", "{got}");

    // A signature by the right key over something else does not verify.
    let phone_keys = device_keys(&phone, "p");
    let elsewhere = alice_keys.ssk.sign(a, &json!({"something": "else"}));
    let mut bad = phone_keys.clone();
    bad["signatures"][a][alice_keys.ssk.id()] = elsewhere["signatures"][a][alice_keys.ssk.id()].clone();
    let body = upload_signatures(&s, &alice, json!({a: {phone.device_id.as_str(): bad}})).await;
    assert_eq!(body["failures"][a][&phone.device_id]["errcode"], "M_INVALID_SIGNATURE", "{body}");
    let got = &query(&s, &bob, &[a]).await["device_keys"][a][&phone.device_id];
    assert!(got["signatures"][a].get(alice_keys.ssk.id()).is_none(), "{got}");

    // Alice's user-signing key signs bob's master key: only alice sees it.
    let alice_t = next(&sync(&s, &alice, "").await);
    let signed = alice_keys.usk.sign(a, &bob_keys.body["master_key"]);
    let body = upload_signatures(&s, &alice, json!({b: {bob_keys.master.public.as_str(): signed}})).await;
    assert!(no_failures(&body), "{body}");
    let signature = &signed["signatures"][a][alice_keys.usk.id()];
    let master = &query(&s, &alice, &[b]).await["master_keys"][b];
    assert_eq!(&master["signatures"][a][alice_keys.usk.id()], signature, "{master}");
    for viewer in [&carol, &bob] {
        let master = &query(&s, viewer, &[b]).await["master_keys"][b];
        assert!(master["signatures"].get(a).is_none(), "{} sees alice's signature: {master}", viewer.user_id);
    }
    assert!(changed(&sync_since(&s, &alice, &alice_t).await).contains(&bob.user_id));
}

// --------------------------------------------------------------- key backup

fn session_data(verified: bool, index: u64, forwards: u64) -> Value {
    let ciphertext = format!("{verified}-{index}-{forwards}");
    json!({"first_message_index": index, "forwarded_count": forwards, "is_verified": verified,
           "session_data": {"ephemeral": "e", "ciphertext": ciphertext, "mac": "m"}})
}

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

async fn create_backup(s: &TestServer, who: &Session) -> String {
    let (status, body) = s
        .post(
            &format!("{V3}/room_keys/version"),
            Some(&who.token),
            json!({"algorithm": ALGORITHM, "auth_data": {"public_key": "pk", "signatures": {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["version"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn backup_versions_lifecycle() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let path = format!("{V3}/room_keys/version");

    assert_error(&s.get(&path, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(create_backup(&s, &alice).await, "1");
    let (status, info) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["version"], "1");
    assert_eq!(info["algorithm"], ALGORITHM);
    assert_eq!(info["auth_data"], json!({"public_key": "pk", "signatures": {}}));
    assert_eq!(info["count"], 0);
    assert!(info["etag"].is_string(), "{info}");
    assert_eq!(s.get(&format!("{path}/1"), Some(&alice.token)).await.1, info);
    assert_error(
        &s.get(&format!("{path}/7"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Only auth_data can change.
    let other = json!({"algorithm": "org.example.other", "auth_data": {"public_key": "pk2"}});
    assert_error(
        &s.put(&format!("{path}/1"), Some(&alice.token), other).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let update = json!({"algorithm": ALGORITHM, "auth_data": {"public_key": "pk2"}, "version": "1"});
    let (status, body) = s.put(&format!("{path}/1"), Some(&alice.token), update).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["auth_data"], json!({"public_key": "pk2"}));
    let unknown = json!({"algorithm": ALGORITHM, "auth_data": {}});
    assert_error(
        &s.put(&format!("{path}/7"), Some(&alice.token), unknown).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // A new version becomes current; deleting it brings back the old one.
    assert_eq!(create_backup(&s, &alice).await, "2");
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["version"], "2");
    let (status, body) = s.request(Method::DELETE, &format!("{path}/2"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &s.get(&format!("{path}/2"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, body) = s.request(Method::DELETE, &format!("{path}/2"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK, "deleting a deleted version succeeds: {body}");
    assert_error(
        &s.request(Method::DELETE, &format!("{path}/9"), Some(&alice.token), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_eq!(s.get(&path, Some(&alice.token)).await.1["version"], "1");
    assert_eq!(create_backup(&s, &alice).await, "3", "version numbers are not reused");
    // Another user sees none of it.
    let bob = s.register("bob").await;
    assert_error(&s.get(&path, Some(&bob.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn backup_keeps_the_better_session_key() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let version = create_backup(&s, &alice).await;
    let room = urlencode("!room:example.org");
    let key_path = format!("{V3}/room_keys/keys/{room}/sess?version={version}");
    let put = |data: Value| {
        let (s, alice, key_path) = (&s, &alice, &key_path);
        async move {
            let (status, body) = s.put(key_path, Some(&alice.token), data).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["count"], 1, "{body}");
            body["etag"].as_str().unwrap().to_owned()
        }
    };
    let stored = || async {
        let (status, body) = s.get(&key_path, Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };

    let mut etag = put(session_data(false, 10, 5)).await;
    // Worse or equal candidates change nothing, not even the etag.
    for worse in [
        session_data(false, 11, 5),
        session_data(false, 10, 6),
        session_data(false, 11, 0),
        session_data(false, 10, 5),
    ] {
        assert_eq!(put(worse.clone()).await, etag, "{worse}");
        assert_eq!(stored().await, session_data(false, 10, 5));
    }
    // Lower forwarded count, then lower index, then verified: each replaces.
    for better in [session_data(false, 10, 4), session_data(false, 9, 100), session_data(true, 20, 20)] {
        let new_etag = put(better.clone()).await;
        assert_ne!(new_etag, etag, "{better}");
        etag = new_etag;
        assert_eq!(stored().await, better);
    }
    // An unverified key never replaces a verified one; a better verified one does.
    for worse in [session_data(false, 0, 0), session_data(true, 21, 0), session_data(true, 20, 21)] {
        assert_eq!(put(worse.clone()).await, etag, "{worse}");
        assert_eq!(stored().await, session_data(true, 20, 20));
    }
    assert_ne!(put(session_data(true, 19, 30)).await, etag);
    assert_eq!(stored().await, session_data(true, 19, 30));
}

#[tokio::test]
async fn backup_keys_by_room_and_session_and_old_versions() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let token = Some(alice.token.as_str());
    let keys_path = format!("{V3}/room_keys/keys");
    let (r1, r2) = ("!one:example.org", "!two:example.org");
    let (e1, e2) = (urlencode(r1), urlencode(r2));

    // No backup at all.
    assert_error(
        &s.put(&format!("{keys_path}?version=1"), token, json!({"rooms": {}})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let v1 = create_backup(&s, &alice).await;
    let (status, body) = s
        .put(
            &format!("{keys_path}?version={v1}"),
            token,
            json!({"rooms": {
                r1: {"sessions": {"a": session_data(false, 0, 0), "b": session_data(false, 1, 0)}},
                r2: {"sessions": {"c": session_data(true, 0, 0)}},
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 3, "{body}");
    let etag = body["etag"].clone();
    assert!(etag.is_string());
    let (status, body) = s
        .put(
            &format!("{keys_path}/{e2}?version={v1}"),
            token,
            json!({"sessions": {"d": session_data(false, 0, 0)}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 4);
    assert_ne!(body["etag"], etag);
    let info = s.get(&format!("{V3}/room_keys/version/{v1}"), token).await.1;
    assert_eq!((&info["count"], &info["etag"]), (&json!(4), &body["etag"]), "{info}");

    // Reads: everything, one room, one session.
    let (status, all) = s.get(&format!("{keys_path}?version={v1}"), token).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["rooms"][r1]["sessions"]["b"], session_data(false, 1, 0));
    assert_eq!(all["rooms"][r2]["sessions"].as_object().unwrap().len(), 2, "{all}");
    let (status, room) = s.get(&format!("{keys_path}/{e1}?version={v1}"), token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(room, json!({"sessions": {"a": session_data(false, 0, 0), "b": session_data(false, 1, 0)}}));
    let (_, empty) =
        s.get(&format!("{keys_path}/{}?version={v1}", urlencode("!none:example.org")), token).await;
    assert_eq!(empty, json!({"sessions": {}}));
    let (status, one) = s.get(&format!("{keys_path}/{e2}/c?version={v1}"), token).await;
    assert_eq!((status, one), (StatusCode::OK, session_data(true, 0, 0)));
    assert_error(
        &s.get(&format!("{keys_path}/{e2}/zzz?version={v1}"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.get(&format!("{keys_path}?version=42"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Deleting keys updates the count and etag.
    let (status, body) =
        s.request(Method::DELETE, &format!("{keys_path}/{e2}/c?version={v1}"), token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 3);
    let (status, body) =
        s.request(Method::DELETE, &format!("{keys_path}/{e1}?version={v1}"), token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    assert_error(
        &s.get(&format!("{keys_path}/{e2}/c?version={v1}"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Version 2 takes over: version 1 stays readable but not writable.
    let v2 = create_backup(&s, &alice).await;
    assert_eq!(v2, "2");
    let resp = s.put(&format!("{keys_path}/{e1}/x?version={v1}"), token, session_data(false, 0, 0)).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(resp.1["current_version"], "2", "{}", resp.1);
    let resp = s.put(&format!("{keys_path}?version={v1}"), token, json!({"rooms": {}})).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(resp.1["current_version"], "2");
    assert_error(
        &s.put(&format!("{keys_path}/{e1}/x?version=42"), token, session_data(false, 0, 0)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, one) = s.get(&format!("{keys_path}/{e2}/d?version={v1}"), token).await;
    assert_eq!((status, one), (StatusCode::OK, session_data(false, 0, 0)));
    let (status, body) =
        s.put(&format!("{keys_path}/{e1}/x?version={v2}"), token, session_data(false, 0, 0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1, "counts are per version");

    // Deleting everything in a version.
    let (status, body) = s.request(Method::DELETE, &format!("{keys_path}?version={v2}"), token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 0);
    assert_eq!(s.get(&format!("{keys_path}?version={v2}"), token).await.1, json!({"rooms": {}}));
}
