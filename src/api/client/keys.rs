//! End-to-end encryption keys: `POST /keys/upload`, `/keys/query`,
//! `/keys/claim`, `GET /keys/changes`, and cross-signing:
//! `POST /keys/device_signing/upload`, `/keys/signatures/upload`.
//!
//! Other servers' users' keys come from their cached device lists
//! (`federation::devices`) when this server follows them, else from their
//! servers (`/user/keys/query`; one-time keys always: `/user/keys/claim`);
//! a server that does not answer is listed under `failures`.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedOneTimeKeyId, UInt, UserId,
    api::client::keys::{
        claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
    },
    serde::Raw,
};
use serde_json::{Value, json};

use super::account::password_uia;
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    federation::{self, devices::Lookup},
    services::Services,
    sync,
    users::{
        cross_signing::{MASTER, SELF_SIGNING, USER_SIGNING},
        keys::JsonObject,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    // `failures` always there, empty or not, as Synapse answers.
    let with_failures = |body: &mut Value| crate::api::ruma::ensure(body, "failures", || json!({}));
    router
        .ruma(upload)
        .ruma_shaped(query, with_failures)
        .ruma_shaped(claim, with_failures)
        .ruma(changes)
        .ruma(upload_signing)
        .ruma(upload_signatures)
}

/// A server's entry under `failures`.
fn unreachable(why: impl std::fmt::Display) -> Value {
    json!({"status": 503, "message": why.to_string()})
}

/// The entries of `map` whose users are on other servers, by server (taken out).
fn remote_by_server<V>(
    users: &crate::users::Users,
    map: &mut BTreeMap<ruma::OwnedUserId, V>,
) -> BTreeMap<ruma::OwnedServerName, BTreeMap<ruma::OwnedUserId, V>> {
    let mut by_server: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
    let remote: Vec<_> = map.keys().filter(|u| !users.is_local(u)).cloned().collect();
    for user in remote {
        if let Some(value) = map.remove(&user) {
            by_server.entry(user.server_name().to_owned()).or_default().insert(user, value);
        }
    }
    by_server
}

/// How long other servers are waited for (the request's `timeout`, 10 s by default).
fn remote_timeout(timeout: Option<std::time::Duration>) -> std::time::Duration {
    timeout.unwrap_or(std::time::Duration::from_secs(10)).min(std::time::Duration::from_secs(60))
}

fn object(json: &str, what: &str) -> Result<JsonObject> {
    serde_json::from_str(json).map_err(|_| Error::bad_json(format!("{what} must be a JSON object")))
}

/// One-time or fallback keys by ID: each a key string or a signed key object.
fn key_map<T>(keys: &BTreeMap<OwnedOneTimeKeyId, Raw<T>>) -> Result<BTreeMap<String, Value>> {
    keys.iter()
        .map(|(id, raw)| {
            let value: Value = serde_json::from_str(raw.json().get()).map_err(Error::internal)?;
            let ok = value.is_string() || value.get("key").is_some_and(Value::is_string);
            if !ok {
                return Err(Error::bad_json(format!("Key {id} must be a string or an object with `key`")));
            }
            Ok((id.to_string(), value))
        })
        .collect()
}

async fn upload(req: Ruma<upload_keys::v3::Request>) -> Result<upload_keys::v3::Response> {
    let (user, device) = (req.user(), req.device());
    let users = &req.services.users;
    if let Some(keys) = &req.body.device_keys {
        users.upload_device_keys(user, device, &object(keys.json().get(), "device_keys")?)?;
    }
    let limit = req.services.config.limits.max_one_time_keys;
    users.upload_one_time_keys(user, device, &key_map(&req.body.one_time_keys)?, limit)?;
    users.upload_fallback_keys(user, device, &key_map(&req.body.fallback_keys)?)?;
    let counts = users
        .one_time_key_counts(user, device)?
        .into_iter()
        .map(|(algorithm, n)| (algorithm.into(), UInt::new_saturating(n)))
        .collect();
    Ok(upload_keys::v3::Response::new(counts))
}

fn raw_object<T>(object: &JsonObject) -> Result<Raw<T>> {
    Ok(Raw::new(object).map_err(Error::internal)?.cast_unchecked())
}

async fn query(req: Ruma<get_keys::v3::Request>) -> Result<get_keys::v3::Response> {
    let viewer = req.user();
    let users = &req.services.users;
    let mut response = get_keys::v3::Response::new();
    let mut wanted = req.body.device_keys.clone();
    let remote = remote_by_server(users, &mut wanted);
    let timeout = remote_timeout(req.body.timeout);
    // Each other server at once; its users one after another.
    let mut asking = tokio::task::JoinSet::new();
    for (server, asked) in remote {
        let services = req.services.clone();
        asking.spawn(async move { remote_keys(&services, server, asked, timeout).await });
    }
    while let Some(answer) = asking.join_next().await {
        let answer = answer.map_err(Error::internal)??;
        response.device_keys.extend(answer.device_keys);
        response.master_keys.extend(answer.master_keys);
        response.self_signing_keys.extend(answer.self_signing_keys);
        response.failures.extend(answer.failures);
    }
    for (user, devices) in &wanted {
        response.device_keys.insert(user.clone(), users.device_keys_for_query(user, devices)?);
        let cross_signing = [
            (MASTER, &mut response.master_keys),
            (SELF_SIGNING, &mut response.self_signing_keys),
            (USER_SIGNING, &mut response.user_signing_keys),
        ];
        for (usage, out) in cross_signing {
            if let Some(key) = users.cross_signing_key_for_query(user, usage, viewer)? {
                out.insert(user.clone(), raw_object(&key)?);
            }
        }
    }
    Ok(response)
}

/// Keys of `server`'s users: of those this server follows, from their
/// cached (or just fetched) device lists; of the others, and of all once
/// the server failed to list one, asked with `/user/keys/query`.
async fn remote_keys(
    services: &Services,
    server: ruma::OwnedServerName,
    asked: BTreeMap<ruma::OwnedUserId, Vec<ruma::OwnedDeviceId>>,
    timeout: std::time::Duration,
) -> Result<get_keys::v3::Response> {
    let mut response = get_keys::v3::Response::new();
    let mut rest = BTreeMap::new();
    let mut answering = true;
    for (user, devices) in asked {
        let lookup = match answering {
            true => federation::devices::for_query(services, &user).await?,
            false => Lookup::NotFollowed,
        };
        match lookup {
            Lookup::Known(list) => {
                response.device_keys.insert(user.clone(), list.keys_for_query(&devices)?);
                if let Some(key) = &list.master_key {
                    response.master_keys.insert(user.clone(), raw_object(key)?);
                }
                if let Some(key) = &list.self_signing_key {
                    response.self_signing_keys.insert(user.clone(), raw_object(key)?);
                }
            }
            Lookup::NotFollowed | Lookup::Unanswered => {
                answering &= !matches!(lookup, Lookup::Unanswered);
                rest.insert(user, devices);
            }
        }
    }
    if rest.is_empty() {
        return Ok(response);
    }
    let request = ruma::api::federation::keys::get_keys::v1::Request::new(rest);
    match tokio::time::timeout(timeout, services.servers.client.send(&server, request)).await {
        Ok(Ok(answer)) => {
            response.device_keys.extend(answer.device_keys);
            response.master_keys.extend(answer.master_keys);
            response.self_signing_keys.extend(answer.self_signing_keys);
        }
        Ok(Err(failure)) => {
            response.failures.insert(server.to_string(), unreachable(failure));
        }
        Err(_) => {
            response.failures.insert(server.to_string(), unreachable("timed out"));
        }
    }
    Ok(response)
}

async fn claim(req: Ruma<claim_keys::v3::Request>) -> Result<claim_keys::v3::Response> {
    let users = &req.services.users;
    let mut response = claim_keys::v3::Response::new(BTreeMap::new());
    let mut wanted = req.body.one_time_keys.clone();
    let remote = remote_by_server(users, &mut wanted);
    let timeout = remote_timeout(req.body.timeout);
    for (server, asked) in remote {
        let request = ruma::api::federation::keys::claim_keys::v1::Request::new(asked);
        let answer = tokio::time::timeout(timeout, req.services.servers.client.send(&server, request)).await;
        match answer {
            Ok(Ok(answer)) => response.one_time_keys.extend(answer.one_time_keys),
            Ok(Err(failure)) => {
                response.failures.insert(server.to_string(), unreachable(failure));
            }
            Err(_) => {
                response.failures.insert(server.to_string(), unreachable("timed out"));
            }
        }
    }
    for (user, devices) in &wanted {
        for (device, algorithm) in devices {
            // No key (or no such device): left out, as the spec says.
            let Some((id, key)) = users.claim_key(user, device, algorithm.as_str())? else { continue };
            let id = OwnedOneTimeKeyId::try_from(id).map_err(Error::internal)?;
            let key = Raw::new(&key).map_err(Error::internal)?.cast_unchecked();
            response
                .one_time_keys
                .entry(user.clone())
                .or_default()
                .entry(device.clone())
                .or_default()
                .insert(id, key);
        }
    }
    Ok(response)
}

async fn changes(req: Ruma<get_key_changes::v3::Request>) -> Result<get_key_changes::v3::Response> {
    let services = &req.services;
    let from = sync::parse_token(&req.body.from).map_err(|_| Error::invalid_param("Invalid `from` token"))?;
    let to = sync::parse_token(&req.body.to).map_err(|_| Error::invalid_param("Invalid `to` token"))?;
    let lists = sync::device_lists(services, req.user(), from, to.min(services.stream.visible()))?;
    Ok(get_key_changes::v3::Response::new(lists.changed, lists.left))
}

async fn upload_signing(
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let user = req.user();
    let users = &req.services.users;
    let body = &req.body;
    let mut keys = Vec::new();
    for (usage, raw) in [
        (MASTER, &body.master_key),
        (SELF_SIGNING, &body.self_signing_key),
        (USER_SIGNING, &body.user_signing_key),
    ] {
        if let Some(raw) = raw {
            let key = serde_json::from_str::<JsonObject>(raw.json().get())
                .map_err(|_| Error::invalid_param(format!("Invalid {usage} key")))?;
            keys.push((usage, key));
        }
    }
    let keys: Vec<(&str, &JsonObject)> = keys.iter().map(|(u, k)| (*u, k)).collect();
    // Uploading the keys already held is a no-op (a retry), without UIA.
    if users.cross_signing_unchanged(user, &keys)? {
        return Ok(upload_signing_keys::v3::Response::new());
    }
    // Setting up cross-signing needs no UIA; replacing it does.
    if users.cross_signing_key(user, MASTER)?.is_some() {
        password_uia(&req, user, body.auth.clone()).await?;
    }
    users.upload_cross_signing_keys(user, &keys)?;
    Ok(upload_signing_keys::v3::Response::new())
}

async fn upload_signatures(
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response> {
    let signer: &UserId = req.user();
    let mut signed = BTreeMap::new();
    for (user, keys) in &req.body.signed_keys {
        let mut items = BTreeMap::new();
        for (key_id, raw) in keys {
            items.insert(key_id.to_owned(), serde_json::from_str(raw.get()).map_err(Error::internal)?);
        }
        signed.insert(user.clone(), items);
    }
    let failures = req.services.users.upload_signatures(signer, &signed)?;
    let mut response = upload_signatures::v3::Response::new();
    for (user, by_key) in failures {
        for (key_id, failure) in by_key {
            let failure = json!({"status": failure.status.as_u16(), "errcode": failure.errcode, "error": failure.error});
            response
                .failures
                .entry(user.clone())
                .or_default()
                .insert(key_id, serde_json::from_value(failure).map_err(Error::internal)?);
        }
    }
    Ok(response)
}
