//! Registration tokens: made by server admins (Synapse's admin API), each
//! with an optional expiry and number of uses, spent by the
//! `m.login.registration_token` stage of registration. A registration under
//! way holds its token (`pending`) until it completes (`completed`) or its
//! session expires (given back).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    storage::{Db, maps},
    util,
};

/// What `registration_tokens` stores of a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub uses_allowed: Option<u64>,
    pub pending: u64,
    pub completed: u64,
    pub expiry_time: Option<u64>,
    #[serde(default)]
    pub created_ts: u64,
}

impl RegistrationToken {
    /// Whether a registration may still use it (`uses_allowed: 0` never).
    pub fn is_valid(&self, now: u64) -> bool {
        self.expiry_time.is_none_or(|expiry| expiry > now)
            && self.uses_allowed.is_none_or(|allowed| self.pending + self.completed < allowed)
    }
}

/// The longest token, and the characters one may have (Synapse's rules).
const MAX_LEN: usize = 64;

fn token_is_well_formed(token: &str) -> bool {
    (1..=MAX_LEN).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// A change of a token's limits: `None` leaves a field as it is,
/// `Some(None)` removes the limit.
#[derive(Debug, Default)]
pub struct Limits {
    pub uses_allowed: Option<Option<u64>>,
    pub expiry_time: Option<Option<u64>>,
}

pub struct Tokens {
    db: Db,
    /// Serialises the counters' read-modify-write.
    lock: Mutex<()>,
}

impl Tokens {
    pub fn new(db: Db) -> Self {
        Self { db, lock: Mutex::new(()) }
    }

    /// Every token (with `valid`, only the usable or only the others), in
    /// the order they were made.
    pub fn list(&self, valid: Option<bool>) -> Result<Vec<(String, RegistrationToken)>> {
        let now = util::now_ms();
        let mut all: Vec<(String, RegistrationToken)> = self
            .db
            .scan_json::<RegistrationToken>(&maps::REGISTRATION_TOKENS, b"")?
            .into_iter()
            .filter(|(_, token)| valid.is_none_or(|valid| token.is_valid(now) == valid))
            .map(|(key, token)| (String::from_utf8_lossy(&key).into_owned(), token))
            .collect();
        all.sort_by(|a, b| a.1.created_ts.cmp(&b.1.created_ts).then_with(|| a.0.cmp(&b.0)));
        Ok(all)
    }

    pub fn get(&self, token: &str) -> Result<Option<RegistrationToken>> {
        Ok(self.db.get_json(&maps::REGISTRATION_TOKENS, token.as_bytes())?)
    }

    /// A new token: `token` as given, or `length` random characters.
    /// Errors are Synapse's (400 `M_INVALID_PARAM`).
    pub fn create(
        &self,
        token: Option<String>,
        length: Option<u64>,
        uses_allowed: Option<u64>,
        expiry_time: Option<u64>,
    ) -> Result<(String, RegistrationToken)> {
        let now = util::now_ms();
        if expiry_time.is_some_and(|expiry| expiry < now) {
            return Err(Error::invalid_param("expiry_time must not be in the past"));
        }
        let _guard = self.lock.lock().expect("registration token lock");
        let token = match token {
            Some(token) if !token_is_well_formed(&token) => {
                return Err(Error::invalid_param(format!(
                    "token must not be empty, must not be longer than {MAX_LEN} characters, and must consist only of characters matched by the regex [A-Za-z0-9._~-]"
                )));
            }
            Some(token) => {
                if self.get(&token)?.is_some() {
                    return Err(Error::invalid_param(format!("Token already exists: {token}")));
                }
                token
            }
            None => {
                let length = length.unwrap_or(16);
                if !(1..=MAX_LEN as u64).contains(&length) {
                    return Err(Error::invalid_param(
                        "length must be greater than zero and not greater than 64",
                    ));
                }
                loop {
                    let candidate = util::random_string(length as usize);
                    if self.get(&candidate)?.is_none() {
                        break candidate;
                    }
                }
            }
        };
        let record = RegistrationToken { uses_allowed, expiry_time, created_ts: now, ..Default::default() };
        self.db.put_json(&maps::REGISTRATION_TOKENS, token.as_bytes(), &record)?;
        Ok((token, record))
    }

    /// Changes a token's limits; `None` when there is no such token.
    pub fn update(&self, token: &str, limits: Limits) -> Result<Option<RegistrationToken>> {
        if limits.expiry_time.flatten().is_some_and(|expiry| expiry < util::now_ms()) {
            return Err(Error::invalid_param("expiry_time must not be in the past"));
        }
        self.change(token, |record| {
            if let Some(uses_allowed) = limits.uses_allowed {
                record.uses_allowed = uses_allowed;
            }
            if let Some(expiry_time) = limits.expiry_time {
                record.expiry_time = expiry_time;
            }
            true
        })
    }

    /// Deletes a token (revokes it); whether there was one.
    pub fn delete(&self, token: &str) -> Result<bool> {
        let _guard = self.lock.lock().expect("registration token lock");
        if self.get(token)?.is_none() {
            return Ok(false);
        }
        let mut batch = crate::storage::Batch::new();
        batch.delete(&maps::REGISTRATION_TOKENS, token.as_bytes());
        self.db.write(batch)?;
        Ok(true)
    }

    pub fn is_valid(&self, token: &str) -> Result<bool> {
        Ok(self.get(token)?.is_some_and(|record| record.is_valid(util::now_ms())))
    }

    /// A registration starts using the token, if it is valid: one more
    /// pending use.
    pub fn reserve(&self, token: &str) -> Result<bool> {
        let now = util::now_ms();
        let mut reserved = false;
        self.change(token, |record| {
            reserved = record.is_valid(now);
            record.pending += u64::from(reserved);
            reserved
        })?;
        Ok(reserved)
    }

    /// A registration that held the token completed.
    pub fn complete(&self, token: &str) -> Result<()> {
        self.change(token, |record| {
            record.pending = record.pending.saturating_sub(1);
            record.completed += 1;
            true
        })?;
        Ok(())
    }

    /// A registration that held the token was abandoned.
    pub fn release(&self, token: &str) -> Result<()> {
        self.change(token, |record| {
            record.pending = record.pending.saturating_sub(1);
            true
        })?;
        Ok(())
    }

    /// Applies `change` to a token under the lock, writing it when `change`
    /// says so; the token after, or `None` when there is none.
    fn change(
        &self,
        token: &str,
        change: impl FnOnce(&mut RegistrationToken) -> bool,
    ) -> Result<Option<RegistrationToken>> {
        let _guard = self.lock.lock().expect("registration token lock");
        let Some(mut record) = self.get(token)? else { return Ok(None) };
        if change(&mut record) {
            self.db.put_json(&maps::REGISTRATION_TOKENS, token.as_bytes(), &record)?;
        }
        Ok(Some(record))
    }
}
