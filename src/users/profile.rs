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
    /// The `avatar_url` of every local user's profile (media an operator
    /// keeps when deleting old media).
    pub fn avatar_urls(&self) -> Result<std::collections::HashSet<String>> {
        let mut urls = std::collections::HashSet::new();
        for (_, profile) in self.db.scan_json::<serde_json::Map<String, Value>>(&maps::PROFILES, b"")? {
            urls.extend(profile.get("avatar_url").and_then(Value::as_str).map(str::to_owned));
        }
        Ok(urls)
    }

    /// Every stored profile, by user ID (for server admins' lists).
    pub fn all_profiles(&self) -> Result<std::collections::HashMap<Vec<u8>, Profile>> {
        Ok(self.db.scan_json::<Profile>(&maps::PROFILES, b"")?.into_iter().collect())
    }

    /// Every stored display name, by user ID (the admin list's name
    /// search: the other profile fields are skipped, not decoded).
    pub fn all_displaynames(&self) -> Result<std::collections::HashMap<Vec<u8>, String>> {
        #[derive(serde::Deserialize)]
        struct Name {
            displayname: Option<String>,
        }
        Ok(self
            .db
            .scan_json::<Name>(&maps::PROFILES, b"")?
            .into_iter()
            .filter_map(|(user, name)| Some((user, name.displayname?)))
            .collect())
    }

    /// The profile of a local user, or `None` when no such account exists.
    /// Deactivated accounts have none.
    pub fn profile(&self, user_id: &UserId) -> Result<Option<Profile>> {
        if !self.is_active(user_id)? {
            return Ok(None);
        }
        Ok(Some(self.db.get_json(&maps::PROFILES, user_id.as_bytes())?.unwrap_or_default()))
    }

    /// Sets one profile field, or removes it when `value` is `None`.
    pub fn set_profile_field(&self, user_id: &UserId, field: &str, value: Option<Value>) -> Result<()> {
        if !valid_key_name(field) {
            return Err(Error::invalid_param("Invalid profile key."));
        }
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

/// The spec's key names: `avatar_url`, `displayname`, `m.tz`, or a custom key
/// in the Common Namespaced Identifier Grammar (`tld.name.key`, lower case).
fn valid_key_name(field: &str) -> bool {
    if matches!(field, "avatar_url" | "displayname" | "m.tz") {
        return true;
    }
    let well_formed = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_lowercase())
            && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    field.split('.').count() >= 2 && field.split('.').all(well_formed)
}

#[cfg(test)]
mod tests {
    use super::valid_key_name;

    #[test]
    fn key_names_follow_the_grammar() {
        for good in ["displayname", "avatar_url", "m.tz", "org.example.pronouns", "com.x_y.k2"] {
            assert!(valid_key_name(good), "{good}");
        }
        for bad in ["foo", "", "Org.example.x", "org..x", "org.example.", ".org.x", "org.9x", "org.ex-ample"]
        {
            assert!(!valid_key_name(bad), "{bad}");
        }
    }
}
