//! Cross-signing: each user's master, self-signing and user-signing keys,
//! checked on upload, and the signatures uploaded later onto devices and
//! master keys (`/keys/signatures/upload`), which `/keys/query` merges in
//! by who may see them.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{
    DeviceId, OwnedUserId, UserId,
    api::error::ErrorKind,
    serde::{Base64, base64::Standard},
    signatures::{SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::Value;

use super::{
    Users,
    keys::{JsonObject, KeyChange, device_key, parse_object, signed_part},
};
use crate::{
    Error, Result,
    storage::{Batch, key, maps, prefix},
};

/// The three kinds of cross-signing key.
pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

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

impl Users {
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

    /// Deletes a user's cross-signing keys and every signature on them.
    pub(super) fn remove_cross_signing_into(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        let p = prefix(&[user.as_bytes()]);
        for map in [&maps::CROSS_SIGNING_KEYS, &maps::KEY_SIGNATURES] {
            self.db.delete_prefix(batch, map, &p)?;
        }
        Ok(())
    }
}
