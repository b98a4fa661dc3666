//! Pushers: where a user's devices want push notifications sent (an HTTP
//! push gateway), and how far delivery has got for each.

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Users;
use crate::{
    Error, Result,
    storage::{Batch, key, maps, prefix},
};

/// What `pushers` stores for each pusher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    pub app_id: String,
    pub pushkey: String,
    /// `http` (the only kind Hearth delivers).
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    #[serde(default)]
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The client's `data`: `url` (the gateway), `format`, and anything
    /// else, which goes to the gateway as the device's data.
    pub data: Value,
    /// When it was set, in seconds (the gateway's `pushkey_ts`).
    pub pushkey_ts: u64,
    /// The device that set it: its pushers go when it logs out.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Delivery has covered notifications up to this stream position.
    pub pushed_upto: u64,
    /// The unread count the gateway last heard.
    #[serde(default)]
    pub last_badge: Option<u64>,
    /// Delivery failing since (ms), not retried before `retry_at` (ms),
    /// the wait (ms) doubling with each failure.
    #[serde(default)]
    pub failing_since: Option<u64>,
    #[serde(default)]
    pub retry_at: u64,
    #[serde(default)]
    pub backoff_ms: u64,
}

/// Requests to send users their new unread count (after they read), from
/// the API to the delivery task.
pub struct BadgeRequests {
    sender: tokio::sync::mpsc::UnboundedSender<OwnedUserId>,
    receiver: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<OwnedUserId>>>,
}

impl Default for BadgeRequests {
    fn default() -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        Self { sender, receiver: std::sync::Mutex::new(Some(receiver)) }
    }
}

fn pusher_key(user_id: &UserId, app_id: &str, pushkey: &str) -> Vec<u8> {
    key(&[user_id.as_bytes(), app_id.as_bytes(), pushkey.as_bytes()])
}

impl Users {
    /// The user read something: a pusher's unread count may be stale.
    pub fn request_badge(&self, user_id: &UserId) {
        let _ = self.badge_requests.sender.send(user_id.to_owned());
    }

    /// The receiving end, for the one delivery task.
    pub fn take_badge_requests(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<OwnedUserId>> {
        self.badge_requests.receiver.lock().expect("badge requests").take()
    }

    pub fn pushers(&self, user_id: &UserId) -> Result<Vec<PusherRecord>> {
        let found = self.db.scan_json::<PusherRecord>(&maps::PUSHERS, &prefix(&[user_id.as_bytes()]))?;
        Ok(found.into_iter().map(|(_, record)| record).collect())
    }

    /// Every pusher of every user.
    pub fn all_pushers(&self) -> Result<Vec<(OwnedUserId, PusherRecord)>> {
        let mut all = Vec::new();
        for (k, record) in self.db.scan_json::<PusherRecord>(&maps::PUSHERS, b"")? {
            let user = k.split(|b| *b == crate::storage::SEP).next().unwrap_or_default();
            let user = OwnedUserId::try_from(std::str::from_utf8(user).map_err(Error::internal)?)
                .map_err(Error::internal)?;
            all.push((user, record));
        }
        Ok(all)
    }

    /// Adds or replaces the user's pusher of `record.app_id` and
    /// `record.pushkey`; with `exclusive` (the spec's `append: false`), the
    /// same app and key of any other user go.
    pub fn set_pusher(&self, user_id: &UserId, record: &PusherRecord, exclusive: bool) -> Result<()> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        let mut batch = Batch::new();
        if exclusive {
            for (other, existing) in self.all_pushers()? {
                if other != user_id && existing.app_id == record.app_id && existing.pushkey == record.pushkey
                {
                    batch.delete(&maps::PUSHERS, pusher_key(&other, &existing.app_id, &existing.pushkey));
                }
            }
        }
        batch.put_json(&maps::PUSHERS, pusher_key(user_id, &record.app_id, &record.pushkey), record);
        self.db.write(batch)?;
        Ok(())
    }

    /// Records delivery progress, unless the pusher was removed meanwhile.
    pub fn update_pusher(&self, user_id: &UserId, record: &PusherRecord) -> Result<()> {
        let key = pusher_key(user_id, &record.app_id, &record.pushkey);
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        if self.db.get(&maps::PUSHERS, &key)?.is_some() {
            self.db.put_json(&maps::PUSHERS, &key, record)?;
        }
        Ok(())
    }

    /// Removes a pusher; whether there was one.
    pub fn remove_pusher(&self, user_id: &UserId, app_id: &str, pushkey: &str) -> Result<bool> {
        let key = pusher_key(user_id, app_id, pushkey);
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        if self.db.get(&maps::PUSHERS, &key)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.delete(&maps::PUSHERS, key);
        self.db.write(batch)?;
        Ok(true)
    }

    /// Removes the pushers a device set (it logged out or was deleted).
    pub(super) fn remove_device_pushers(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<()> {
        for pusher in self.pushers(user_id)? {
            if pusher.device_id.as_deref() == Some(device_id) {
                batch.delete(&maps::PUSHERS, pusher_key(user_id, &pusher.app_id, &pusher.pushkey));
            }
        }
        Ok(())
    }

    /// Removes every user's pusher of this app and key (a gateway said the
    /// key is dead).
    pub fn remove_pushers_everywhere(&self, app_id: &str, pushkey: &str) -> Result<()> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        let mut batch = Batch::new();
        for (user, existing) in self.all_pushers()? {
            if existing.app_id == app_id && existing.pushkey == pushkey {
                batch.delete(&maps::PUSHERS, pusher_key(&user, app_id, pushkey));
            }
        }
        self.db.write(batch)?;
        Ok(())
    }
}
