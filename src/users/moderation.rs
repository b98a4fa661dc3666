//! What server admins set on an account besides its record: locked (no
//! request authenticates), suspended (reads only), shadow-banned (writes
//! seem to work and go nowhere) and a message rate of its own. Few accounts
//! have any, and every request asks, so they are kept in memory too.

use std::collections::HashMap;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::Users;
use crate::{
    Error, Result,
    config::Rate,
    storage::{Batch, Db, maps},
};

/// The admin's settings of one account (only the set ones are stored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moderation {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_banned: bool,
    /// Synapse's override: `(messages_per_second, burst_count)`; `(0, 0)`
    /// means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<(u64, u64)>,
}

impl Moderation {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses (403 `M_USER_SUSPENDED`) what a suspended account may not do:
    /// send, join, invite, knock, change its profile, redact others' events.
    pub fn check_not_suspended(&self) -> Result<()> {
        match self.suspended {
            true => Err(Error::new(
                http::StatusCode::FORBIDDEN,
                ruma::api::error::ErrorKind::UserSuspended,
                "Your account has been suspended",
            )),
            false => Ok(()),
        }
    }

    /// The message rate this account gets instead of the configured one;
    /// `Some(None)` for no limit at all.
    pub fn message_rate(&self) -> Option<Option<Rate>> {
        self.ratelimit.map(|(per_second, burst)| match (per_second, burst) {
            (0, 0) => None,
            (per_second, burst) => Some(Rate {
                per_second: per_second as f64,
                burst_count: u32::try_from(burst.max(1)).unwrap_or(u32::MAX),
            }),
        })
    }
}

/// The accounts with settings, loaded at start.
pub(super) fn load(db: &Db) -> Result<HashMap<OwnedUserId, Moderation>> {
    let mut all = HashMap::new();
    for (key, moderation) in db.scan_json::<Moderation>(&maps::USER_MODERATION, b"")? {
        let user = String::from_utf8(key).map_err(Error::internal)?;
        all.insert(OwnedUserId::try_from(user).map_err(Error::internal)?, moderation);
    }
    Ok(all)
}

impl Users {
    /// The admin's settings of an account (the defaults for most).
    pub fn moderation(&self, user_id: &UserId) -> Moderation {
        self.moderated.read().expect("moderation").get(user_id).cloned().unwrap_or_default()
    }

    /// Changes an account's settings, on disk and in memory.
    pub fn moderate(&self, user_id: &UserId, change: impl FnOnce(&mut Moderation)) -> Result<Moderation> {
        let mut moderated = self.moderated.write().expect("moderation");
        let mut moderation = moderated.get(user_id).cloned().unwrap_or_default();
        change(&mut moderation);
        let mut batch = Batch::new();
        match moderation.is_default() {
            true => batch.delete(&maps::USER_MODERATION, user_id.as_bytes()),
            false => batch.put_json(&maps::USER_MODERATION, user_id.as_bytes(), &moderation),
        }
        self.db.write(batch)?;
        match moderation.is_default() {
            true => moderated.remove(user_id),
            false => moderated.insert(user_id.to_owned(), moderation.clone()),
        };
        Ok(moderation)
    }

    pub fn is_locked(&self, user_id: &UserId) -> bool {
        self.moderated.read().expect("moderation").get(user_id).is_some_and(|m| m.locked)
    }

    pub fn is_shadow_banned(&self, user_id: &UserId) -> bool {
        self.moderated.read().expect("moderation").get(user_id).is_some_and(|m| m.shadow_banned)
    }

    /// [`Moderation::check_not_suspended`] for an account.
    pub fn check_not_suspended(&self, user_id: &UserId) -> Result<()> {
        self.moderation(user_id).check_not_suspended()
    }
}
