//! Other servers' users' device lists, kept while such a user shares a
//! room with a local user: their devices' identity keys and names, their
//! public cross-signing keys, and the stream ID of the last update taken
//! (the next update's `prev_id` must name it). `federation::devices` fills
//! and follows them; `/keys/query` answers from them.

use std::collections::BTreeMap;

use ruma::{OwnedDeviceId, UserId, serde::Raw};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Users, keys::JsonObject};
use crate::{
    Error, Result,
    storage::{Batch, maps},
};

/// A remote user's device list as this server knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteDeviceList {
    pub stream_id: u64,
    pub devices: BTreeMap<OwnedDeviceId, RemoteDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<JsonObject>,
}

/// One device: its `DeviceKeys` as its server sent them (none before the
/// device uploaded keys) and its name, if the server tells names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl RemoteDeviceList {
    /// The identity keys of the devices asked for (all for an empty
    /// `devices`), with the name under `unsigned`, as `/keys/query` answers.
    pub fn keys_for_query(
        &self,
        devices: &[OwnedDeviceId],
    ) -> Result<BTreeMap<OwnedDeviceId, Raw<ruma::encryption::DeviceKeys>>> {
        let mut out = BTreeMap::new();
        for (id, device) in &self.devices {
            if !devices.is_empty() && !devices.contains(id) {
                continue;
            }
            let Some(mut keys) = device.keys.clone() else { continue };
            let mut unsigned = JsonObject::new();
            if let Some(name) = &device.display_name {
                unsigned.insert("device_display_name".into(), Value::String(name.clone()));
            }
            keys.insert("unsigned".into(), Value::Object(unsigned));
            out.insert(id.clone(), Raw::new(&keys).map_err(Error::internal)?.cast_unchecked());
        }
        Ok(out)
    }
}

impl Users {
    /// The cached device list of another server's user.
    pub fn remote_device_list(&self, user: &UserId) -> Result<Option<RemoteDeviceList>> {
        Ok(self.db.get_json(&maps::REMOTE_DEVICE_LISTS, user.as_bytes())?)
    }

    /// Stores a remote user's device list; with `announce`, local users
    /// sharing a room with them see the change (`/sync`, `/keys/changes`).
    pub fn put_remote_device_list(
        &self,
        user: &UserId,
        list: &RemoteDeviceList,
        announce: bool,
    ) -> Result<()> {
        let mut batch = Batch::new();
        batch.put_json(&maps::REMOTE_DEVICE_LISTS, user.as_bytes(), list);
        self.write_remote_change(batch, user, announce)
    }

    /// Drops a remote user's cached device list (the next query asks their
    /// server); with `announce`, as [`Users::put_remote_device_list`].
    pub fn forget_remote_device_list(&self, user: &UserId, announce: bool) -> Result<()> {
        let mut batch = Batch::new();
        self.forget_remote_device_list_into(&mut batch, user);
        self.write_remote_change(batch, user, announce)
    }

    /// Adds the dropping of a remote user's cached device list to `batch`.
    pub fn forget_remote_device_list_into(&self, batch: &mut Batch, user: &UserId) {
        batch.delete(&maps::REMOTE_DEVICE_LISTS, user.as_bytes());
    }

    fn write_remote_change(&self, mut batch: Batch, user: &UserId, announce: bool) -> Result<()> {
        if !announce {
            return Ok(self.db.write(batch)?);
        }
        let change = self.note_key_change(&mut batch, user, None)?;
        self.db.write(batch)?;
        change.publish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_answer_filters_devices_and_names_them() {
        let keys: JsonObject = serde_json::from_value(serde_json::json!({
            "user_id": "@a:other", "device_id": "A", "algorithms": [], "keys": {}
        }))
        .unwrap();
        let mut list = RemoteDeviceList::default();
        list.devices
            .insert("A".into(), RemoteDevice { keys: Some(keys), display_name: Some("phone".into()) });
        list.devices.insert("B".into(), RemoteDevice::default());
        let all = list.keys_for_query(&[]).unwrap();
        assert_eq!(all.len(), 1, "a device without keys is left out");
        let a: Value = serde_json::from_str(all[&OwnedDeviceId::from("A")].json().get()).unwrap();
        assert_eq!(a["unsigned"]["device_display_name"], "phone");
        assert!(list.keys_for_query(&["B".into()]).unwrap().is_empty());
    }
}
