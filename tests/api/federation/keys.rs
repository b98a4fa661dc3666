//! Signing keys, the notary, and X-Matrix request signatures across servers.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use ruma::{CanonicalJsonObject, serde::Base64, signatures::Ed25519KeyPair};
use serde_json::{Value, json};

use super::{TestFederation, read, x_matrix};
use crate::common::{assert_error, urlencode};

/// Checks that `document` is signed by `signer` with `key_id` = `key`.
fn assert_signed(document: &Value, signer: &str, key_id: &str, key: &str) {
    let object: CanonicalJsonObject = serde_json::from_value(document.clone()).expect("canonical JSON");
    let mut only = object.clone();
    if let Some(ruma::CanonicalJsonValue::Object(signatures)) = only.get_mut("signatures") {
        signatures.retain(|name, _| name == signer);
    }
    let keys = BTreeMap::from([(
        signer.to_owned(),
        BTreeMap::from([(key_id.to_owned(), Base64::parse(key).expect("base64 key"))]),
    )]);
    ruma::signatures::verify_json(&keys, &only)
        .unwrap_or_else(|e| panic!("{signer} signature: {e}: {document}"));
    assert!(document["signatures"][signer][key_id].is_string(), "{document}");
}

#[tokio::test]
async fn servers_publish_and_notarise_keys() {
    let fed = TestFederation::start(2).await;
    let https = fed.https();
    let hs1 = &fed.servers[0].server().services.keys;
    let hs2 = &fed.servers[1].server().services.keys;
    let (key_id, key) = (hs1.key_id.to_string(), hs1.public_key());

    let (status, own) =
        read(https.get(format!("{}/_matrix/key/v2/server", fed.federation_url(0))).send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["server_name"], "hs1.test");
    assert_eq!(own["verify_keys"][&key_id]["key"], key.as_str());
    let now = hearth::util::now_ms();
    assert!(own["valid_until_ts"].as_u64().unwrap() > now, "{own}");
    assert_signed(&own, "hs1.test", &key_id, &key);

    // hs2 vouches for hs1's keys, fetching them from hs1.
    let url = format!("{}/_matrix/key/v2/query/hs1.test", fed.federation_url(1));
    let (status, body) = read(https.get(url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let relayed = &body["server_keys"][0];
    assert_eq!(relayed["verify_keys"][&key_id]["key"], key.as_str(), "{body}");
    assert_signed(relayed, "hs1.test", &key_id, &key);
    assert_signed(relayed, "hs2.test", hs2.key_id.as_str(), &hs2.public_key());

    let url = format!("{}/_matrix/key/v2/query", fed.federation_url(1));
    let request = json!({"server_keys": {"hs1.test": {}, "hs2.test": {}, "unknown.invalid": {}}});
    let (status, body) = read(https.post(url).json(&request).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let documents = body["server_keys"].as_array().unwrap();
    let names: Vec<&str> = documents.iter().map(|d| d["server_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hs1.test", "hs2.test"], "an unreachable server has no document: {body}");
    assert_signed(&documents[1], "hs2.test", hs2.key_id.as_str(), &hs2.public_key());
}

#[tokio::test]
async fn remote_profiles_are_asked_of_their_server() {
    let fed = TestFederation::start(2).await;
    let (hs1, hs2) = (&fed.servers[0], &fed.servers[1]);
    let alice = hs1.register("alice").await;
    let bob = hs2.register("bob").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", urlencode(&alice.user_id));
    let (status, body) = hs1.put(&path, Some(&alice.token), json!({"displayname": "Alice A."})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) =
        hs2.get(&format!("/_matrix/client/v3/profile/{}", urlencode(&alice.user_id)), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "Alice A.");
    let (status, body) = hs2.get(&path, Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"displayname": "Alice A."}));
    // hs1 checked hs2's signature with the key it fetched from hs2.
    assert!(
        fed.servers[0]
            .server()
            .services
            .db
            .contains(&hearth::storage::maps::SERVER_KEYS, b"hs2.test")
            .unwrap()
    );

    let nobody = hs2
        .get(&format!("/_matrix/client/v3/profile/{}", urlencode("@nobody:hs1.test")), Some(&bob.token))
        .await;
    assert_error(&nobody, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unreachable = hs2
        .get(&format!("/_matrix/client/v3/profile/{}", urlencode("@x:unknown.invalid")), Some(&bob.token))
        .await;
    assert_eq!(unreachable.0, StatusCode::BAD_GATEWAY, "{}", unreachable.1);
}

#[tokio::test]
async fn inbound_requests_need_a_valid_x_matrix_signature() {
    let fed = TestFederation::start_with(2, |i, config| {
        if i == 0 {
            config.federation.denied_servers = vec!["hs3.test".try_into().unwrap()];
        }
    })
    .await;
    let https = fed.https();
    fed.servers[0].register("alice").await;
    let hs2_key = &fed.servers[1].server().services.keys.keypair;
    let uri = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahs1.test";
    let url = format!("{}{uri}", fed.federation_url(0));
    let get = |authorization: Option<String>| {
        let mut request = https.get(&url);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move { read(request.send().await.unwrap()).await }
    };

    assert_error(&get(None).await, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    // Malformed (as Synapse): 400.
    assert_error(&get(Some("X-Matrix nonsense".into())).await, StatusCode::BAD_REQUEST, "M_UNAUTHORIZED");
    // Signed for another URI, another destination, or with a key hs2 does not have.
    let other_uri = x_matrix(
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=%40bob%3Ahs1.test",
        None,
        "hs2.test",
        "hs1.test",
        hs2_key,
    );
    assert_error(&get(Some(other_uri)).await, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    let other_destination = x_matrix("GET", uri, None, "hs2.test", "hs9.test", hs2_key);
    assert_error(&get(Some(other_destination)).await, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    let forger = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "forged".into()).unwrap();
    let forged = x_matrix("GET", uri, None, "hs2.test", "hs1.test", &forger);
    assert_error(&get(Some(forged)).await, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    let denied = x_matrix("GET", uri, None, "hs3.test", "hs1.test", &forger);
    assert_error(&get(Some(denied)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let (status, body) = get(Some(x_matrix("GET", uri, None, "hs2.test", "hs1.test", hs2_key))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"displayname": "alice"}));
}
