//! Local accounts: creation, passwords, deactivation; devices and access
//! tokens ([`devices`]); profiles ([`profile`]); account data and filters
//! ([`account_data`]); user-interactive authentication ([`uiaa`]); and
//! what end-to-end encryption keeps per user and device: keys ([`keys`]),
//! cross-signing ([`cross_signing`]), send-to-device inboxes ([`to_device`])
//! and key backups ([`backup`]).
//! Those live here because they come and go with the devices.

pub mod account_data;
pub mod backup;
pub mod cross_signing;
pub mod devices;
pub mod keys;
pub mod moderation;
pub mod openid;
pub mod profile;
pub mod push_rules;
pub mod pushers;
pub mod registration_tokens;
pub mod remote_devices;
pub mod sent_members;
pub mod shared_secret;
pub mod sliding;
pub mod to_device;
pub mod uiaa;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use http::StatusCode;
use ruma::{OwnedServerName, OwnedUserId, UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::{
    Error, Result,
    storage::{Batch, Db, maps},
    stream::Stream,
    util,
};

/// What `users` stores for each local account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// argon2id PHC string; `None` means password login is impossible.
    pub password_hash: Option<String>,
    pub admin: bool,
    pub deactivated: bool,
    pub created_ts: u64,
    /// A guest account (`kind=guest`): numeric localpart, no password, the
    /// few endpoints guests may call, until it registers as a full user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
    /// Synapse's user type (`bot`, `support`), set by a server admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
}

pub struct Users {
    db: Db,
    server_name: OwnedServerName,
    stream: Arc<Stream>,
    /// Serialises check-then-write allocations: new user IDs, filter IDs.
    alloc_lock: std::sync::Mutex<()>,
    /// Serialises key uploads and claims (a one-time key goes to one claimer).
    keys_lock: std::sync::Mutex<()>,
    /// Serialises backup writes, so a version switch and an upload never interleave.
    backup_lock: std::sync::Mutex<()>,
    /// Serialises to-device sends (a transaction ID is used once).
    to_device_lock: std::sync::Mutex<()>,
    push_rule_cache: std::sync::Mutex<std::collections::HashMap<OwnedUserId, Arc<push_rules::Rules>>>,
    ignored_cache:
        std::sync::Mutex<std::collections::HashMap<OwnedUserId, Arc<std::collections::HashSet<OwnedUserId>>>>,
    /// Password hashing (argon2id, ~19 MiB each) at most once per core at a
    /// time; further requests wait their turn.
    hashing: tokio::sync::Semaphore,
    /// OpenID tokens (an hour each; kept in memory, a client asks again).
    openid_tokens: std::sync::Mutex<openid::Tokens>,
    badge_requests: pushers::BadgeRequests,
    /// Users deactivated with `erase` (few; every event served asks).
    erased: std::sync::RwLock<std::collections::HashSet<OwnedUserId>>,
    /// Accounts a server admin locked, suspended, shadow-banned or gave a
    /// rate of their own ([`moderation`]).
    moderated: std::sync::RwLock<std::collections::HashMap<OwnedUserId, moderation::Moderation>>,
    /// Registration tokens ([`registration_tokens`]).
    pub registration_tokens: registration_tokens::Tokens,
    /// Serialises updates of one remote user's cached device list
    /// (`federation::devices`).
    pub remote_device_locks: crate::util::KeyedLocks<OwnedUserId>,
    /// Member events each lazy-loading device already has (sync).
    pub sent_members: sent_members::SentMembers,
    /// What each sliding sync connection was sent (`sync::sliding`).
    pub sliding: sliding::Connections,
    /// The to-device inbox cap (`to_device::MAX_INBOX`; lower in tests).
    inbox_cap: u64,
}

impl Users {
    pub fn new(db: Db, server_name: OwnedServerName, stream: Arc<Stream>) -> Result<Self> {
        let mut erased = std::collections::HashSet::new();
        for (k, _) in db.scan_prefix(&maps::ERASED_USERS, b"")? {
            erased.insert(
                OwnedUserId::try_from(String::from_utf8(k).map_err(Error::internal)?)
                    .map_err(Error::internal)?,
            );
        }
        Ok(Self {
            sliding: sliding::Connections::new(db.clone()),
            moderated: std::sync::RwLock::new(moderation::load(&db)?),
            registration_tokens: registration_tokens::Tokens::new(db.clone()),
            db,
            server_name,
            stream,
            alloc_lock: std::sync::Mutex::default(),
            keys_lock: std::sync::Mutex::default(),
            backup_lock: std::sync::Mutex::default(),
            to_device_lock: std::sync::Mutex::default(),
            push_rule_cache: Default::default(),
            ignored_cache: Default::default(),
            openid_tokens: Default::default(),
            badge_requests: Default::default(),
            erased: std::sync::RwLock::new(erased),
            remote_device_locks: Default::default(),
            sent_members: Default::default(),
            inbox_cap: to_device::MAX_INBOX,
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
        })
    }

    /// Runs password work (hashing, checking, a UIA step that checks one)
    /// on a blocking thread, at most one per core at a time, so a burst of
    /// logins or registrations costs memory for a core's worth of hashes,
    /// not for every request at once.
    pub async fn password_work<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R> {
        let _permit = self.hashing.acquire().await.map_err(Error::internal)?;
        tokio::task::spawn_blocking(work).await.map_err(Error::internal)
    }

    /// A new argon2id hash of `password`, through [`Users::password_work`].
    pub async fn hash_new_password(&self, password: String) -> Result<String> {
        self.password_work(move || hash_password(&password)).await?
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    /// Validates a requested localpart against the spec's grammar for new
    /// user IDs, returning the user ID it makes.
    pub fn user_id_for_new_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let invalid = |why: &str| Error::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, why);
        if localpart.is_empty() {
            return Err(invalid("User ID cannot be empty"));
        }
        if !localpart
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
        {
            return Err(invalid("User ID can only contain characters a-z, 0-9, or '=_-./+'"));
        }
        if localpart.starts_with('_') {
            return Err(invalid("User ID may not begin with _"));
        }
        if localpart.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("Numeric user IDs are reserved for guest users"));
        }
        let user_id = UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|e| invalid(&format!("Invalid user ID: {e}")))?;
        if user_id.as_str().len() > 255 {
            return Err(invalid("User ID is too long"));
        }
        Ok(user_id)
    }

    /// Resolves what a client typed as a login name (a localpart or a full
    /// user ID, any case) to a local user ID, if it can name one.
    pub fn resolve_login_name(&self, name: &str) -> Option<OwnedUserId> {
        let lowered = name.to_lowercase();
        let user_id = if lowered.starts_with('@') {
            UserId::parse(lowered).ok()?
        } else {
            UserId::parse(format!("@{lowered}:{}", self.server_name)).ok()?
        };
        self.is_local(&user_id).then_some(user_id)
    }

    pub fn get(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        Ok(self.db.get_json(&maps::USERS, user_id.as_bytes())?)
    }

    /// Whether the ID is taken, by an active or a deactivated account.
    pub fn exists(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.db.contains(&maps::USERS, user_id.as_bytes())?)
    }

    /// Every active local account.
    pub fn active_users(&self) -> Result<Vec<OwnedUserId>> {
        let mut users = Vec::new();
        for (key, value) in self.db.scan_prefix(&maps::USERS, b"")? {
            let record: UserRecord = serde_json::from_slice(&value).map_err(Error::internal)?;
            if !record.deactivated
                && let Ok(id) = OwnedUserId::try_from(String::from_utf8_lossy(&key).into_owned())
            {
                users.push(id);
            }
        }
        Ok(users)
    }

    /// Every local account's record, in user ID order (for server admins).
    pub fn records(&self) -> Result<Vec<(OwnedUserId, UserRecord)>> {
        self.db
            .scan_json::<UserRecord>(&maps::USERS, b"")?
            .into_iter()
            .map(|(key, record)| {
                let id = String::from_utf8(key).map_err(Error::internal)?;
                Ok((OwnedUserId::try_from(id).map_err(Error::internal)?, record))
            })
            .collect()
    }

    /// Writes a changed record (the account must exist).
    pub fn put_record(&self, user_id: &UserId, record: &UserRecord) -> Result<()> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        if !self.exists(user_id)? {
            return Err(Error::not_found("Unknown user"));
        }
        self.db.put_json(&maps::USERS, user_id.as_bytes(), record)?;
        Ok(())
    }

    /// Brings a deactivated account back (Synapse's admin API): it can log
    /// in again once it has a password; its profile starts over.
    pub fn reactivate(&self, user_id: &UserId) -> Result<()> {
        let mut record = self.get(user_id)?.ok_or_else(|| Error::not_found("Unknown user"))?;
        record.deactivated = false;
        let mut batch = Batch::new();
        batch.put_json(&maps::USERS, user_id.as_bytes(), &record);
        let mut profile = serde_json::Map::new();
        profile.insert("displayname".into(), user_id.localpart().into());
        batch.put_json(&maps::PROFILES, user_id.as_bytes(), &profile);
        batch.delete(&maps::ERASED_USERS, user_id.as_bytes());
        self.db.write(batch)?;
        self.erased.write().expect("erased users").remove(user_id);
        Ok(())
    }

    pub fn is_active(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get(user_id)?.is_some_and(|u| !u.deactivated))
    }

    pub fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get(user_id)?.is_some_and(|u| u.admin && !u.deactivated))
    }

    /// Whether any account exists (deactivated ones included).
    pub fn any(&self) -> Result<bool> {
        Ok(!self.db.scan_range(&maps::USERS, b"", None, false, 1)?.is_empty())
    }

    /// Creates an account. `password_hash` comes from [`hash_password`], so
    /// the expensive hashing happens outside any lock or batch.
    pub fn create(
        &self,
        user_id: &UserId,
        password_hash: Option<String>,
        admin: bool,
        displayname: Option<&str>,
    ) -> Result<()> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        if self.exists(user_id)? {
            return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken."));
        }
        let record = UserRecord {
            password_hash,
            admin,
            deactivated: false,
            created_ts: util::now_ms(),
            guest: false,
            user_type: None,
        };
        let mut batch = Batch::new();
        batch.put_json(&maps::USERS, user_id.as_bytes(), &record);
        let mut profile = serde_json::Map::new();
        profile.insert("displayname".into(), displayname.unwrap_or_else(|| user_id.localpart()).into());
        batch.put_json(&maps::PROFILES, user_id.as_bytes(), &profile);
        self.db.write(batch)?;
        Ok(())
    }

    /// A new guest account: a numeric localpart (reserved for guests), the
    /// localpart as display name, no password.
    pub fn create_guest(&self) -> Result<OwnedUserId> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        let user_id = loop {
            let digits: u64 = rand::Rng::gen_range(&mut rand::thread_rng(), 1_000_000_000..10_000_000_000);
            let id = UserId::parse(format!("@{digits}:{}", self.server_name)).map_err(Error::internal)?;
            if !self.exists(&id)? {
                break id;
            }
        };
        let record = UserRecord {
            password_hash: None,
            admin: false,
            deactivated: false,
            created_ts: util::now_ms(),
            guest: true,
            user_type: None,
        };
        let mut batch = Batch::new();
        batch.put_json(&maps::USERS, user_id.as_bytes(), &record);
        let mut profile = serde_json::Map::new();
        profile.insert("displayname".into(), user_id.localpart().into());
        batch.put_json(&maps::PROFILES, user_id.as_bytes(), &profile);
        self.db.write(batch)?;
        Ok(user_id)
    }

    /// Whether the account is a guest. Only numeric localparts can be.
    pub fn is_guest(&self, user_id: &UserId) -> Result<bool> {
        if !user_id.localpart().bytes().all(|b| b.is_ascii_digit()) {
            return Ok(false);
        }
        Ok(self.get(user_id)?.is_some_and(|record| record.guest && !record.deactivated))
    }

    /// A guest becomes a full user with a password, keeping its ID and profile.
    pub fn upgrade_guest(&self, user_id: &UserId, password_hash: String) -> Result<()> {
        let _guard = self.alloc_lock.lock().expect("allocation lock");
        let mut record = self
            .get(user_id)?
            .filter(|record| record.guest && !record.deactivated)
            .ok_or_else(|| Error::forbidden("Only a guest account can be upgraded"))?;
        record.guest = false;
        record.password_hash = Some(password_hash);
        let mut batch = Batch::new();
        batch.put_json(&maps::USERS, user_id.as_bytes(), &record);
        self.db.write(batch)?;
        Ok(())
    }

    /// Checks a password; a missing, deactivated or password-less account
    /// never matches.
    pub fn check_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let hash = match self.get(user_id)? {
            Some(UserRecord { password_hash: Some(hash), deactivated: false, .. }) => hash,
            _ => {
                // Spend the same time as a real check, so timing does not reveal accounts.
                let _ = verify_password(DUMMY_HASH, password);
                return Ok(false);
            }
        };
        Ok(verify_password(&hash, password))
    }

    pub fn set_password_hash(&self, user_id: &UserId, password_hash: Option<String>) -> Result<()> {
        let mut record = self.get(user_id)?.ok_or_else(|| Error::not_found("Unknown user"))?;
        record.password_hash = password_hash;
        self.db.put_json(&maps::USERS, user_id.as_bytes(), &record)?;
        Ok(())
    }

    /// Deactivates an account for good: the password, every device and token
    /// (with their keys), the cross-signing keys, key backups and the
    /// profile go; the user ID stays reserved.
    /// Whether the user was deactivated with `erase`.
    pub fn is_erased(&self, user_id: &UserId) -> bool {
        self.erased.read().expect("erased users").contains(user_id)
    }

    /// Deactivates an account; with `erase`, its messages are hidden from
    /// whoever was not in the room when they were sent (GDPR erasure, as
    /// Synapse).
    pub fn deactivate(&self, user_id: &UserId, erase: bool) -> Result<()> {
        let mut record = self.get(user_id)?.ok_or_else(|| Error::not_found("Unknown user"))?;
        record.deactivated = true;
        record.password_hash = None;
        record.admin = false;
        let mut batch = Batch::new();
        batch.put_json(&maps::USERS, user_id.as_bytes(), &record);
        self.remove_devices_into(&mut batch, user_id, None)?;
        self.remove_cross_signing_into(&mut batch, user_id)?;
        self.remove_backups_into(&mut batch, user_id)?;
        batch.put_json(&maps::PROFILES, user_id.as_bytes(), &serde_json::Map::new());
        if erase {
            batch.put(&maps::ERASED_USERS, user_id.as_bytes().to_vec(), Vec::new());
        }
        let change = self.note_key_change(&mut batch, user_id, None)?;
        self.db.write(batch)?;
        change.publish();
        if erase {
            self.erased.write().expect("erased users").insert(user_id.to_owned());
        }
        Ok(())
    }
}

/// A valid argon2id hash of a random password, used to equalise timing.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9iwWC6zFqIBFtAvd0I/ObXPoR+J3+pTpUC1iPg8yOL4";

/// Hashes a password with argon2id (OWASP parameters). CPU-heavy: call it
/// from a blocking task.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    fn users_in(path: &std::path::Path) -> Users {
        let db = Db::open(path, 8, false).unwrap();
        let stream = Arc::new(Stream::open(db.clone(), 0).unwrap());
        Users::new(db, "example.org".try_into().unwrap(), stream).unwrap()
    }

    #[test]
    fn concurrent_creates_of_one_id_make_one_account() {
        let dir = tempfile::tempdir().unwrap();
        let users = std::sync::Arc::new(users_in(dir.path()));
        for round in 0..20 {
            let user_id = users.user_id_for_new_localpart(&format!("race{round}")).unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (users, barrier, user_id) = (users.clone(), barrier.clone(), user_id.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        users.create(&user_id, Some(format!("hash{i}")), false, None).is_ok()
                    })
                })
                .collect();
            let created = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
            assert_eq!(created, 1, "round {round}: {created} creates of one ID succeeded");
        }
    }

    #[test]
    fn localparts_follow_the_grammar() {
        let dir = tempfile::tempdir().unwrap();
        let users = users_in(dir.path());
        assert_eq!(
            users.user_id_for_new_localpart("alice.b-c=d/e+f").unwrap().as_str(),
            "@alice.b-c=d/e+f:example.org"
        );
        for bad in ["", "Alice", "al ice", "al:ice", "_bot", "12345", &"a".repeat(260)] {
            let err = users.user_id_for_new_localpart(bad).unwrap_err();
            assert!(matches!(err, Error::Matrix { kind: ErrorKind::InvalidUsername, .. }), "{bad}: {err}");
        }
        assert_eq!(users.resolve_login_name("Alice").unwrap().as_str(), "@alice:example.org");
        assert_eq!(users.resolve_login_name("@alice:example.org").unwrap().as_str(), "@alice:example.org");
        assert!(users.resolve_login_name("@alice:elsewhere.org").is_none());
    }

    /// Review §2.4: a device that never syncs holds at most the cap; what it
    /// acknowledges makes room again.
    #[test]
    fn to_device_inboxes_are_capped() {
        use std::collections::BTreeMap;

        use ruma::{OwnedDeviceId, serde::Raw};
        use to_device::Recipient;

        let dir = tempfile::tempdir().unwrap();
        let mut users = users_in(dir.path());
        users.inbox_cap = 3;
        let bob = UserId::parse("@bob:example.org").unwrap();
        users.create(&bob, None, false, None).unwrap();
        let (device, _) = users.login_device(&bob, None, None, None).unwrap();
        let alice = UserId::parse("@alice:example.org").unwrap();
        let send = |txn: &str| {
            let content = serde_json::value::to_raw_value(&serde_json::json!({"n": txn})).unwrap();
            let messages = BTreeMap::from([(
                bob.clone(),
                BTreeMap::from([(Recipient::Device(device.clone()), content)]),
            )]);
            users.send_to_device(&alice, &OwnedDeviceId::from("A"), "m.test", txn, &messages).unwrap();
        };
        let inbox = |users: &Users| -> Vec<(u64, Raw<ruma::events::AnyToDeviceEvent>)> {
            users.to_device_messages(&bob, &device, 0, u64::MAX, 100).unwrap()
        };
        for txn in ["1", "2", "3", "4", "5"] {
            send(txn);
        }
        let held = inbox(&users);
        assert_eq!(held.len(), 3, "the cap");
        users.acknowledge_to_device(&bob, &device, held[1].0).unwrap();
        assert_eq!(inbox(&users).len(), 1);
        send("6");
        send("7");
        send("8");
        assert_eq!(inbox(&users).len(), 3, "room for two more, not three");
    }
}
