//! Account data (global and per room) and stored sync filters.

use std::{collections::HashSet, sync::Arc};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::value::RawValue;

use super::Users;
use crate::{
    Error, Result,
    storage::{decode_u64, key, maps, prefix},
    stream::Topic,
};

/// One account-data entry: its room (none for global), type and content.
pub type AccountDataEntry = (Option<OwnedRoomId>, String, Box<RawValue>);

/// `room ID (or empty) ‖ SEP ‖ event type` back into its parts.
fn split_room_and_type(bytes: &[u8]) -> Result<(Option<OwnedRoomId>, String)> {
    let at = bytes
        .iter()
        .position(|b| *b == crate::storage::SEP)
        .ok_or_else(|| Error::internal("bad account data key"))?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(Error::internal);
    let room = match &bytes[..at] {
        [] => None,
        room => Some(OwnedRoomId::try_from(text(room)?).map_err(Error::internal)?),
    };
    Ok((room, text(&bytes[at + 1..])?))
}

fn account_data_key(user_id: &UserId, room_id: Option<&RoomId>, event_type: &str) -> Vec<u8> {
    key(&[user_id.as_bytes(), room_id.map_or(&b""[..], |r| r.as_bytes()), event_type.as_bytes()])
}

/// Users whose ignore lists are kept in memory (most are empty).
const IGNORED_CACHED: usize = 1 << 17;

impl Users {
    /// A room's tags and its place in `m.direct` carried to its upgraded
    /// successor (as Synapse does for each local member).
    pub fn copy_room_account_data(&self, user_id: &UserId, old: &RoomId, new: &RoomId) -> Result<()> {
        if let Some(tags) = self.account_data(user_id, Some(old), "m.tag")? {
            self.set_account_data(user_id, Some(new), "m.tag", &tags)?;
        }
        let Some(direct) = self.account_data(user_id, None, "m.direct")? else { return Ok(()) };
        let mut direct: serde_json::Value = serde_json::from_str(direct.get()).map_err(Error::internal)?;
        let mut changed = false;
        for rooms in direct.as_object_mut().into_iter().flat_map(|users| users.values_mut()) {
            if let Some(rooms) = rooms.as_array_mut()
                && rooms.iter().any(|room| room == old.as_str())
                && !rooms.iter().any(|room| room == new.as_str())
            {
                rooms.push(new.as_str().into());
                changed = true;
            }
        }
        if changed {
            let content = serde_json::value::to_raw_value(&direct).map_err(Error::internal)?;
            self.set_account_data(user_id, None, "m.direct", &content)?;
        }
        Ok(())
    }

    /// The content stored for an account-data type, as the client sent it.
    pub fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
    ) -> Result<Option<Box<RawValue>>> {
        let bytes = self.db.get(&maps::ACCOUNT_DATA, &account_data_key(user_id, room_id, event_type))?;
        bytes
            .map(|b| {
                RawValue::from_string(String::from_utf8(b).map_err(Error::internal)?).map_err(Error::internal)
            })
            .transpose()
    }

    /// Stores account data and logs the change for sync. Writes to one
    /// user's account data are serialised so the log stays exact.
    pub fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: &RawValue,
    ) -> Result<()> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        let data_key = account_data_key(user_id, room_id, event_type);
        let position = self.stream.allocate()?;
        let mut batch = crate::storage::Batch::new();
        if let Some(old) = self.db.get(&maps::ACCOUNT_DATA_POSITIONS, &data_key)? {
            batch.delete(&maps::ACCOUNT_DATA_CHANGES, key(&[user_id.as_bytes(), &old]));
        }
        batch.put(&maps::ACCOUNT_DATA_POSITIONS, data_key.clone(), position.get().to_be_bytes());
        batch.put(
            &maps::ACCOUNT_DATA_CHANGES,
            key(&[user_id.as_bytes(), &position.get().to_be_bytes()]),
            key(&[room_id.map_or(&b""[..], |r| r.as_bytes()), event_type.as_bytes()]),
        );
        batch.put(&maps::ACCOUNT_DATA, data_key, content.get().as_bytes());
        self.db.write(batch)?;
        if room_id.is_none() && event_type == "m.ignored_user_list" {
            self.ignored_cache.lock().expect("ignored cache").remove(user_id);
        }
        position.publish([Topic::User(user_id.to_owned())]);
        Ok(())
    }

    /// Account data that changed in `(since, upto]`, or all of it without
    /// `since`: (room, event type, content), global entries with no room.
    pub fn account_data_since(
        &self,
        user_id: &UserId,
        since: Option<u64>,
        upto: u64,
    ) -> Result<Vec<AccountDataEntry>> {
        let mut changed = Vec::new();
        let user_prefix = prefix(&[user_id.as_bytes()]);
        match since {
            Some(since) => {
                let start = key(&[user_id.as_bytes(), &(since + 1).to_be_bytes()]);
                for (k, v) in self.db.scan_range(
                    &maps::ACCOUNT_DATA_CHANGES,
                    &user_prefix,
                    Some(&start),
                    false,
                    usize::MAX,
                )? {
                    if decode_u64(&k[user_prefix.len()..])? > upto {
                        break;
                    }
                    let (room, kind) = split_room_and_type(&v)?;
                    changed.push((room, kind));
                }
            }
            None => {
                for (k, _) in self.db.scan_prefix(&maps::ACCOUNT_DATA, &user_prefix)? {
                    changed.push(split_room_and_type(&k[user_prefix.len()..])?);
                }
            }
        }
        let mut out = Vec::with_capacity(changed.len());
        for (room, kind) in changed {
            if let Some(content) = self.account_data(user_id, room.as_deref(), &kind)? {
                out.push((room, kind, content));
            }
        }
        Ok(out)
    }

    /// The users `user_id` ignores (`m.ignored_user_list`), cached: push
    /// evaluation asks for every member of a room on every event.
    pub fn ignored_users(&self, user_id: &UserId) -> Result<Arc<HashSet<OwnedUserId>>> {
        if let Some(ignored) = self.ignored_cache.lock().expect("ignored cache").get(user_id) {
            return Ok(ignored.clone());
        }
        let ignored: HashSet<OwnedUserId> = match self.account_data(user_id, None, "m.ignored_user_list")? {
            Some(raw) => {
                let value: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or_default();
                value["ignored_users"]
                    .as_object()
                    .map(|users| {
                        users.keys().filter_map(|u| OwnedUserId::try_from(u.as_str()).ok()).collect()
                    })
                    .unwrap_or_default()
            }
            None => HashSet::new(),
        };
        let ignored = Arc::new(ignored);
        // (Every local member of a big room is asked for on each event: a
        // cap below the server's users would empty it over and over.)
        let mut cache = self.ignored_cache.lock().expect("ignored cache");
        if cache.len() > IGNORED_CACHED {
            cache.clear();
        }
        cache.insert(user_id.to_owned(), ignored.clone());
        Ok(ignored)
    }

    /// Stores a filter and returns its new ID.
    pub fn create_filter(&self, user_id: &UserId, filter: &serde_json::Value) -> Result<String> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        let p = prefix(&[user_id.as_bytes()]);
        let last = self.db.scan_range(&maps::FILTERS, &p, None, true, 1)?;
        let next = match last.first() {
            Some((k, _)) => {
                let id: [u8; 8] = k[p.len()..].try_into().map_err(Error::internal)?;
                u64::from_be_bytes(id) + 1
            }
            None => 0,
        };
        self.db.put_json(&maps::FILTERS, &key(&[user_id.as_bytes(), &next.to_be_bytes()]), filter)?;
        Ok(next.to_string())
    }

    pub fn filter(&self, user_id: &UserId, filter_id: &str) -> Result<Option<serde_json::Value>> {
        let Ok(id) = filter_id.parse::<u64>() else { return Ok(None) };
        Ok(self.db.get_json(&maps::FILTERS, &key(&[user_id.as_bytes(), &id.to_be_bytes()]))?)
    }
}
