//! Server-side key backup: versions (the newest is the one clients write
//! to) and the encrypted room keys in each. The server cannot read them; it
//! only keeps the better copy of each session by the spec's rule.

use std::{cmp::Ordering, collections::BTreeMap};

use http::StatusCode;
use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::error::{ErrorKind, WrongRoomKeysVersionErrorData},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Users;
use crate::{
    Error, Result,
    storage::{Batch, SEP, decode_u64, maps, prefix, split_at_sep},
};

/// What `backup_versions` stores for each version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupVersion {
    /// `{algorithm, auth_data}` as the client sent it.
    pub algorithm: Value,
    pub etag: u64,
    pub count: u64,
    /// Deleted versions stay as tombstones: their numbers are not reused,
    /// and deleting one again succeeds.
    pub deleted: bool,
}

/// Which keys of a version a read or delete covers.
#[derive(Debug, Clone, Copy)]
pub enum KeyScope<'a> {
    All,
    Room(&'a RoomId),
    Session(&'a RoomId, &'a str),
}

fn version_key(user: &UserId, version: u64) -> Vec<u8> {
    let mut k = prefix(&[user.as_bytes()]);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn keys_prefix(user: &UserId, version: u64, scope: KeyScope<'_>) -> Vec<u8> {
    let mut k = version_key(user, version);
    match scope {
        KeyScope::All => {}
        KeyScope::Room(room) => {
            k.extend_from_slice(room.as_bytes());
            k.push(SEP);
        }
        KeyScope::Session(room, session) => {
            k.extend_from_slice(room.as_bytes());
            k.push(SEP);
            k.extend_from_slice(session.as_bytes());
        }
    }
    k
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// Checks a session's backup data has the fields the replacement rule reads.
pub fn check_key_data(data: &Value) -> Result<()> {
    if !data.get("is_verified").is_some_and(Value::is_boolean) {
        return Err(Error::invalid_param("`is_verified` must be a boolean"));
    }
    let ints =
        ["first_message_index", "forwarded_count"].iter().all(|f| data.get(*f).is_some_and(Value::is_u64));
    if !ints || data.get("session_data").is_none_or(Value::is_null) {
        return Err(Error::bad_json(
            "Key backup data needs first_message_index, forwarded_count, is_verified and session_data",
        ));
    }
    Ok(())
}

/// Whether `new` should replace `old`: a verified key beats an unverified
/// one, then the lower first message index wins, then the lower forward
/// count; a tie keeps the old one.
fn better(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| v["is_verified"].as_bool().unwrap_or(false);
    let index = |v: &Value| v["first_message_index"].as_u64().unwrap_or(u64::MAX);
    let forwards = |v: &Value| v["forwarded_count"].as_u64().unwrap_or(u64::MAX);
    match verified(new).cmp(&verified(old)) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => (index(new), forwards(new)) < (index(old), forwards(old)),
    }
}

impl Users {
    fn backup_versions(&self, user: &UserId) -> Result<Vec<(u64, BackupVersion)>> {
        let p = prefix(&[user.as_bytes()]);
        self.db
            .scan_json::<BackupVersion>(&maps::BACKUP_VERSIONS, &p)?
            .into_iter()
            .map(|(k, v)| Ok((decode_u64(&k[p.len()..])?, v)))
            .collect()
    }

    /// Creates a backup version; it becomes the current one.
    pub fn create_backup(&self, user: &UserId, algorithm: Value) -> Result<String> {
        let _guard = self.backup_lock.lock().expect("backup lock");
        let version = self.backup_versions(user)?.last().map_or(1, |(v, _)| v + 1);
        let record = BackupVersion { algorithm, etag: 0, count: 0, deleted: false };
        self.db.put_json(&maps::BACKUP_VERSIONS, &version_key(user, version), &record)?;
        Ok(version.to_string())
    }

    /// The current (newest undeleted) version.
    pub fn latest_backup(&self, user: &UserId) -> Result<Option<(u64, BackupVersion)>> {
        Ok(self.backup_versions(user)?.into_iter().rev().find(|(_, v)| !v.deleted))
    }

    /// A version by its name; deleted or unknown ones are `None`.
    pub fn backup(&self, user: &UserId, version: &str) -> Result<Option<(u64, BackupVersion)>> {
        let Ok(number) = version.parse::<u64>() else { return Ok(None) };
        let record: Option<BackupVersion> =
            self.db.get_json(&maps::BACKUP_VERSIONS, &version_key(user, number))?;
        Ok(record.filter(|r| !r.deleted).map(|r| (number, r)))
    }

    /// Replaces a version's `auth_data`; its algorithm cannot change.
    pub fn update_backup(&self, user: &UserId, version: &str, algorithm: Value) -> Result<()> {
        let _guard = self.backup_lock.lock().expect("backup lock");
        let (number, mut record) = self.backup(user, version)?.ok_or_else(unknown_version)?;
        if algorithm.get("version").is_some_and(|v| v.as_str() != Some(version)) {
            return Err(Error::invalid_param("Version in body does not match"));
        }
        if algorithm.get("algorithm") != record.algorithm.get("algorithm") {
            return Err(Error::invalid_param("Algorithm does not match"));
        }
        let mut algorithm = algorithm;
        if let Some(object) = algorithm.as_object_mut() {
            object.remove("version");
        }
        record.algorithm = algorithm;
        self.db.put_json(&maps::BACKUP_VERSIONS, &version_key(user, number), &record)?;
        Ok(())
    }

    /// Deletes a version and its keys. Deleting a deleted version succeeds.
    pub fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let _guard = self.backup_lock.lock().expect("backup lock");
        let number = version.parse::<u64>().map_err(|_| unknown_version())?;
        let k = version_key(user, number);
        let mut record: BackupVersion =
            self.db.get_json(&maps::BACKUP_VERSIONS, &k)?.ok_or_else(unknown_version)?;
        let mut batch = Batch::new();
        for (key, _) in self.db.scan_prefix(&maps::BACKUP_KEYS, &keys_prefix(user, number, KeyScope::All))? {
            batch.delete(&maps::BACKUP_KEYS, key);
        }
        record.deleted = true;
        record.count = 0;
        batch.put_json(&maps::BACKUP_VERSIONS, k, &record);
        self.db.write(batch)?;
        Ok(())
    }

    /// The version a write may go to: only the current one.
    fn writable_backup(&self, user: &UserId, version: &str) -> Result<(u64, BackupVersion)> {
        let (current, record) =
            self.latest_backup(user)?.ok_or_else(|| Error::not_found("No current backup version"))?;
        if version.parse::<u64>().ok() == Some(current) {
            return Ok((current, record));
        }
        match self.backup(user, version)? {
            Some(_) => Err(Error::new(
                StatusCode::FORBIDDEN,
                ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(current.to_string())),
                "Wrong backup version.",
            )),
            None => Err(unknown_version()),
        }
    }

    /// Stores session keys in the current version, each only where it is
    /// better than the one held. Returns the version's etag and key count.
    pub fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: Vec<(OwnedRoomId, String, Value)>,
    ) -> Result<(String, u64)> {
        for (_, _, data) in &keys {
            check_key_data(data)?;
        }
        let _guard = self.backup_lock.lock().expect("backup lock");
        let (number, mut record) = self.writable_backup(user, version)?;
        let mut batch = Batch::new();
        let mut changed = false;
        for (room, session, data) in keys {
            let k = keys_prefix(user, number, KeyScope::Session(&room, &session));
            let old: Option<Value> = self.db.get_json(&maps::BACKUP_KEYS, &k)?;
            if old.as_ref().is_some_and(|old| !better(&data, old)) {
                continue;
            }
            if old.is_none() {
                record.count += 1;
            }
            batch.put_json(&maps::BACKUP_KEYS, k, &data);
            changed = true;
        }
        if changed {
            record.etag += 1;
            batch.put_json(&maps::BACKUP_VERSIONS, version_key(user, number), &record);
            self.db.write(batch)?;
        }
        Ok((record.etag.to_string(), record.count))
    }

    /// Backed-up keys of a version, by room and session.
    pub fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<BTreeMap<OwnedRoomId, BTreeMap<String, Value>>> {
        let (number, _) = self.backup(user, version)?.ok_or_else(unknown_version)?;
        let base = keys_prefix(user, number, KeyScope::All).len();
        let mut out: BTreeMap<OwnedRoomId, BTreeMap<String, Value>> = BTreeMap::new();
        let scan = match scope {
            KeyScope::Session(..) => {
                let k = keys_prefix(user, number, scope);
                self.db.get(&maps::BACKUP_KEYS, &k)?.map(|v| vec![(k, v)]).unwrap_or_default()
            }
            _ => self.db.scan_prefix(&maps::BACKUP_KEYS, &keys_prefix(user, number, scope))?,
        };
        for (k, v) in scan {
            let Some((room, session)) = split_at_sep(&k[base..]) else { continue };
            let Ok(room) = OwnedRoomId::try_from(room) else { continue };
            let data = serde_json::from_slice(&v).map_err(Error::internal)?;
            out.entry(room).or_default().insert(session.to_owned(), data);
        }
        Ok(out)
    }

    /// Deletes backed-up keys of a version (any version, not only the
    /// current one). Returns the version's etag and key count.
    pub fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<(String, u64)> {
        let _guard = self.backup_lock.lock().expect("backup lock");
        let (number, mut record) = self.backup(user, version)?.ok_or_else(unknown_version)?;
        let mut batch = Batch::new();
        let found = match scope {
            KeyScope::Session(..) => {
                let k = keys_prefix(user, number, scope);
                if self.db.contains(&maps::BACKUP_KEYS, &k)? { vec![k] } else { vec![] }
            }
            _ => self
                .db
                .scan_prefix(&maps::BACKUP_KEYS, &keys_prefix(user, number, scope))?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        };
        record.count = record.count.saturating_sub(found.len() as u64);
        for k in found {
            batch.delete(&maps::BACKUP_KEYS, k);
        }
        record.etag += 1;
        batch.put_json(&maps::BACKUP_VERSIONS, version_key(user, number), &record);
        self.db.write(batch)?;
        Ok((record.etag.to_string(), record.count))
    }

    /// Deletes every backup of a user (on deactivation).
    pub(super) fn remove_backups_into(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        let p = prefix(&[user.as_bytes()]);
        for map in [&maps::BACKUP_VERSIONS, &maps::BACKUP_KEYS] {
            self.db.delete_prefix(batch, map, &p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::better;
    use serde_json::json;

    fn key(verified: bool, index: u64, forwards: u64) -> serde_json::Value {
        json!({"is_verified": verified, "first_message_index": index, "forwarded_count": forwards, "session_data": {}})
    }

    #[test]
    fn the_spec_replacement_order() {
        // Verified beats unverified whatever the indexes.
        assert!(better(&key(true, 10, 5), &key(false, 0, 0)));
        assert!(!better(&key(false, 0, 0), &key(true, 10, 5)));
        // Then the lower first message index, then the lower forward count.
        assert!(better(&key(false, 9, 9), &key(false, 10, 5)));
        assert!(!better(&key(false, 11, 0), &key(false, 10, 5)));
        assert!(better(&key(false, 10, 4), &key(false, 10, 5)));
        assert!(!better(&key(false, 10, 6), &key(false, 10, 5)));
        // A tie keeps the old one.
        assert!(!better(&key(true, 10, 5), &key(true, 10, 5)));
    }
}
