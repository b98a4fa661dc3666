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
use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId,
    api::error::ErrorKind,
    serde::{Base64, Raw, base64::Standard},
    signatures::{SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Users;
use crate::{
    Error, Result,
    storage::{Batch, decode_u64, key, maps, prefix, split_at_sep},
    stream::{Position, Topic},
};

pub type JsonObject = Map<String, Value>;

/// The three kinds of cross-signing key.
pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

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

/// Why one item of `/keys/signatures/upload` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFailure {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: String,
}

impl SignatureFailure {
    fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        Self { status, errcode, error: error.into() }
    }

    fn invalid_signature() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE", "Invalid signature")
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", what)
    }
}

fn device_key(user: &UserId, device: &DeviceId) -> Vec<u8> {
    key(&[user.as_bytes(), device.as_bytes()])
}

fn parse_object(bytes: &[u8]) -> Result<JsonObject> {
    serde_json::from_slice(bytes).map_err(Error::internal)
}

/// The object without what signing leaves out, for "is this the same key?".
fn signed_part(object: &JsonObject) -> JsonObject {
    let mut object = object.clone();
    object.remove("signatures");
    object.remove("unsigned");
    object
}

/// Whether `object` carries a valid signature by `signer`'s key `key_id`
/// (`ed25519:…`), whose public key is `public_key` (unpadded base64).
pub fn signed_by(object: &JsonObject, signer: &UserId, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(signer.as_str()))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let (Ok(public_key), Ok(signature)) =
        (Base64::<Standard>::parse(public_key), Base64::<Standard>::parse(signature))
    else {
        return false;
    };
    // Values outside canonical JSON (floats, huge integers) cannot be signed.
    let Ok(canonical) = ruma::canonical_json::try_from_json_map(object.clone()) else { return false };
    let Ok(signed) = to_canonical_json_string_for_signing(&canonical) else { return false };
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        signed.as_bytes(),
    )
    .is_ok()
}

/// The single public key of a cross-signing key (`keys` has exactly one
/// `ed25519:<key>` entry naming itself), if it is well-formed.
pub fn cross_signing_public_key(object: &JsonObject) -> Option<&str> {
    let keys = object.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, value) = keys.iter().next()?;
    let public = value.as_str()?;
    (id.strip_prefix("ed25519:") == Some(public)).then_some(public)
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
    fn merge_signatures(
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

    /// A user's stored cross-signing key of one usage.
    pub fn cross_signing_key(&self, user: &UserId, usage: &str) -> Result<Option<JsonObject>> {
        self.db
            .get(&maps::CROSS_SIGNING_KEYS, &key(&[user.as_bytes(), usage.as_bytes()]))?
            .map(|v| parse_object(&v))
            .transpose()
    }

    /// A user's cross-signing key as `viewer` may see it: the master key
    /// with signatures by the owner's devices and by the viewer's own
    /// user-signing key; the user-signing key only for its owner.
    pub fn cross_signing_key_for_query(
        &self,
        user: &UserId,
        usage: &str,
        viewer: &UserId,
    ) -> Result<Option<JsonObject>> {
        if usage == USER_SIGNING && user != viewer {
            return Ok(None);
        }
        let Some(mut object) = self.cross_signing_key(user, usage)? else { return Ok(None) };
        if usage == MASTER
            && let Some(public) = cross_signing_public_key(&object).map(str::to_owned)
        {
            self.merge_signatures(&mut object, user, &public, |signer| signer == user || signer == viewer)?;
        }
        Ok(Some(object))
    }

    /// Whether uploading these cross-signing keys would change nothing.
    pub fn cross_signing_unchanged(&self, user: &UserId, keys: &[(&str, &JsonObject)]) -> Result<bool> {
        for (usage, new) in keys {
            if self.cross_signing_key(user, usage)?.as_ref() != Some(*new) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks and stores cross-signing keys (`(usage, key)` pairs). The
    /// self-signing and user-signing keys must be signed by the master key
    /// (the one uploaded with them, or else the stored one).
    pub fn upload_cross_signing_keys(&self, user: &UserId, keys: &[(&str, &JsonObject)]) -> Result<()> {
        let _guard = self.keys_lock.lock().expect("keys lock");
        for (usage, object) in keys {
            let usage_ok = object
                .get("usage")
                .and_then(Value::as_array)
                .is_some_and(|u| u.iter().any(|u| u.as_str() == Some(usage)));
            if object.get("user_id").and_then(Value::as_str) != Some(user.as_str())
                || !usage_ok
                || cross_signing_public_key(object).is_none()
            {
                return Err(Error::invalid_param(format!("Invalid {usage} key")));
            }
        }
        let uploaded_master = keys.iter().find(|(u, _)| *u == MASTER).map(|(_, k)| (*k).clone());
        let master = match uploaded_master {
            Some(master) => master,
            None => self.cross_signing_key(user, MASTER)?.ok_or_else(|| {
                Error::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, "No master key available")
            })?,
        };
        let master_public = cross_signing_public_key(&master)
            .ok_or_else(|| Error::invalid_param("Invalid master key"))?
            .to_owned();
        for (usage, object) in keys.iter().filter(|(u, _)| *u != MASTER) {
            if !signed_by(object, user, &format!("ed25519:{master_public}"), &master_public) {
                return Err(Error::custom(
                    StatusCode::BAD_REQUEST,
                    "M_INVALID_SIGNATURE",
                    format!("Invalid signature on {usage} key"),
                ));
            }
        }
        // Device IDs and cross-signing public keys share one namespace.
        for (_, object) in keys {
            let public = cross_signing_public_key(object).expect("checked above");
            if self.get_device(user, public.into())?.is_some() {
                return Err(Error::forbidden("Key ID in use"));
            }
        }
        let mut batch = Batch::new();
        for (usage, object) in keys {
            batch.put(
                &maps::CROSS_SIGNING_KEYS,
                key(&[user.as_bytes(), usage.as_bytes()]),
                serde_json::to_vec(object).map_err(Error::internal)?,
            );
        }
        // A new user-signing key alone concerns only its owner.
        let public = keys.iter().any(|(u, _)| *u != USER_SIGNING);
        let change = self.note_key_change(&mut batch, user, (!public).then_some(user))?;
        self.db.write(batch)?;
        change.publish();
        Ok(())
    }

    /// Whether a device ID is one of the user's cross-signing public keys
    /// (they share a namespace: such a device ID is refused).
    pub fn is_cross_signing_key_id(&self, user: &UserId, device: &DeviceId) -> Result<bool> {
        for usage in [MASTER, SELF_SIGNING, USER_SIGNING] {
            if let Some(object) = self.cross_signing_key(user, usage)?
                && cross_signing_public_key(&object) == Some(device.as_str())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stores signatures `signer` made: on their own devices (with their
    /// self-signing key), on their own master key (with their devices), on
    /// other users' master keys (with their user-signing key). Returns the
    /// refused items by user and key ID.
    pub fn upload_signatures(
        &self,
        signer: &UserId,
        signed: &BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>>> {
        let _guard = self.keys_lock.lock().expect("keys lock");
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>> = BTreeMap::new();
        let mut batch = Batch::new();
        // Users whose device list changed, with who may see it.
        let mut changed: BTreeMap<OwnedUserId, Option<OwnedUserId>> = BTreeMap::new();
        for (target, items) in signed {
            for (key_id, object) in items {
                let result = match object.as_object() {
                    None => {
                        Err(SignatureFailure::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", "Not an object"))
                    }
                    Some(object) => self.check_signature(signer, target, key_id, object),
                };
                match result {
                    Ok(new_signatures) => {
                        for (signing_key_id, signature) in new_signatures {
                            let k = key(&[
                                target.as_bytes(),
                                key_id.as_bytes(),
                                signer.as_bytes(),
                                signing_key_id.as_bytes(),
                            ]);
                            // The same signature again is no change.
                            if self.db.get(&maps::KEY_SIGNATURES, &k)?.as_deref()
                                == Some(signature.as_bytes())
                            {
                                continue;
                            }
                            batch.put(&maps::KEY_SIGNATURES, k, signature.into_bytes());
                            let audience = (target != signer).then(|| signer.to_owned());
                            changed.insert(target.clone(), audience);
                        }
                    }
                    Err(failure) => {
                        failures.entry(target.clone()).or_default().insert(key_id.clone(), failure);
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for (user, audience) in &changed {
            changes.push(self.note_key_change(&mut batch, user, audience.as_deref())?);
        }
        self.db.write(batch)?;
        changes.into_iter().for_each(KeyChange::publish);
        Ok(failures)
    }

    /// Checks one signed object of a signature upload; returns the new
    /// signatures to store (signing key ID, signature).
    fn check_signature(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        object: &JsonObject,
    ) -> std::result::Result<Vec<(String, String)>, SignatureFailure> {
        let internal =
            |e: Error| SignatureFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", e.to_string());
        let signatures: Vec<(String, String)> = object
            .get("signatures")
            .and_then(|s| s.get(signer.as_str()))
            .and_then(Value::as_object)
            .map(|by| by.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        if signatures.is_empty() {
            return Err(SignatureFailure::invalid_signature());
        }
        let master = self.cross_signing_key(target, MASTER).map_err(internal)?;
        let master_public = master.as_ref().and_then(cross_signing_public_key).map(str::to_owned);
        // The stored object this one must be, signatures aside.
        let (stored, signing_keys): (JsonObject, Vec<(String, String)>) = if target == signer {
            if master_public.as_deref() == Some(key_id) {
                // Own master key, signed by own devices.
                let mut keys = Vec::new();
                for (signing_key_id, _) in &signatures {
                    let Some(device) = signing_key_id.strip_prefix("ed25519:") else { continue };
                    let device_keys = self
                        .db
                        .get(&maps::DEVICE_KEYS, &device_key(signer, device.into()))
                        .map_err(|e| internal(e.into()))?;
                    if let Some(device_keys) =
                        device_keys.map(|v| parse_object(&v)).transpose().map_err(internal)?
                        && let Some(public) = device_keys
                            .get("keys")
                            .and_then(|k| k.get(signing_key_id))
                            .and_then(Value::as_str)
                    {
                        keys.push((signing_key_id.clone(), public.to_owned()));
                    }
                }
                (master.expect("has a public key"), keys)
            } else {
                // Own device, signed by the self-signing key.
                let device = self
                    .db
                    .get(&maps::DEVICE_KEYS, &device_key(signer, key_id.into()))
                    .map_err(|e| internal(e.into()))?
                    .ok_or_else(|| SignatureFailure::not_found("Unknown device"))?;
                let ssk =
                    self.cross_signing_key(signer, SELF_SIGNING).map_err(internal)?.ok_or_else(|| {
                        SignatureFailure::not_found(format!("No self_signing key found for {signer}"))
                    })?;
                let public = cross_signing_public_key(&ssk).unwrap_or_default().to_owned();
                (parse_object(&device).map_err(internal)?, vec![(format!("ed25519:{public}"), public)])
            }
        } else {
            // Another user's master key, signed by the user-signing key.
            if master_public.as_deref() != Some(key_id) {
                return Err(SignatureFailure::not_found("Unknown device"));
            }
            let usk = self.cross_signing_key(signer, USER_SIGNING).map_err(internal)?.ok_or_else(|| {
                SignatureFailure::not_found(format!("No user_signing key found for {signer}"))
            })?;
            let public = cross_signing_public_key(&usk).unwrap_or_default().to_owned();
            (master.expect("has a public key"), vec![(format!("ed25519:{public}"), public)])
        };
        if signed_part(&stored) != signed_part(object) {
            return Err(SignatureFailure::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", "Key does not match"));
        }
        let mut accepted = Vec::new();
        for (signing_key_id, public) in signing_keys {
            let Some((_, signature)) = signatures.iter().find(|(k, _)| *k == signing_key_id) else {
                continue;
            };
            if !signed_by(object, signer, &signing_key_id, &public) {
                return Err(SignatureFailure::invalid_signature());
            }
            accepted.push((signing_key_id, signature.clone()));
        }
        if accepted.is_empty() {
            return Err(SignatureFailure::invalid_signature());
        }
        Ok(accepted)
    }

    /// Deletes a device's keys and pending messages into `batch`; says
    /// whether it had identity keys (then its removal is a device-list change).
    pub(super) fn remove_device_keys_into(
        &self,
        batch: &mut Batch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<bool> {
        let had_keys = self.db.contains(&maps::DEVICE_KEYS, &device_key(user, device))?;
        batch.delete(&maps::DEVICE_KEYS, device_key(user, device));
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        for map in [
            &maps::ONE_TIME_KEYS,
            &maps::ONE_TIME_KEY_IDS,
            &maps::FALLBACK_KEYS,
            &maps::KEY_SIGNATURES,
            &maps::TO_DEVICE,
        ] {
            for (k, _) in self.db.scan_prefix(map, &p)? {
                batch.delete(map, k);
            }
        }
        Ok(had_keys)
    }

    /// Deletes a user's cross-signing keys and every signature on them.
    pub(super) fn remove_cross_signing_into(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        let p = prefix(&[user.as_bytes()]);
        for map in [&maps::CROSS_SIGNING_KEYS, &maps::KEY_SIGNATURES] {
            for (k, _) in self.db.scan_prefix(map, &p)? {
                batch.delete(map, k);
            }
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
