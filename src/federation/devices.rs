//! Device lists across servers.
//!
//! Out: when a local user's devices change, each device whose keys or name
//! changed (or that was deleted) goes as an `m.device_list_update` to every
//! server sharing a room with them, numbered per user with `prev_id`
//! naming the update before, so a server that missed one knows to ask
//! `/user/devices` again; cross-signing keys go as `m.signing_key_update`.
//!
//! In: other servers' users' lists are cached (`users::remote_devices`)
//! while they share a room with a local user. An update whose `prev_id`
//! is the cached stream ID is applied; otherwise, or with nothing cached,
//! the whole list is fetched again (`/user/devices`, in the background:
//! the transaction is answered first). `/keys/query`
//! answers from the cache, fetching the list first when there is none.
//! Which lists are let go as rooms stop being shared is the rooms'
//! pipeline's (`let_go_of_device_lists`), in the write of the membership.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use ruma::{
    OwnedDeviceId, OwnedServerName, ServerName, UInt, UserId,
    api::federation::{
        device::get_devices::v1 as get_devices,
        transactions::edu::{DeviceListUpdateContent, SigningKeyUpdateContent},
    },
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Error, Result,
    services::Services,
    storage::{Batch, decode_u64, maps},
    users::{
        cross_signing::{MASTER, SELF_SIGNING},
        keys::JsonObject,
        remote_devices::{RemoteDevice, RemoteDeviceList},
    },
};

/// How long another server is given to list a user's devices.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// A response body limit for a device list.
const MAX_LIST_BYTES: usize = 4 * 1024 * 1024;
/// Users with more devices than this are not cached (asked each time).
const MAX_DEVICES: usize = 1000;

// ---- out ---------------------------------------------------------------------------

/// What was last told to other servers about a local user's devices.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SentDeviceList {
    /// The stream ID of the last update (the next one's `prev_id`).
    stream_id: u64,
    /// A hash of each device's update as sent.
    devices: BTreeMap<OwnedDeviceId, u64>,
    /// A hash of the cross-signing keys as last sent.
    #[serde(default)]
    signing: Option<u64>,
}

fn sent_key(user: &UserId) -> Vec<u8> {
    [b"federation.device_list_sent.", user.as_bytes()].concat()
}

fn sent(services: &Services, user: &UserId) -> Result<SentDeviceList> {
    let Some(bytes) = services.db.get(&maps::GLOBAL, &sent_key(user))? else { return Ok(Default::default()) };
    // Before the per-device record: the last stream ID alone.
    if bytes.len() == 8 {
        return Ok(SentDeviceList { stream_id: decode_u64(&bytes)?, ..Default::default() });
    }
    serde_json::from_slice(&bytes).map_err(Error::internal)
}

/// The stream ID `/user/devices` reports for a local user: that of the
/// last update sent.
pub fn local_stream_id(services: &Services, user: &UserId) -> Result<u64> {
    Ok(sent(services, user)?.stream_id)
}

fn hash_of(value: &Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Tells the servers sharing a room with `user` what changed in their
/// device list since the last time.
pub fn send_change(services: &Services, user: &UserId, destinations: &[OwnedServerName]) -> Result<()> {
    let mut sent = sent(services, user)?;
    let keys = services.users.device_keys_for_query(user, &[])?;
    let mut updates = Vec::new();
    let mut now = BTreeMap::new();
    for (device, record) in services.users.list_devices(user)? {
        let mut update = DeviceListUpdateContent::new(user.to_owned(), device.clone(), UInt::MIN);
        update.device_display_name = record.display_name;
        update.keys = keys.get(&device).cloned();
        let hash = hash_of(&serde_json::to_value(&update).map_err(Error::internal)?);
        if sent.devices.get(&device) != Some(&hash) {
            updates.push(update);
        }
        now.insert(device, hash);
    }
    for gone in sent.devices.keys().filter(|d| !now.contains_key(*d)) {
        let mut update = DeviceListUpdateContent::new(user.to_owned(), gone.clone(), UInt::MIN);
        update.deleted = Some(true);
        updates.push(update);
    }
    if !destinations.is_empty() {
        for mut update in updates {
            update.prev_id = (sent.stream_id > 0).then_some(sent.stream_id).into_iter().map(uint).collect();
            sent.stream_id += 1;
            update.stream_id = uint(sent.stream_id);
            // `prev_id` even when empty, as Synapse sends it.
            let mut content = to_value(&update)?;
            content["prev_id"] = serde_json::json!(update.prev_id);
            super::audience::queue_edu(services, destinations, "m.device_list_update", content)?;
        }
    }
    // The cross-signing keys, when they changed (not with every device change).
    let mut keys = SigningKeyUpdateContent::new(user.to_owned());
    keys.master_key = cross_signing(services, user, MASTER)?;
    keys.self_signing_key = cross_signing(services, user, SELF_SIGNING)?;
    let keys_value = to_value(&keys)?;
    let signing = keys.master_key.is_some().then(|| hash_of(&keys_value));
    if !destinations.is_empty() && signing.is_some() && signing != sent.signing {
        super::audience::queue_edu(services, destinations, "m.signing_key_update", keys_value)?;
    }
    sent.signing = signing;
    // With nobody to tell, the record still moves: a server that shares a
    // room later fetches the whole list.
    sent.devices = now;
    let mut batch = Batch::new();
    batch.put_json(&maps::GLOBAL, sent_key(user), &sent);
    Ok(services.db.write(batch)?)
}

fn uint(n: u64) -> UInt {
    UInt::try_from(n).unwrap_or(UInt::MAX)
}

fn to_value(content: &impl Serialize) -> Result<Value> {
    serde_json::to_value(content).map_err(Error::internal)
}

/// A local user's public cross-signing key of `usage`.
pub fn cross_signing<T>(services: &Services, user: &UserId, usage: &str) -> Result<Option<Raw<T>>> {
    match services.users.cross_signing_key_for_query(user, usage, user)? {
        Some(key) => Ok(Some(crate::util::raw(Value::Object(key))?)),
        None => Ok(None),
    }
}

// ---- in ----------------------------------------------------------------------------

fn object<T>(raw: &Raw<T>) -> Option<JsonObject> {
    serde_json::from_str(raw.json().get()).ok()
}

/// An `m.device_list_update` from `origin`.
pub async fn take_list_update(services: &Arc<Services>, origin: &ServerName, content: &Value) -> Result<()> {
    let Ok(update) = serde_json::from_value::<DeviceListUpdateContent>(content.clone()) else {
        return Ok(());
    };
    let user = &update.user_id;
    if user.server_name() != origin {
        return Ok(());
    }
    if !services.rooms.shares_room_with_local(user)? {
        // Nobody here follows this user; their server will not keep us told.
        tracing::debug!("device-list update of {user}, who shares no room here: dropped");
        return services.users.forget_remote_device_list(user, false);
    }
    let _lock = services.users.remote_device_locks.lock(user).await;
    let stream_id = u64::from(update.stream_id);
    tracing::debug!("device-list update {stream_id} of {user} (prev {:?})", update.prev_id);
    let Some(mut list) = services.users.remote_device_list(user)? else {
        resync_later(services, user);
        return Ok(());
    };
    if stream_id <= list.stream_id {
        return Ok(());
    }
    let follows =
        !update.prev_id.is_empty() && update.prev_id.iter().all(|p| u64::from(*p) == list.stream_id);
    if !follows {
        resync_later(services, user);
        return Ok(());
    }
    if update.deleted == Some(true) {
        list.devices.remove(&update.device_id);
    } else {
        if list.devices.len() >= MAX_DEVICES && !list.devices.contains_key(&update.device_id) {
            return services.users.forget_remote_device_list(user, true);
        }
        let device = RemoteDevice {
            keys: update.keys.as_ref().and_then(object),
            display_name: update.device_display_name.clone(),
        };
        list.devices.insert(update.device_id.clone(), device);
    }
    list.stream_id = stream_id;
    services.users.put_remote_device_list(user, &list, true)
}

/// An `m.signing_key_update` from `origin`: the cached keys replaced, and
/// the change told.
pub async fn take_signing_key_update(
    services: &Services,
    origin: &ServerName,
    content: &Value,
) -> Result<()> {
    let Ok(update) = serde_json::from_value::<SigningKeyUpdateContent>(content.clone()) else {
        return Ok(());
    };
    let user = &update.user_id;
    if user.server_name() != origin || !services.rooms.shares_room_with_local(user)? {
        return Ok(());
    }
    let _lock = services.users.remote_device_locks.lock(user).await;
    let Some(mut list) = services.users.remote_device_list(user)? else {
        // Nothing cached: whoever asks next fetches it; tell them to ask.
        return services.users.forget_remote_device_list(user, true);
    };
    if let Some(master) = update.master_key.as_ref().and_then(object) {
        list.master_key = Some(master);
    }
    if let Some(self_signing) = update.self_signing_key.as_ref().and_then(object) {
        list.self_signing_key = Some(self_signing);
    }
    services.users.put_remote_device_list(user, &list, true)
}

/// A resync in the background, as Synapse does it: the transaction that
/// told us is answered without waiting on the user's server (which may be
/// waiting for that answer before it serves `/user/devices`).
fn resync_later(services: &Arc<Services>, user: &UserId) {
    let (services, user) = (services.clone(), user.to_owned());
    tokio::spawn(async move {
        let _lock = services.users.remote_device_locks.lock(&user).await;
        if let Err(e) = resync(&services, &user, true).await {
            tracing::info!("device list of {user}: {e}");
        }
    });
}

/// Fetches a remote user's whole device list from their server and caches
/// it while they share a room with a local user (the caller holds the
/// user's lock). `announce` tells local users it changed. When the server
/// does not answer, the cached list is dropped and `None` returned.
async fn resync(services: &Services, user: &UserId, announce: bool) -> Result<Option<RemoteDeviceList>> {
    let request = get_devices::Request::new(user.to_owned());
    let answer =
        services.servers.client.send_with(user.server_name(), request, RESYNC_TIMEOUT, MAX_LIST_BYTES).await;
    let list = match answer {
        Ok(answer) if answer.user_id == user && answer.devices.len() <= MAX_DEVICES => RemoteDeviceList {
            stream_id: answer.stream_id.into(),
            devices: answer
                .devices
                .into_iter()
                .map(|d| {
                    let device = RemoteDevice { keys: object(&d.keys), display_name: d.device_display_name };
                    (d.device_id, device)
                })
                .collect(),
            master_key: answer.master_key.as_ref().and_then(object),
            self_signing_key: answer.self_signing_key.as_ref().and_then(object),
        },
        Ok(_) => {
            tracing::info!("device list of {user}: an answer for someone else, or too many devices");
            services.users.forget_remote_device_list(user, announce)?;
            return Ok(None);
        }
        Err(failure) => {
            tracing::info!("device list of {user}: {failure}");
            services.users.forget_remote_device_list(user, announce)?;
            return Ok(None);
        }
    };
    if services.rooms.shares_room_with_local(user)? {
        let changed = services.users.remote_device_list(user)?.as_ref() != Some(&list);
        services.users.put_remote_device_list(user, &list, announce && changed)?;
    }
    Ok(Some(list))
}

/// What this server can say of another server's user's devices.
pub enum Lookup {
    /// Their device list, cached or just fetched.
    Known(RemoteDeviceList),
    /// Nobody here shares a room with them: ask their server.
    NotFollowed,
    /// Their server did not list their devices.
    Unanswered,
}

/// The device list to answer a local client's `/keys/query` about another
/// server's user with: the cached one, else fetched (and cached).
pub async fn for_query(services: &Services, user: &UserId) -> Result<Lookup> {
    if !services.rooms.shares_room_with_local(user)? {
        return Ok(Lookup::NotFollowed);
    }
    let _lock = services.users.remote_device_locks.lock(user).await;
    if let Some(list) = services.users.remote_device_list(user)? {
        return Ok(Lookup::Known(list));
    }
    // Told as a change, as Synapse does: what clients had (if anything)
    // came from elsewhere.
    Ok(match resync(services, user, true).await? {
        Some(list) => Lookup::Known(list),
        None => Lookup::Unanswered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_hash_sees_keys_and_names() {
        let user: ruma::OwnedUserId = "@a:here".try_into().unwrap();
        let plain = DeviceListUpdateContent::new(user, "D".into(), UInt::MIN);
        let mut named = plain.clone();
        named.device_display_name = Some("phone".into());
        let hash = |u: &DeviceListUpdateContent| hash_of(&serde_json::to_value(u).unwrap());
        assert_eq!(hash(&plain), hash(&plain.clone()));
        assert_ne!(hash(&plain), hash(&named));
    }
}
