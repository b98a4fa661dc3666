//! Server-side key backup: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]`.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedRoomId, UInt,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
    },
    serde::Raw,
};
use serde_json::Value;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
    users::backup::{BackupVersion, KeyScope},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(create_version)
        .ruma(latest_version)
        .ruma(get_version)
        .ruma(update_version)
        .ruma(delete_version)
        .ruma(put_keys)
        .ruma(put_room_keys)
        .ruma(put_session_key)
        .ruma(get_keys)
        .ruma(get_room_keys)
        .ruma(get_session_key)
        .ruma(delete_keys)
        .ruma(delete_room_keys)
        .ruma(delete_session_key)
}

fn json<T>(raw: &Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|_| Error::bad_json("Not JSON"))
}

fn to_raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::new(value).map_err(Error::internal)?.cast_unchecked())
}

/// A version's description: `{algorithm, auth_data}` plus count, etag, version.
fn version_info(number: u64, record: BackupVersion) -> Result<get_backup_info::v3::Response> {
    Ok(get_backup_info::v3::Response::new(
        to_raw(&record.algorithm)?,
        UInt::new_saturating(record.count),
        record.etag.to_string(),
        number.to_string(),
    ))
}

async fn create_version(
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let algorithm = json(&req.body.algorithm)?;
    if !algorithm.get("algorithm").is_some_and(Value::is_string)
        || algorithm.get("auth_data").is_none_or(Value::is_null)
    {
        return Err(Error::bad_json("A backup version needs `algorithm` and `auth_data`"));
    }
    let version = req.services.users.create_backup(req.user(), algorithm)?;
    Ok(create_backup_version::v3::Response::new(version))
}

async fn latest_version(
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let (number, record) = req
        .services
        .users
        .latest_backup(req.user())?
        .ok_or_else(|| Error::not_found("No current backup version"))?;
    let info = version_info(number, record)?;
    Ok(get_latest_backup_info::v3::Response::new(info.algorithm, info.count, info.etag, info.version))
}

async fn get_version(req: Ruma<get_backup_info::v3::Request>) -> Result<get_backup_info::v3::Response> {
    let (number, record) = req
        .services
        .users
        .backup(req.user(), &req.body.version)?
        .ok_or_else(|| Error::not_found("Unknown backup version"))?;
    version_info(number, record)
}

async fn update_version(
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    let algorithm = json(&req.body.algorithm)?;
    if algorithm.get("auth_data").is_none_or(Value::is_null) {
        return Err(Error::bad_json("`auth_data` is required"));
    }
    req.services.users.update_backup(req.user(), &req.body.version, algorithm)?;
    Ok(update_backup_version::v3::Response::new())
}

async fn delete_version(
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    req.services.users.delete_backup(req.user(), &req.body.version)?;
    Ok(delete_backup_version::v3::Response::new())
}

/// Stores sessions; answers the version's etag and count.
fn store(
    req_services: &Services,
    user: &ruma::UserId,
    version: &str,
    keys: Vec<(OwnedRoomId, String, Value)>,
) -> Result<(String, UInt)> {
    let (etag, count) = req_services.users.put_backup_keys(user, version, keys)?;
    Ok((etag, UInt::new_saturating(count)))
}

async fn put_keys(req: Ruma<add_backup_keys::v3::Request>) -> Result<add_backup_keys::v3::Response> {
    let mut keys = Vec::new();
    for (room, backup) in &req.body.rooms {
        for (session, data) in &backup.sessions {
            keys.push((room.clone(), session.clone(), json(data)?));
        }
    }
    let (etag, count) = store(&req.services, req.user(), &req.body.version, keys)?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

async fn put_room_keys(
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let room = &req.body.room_id;
    let keys = req
        .body
        .sessions
        .iter()
        .map(|(session, data)| Ok((room.clone(), session.clone(), json(data)?)))
        .collect::<Result<_>>()?;
    let (etag, count) = store(&req.services, req.user(), &req.body.version, keys)?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn put_session_key(
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let keys = vec![(body.room_id.clone(), body.session_id.clone(), json(&body.session_data)?)];
    let (etag, count) = store(&req.services, req.user(), &body.version, keys)?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

type Sessions = BTreeMap<String, Raw<ruma::api::client::backup::KeyBackupData>>;

fn sessions(by_session: BTreeMap<String, Value>) -> Result<Sessions> {
    by_session.into_iter().map(|(session, data)| Ok((session, to_raw(&data)?))).collect()
}

async fn get_keys(req: Ruma<get_backup_keys::v3::Request>) -> Result<get_backup_keys::v3::Response> {
    let found = req.services.users.backup_keys(req.user(), &req.body.version, KeyScope::All)?;
    let rooms = found
        .into_iter()
        .map(|(room, s)| Ok((room, RoomKeyBackup::new(sessions(s)?))))
        .collect::<Result<_>>()?;
    Ok(get_backup_keys::v3::Response::new(rooms))
}

async fn get_room_keys(
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let body = &req.body;
    let mut found =
        req.services.users.backup_keys(req.user(), &body.version, KeyScope::Room(&body.room_id))?;
    let by_session = found.remove(&body.room_id).unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions(by_session)?))
}

async fn get_session_key(
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let scope = KeyScope::Session(&body.room_id, &body.session_id);
    let data = req
        .services
        .users
        .backup_keys(req.user(), &body.version, scope)?
        .remove(&body.room_id)
        .and_then(|mut s| s.remove(&body.session_id))
        .ok_or_else(|| Error::not_found("Key not found"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(to_raw(&data)?))
}

fn remove(
    req_services: &Services,
    user: &ruma::UserId,
    version: &str,
    scope: KeyScope<'_>,
) -> Result<(String, UInt)> {
    let (etag, count) = req_services.users.delete_backup_keys(user, version, scope)?;
    Ok((etag, UInt::new_saturating(count)))
}

async fn delete_keys(req: Ruma<delete_backup_keys::v3::Request>) -> Result<delete_backup_keys::v3::Response> {
    let (etag, count) = remove(&req.services, req.user(), &req.body.version, KeyScope::All)?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

async fn delete_room_keys(
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let body = &req.body;
    let (etag, count) = remove(&req.services, req.user(), &body.version, KeyScope::Room(&body.room_id))?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn delete_session_key(
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let scope = KeyScope::Session(&body.room_id, &body.session_id);
    let (etag, count) = remove(&req.services, req.user(), &body.version, scope)?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, count))
}
