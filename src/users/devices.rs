//! Devices and their access tokens.

use std::net::IpAddr;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::Users;
use crate::{
    Error, Result,
    storage::{Batch, key, maps, prefix},
    util,
};

/// What `tokens` maps an access token to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// When the token stops working (ms); tokens of devices never do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// What `devices` stores for each device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub access_token: String,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_user_agent: Option<String>,
    pub created_ts: u64,
}

/// How often a device's last-seen time is written at most.
const LAST_SEEN_GRANULARITY_MS: u64 = 60_000;

fn device_key(user_id: &UserId, device_id: &DeviceId) -> Vec<u8> {
    key(&[user_id.as_bytes(), device_id.as_bytes()])
}

/// A new access token: 256 random bits.
fn new_access_token() -> String {
    format!("hth_{}", util::random_string(43))
}

/// A new device ID: 26 upper-case letters and digits (~134 random bits).
fn new_device_id() -> OwnedDeviceId {
    util::random_string(26).to_uppercase().into()
}

impl Users {
    /// Logs a device in: creates it (or, for a known `device_id`, replaces its
    /// token, revoking the old one) and returns its ID and new access token.
    pub fn login_device(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        ip: Option<IpAddr>,
    ) -> Result<(OwnedDeviceId, String)> {
        if let Some(device_id) = &device_id
            && self.is_cross_signing_key_id(user_id, device_id)?
        {
            // Device IDs and cross-signing keys share one namespace.
            return Err(Error::forbidden("Device ID is in use by a cross-signing key"));
        }
        let device_id = device_id.unwrap_or_else(new_device_id);
        let token = new_access_token();
        let now = util::now_ms();
        let mut batch = Batch::new();
        let mut change = None;
        let record = match self.get_device(user_id, &device_id)? {
            // A known device keeps its name: the spec ignores
            // `initial_device_display_name` for it.
            Some(mut existing) => {
                batch.delete(&maps::TOKENS, existing.access_token.as_bytes());
                existing.access_token = token.clone();
                existing
            }
            // A new device is a device-list change (Synapse announces it).
            None => {
                change = Some(self.note_key_change(&mut batch, user_id, None)?);
                DeviceRecord {
                    display_name,
                    access_token: token.clone(),
                    last_seen_ip: ip.map(|ip| ip.to_string()),
                    last_seen_ts: Some(now),
                    last_seen_user_agent: None,
                    created_ts: now,
                }
            }
        };
        batch.put_json(&maps::DEVICES, device_key(user_id, &device_id), &record);
        batch.put_json(
            &maps::TOKENS,
            token.as_bytes(),
            &TokenRecord { user_id: user_id.to_owned(), device_id: device_id.clone(), expires_ms: None },
        );
        self.db.write(batch)?;
        if let Some(change) = change {
            change.publish();
        }
        Ok((device_id, token))
    }

    /// The user and device an access token belongs to (none once it expired).
    pub fn find_token(&self, token: &str) -> Result<Option<TokenRecord>> {
        let record: Option<TokenRecord> = self.db.get_json(&maps::TOKENS, token.as_bytes())?;
        Ok(record.filter(|record| record.expires_ms.is_none_or(|expiry| expiry > util::now_ms())))
    }

    /// A token for a server admin to act as the user (Synapse's "login as
    /// user"), valid until `valid_until_ms` if given. No device is made:
    /// the user's device list and other servers see nothing; the token's
    /// device ID exists only to log it out again.
    pub fn puppet_token(&self, user_id: &UserId, valid_until_ms: Option<u64>) -> Result<String> {
        let device_id: OwnedDeviceId = format!("PUPPET_{}", util::random_string(12).to_uppercase()).into();
        let token = new_access_token();
        let mut batch = Batch::new();
        let record = TokenRecord {
            user_id: user_id.to_owned(),
            device_id: device_id.clone(),
            expires_ms: valid_until_ms,
        };
        batch.put_json(&maps::TOKENS, token.as_bytes(), &record);
        batch.put(&maps::PUPPET_TOKENS, device_key(user_id, &device_id), token.clone().into_bytes());
        self.db.write(batch)?;
        Ok(token)
    }

    /// Revokes the user's puppet tokens (all, or the one of `device_id`).
    fn remove_puppet_tokens_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: Option<&DeviceId>,
    ) -> Result<()> {
        let prefix = match device_id {
            Some(device_id) => device_key(user_id, device_id),
            None => prefix(&[user_id.as_bytes()]),
        };
        for (key, token) in self.db.scan_prefix(&maps::PUPPET_TOKENS, &prefix)? {
            batch.delete(&maps::TOKENS, token);
            batch.delete(&maps::PUPPET_TOKENS, key);
        }
        Ok(())
    }

    pub fn get_device(&self, user_id: &UserId, device_id: &DeviceId) -> Result<Option<DeviceRecord>> {
        Ok(self.db.get_json(&maps::DEVICES, &device_key(user_id, device_id))?)
    }

    pub fn list_devices(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, DeviceRecord)>> {
        let p = prefix(&[user_id.as_bytes()]);
        self.db
            .scan_json::<DeviceRecord>(&maps::DEVICES, &p)?
            .into_iter()
            .map(|(k, record)| {
                let id = std::str::from_utf8(&k[p.len()..]).map_err(Error::internal)?;
                Ok((id.into(), record))
            })
            .collect()
    }

    /// When each user's devices were last seen (the latest), for server
    /// admins' lists: one scan.
    pub fn last_seen_all(&self) -> Result<std::collections::HashMap<Vec<u8>, u64>> {
        let mut seen = std::collections::HashMap::<Vec<u8>, u64>::new();
        for (key, record) in self.db.scan_json::<DeviceRecord>(&maps::DEVICES, b"")? {
            let user = key.split(|&b| b == crate::storage::SEP).next().unwrap_or_default().to_vec();
            let ts = record.last_seen_ts.unwrap_or(0);
            let entry = seen.entry(user).or_default();
            *entry = (*entry).max(ts);
        }
        Ok(seen)
    }

    /// When one user's devices were last seen (the latest).
    pub fn last_seen(&self, user_id: &UserId) -> Result<Option<u64>> {
        Ok(self.list_devices(user_id)?.iter().filter_map(|(_, d)| d.last_seen_ts).max())
    }

    pub fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: String,
    ) -> Result<()> {
        let mut record =
            self.get_device(user_id, device_id)?.ok_or_else(|| Error::not_found("Device not found"))?;
        if record.display_name.as_deref() == Some(display_name.as_str()) {
            return Ok(());
        }
        record.display_name = Some(display_name);
        // A renamed device is a device-list change, as in Synapse.
        let mut batch = Batch::new();
        batch.put_json(&maps::DEVICES, device_key(user_id, device_id), &record);
        let change = self.note_key_change(&mut batch, user_id, None)?;
        self.db.write(batch)?;
        change.publish();
        Ok(())
    }

    /// Records that a device was used, at most once a minute per device.
    pub fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<()> {
        let Some(mut record) = self.get_device(user_id, device_id)? else { return Ok(()) };
        let now = util::now_ms();
        let ip = ip.to_string();
        let fresh = record.last_seen_ts.is_some_and(|ts| now.saturating_sub(ts) < LAST_SEEN_GRANULARITY_MS);
        if fresh
            && record.last_seen_ip.as_deref() == Some(ip.as_str())
            && record.last_seen_user_agent.as_deref() == user_agent
        {
            return Ok(());
        }
        record.last_seen_ts = Some(now);
        record.last_seen_ip = Some(ip);
        record.last_seen_user_agent = user_agent.map(str::to_owned);
        self.db.put_json(&maps::DEVICES, &device_key(user_id, device_id), &record)?;
        Ok(())
    }

    /// Deletes devices, their keys and pending messages, and revokes their
    /// tokens. Unknown IDs are skipped, as the spec's `delete_devices` requires.
    pub fn remove_devices(&self, user_id: &UserId, device_ids: &[OwnedDeviceId]) -> Result<()> {
        let mut batch = Batch::new();
        let mut removed = false;
        for device_id in device_ids {
            if let Some(record) = self.get_device(user_id, device_id)? {
                self.remove_device_into(&mut batch, user_id, device_id, &record)?;
                removed = true;
            }
        }
        self.write_device_removal(batch, user_id, removed)
    }

    /// Deletes every device of the user but `keep`.
    pub fn remove_all_devices(&self, user_id: &UserId, keep: Option<&DeviceId>) -> Result<()> {
        let mut batch = Batch::new();
        let removed = self.remove_devices_into(&mut batch, user_id, keep)?;
        self.write_device_removal(batch, user_id, removed)
    }

    /// Writes a removal; any device leaving is a device-list change (as in
    /// Synapse, with keys or without).
    fn write_device_removal(&self, mut batch: Batch, user_id: &UserId, removed: bool) -> Result<()> {
        let change = removed.then(|| self.note_key_change(&mut batch, user_id, None)).transpose()?;
        self.db.write(batch)?;
        if let Some(change) = change {
            change.publish();
        }
        Ok(())
    }

    /// Deletes every device of the user but `keep` into `batch`; says
    /// whether there was any.
    pub(super) fn remove_devices_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        keep: Option<&DeviceId>,
    ) -> Result<bool> {
        let mut removed = false;
        self.remove_puppet_tokens_into(batch, user_id, None)?;
        for (device_id, record) in self.list_devices(user_id)? {
            if Some(&*device_id) != keep {
                self.remove_device_into(batch, user_id, &device_id, &record)?;
                removed = true;
            }
        }
        Ok(removed)
    }

    fn remove_device_into(
        &self,
        batch: &mut Batch,
        user_id: &UserId,
        device_id: &DeviceId,
        record: &DeviceRecord,
    ) -> Result<()> {
        batch.delete(&maps::TOKENS, record.access_token.as_bytes());
        batch.delete(&maps::DEVICES, device_key(user_id, device_id));
        self.remove_device_pushers(batch, user_id, device_id.as_str())?;
        self.remove_device_keys_into(batch, user_id, device_id)
    }

    /// Logs a device out: its token is revoked, the device itself goes too
    /// (as in Synapse, logging out deletes the device).
    pub fn logout(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        if self.get_device(user_id, device_id)?.is_none() {
            let mut batch = Batch::new();
            self.remove_puppet_tokens_into(&mut batch, user_id, Some(device_id))?;
            self.db.write(batch)?;
            return Ok(());
        }
        self.remove_devices(user_id, &[device_id.to_owned()])
    }
}
