//! Profiles of local users: `displayname`, `avatar_url` and the custom keys
//! of extended profiles, stored as one JSON object per user.

use http::StatusCode;
use ruma::{UserId, api::error::ErrorKind};
use serde_json::{Map, Value};

use super::Users;
use crate::{Error, Result, storage::maps};

/// Largest profile, serialised (the spec's 64 KiB).
const MAX_PROFILE_BYTES: usize = 65_536;
/// Longest key name (the spec's 255 bytes).
const MAX_KEY_BYTES: usize = 255;

pub type Profile = Map<String, Value>;

impl Users {
    /// The profile of a local user, or `None` when no such account exists.
    pub fn profile(&self, user_id: &UserId) -> Result<Option<Profile>> {
        if !self.exists(user_id)? {
            return Ok(None);
        }
        Ok(Some(self.db.get_json(&maps::PROFILES, user_id.as_bytes())?.unwrap_or_default()))
    }

    /// Sets one profile field, or removes it when `value` is `None`.
    pub fn set_profile_field(&self, user_id: &UserId, field: &str, value: Option<Value>) -> Result<()> {
        if field.len() > MAX_KEY_BYTES {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::KeyTooLarge,
                "Profile key is too long",
            ));
        }
        let mut profile = self.profile(user_id)?.ok_or_else(|| Error::not_found("Profile not found"))?;
        match value {
            Some(value) => {
                profile.insert(field.to_owned(), value);
            }
            None => {
                profile.remove(field);
            }
        }
        let bytes = serde_json::to_vec(&profile).map_err(Error::internal)?;
        if bytes.len() > MAX_PROFILE_BYTES {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ProfileTooLarge,
                "Profile is too large",
            ));
        }
        self.db.put_json(&maps::PROFILES, user_id.as_bytes(), &profile)?;
        Ok(())
    }
}
