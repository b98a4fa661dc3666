//! Presence: online, unavailable or offline, a status message and when the
//! user was last active; shared with users who share a room.
//!
//! Syncing marks a user online (unless the sync says otherwise); a user who
//! stops syncing for [`OFFLINE_AFTER`] goes offline (a background sweep).
//! Each state change is stamped with a stream position and logged, so sync
//! sends only the presence that changed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    rooms::Rooms,
    storage::{Batch, Db, decode_u64, maps},
    stream::{Stream, Topic},
    util,
};

/// This long after their last sync ended (with none in flight), an online
/// user goes offline.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(30);
/// Active within this long counts as `currently_active`.
const ACTIVE_WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    /// The stream position of the last change (its `presence_changes` row).
    pub position: u64,
}

#[derive(Clone, Copy)]
struct Syncing {
    in_flight: u32,
    last: tokio::time::Instant,
}

/// Held while a sync is in flight; a user with one is never swept offline.
pub struct SyncGuard<'a> {
    presence: &'a Presence,
    user: Option<OwnedUserId>,
    /// The sync changed the user's presence (for other servers to hear).
    pub changed: bool,
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        if let Some(user) = &self.user
            && let Some(s) = self.presence.syncing.lock().expect("presence").get_mut(user)
        {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.last = tokio::time::Instant::now();
        }
    }
}

pub struct Presence {
    db: Db,
    stream: Arc<Stream>,
    pub enabled: bool,
    /// Syncs in flight per user and when the last one ended (in memory: a
    /// restart forgets it, and the sweep then takes them offline).
    syncing: Mutex<HashMap<OwnedUserId, Syncing>>,
    lock: Mutex<()>,
}

impl Presence {
    pub fn new(db: Db, stream: Arc<Stream>, enabled: bool) -> Self {
        Self { db, stream, enabled, syncing: Mutex::default(), lock: Mutex::default() }
    }

    pub fn record(&self, user: &UserId) -> Result<Option<PresenceRecord>> {
        Ok(self.db.get_json(&maps::PRESENCE, user.as_bytes())?)
    }

    /// Sets a user's presence and status message (`PUT /presence`).
    pub fn set(&self, user: &UserId, presence: &str, status_msg: Option<String>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if presence != "offline" {
            let mut syncing = self.syncing.lock().expect("presence");
            let entry = syncing
                .entry(user.to_owned())
                .or_insert(Syncing { in_flight: 0, last: tokio::time::Instant::now() });
            entry.last = tokio::time::Instant::now();
        }
        self.write(user, presence, status_msg, util::now_ms())
    }

    /// A sync arrived: with `set_presence` online (the default) or
    /// unavailable, the user is that now and was active now. The guard
    /// marks the sync in flight until it is dropped.
    pub fn synced(&self, user: &UserId, set_presence: &str) -> Result<SyncGuard<'_>> {
        if !self.enabled || set_presence == "offline" {
            return Ok(SyncGuard { presence: self, user: None, changed: false });
        }
        {
            let mut syncing = self.syncing.lock().expect("presence");
            let entry = syncing
                .entry(user.to_owned())
                .or_insert(Syncing { in_flight: 0, last: tokio::time::Instant::now() });
            entry.in_flight += 1;
        }
        let mut guard = SyncGuard { presence: self, user: Some(user.to_owned()), changed: false };
        let now = util::now_ms();
        let record = self.record(user)?;
        guard.changed = record.as_ref().is_none_or(|r| r.presence != set_presence);
        match record {
            // Same state: refresh last-active quietly, at most once a minute
            // (nobody is woken for it; `last_active_ago` is computed on read).
            Some(r) if r.presence == set_presence => {
                if now.saturating_sub(r.last_active_ts) >= ACTIVE_WINDOW_MS {
                    let _guard = self.lock.lock().expect("presence lock");
                    if let Some(mut r) = self.record(user)?.filter(|r| r.presence == set_presence) {
                        r.last_active_ts = now;
                        self.db.put_json(&maps::PRESENCE, user.as_bytes(), &r)?;
                    }
                }
            }
            Some(r) => self.write(user, set_presence, r.status_msg, now)?,
            None => self.write(user, set_presence, None, now)?,
        }
        Ok(guard)
    }

    fn write(
        &self,
        user: &UserId,
        presence: &str,
        status_msg: Option<String>,
        last_active_ts: u64,
    ) -> Result<()> {
        let _guard = self.lock.lock().expect("presence lock");
        let position = self.stream.allocate()?;
        let mut batch = Batch::new();
        if let Some(old) = self.record(user)? {
            batch.delete(&maps::PRESENCE_CHANGES, old.position.to_be_bytes());
        }
        let record = PresenceRecord {
            presence: presence.to_owned(),
            status_msg,
            last_active_ts,
            position: position.get(),
        };
        batch.put_json(&maps::PRESENCE, user.as_bytes().to_vec(), &record);
        batch.put(&maps::PRESENCE_CHANGES, position.get().to_be_bytes(), user.as_bytes());
        self.db.write(batch)?;
        position.publish([Topic::AboutUser(user.to_owned())]);
        Ok(())
    }

    /// Users whose presence changed in `(since, upto]`, or every user with
    /// a presence without `since`.
    pub fn changed(&self, since: Option<u64>, upto: u64) -> Result<Vec<OwnedUserId>> {
        let user = |bytes: &[u8]| {
            OwnedUserId::try_from(String::from_utf8(bytes.to_vec()).map_err(Error::internal)?)
                .map_err(Error::internal)
        };
        match since {
            Some(since) => {
                let start = (since + 1).to_be_bytes();
                let mut users = Vec::new();
                for (position, value) in
                    self.db.scan_range(&maps::PRESENCE_CHANGES, b"", Some(&start), false, usize::MAX)?
                {
                    if decode_u64(&position)? > upto {
                        break;
                    }
                    users.push(user(&value)?);
                }
                Ok(users)
            }
            None => self.db.scan_prefix(&maps::PRESENCE, b"")?.iter().map(|(k, _)| user(k)).collect(),
        }
    }

    /// The `m.presence` event for a user, with `last_active_ago` as of now.
    pub fn event(&self, user: &UserId, record: &PresenceRecord, profile: Option<&Value>) -> Value {
        let ago = util::now_ms().saturating_sub(record.last_active_ts);
        let mut content = json!({
            "presence": record.presence,
            "last_active_ago": ago,
            "currently_active": record.presence == "online" && ago < ACTIVE_WINDOW_MS,
        });
        if let Some(msg) = &record.status_msg {
            content["status_msg"] = json!(msg);
        }
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = profile.and_then(|p| p.get(field)) {
                content[field] = value.clone();
            }
        }
        json!({"type": "m.presence", "sender": user, "content": content})
    }

    /// Takes offline the users who stopped syncing; runs until the server stops.
    pub async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(OFFLINE_AFTER / 3).await;
            let now = tokio::time::Instant::now();
            let gone: Vec<OwnedUserId> = {
                let mut syncing = self.syncing.lock().expect("presence");
                let idle = |s: &Syncing| s.in_flight == 0 && now - s.last > OFFLINE_AFTER;
                let gone = syncing.iter().filter(|(_, s)| idle(s)).map(|(u, _)| u.clone()).collect();
                syncing.retain(|_, s| !idle(s));
                gone
            };
            for user in gone {
                match self.record(&user) {
                    Ok(Some(r)) if r.presence != "offline" => {
                        if let Err(e) = self.write(&user, "offline", r.status_msg, r.last_active_ts) {
                            tracing::warn!("presence sweep: {e}");
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Whether two users are both joined to some room.
pub fn share_a_room(rooms: &Rooms, a: &UserId, b: &UserId) -> Result<bool> {
    for (room, membership) in rooms.memberships(b)? {
        if membership == "join" && rooms.membership(a, room)?.as_deref() == Some("join") {
            return Ok(true);
        }
    }
    Ok(false)
}
