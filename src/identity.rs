//! Identity servers, for invites by email address (third-party invites):
//! who an address is bound to, storing an invite for an unbound one, and
//! whether a key that signed an invite acceptance is still valid. Always
//! over HTTPS, as Synapse; the client names the server and gives its token.

use ruma::{
    OwnedUserId, ServerName,
    serde::{Base64, base64::UrlSafe},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Error, Result, outbound::Outbound};

fn base_url(id_server: &str) -> Result<url::Url> {
    // A server name (host and port), nothing that could change the URL.
    ServerName::parse(id_server).map_err(|_| Error::invalid_param("id_server is not a server name"))?;
    url::Url::parse(&format!("https://{id_server}"))
        .map_err(|_| Error::invalid_param("id_server is not a server name"))
}

/// The client learns that the identity server failed, not how (which
/// would tell it what the server's network reaches); the log has the rest.
fn unavailable(e: impl std::fmt::Display) -> Error {
    tracing::info!("identity server request failed: {e}");
    Error::new(
        http::StatusCode::BAD_GATEWAY,
        ruma::api::error::ErrorKind::Unknown,
        "Error contacting the identity server",
    )
}

/// The user an address is bound to; `None` when unbound, or when the
/// identity server cannot say (as Synapse, the invite then goes by email).
pub async fn lookup(
    outbound: &Outbound,
    id_server: &str,
    token: &str,
    medium: &str,
    address: &str,
) -> Option<OwnedUserId> {
    let base = base_url(id_server).ok()?;
    let details = outbound
        .request(
            reqwest::Method::GET,
            &base.join("/_matrix/identity/v2/hash_details").ok()?,
            Some(token),
            None,
        )
        .await
        .ok()?;
    let pepper = details["lookup_pepper"].as_str().unwrap_or_default();
    let algorithms = details["algorithms"].as_array().cloned().unwrap_or_default();
    let (algorithm, lookup) = if algorithms.iter().any(|a| a == "sha256") {
        let hash = Sha256::digest(format!("{address} {medium} {pepper}").as_bytes());
        ("sha256", Base64::<UrlSafe, Vec<u8>>::new(hash.to_vec()).encode())
    } else if algorithms.iter().any(|a| a == "none") {
        ("none", format!("{address} {medium}"))
    } else {
        return None;
    };
    let body = json!({"addresses": [lookup], "algorithm": algorithm, "pepper": pepper});
    let found = outbound
        .request(
            reqwest::Method::POST,
            &base.join("/_matrix/identity/v2/lookup").ok()?,
            Some(token),
            Some(&body),
        )
        .await
        .ok()?;
    found["mappings"][&lookup].as_str().and_then(|user| OwnedUserId::try_from(user).ok())
}

/// An invite stored for an unbound address: the token to name it by and the
/// `m.room.third_party_invite` content announcing it.
pub struct StoredInvite {
    pub token: String,
    pub content: Value,
}

/// Asks the identity server to keep an invite (and tell the invitee);
/// `details` are the spec's `store-invite` fields (room, sender, names).
pub async fn store_invite(
    outbound: &Outbound,
    id_server: &str,
    token: &str,
    details: &Value,
) -> Result<StoredInvite> {
    let base = base_url(id_server)?;
    let url = base.join("/_matrix/identity/v2/store-invite").map_err(Error::internal)?;
    let stored = outbound
        .request(reqwest::Method::POST, &url, Some(token), Some(details))
        .await
        .map_err(unavailable)?;
    let invite_token =
        stored["token"].as_str().ok_or_else(|| unavailable("no token in its answer"))?.to_owned();
    let default_validity = base.join("/_matrix/identity/v2/pubkey/isvalid").map_err(Error::internal)?;
    let fallback = match stored["public_key"].as_str() {
        Some(key) => json!({"public_key": key, "key_validity_url": default_validity.as_str()}),
        None => stored["public_keys"][0].clone(),
    };
    if !fallback["public_key"].is_string() {
        return Err(unavailable("no public key in its answer"));
    }
    let public_keys = match stored["public_keys"].as_array() {
        Some(keys) if !keys.is_empty() => Value::Array(keys.clone()),
        _ => json!([fallback]),
    };
    let content = json!({
        "display_name": stored["display_name"].as_str().unwrap_or("an invitee"),
        "public_key": fallback["public_key"],
        "key_validity_url": fallback["key_validity_url"],
        "public_keys": public_keys,
    });
    Ok(StoredInvite { token: invite_token, content })
}

/// Whether the identity server still vouches for a public key (asked each
/// time: a key can be revoked between signing and use).
pub async fn key_is_valid(outbound: &Outbound, validity_url: &str, public_key: &str) -> Result<bool> {
    let url = url::Url::parse_with_params(validity_url, [("public_key", public_key)])
        .map_err(|_| Error::forbidden("The invite's key validity URL is not a URL"))?;
    let answer = outbound.request(reqwest::Method::GET, &url, None, None).await.map_err(unavailable)?;
    Ok(answer["valid"] == true)
}
