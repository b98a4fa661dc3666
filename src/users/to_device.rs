//! Send-to-device messages: a first-in, first-out inbox per device. A
//! message stays until the device acknowledges it by syncing from a token
//! past it, so a device that is offline (or a response that is lost) misses
//! nothing.

use std::collections::BTreeMap;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId, serde::Raw};
use serde_json::value::RawValue;

use super::Users;
use crate::{
    Error, Result,
    storage::{Batch, decode_u64, key, maps, prefix},
    stream::Topic,
};

/// Most messages one device's inbox holds: past it, new messages for that
/// device are dropped (a device that never syncs cannot make the server
/// store without end; review §2.4).
pub const MAX_INBOX: u64 = 50_000;

/// Where one message goes: a device, or every device of the user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recipient {
    Device(OwnedDeviceId),
    AllDevices,
}

impl Users {
    /// Queues one message type for the given local recipients, once per
    /// transaction ID of the sending device: a retried request adds nothing.
    /// Recipients that are not (or no longer) devices of a local user are
    /// skipped, as Synapse does.
    pub fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        event_type: &str,
        txn_id: &str,
        messages: &BTreeMap<OwnedUserId, BTreeMap<Recipient, Box<RawValue>>>,
    ) -> Result<()> {
        let _guard = self.to_device_lock.lock().expect("to-device lock");
        let endpoint = format!("sendToDevice/{event_type}");
        let txn_key =
            key(&[sender.as_bytes(), sender_device.as_bytes(), b"", endpoint.as_bytes(), txn_id.as_bytes()]);
        if self.db.contains(&maps::TRANSACTIONS, &txn_key)? {
            return Ok(());
        }
        let position = self.stream.allocate()?;
        let mut batch = Batch::new();
        let mut topics = Vec::new();
        let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for (user, by_device) in messages {
            if !self.is_local(user) {
                continue;
            }
            let devices = self.list_devices(user)?;
            for (recipient, content) in by_device {
                let targets: Vec<&OwnedDeviceId> = match recipient {
                    Recipient::AllDevices => devices.iter().map(|(d, _)| d).collect(),
                    Recipient::Device(device) => {
                        devices.iter().map(|(d, _)| d).filter(|d| *d == device).collect()
                    }
                };
                for device in targets {
                    let count_key = prefix(&[user.as_bytes(), device.as_bytes()]);
                    let count = match counts.get(&count_key) {
                        Some(count) => *count,
                        None => self.inbox_count(&count_key)?,
                    };
                    if count >= self.inbox_cap {
                        tracing::warn!(
                            "to-device inbox of {user} {device} is full; message from {sender} dropped"
                        );
                        continue;
                    }
                    counts.insert(count_key, count + 1);
                    let message = format!(
                        r#"{{"sender":{},"type":{},"content":{}}}"#,
                        serde_json::to_string(sender.as_str()).map_err(Error::internal)?,
                        serde_json::to_string(event_type).map_err(Error::internal)?,
                        content.get()
                    );
                    batch.put(
                        &maps::TO_DEVICE,
                        inbox_key(user, device, position.get()),
                        message.into_bytes(),
                    );
                }
            }
            topics.push(Topic::User(user.clone()));
        }
        for (count_key, count) in counts {
            batch.put(&maps::TO_DEVICE_COUNTS, count_key, count.to_be_bytes());
        }
        batch.put(&maps::TRANSACTIONS, txn_key, Vec::new());
        self.db.write(batch)?;
        position.publish(topics);
        Ok(())
    }

    fn inbox_count(&self, count_key: &[u8]) -> Result<u64> {
        match self.db.get(&maps::TO_DEVICE_COUNTS, count_key)? {
            Some(bytes) => Ok(decode_u64(&bytes)?),
            None => Ok(0),
        }
    }

    /// Up to `limit` messages for a device after position `after` and up to
    /// `upto`, oldest first, with their positions.
    pub fn to_device_messages(
        &self,
        user: &UserId,
        device: &DeviceId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Raw<ruma::events::AnyToDeviceEvent>)>> {
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        let from = inbox_key(user, device, after.saturating_add(1));
        let mut messages = Vec::new();
        for (k, v) in self.db.scan_range(&maps::TO_DEVICE, &p, Some(&from), false, limit)? {
            let position = decode_u64(&k[p.len()..])?;
            if position > upto {
                break;
            }
            let raw: Box<RawValue> = RawValue::from_string(String::from_utf8(v).map_err(Error::internal)?)
                .map_err(Error::internal)?;
            messages.push((position, Raw::from_json(raw)));
        }
        Ok(messages)
    }

    /// Deletes a device's messages up to `upto`: the device has them.
    pub fn acknowledge_to_device(&self, user: &UserId, device: &DeviceId, upto: u64) -> Result<()> {
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        // Serialised with sends: the inbox count stays exact.
        let _guard = self.to_device_lock.lock().expect("to-device lock");
        loop {
            let chunk = self.db.scan_range(&maps::TO_DEVICE, &p, None, false, 1_000)?;
            let mut batch = Batch::new();
            let mut done = chunk.len() < 1_000;
            let mut deleted = 0;
            for (k, _) in chunk {
                if decode_u64(&k[p.len()..])? > upto {
                    done = true;
                    break;
                }
                batch.delete(&maps::TO_DEVICE, k);
                deleted += 1;
            }
            let wrote = !batch.is_empty();
            if wrote {
                let left = self.inbox_count(&p)?.saturating_sub(deleted);
                batch.put(&maps::TO_DEVICE_COUNTS, p.clone(), left.to_be_bytes());
            }
            self.db.write(batch)?;
            if done || !wrote {
                return Ok(());
            }
        }
    }
}

fn inbox_key(user: &UserId, device: &DeviceId, position: u64) -> Vec<u8> {
    let mut k = prefix(&[user.as_bytes(), device.as_bytes()]);
    k.extend_from_slice(&position.to_be_bytes());
    k
}
