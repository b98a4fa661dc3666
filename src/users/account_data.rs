//! Account data (global and per room) and stored sync filters.

use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::Users;
use crate::{
    Error, Result,
    storage::{key, maps, prefix},
};

fn account_data_key(user_id: &UserId, room_id: Option<&RoomId>, event_type: &str) -> Vec<u8> {
    key(&[user_id.as_bytes(), room_id.map_or(&b""[..], |r| r.as_bytes()), event_type.as_bytes()])
}

impl Users {
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

    pub fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        event_type: &str,
        content: &RawValue,
    ) -> Result<()> {
        let mut batch = crate::storage::Batch::new();
        batch.put(
            &maps::ACCOUNT_DATA,
            account_data_key(user_id, room_id, event_type),
            content.get().as_bytes(),
        );
        self.db.write(batch)?;
        Ok(())
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
