//! End-to-end encryption keys of local devices and users: device identity
//! keys, one-time and fallback keys, cross-signing keys and the signatures
//! uploaded onto them.
//!
//! Every key is kept exactly as the client uploaded it: other clients check
//! signatures over those bytes, and fields Hearth does not know (such as
//! `dehydrated`) must reach them. The server only adds what it owns
//! (`unsigned`) and merges signatures uploaded later.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{DeviceId, OwnedDeviceId, UserId, api::error::ErrorKind, serde::Raw};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Users;
use crate::{
    Error, Result,
    storage::{Batch, decode_u64, key, maps, prefix, split_at_sep},
    stream::{Position, Topic},
};

pub type JsonObject = Map<String, Value>;

/// What `fallback_keys` stores per device and algorithm.
#[derive(Debug, Serialize, Deserialize)]
struct FallbackKey {
    key_id: String,
    key: Value,
    used: bool,
}

/// A device-list change written in a batch; publish it once the batch is
/// written, so syncs and `/keys/changes` see it.
#[must_use]
pub struct KeyChange<'a> {
    position: Position<'a>,
    topic: Topic,
}

impl KeyChange<'_> {
    pub fn publish(self) {
        self.position.publish([self.topic]);
    }
}

pub(super) fn device_key(user: &UserId, device: &DeviceId) -> Vec<u8> {
    key(&[user.as_bytes(), device.as_bytes()])
}

pub(super) fn parse_object(bytes: &[u8]) -> Result<JsonObject> {
    serde_json::from_slice(bytes).map_err(Error::internal)
}

/// The object without what signing leaves out, for "is this the same key?".
pub(super) fn signed_part(object: &JsonObject) -> JsonObject {
    let mut object = object.clone();
    object.remove("signatures");
    object.remove("unsigned");
    object
}

/// Checks an uploaded `device_keys` object: it must describe the uploading
/// device, list its algorithms and keys; signatures are the clients' concern.
pub fn check_device_keys(object: &JsonObject, user: &UserId, device: &DeviceId) -> Result<()> {
    if object.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return Err(Error::bad_json(
            "Provided `user_id` in `device_keys` does not match that of the authenticated user",
        ));
    }
    if object.get("device_id").and_then(Value::as_str) != Some(device.as_str()) {
        return Err(Error::bad_json(
            "Provided `device_id` in `device_keys` does not match that of the authenticated user device",
        ));
    }
    let strings = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    if !object.get("algorithms").is_some_and(strings) {
        return Err(Error::bad_json("`device_keys.algorithms` must be a list of strings"));
    }
    let keys_ok =
        object.get("keys").and_then(Value::as_object).is_some_and(|k| k.values().all(Value::is_string));
    if !keys_ok {
        return Err(Error::bad_json("`device_keys.keys` must be an object of strings"));
    }
    let signatures_ok = object
        .get("signatures")
        .is_none_or(|s| s.as_object().is_some_and(|s| s.values().all(Value::is_object)));
    if !signatures_ok {
        return Err(Error::bad_json("`device_keys.signatures` must be an object of objects"));
    }
    Ok(())
}

impl Users {
    /// Records a change of `user`'s device list in `batch`. `audience`
    /// limits who is told (a user-signing signature concerns its signer
    /// only); `None` tells everyone sharing a room with `user`, and `user`.
    pub fn note_key_change(
        &self,
        batch: &mut Batch,
        user: &UserId,
        audience: Option<&UserId>,
    ) -> Result<KeyChange<'_>> {
        let position = self.stream.allocate()?;
        let value = key(&[user.as_bytes(), audience.map_or(&b""[..], |a| a.as_bytes())]);
        batch.put(&maps::DEVICE_LIST_CHANGES, position.get().to_be_bytes(), value);
        let topic = match audience {
            Some(audience) => Topic::User(audience.to_owned()),
            None => Topic::AboutUser(user.to_owned()),
        };
        Ok(KeyChange { position, topic })
    }

    /// Stores a device's identity keys. The same keys again change nothing;
    /// different ones replace them and are announced as a device-list change.
    pub fn upload_device_keys(&self, user: &UserId, device: &DeviceId, keys: &JsonObject) -> Result<()> {
        check_device_keys(keys, user, device)?;
        let mut keys = keys.clone();
        keys.remove("unsigned");
        let _guard = self.keys_lock.lock().expect("keys lock");
        let k = device_key(user, device);
        if let Some(old) = self.db.get(&maps::DEVICE_KEYS, &k)?
            && parse_object(&old)? == keys
        {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.put(&maps::DEVICE_KEYS, k, serde_json::to_vec(&keys).map_err(Error::internal)?);
        let change = self.note_key_change(&mut batch, user, None)?;
        self.db.write(batch)?;
        change.publish();
        Ok(())
    }

    /// Stores one-time keys. A key ID already held with the same key is
    /// skipped (a retried upload); with another key it is refused, and
    /// nothing of the upload is stored.
    pub fn upload_one_time_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        keys: &BTreeMap<String, Value>,
        max_per_device: usize,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let _guard = self.keys_lock.lock().expect("keys lock");
        let order = self.stream.allocate()?;
        let mut batch = Batch::new();
        let mut added = 0;
        for (id, value) in keys {
            let (algorithm, key_id) = split_key_id(id)?;
            let id_key = key(&[user.as_bytes(), device.as_bytes(), id.as_bytes()]);
            if let Some(at) = self.db.get(&maps::ONE_TIME_KEY_IDS, &id_key)? {
                let stored = self
                    .db
                    .get(&maps::ONE_TIME_KEYS, &otk_key(user, device, algorithm, decode_u64(&at)?, key_id))?
                    .map(|v| serde_json::from_slice::<Value>(&v).map_err(Error::internal))
                    .transpose()?;
                let same =
                    stored.as_ref().is_some_and(|old| without_signatures(old) == without_signatures(value));
                if !same {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::Unknown,
                        format!(
                            "One time key {id} already exists. Old key: {}; new key: {value}",
                            stored.unwrap_or(Value::Null)
                        ),
                    ));
                }
                continue;
            }
            batch.put(&maps::ONE_TIME_KEY_IDS, id_key, order.get().to_be_bytes());
            batch.put(
                &maps::ONE_TIME_KEYS,
                otk_key(user, device, algorithm, order.get(), key_id),
                serde_json::to_vec(value).map_err(Error::internal)?,
            );
            added += 1;
        }
        let held: u64 = self.one_time_key_counts(user, device)?.values().sum();
        if held as usize + added > max_per_device {
            return Err(Error::invalid_param(format!(
                "Too many one-time keys: this device holds {held} unclaimed keys and may hold at most \
                 {max_per_device}"
            )));
        }
        self.db.write(batch)?;
        order.publish([]);
        Ok(())
    }

    /// Stores fallback keys, one per algorithm. The same key again keeps its
    /// "used" mark; a new one replaces it, unused.
    pub fn upload_fallback_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        keys: &BTreeMap<String, Value>,
    ) -> Result<()> {
        let _guard = self.keys_lock.lock().expect("keys lock");
        let mut batch = Batch::new();
        let mut seen = std::collections::BTreeSet::new();
        for (id, value) in keys {
            let (algorithm, key_id) = split_key_id(id)?;
            if !seen.insert(algorithm) {
                return Err(Error::bad_json(format!("More than one fallback key for {algorithm}")));
            }
            let k = key(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]);
            let stored: Option<FallbackKey> = self.db.get_json(&maps::FALLBACK_KEYS, &k)?;
            if stored.is_some_and(|s| s.key_id == key_id && s.key == *value) {
                continue;
            }
            let record = FallbackKey { key_id: key_id.to_owned(), key: value.clone(), used: false };
            batch.put_json(&maps::FALLBACK_KEYS, k, &record);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Unclaimed one-time keys per algorithm; `signed_curve25519` is always
    /// there (clients only top up when they see it, even at 0).
    pub fn one_time_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>> {
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for (k, _) in self.db.scan_prefix(&maps::ONE_TIME_KEYS, &p)? {
            let rest = &k[p.len()..];
            let end = rest.iter().position(|b| *b == crate::storage::SEP).unwrap_or(rest.len());
            let algorithm = String::from_utf8_lossy(&rest[..end]).into_owned();
            *counts.entry(algorithm).or_default() += 1;
        }
        Ok(counts)
    }

    /// Algorithms whose fallback key no claim has used yet.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        let mut types = Vec::new();
        for (k, record) in self.db.scan_json::<FallbackKey>(&maps::FALLBACK_KEYS, &p)? {
            if !record.used {
                types.push(String::from_utf8_lossy(&k[p.len()..]).into_owned());
            }
        }
        Ok(types)
    }

    /// Hands out one key of `algorithm` for a device: its oldest one-time
    /// key, removed so no one gets it again, or else its fallback key,
    /// marked used but kept.
    pub fn claim_key(
        &self,
        user: &UserId,
        device: &DeviceId,
        algorithm: &str,
    ) -> Result<Option<(String, Value)>> {
        let _guard = self.keys_lock.lock().expect("keys lock");
        let p = prefix(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]);
        if let Some((k, v)) = self.db.scan_range(&maps::ONE_TIME_KEYS, &p, None, false, 1)?.pop() {
            let key_id = String::from_utf8_lossy(k.get(p.len() + 8..).unwrap_or_default()).into_owned();
            let id = format!("{algorithm}:{key_id}");
            let mut batch = Batch::new();
            batch.delete(&maps::ONE_TIME_KEYS, k);
            batch.delete(&maps::ONE_TIME_KEY_IDS, key(&[user.as_bytes(), device.as_bytes(), id.as_bytes()]));
            self.db.write(batch)?;
            return Ok(Some((id, serde_json::from_slice(&v).map_err(Error::internal)?)));
        }
        let k = key(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]);
        let Some(mut fallback) = self.db.get_json::<FallbackKey>(&maps::FALLBACK_KEYS, &k)? else {
            return Ok(None);
        };
        if !fallback.used {
            fallback.used = true;
            self.db.put_json(&maps::FALLBACK_KEYS, &k, &fallback)?;
        }
        Ok(Some((format!("{algorithm}:{}", fallback.key_id), fallback.key)))
    }

    /// The identity keys of a user's devices (all of them for an empty
    /// `devices`), as other clients see them: with the owner's later
    /// signatures merged in and the device's name under `unsigned`.
    pub fn device_keys_for_query(
        &self,
        user: &UserId,
        devices: &[OwnedDeviceId],
    ) -> Result<BTreeMap<OwnedDeviceId, Raw<ruma::encryption::DeviceKeys>>> {
        let stored: Vec<(OwnedDeviceId, Vec<u8>)> = if devices.is_empty() {
            let p = prefix(&[user.as_bytes()]);
            self.db
                .scan_prefix(&maps::DEVICE_KEYS, &p)?
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k[p.len()..]).as_ref().into(), v))
                .collect()
        } else {
            let mut found = Vec::new();
            for device in devices {
                if let Some(v) = self.db.get(&maps::DEVICE_KEYS, &device_key(user, device))? {
                    found.push((device.clone(), v));
                }
            }
            found
        };
        let mut out = BTreeMap::new();
        for (device, bytes) in stored {
            let mut object = parse_object(&bytes)?;
            self.merge_signatures(&mut object, user, device.as_str(), |signer| signer == user)?;
            let mut unsigned = JsonObject::new();
            if let Some(name) = self.get_device(user, &device)?.and_then(|d| d.display_name) {
                unsigned.insert("device_display_name".into(), name.into());
            }
            object.insert("unsigned".into(), unsigned.into());
            out.insert(device, Raw::new(&object).map_err(Error::internal)?.cast_unchecked());
        }
        Ok(out)
    }

    /// Adds the stored signatures on `target` (a device ID or a master
    /// public key of `user`) whose signer passes `visible`.
    pub(super) fn merge_signatures(
        &self,
        object: &mut JsonObject,
        user: &UserId,
        target: &str,
        visible: impl Fn(&UserId) -> bool,
    ) -> Result<()> {
        let p = prefix(&[user.as_bytes(), target.as_bytes()]);
        for (k, v) in self.db.scan_prefix(&maps::KEY_SIGNATURES, &p)? {
            let Some((signer, key_id)) = split_at_sep(&k[p.len()..]) else { continue };
            let Ok(signer) = UserId::parse(signer) else { continue };
            if !visible(&signer) {
                continue;
            }
            let signatures = object.entry("signatures").or_insert_with(|| Value::Object(JsonObject::new()));
            if let Some(signatures) = signatures.as_object_mut() {
                let by =
                    signatures.entry(signer.to_string()).or_insert_with(|| Value::Object(JsonObject::new()));
                if let Some(by) = by.as_object_mut() {
                    by.insert(key_id.to_owned(), String::from_utf8_lossy(&v).into_owned().into());
                }
            }
        }
        Ok(())
    }

    /// Deletes a device's keys and pending messages into `batch` (every
    /// device removal is a device-list change, keys or not).
    pub(super) fn remove_device_keys_into(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<()> {
        batch.delete(&maps::DEVICE_KEYS, device_key(user, device));
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        for map in [
            &maps::ONE_TIME_KEYS,
            &maps::ONE_TIME_KEY_IDS,
            &maps::FALLBACK_KEYS,
            &maps::KEY_SIGNATURES,
            &maps::TO_DEVICE,
            &maps::TO_DEVICE_COUNTS,
        ] {
            self.db.delete_prefix(batch, map, &p)?;
        }
        Ok(())
    }
}

/// `<algorithm>:<key ID>`, split; anything else is bad JSON.
fn split_key_id(id: &str) -> Result<(&str, &str)> {
    match id.split_once(':') {
        Some((algorithm, key_id)) if !algorithm.is_empty() && !key_id.is_empty() && !key_id.contains(':') => {
            Ok((algorithm, key_id))
        }
        _ => Err(Error::bad_json(format!("Invalid one-time key ID {id}"))),
    }
}

fn otk_key(user: &UserId, device: &DeviceId, algorithm: &str, order: u64, key_id: &str) -> Vec<u8> {
    let mut k = prefix(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]);
    k.extend_from_slice(&order.to_be_bytes());
    k.extend_from_slice(key_id.as_bytes());
    k
}

fn without_signatures(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(signed_part(object)),
        other => other.clone(),
    }
}
