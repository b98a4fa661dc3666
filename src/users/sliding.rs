//! Sliding sync connections (MSC4186, served by `sync::sliding`): what a connection — one user's
//! device under one `conn_id` — was sent, as of each `pos` it was given,
//! kept in RocksDB so that a restart, or a request retried with the same
//! `pos` after the client cancelled one in flight, is answered correctly.
//!
//! A `pos` is `<snapshot>_<stream position>`: the snapshot of what the
//! connection had been sent, and where the stream stood. Snapshot 0 is
//! "nothing remembered" (a connection with no lists nor subscriptions, such
//! as matrix-rust-sdk's encryption connection, stores nothing). A request
//! with a `pos` drops every other snapshot of its connection (the client
//! has moved on to that one); its answer is stored beside it as a new one,
//! so the same `pos` may come again. A `pos` the store does not know —
//! never given, expired, for another device or connection, or unreadable —
//! is `M_UNKNOWN_POS`, which tells the client to start the connection over.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
};

use http::StatusCode;
use ruma::{DeviceId, UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    storage::{Batch, Db, key, maps},
};

/// How stale a connection's recorded last use may get (ms).
const LAST_USED_GRANULARITY_MS: u64 = 5 * 60 * 1000;

/// Snapshots kept per connection at most (the latest `pos` and the answer
/// to it, plus answers to retries of that `pos`).
const SNAPSHOTS: usize = 4;

/// What a room was last sent with: the room's configuration (the largest
/// timeline and the union of the state asked for it by every list and
/// subscription it was in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoomConfig {
    pub timeline_limit: u64,
    /// `(event type, state key)` pairs, with `*`, `$LAZY` and `$ME` as sent.
    pub required_state: BTreeSet<(String, String)>,
    /// Pairs left out of what `required_state` matches (the stable
    /// dialect's `exclude`; never lazily loaded members).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exclude: BTreeSet<(String, String)>,
}

/// One room of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// Index into the snapshot's `configs`.
    pub config: usize,
    /// `None`: the client has the room as of the snapshot's stream
    /// position. `Some(p)`: it has the room as of `p`, earlier (the room
    /// left every list's range while it had news).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<u64>,
}

/// What a connection had been sent as of one `pos`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream position the answer was built up to.
    pub upto: u64,
    /// The distinct configurations rooms were sent with.
    pub configs: Vec<RoomConfig>,
    /// Rooms ever sent on the connection, by short ID.
    pub rooms: BTreeMap<u64, Sent>,
    /// Invites and knocks to rooms this server is not in, as sent: the
    /// stream position of each.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote: BTreeMap<ruma::OwnedRoomId, u64>,
}

impl Snapshot {
    /// What a room was sent with, if it was.
    pub fn room(&self, room: u64) -> Option<(&RoomConfig, Option<u64>)> {
        let sent = self.rooms.get(&room)?;
        Some((self.configs.get(sent.config)?, sent.behind))
    }

    /// Records what a room was sent with.
    pub fn set_room(&mut self, room: u64, config: &RoomConfig, behind: Option<u64>) {
        let index = match self.configs.iter().position(|c| c == config) {
            Some(index) => index,
            None => {
                self.configs.push(config.clone());
                self.configs.len() - 1
            }
        };
        self.rooms.insert(room, Sent { config: index, behind });
    }

    /// Drops configurations no room uses any more.
    fn compact(&mut self) {
        let used: BTreeSet<usize> = self.rooms.values().map(|s| s.config).collect();
        if used.len() == self.configs.len() {
            return;
        }
        let mut renumbered = BTreeMap::new();
        let mut configs = Vec::with_capacity(used.len());
        for index in used {
            renumbered.insert(index, configs.len());
            configs.push(self.configs[index].clone());
        }
        for sent in self.rooms.values_mut() {
            sent.config = renumbered[&sent.config];
        }
        self.configs = configs;
    }
}

/// A connection as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// When it was last used (ms since the epoch).
    last_used: u64,
    /// The number the next snapshot gets.
    next: u64,
    snapshots: BTreeMap<u64, Snapshot>,
}

/// A `pos` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub snapshot: u64,
    pub upto: u64,
}

impl Pos {
    /// Reads a token; anything else is an unknown position.
    pub fn parse(token: &str) -> Result<Self> {
        let (snapshot, upto) = token.split_once('_').ok_or_else(unknown_pos)?;
        Ok(Self {
            snapshot: snapshot.parse().map_err(|_| unknown_pos())?,
            upto: upto.parse().map_err(|_| unknown_pos())?,
        })
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.snapshot, self.upto)
    }
}

/// The answer to a `pos` the server does not know (400 `M_UNKNOWN_POS`).
pub fn unknown_pos() -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::UnknownPos, "Unknown position")
}

/// Every connection's snapshots.
pub struct Connections {
    db: Db,
    /// Serialises the read-modify-write of a connection's row.
    lock: Mutex<()>,
}

impl Connections {
    pub fn new(db: Db) -> Self {
        Self { db, lock: Mutex::new(()) }
    }

    fn key(user: &UserId, device: &DeviceId, conn_id: &str) -> Vec<u8> {
        key(&[user.as_bytes(), device.as_bytes(), conn_id.as_bytes()])
    }

    fn load(&self, key: &[u8]) -> Result<Option<Stored>> {
        Ok(self.db.get_json(&maps::SLIDING_CONNECTIONS, key)?)
    }

    fn store(&self, key: &[u8], stored: &Stored) -> Result<()> {
        let mut batch = Batch::new();
        batch.put_json(&maps::SLIDING_CONNECTIONS, key.to_vec(), stored);
        Ok(self.db.write_unsynced(batch)?)
    }

    /// What the connection had been sent as of `pos`, dropping its other
    /// snapshots; `M_UNKNOWN_POS` when it has no such snapshot.
    pub fn resume(
        &self,
        user: &UserId,
        device: &DeviceId,
        conn_id: &str,
        pos: Pos,
        now: u64,
    ) -> Result<Snapshot> {
        if pos.snapshot == 0 {
            return Ok(Snapshot { upto: pos.upto, ..Snapshot::default() });
        }
        let key = Self::key(user, device, conn_id);
        let _guard = self.lock.lock().expect("sliding sync connections");
        let mut stored = self.load(&key)?.ok_or_else(unknown_pos)?;
        let snapshot =
            stored.snapshots.remove(&pos.snapshot).filter(|s| s.upto == pos.upto).ok_or_else(unknown_pos)?;
        // Written back only when it drops other snapshots or its last use
        // is old news (as Synapse, every few minutes): a long poll's cost.
        let others = !stored.snapshots.is_empty();
        if others || now.saturating_sub(stored.last_used) > LAST_USED_GRANULARITY_MS {
            stored.snapshots = BTreeMap::from([(pos.snapshot, snapshot.clone())]);
            stored.last_used = now;
            self.store(&key, &stored)?;
        }
        Ok(snapshot)
    }

    /// Stores what the connection has now been sent, beside the snapshot
    /// the request resumed from, and names it. A request without `pos`
    /// (`resumed` None) starts the connection over: its old snapshots go.
    pub fn record(
        &self,
        user: &UserId,
        device: &DeviceId,
        conn_id: &str,
        resumed: Option<u64>,
        mut snapshot: Snapshot,
        now: u64,
    ) -> Result<Pos> {
        snapshot.compact();
        let key = Self::key(user, device, conn_id);
        let _guard = self.lock.lock().expect("sliding sync connections");
        let mut stored = self.load(&key)?.unwrap_or_default();
        match resumed {
            // Resumed from a snapshot another request has dropped since:
            // the client went on without this answer.
            Some(previous) if previous != 0 && !stored.snapshots.contains_key(&previous) => {
                return Err(unknown_pos());
            }
            Some(_) => {}
            None => stored.snapshots.clear(),
        }
        stored.next = stored.next.max(1);
        let number = stored.next;
        stored.next += 1;
        let upto = snapshot.upto;
        stored.snapshots.insert(number, snapshot);
        while stored.snapshots.len() > SNAPSHOTS {
            stored.snapshots.pop_first();
        }
        stored.last_used = now;
        self.store(&key, &stored)?;
        Ok(Pos { snapshot: number, upto })
    }

    /// Forgets the connections unused since `before` (ms); how many went.
    pub fn expire(&self, before: u64) -> Result<usize> {
        let _guard = self.lock.lock().expect("sliding sync connections");
        let mut batch = Batch::new();
        let mut gone = 0;
        let mut from: Option<Vec<u8>> = None;
        loop {
            let rows = self.db.scan_range(&maps::SLIDING_CONNECTIONS, b"", from.as_deref(), false, 1_000)?;
            let Some((last, _)) = rows.last() else { break };
            let mut next = last.clone();
            next.push(0);
            for (key, value) in &rows {
                let stale = serde_json::from_slice::<Stored>(value).map_or(true, |s| s.last_used < before);
                if stale {
                    batch.delete(&maps::SLIDING_CONNECTIONS, key.clone());
                    gone += 1;
                }
            }
            from = Some(next);
        }
        self.db.write_unsynced(batch)?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, user_id};

    use super::*;

    fn store() -> (tempfile::TempDir, Connections) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        (dir, Connections::new(db))
    }

    fn config(limit: u64) -> RoomConfig {
        RoomConfig {
            timeline_limit: limit,
            required_state: BTreeSet::from([("m.room.name".into(), "".into())]),
            exclude: BTreeSet::new(),
        }
    }

    #[test]
    fn a_pos_may_come_again_until_the_client_moves_on() {
        let (_dir, c) = store();
        let (alice, phone) = (user_id!("@alice:x"), device_id!("PHONE"));
        let mut first = Snapshot { upto: 10, ..Default::default() };
        first.set_room(7, &config(1), None);
        let one = c.record(alice, phone, "room-list", None, first.clone(), 0).unwrap();
        assert_eq!(one.to_string(), "1_10");
        assert_eq!(Pos::parse("1_10").unwrap(), one);

        // The answer to `one` is lost (cancelled); `one` comes again.
        let resumed = c.resume(alice, phone, "room-list", one, 1).unwrap();
        assert_eq!(resumed, first);
        let mut second = resumed.clone();
        second.upto = 12;
        let lost = c.record(alice, phone, "room-list", Some(one.snapshot), second.clone(), 1).unwrap();
        let again = c.resume(alice, phone, "room-list", one, 2).unwrap();
        assert_eq!(again, first, "the same snapshot");
        let two = c.record(alice, phone, "room-list", Some(one.snapshot), second, 2).unwrap();
        assert_ne!(two, lost);
        // The client moves on to `two`: `one` and the lost answer are gone.
        c.resume(alice, phone, "room-list", two, 3).unwrap();
        for gone in [one, lost] {
            let err = c.resume(alice, phone, "room-list", gone, 3).unwrap_err();
            assert_eq!(err.to_string(), unknown_pos().to_string());
        }
    }

    #[test]
    fn unknown_positions_are_refused() {
        let (_dir, c) = store();
        let (alice, phone) = (user_id!("@alice:x"), device_id!("PHONE"));
        let pos =
            c.record(alice, phone, "room-list", None, Snapshot { upto: 5, ..Default::default() }, 0).unwrap();
        let refused = |user, device, conn: &str, pos: Pos| c.resume(user, device, conn, pos, 0).is_err();
        assert!(refused(user_id!("@bob:x"), phone, "room-list", pos), "another user");
        assert!(refused(alice, device_id!("LAPTOP"), "room-list", pos), "another device");
        assert!(refused(alice, phone, "encryption", pos), "another connection");
        assert!(
            refused(alice, phone, "room-list", Pos { snapshot: pos.snapshot, upto: 6 }),
            "another position"
        );
        assert!(Pos::parse("s72_1").is_err() && Pos::parse("").is_err() && Pos::parse("1_x").is_err());
        // Snapshot 0 remembers nothing and needs nothing stored.
        assert_eq!(c.resume(alice, phone, "anything", Pos { snapshot: 0, upto: 9 }, 0).unwrap().upto, 9);
        // Starting over forgets the old snapshots.
        c.record(alice, phone, "room-list", None, Snapshot::default(), 0).unwrap();
        assert!(refused(alice, phone, "room-list", pos));
    }

    #[test]
    fn configurations_are_shared_and_idle_connections_expire() {
        let (_dir, c) = store();
        let (alice, phone) = (user_id!("@alice:x"), device_id!("PHONE"));
        let mut snapshot = Snapshot::default();
        for room in 0..1000 {
            snapshot.set_room(room, &config(1), None);
        }
        snapshot.set_room(5, &config(20), Some(3));
        snapshot.set_room(6, &config(20), None);
        assert_eq!(snapshot.configs.len(), 2);
        assert_eq!(snapshot.room(5), Some((&config(20), Some(3))));
        snapshot.set_room(5, &config(1), None);
        snapshot.set_room(6, &config(1), None);
        let pos = c.record(alice, phone, "room-list", None, snapshot, 100).unwrap();
        let resumed = c.resume(alice, phone, "room-list", pos, 100).unwrap();
        assert_eq!(resumed.configs, [config(1)], "unused configurations are dropped");
        c.record(user_id!("@bob:x"), phone, "room-list", None, Snapshot::default(), 500).unwrap();
        assert_eq!(c.expire(200).unwrap(), 1);
        assert!(c.resume(alice, phone, "room-list", pos, 600).is_err());
    }
}
