//! Rooms: the event DAG, the one pipeline every event takes, state
//! snapshots, the timeline and the membership index.
//!
//! Local events are built exactly as a federating server must build them
//! ([`builder`]), then appended through [`pipeline`], the code path other
//! servers' events take too (live, as outliers, or from the room's past);
//! [`remote`] installs a room first learned from a join response.

pub mod builder;
pub mod create;
pub mod directory;
pub mod ending;
pub mod expiry;
pub mod hierarchy;
pub mod inspect;
pub mod invite_codes;
pub mod invites;
pub mod membership;
pub mod moderation;
pub mod notifications;
pub mod pdu;
pub mod pipeline;
pub mod purge;
pub mod read;
pub mod receipts;
pub mod redaction;
pub mod relations;
pub mod remote;
pub mod resolve;
pub mod retention;
pub mod serving;
pub mod short_ids;
pub mod state;
pub mod stats;
#[cfg(test)]
pub(crate) mod testing;
pub mod typing;
pub mod upgrade;

use std::sync::{Arc, Mutex};

use ruma::{
    CanonicalJsonObject, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId,
    UserId, room_version_rules::RoomVersionRules,
};
use serde::{Deserialize, Serialize};

use self::{
    pdu::Pdu,
    short_ids::{Kind, ShortIds, state_key_name},
    state::{StateMap, StateStore},
};
use crate::{
    Error, Result,
    keys::ServerKeys,
    storage::{Db, decode_u64, key, maps},
    stream::Stream,
    users::Users,
};

/// The version new rooms get, and every version Hearth creates and processes.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V12;
pub const SUPPORTED_ROOM_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// Whether an event of this type moves its room up a room list
/// ([`maps::BUMP_TYPES`]).
pub fn bumps(kind: &str) -> bool {
    maps::BUMP_TYPES.contains(&kind)
}

/// What `rooms` stores per room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    /// The state after the forward extremities.
    pub current_snapshot: Option<u64>,
    pub forward_extremities: Vec<OwnedEventId>,
    pub created_ts: u64,
}

impl RoomRecord {
    pub fn rules(&self) -> Result<RoomVersionRules> {
        self.version
            .rules()
            .ok_or_else(|| Error::internal(format!("no rules for room version {}", self.version)))
    }
}

/// What `event_meta` stores per event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub room: u64,
    pub stream: u64,
    pub state_before: Option<u64>,
    pub state_after: Option<u64>,
    pub depth: u64,
    /// The state event this one replaced (same type and state key), if any.
    #[serde(default)]
    pub replaces_state: Option<u64>,
    /// The device and transaction ID a local client sent it with.
    #[serde(default)]
    pub txn: Option<(OwnedDeviceId, String)>,
    /// The redaction that redacted it; the stored JSON is then redacted.
    #[serde(default)]
    pub redacted_by: Option<u64>,
    /// What the event is to the room.
    #[serde(default, skip_serializing_if = "Status::is_timeline")]
    pub status: Status,
    /// The room's current state right after the event entered the timeline
    /// (the resolution of all forward extremities, which is not its own
    /// `state_after` when the DAG forks): the state clients see at its
    /// position. None before schema 2: `state_after` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    /// Its content was pruned (retention, a history purge): a stub.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
}

impl EventMeta {
    /// Whether the event has a place in the room's DAG, with a state
    /// after it: not an outlier, nor an outlier rejected against its own
    /// auth events (stored with no state at all).
    pub fn in_dag(&self) -> bool {
        self.status != Status::Outlier && self.state_after.is_some()
    }
}

/// What a stored event is to its room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted: in the timeline at `stream`, part of the state, shown.
    #[default]
    Timeline,
    /// Known only from an auth chain or a room's state: checked against
    /// its own auth events, in no timeline, with no state of its own
    /// (`state_before`/`state_after` mean nothing), never shown.
    Outlier,
    /// Failed the auth rules (remote events only): kept so later events
    /// may reference it, but never part of the state nor shown.
    Rejected,
    /// Passed the auth rules at its place in the DAG but not against the
    /// room's current state: stored and used by state resolution, never
    /// shown to clients nor built upon.
    SoftFailed,
    /// Accepted from the room's past (backfill): in the room's history by
    /// depth (`room_history`), before all of the live timeline; `stream`
    /// is 0, so whoever joined at any point may see it under `shared`.
    History,
}

impl Status {
    fn is_timeline(&self) -> bool {
        *self == Status::Timeline
    }
}

impl EventMeta {
    /// Whether clients may ever be shown the event.
    pub fn accepted(&self) -> bool {
        matches!(self.status, Status::Timeline | Status::History)
    }
}

pub struct Rooms {
    db: Db,
    server_name: OwnedServerName,
    keys: Arc<ServerKeys>,
    pub short: ShortIds,
    pub state: StateStore,
    pub stream: Arc<Stream>,
    locks: crate::util::KeyedLocks<OwnedRoomId>,
    /// Event IDs being appended right now (see [`Rooms::claim_event_id`]).
    appending: Mutex<std::collections::HashSet<OwnedEventId>>,
    pub typing: Arc<typing::Typing>,
    /// Push rules of the room's local members.
    pub(crate) users: Arc<Users>,
    /// Serialises receipt replacement (read the old, write the new).
    receipt_lock: Mutex<()>,
    /// Serialises report numbering.
    report_lock: Mutex<()>,
    directory: directory::DirectoryCache,
    /// Auth edges read for state resolution, by event short ID.
    auth_edge_cache: Mutex<crate::util::Lru<Arc<[u64]>>>,
    /// Joined members per room, with the current-state snapshot they were
    /// counted at (push rules' `room_member_count`; messages do not change it).
    joined_counts: Mutex<crate::util::Lru<(Option<u64>, usize)>>,
    /// Each room's `room_bump` position, as read or as the pipeline last
    /// wrote it (room lists read it for every room of a user).
    bump_cache: Mutex<crate::util::Lru<Option<u64>>>,
    /// Rooms' `m.room.create` types, by short ID (a room's type is fixed).
    room_types: Mutex<crate::util::Lru<Option<String>>>,
    /// Rooms known to be encrypted (encryption is never turned off).
    encrypted_rooms: Mutex<std::collections::HashSet<u64>>,
    expiry: expiry::Expiry,
    /// Admins' room stats, with the current-state snapshot they were
    /// counted at ([`stats`]).
    stats_cache: Mutex<crate::util::Lru<(Option<u64>, Arc<stats::RoomStats>)>>,
    /// Rooms being purged ([`purge`]): unknown to readers.
    purging: std::sync::RwLock<std::collections::HashSet<u64>>,
    purging_any: std::sync::atomic::AtomicBool,
    invite_code_lock: invite_codes::CodeLock,
    /// Events accepted into timelines (a metric).
    pub appended: prometheus_client::metrics::counter::Counter,
}

/// Rooms whose joined-member count is kept in memory.
const JOINED_COUNTS_CACHED: usize = 100_000;

/// Auth edges kept in memory (~16 bytes each).
const AUTH_EDGES_CACHED: usize = 1 << 21;

impl Rooms {
    pub fn open(
        db: Db,
        server_name: OwnedServerName,
        keys: Arc<ServerKeys>,
        stream: Arc<Stream>,
        users: Arc<Users>,
    ) -> Result<Self> {
        let rooms = Self {
            short: ShortIds::open(db.clone())?,
            state: StateStore::open(db.clone())?,
            db,
            server_name,
            keys,
            typing: typing::Typing::new(stream.clone()),
            users,
            stream,
            locks: Default::default(),
            appending: Mutex::default(),
            receipt_lock: Mutex::new(()),
            report_lock: Mutex::new(()),
            directory: directory::DirectoryCache::default(),
            auth_edge_cache: Mutex::new(crate::util::Lru::new(AUTH_EDGES_CACHED)),
            joined_counts: Mutex::new(crate::util::Lru::new(JOINED_COUNTS_CACHED)),
            bump_cache: Mutex::new(crate::util::Lru::new(JOINED_COUNTS_CACHED)),
            room_types: Mutex::new(crate::util::Lru::new(JOINED_COUNTS_CACHED)),
            encrypted_rooms: Mutex::default(),
            expiry: expiry::Expiry::default(),
            stats_cache: Mutex::new(crate::util::Lru::new(stats::STATS_CACHED)),
            purging: Default::default(),
            purging_any: Default::default(),
            appended: Default::default(),
            invite_code_lock: Default::default(),
        };
        rooms.load_purges()?;
        Ok(rooms)
    }

    /// The largest stream position stored by rooms, for opening the stream.
    pub fn last_position(db: &Db) -> Result<u64> {
        let last = db.scan_range(&maps::STREAM, b"", None, true, 1)?;
        Ok(last.first().map(|(k, _)| decode_u64(k)).transpose()?.unwrap_or(0))
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    /// Empties every in-memory cache of room data (benchmarks measure cold
    /// reads): full states and deltas, auth edges, short ID names.
    pub fn clear_caches(&self) {
        self.state.clear_cache();
        self.auth_edge_cache.lock().expect("auth edges").clear();
        self.joined_counts.lock().expect("joined counts").clear();
        self.bump_cache.lock().expect("bump positions").clear();
        self.room_types.lock().expect("room types").clear();
        self.short.clear_cache();
    }

    /// Waits for appends to a room one at a time; never hold it across
    /// network I/O.
    pub async fn lock(&self, room_id: &RoomId) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(room_id).await
    }

    /// Claims an event ID for one append; a second append of the same ID
    /// (into any room) is refused until the first is done.
    fn claim_event_id(&self, event_id: &ruma::EventId) -> Result<EventIdClaim<'_>> {
        if !self.appending.lock().expect("appending").insert(event_id.to_owned()) {
            return Err(Error::bad_json("Event already being processed"));
        }
        Ok(EventIdClaim { rooms: self, event_id: event_id.to_owned() })
    }

    pub fn room_short(&self, room_id: &RoomId) -> Result<Option<u64>> {
        self.short.get(Kind::Room, room_id.as_str())
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<(u64, RoomRecord)>> {
        let Some(short) = self.room_short(room_id)? else { return Ok(None) };
        Ok(self.db.get_json(&maps::ROOMS, &short.to_be_bytes())?.map(|r| (short, r)))
    }

    /// The record of a room known by its short ID.
    pub fn room_by_short(&self, short: u64) -> Result<RoomRecord> {
        self.db.get_json(&maps::ROOMS, &short.to_be_bytes())?.ok_or_else(|| Error::not_found("Unknown room"))
    }

    pub fn event_short(&self, event_id: &ruma::EventId) -> Result<Option<u64>> {
        self.short.get(Kind::Event, event_id.as_str())
    }

    pub fn event_meta(&self, short: u64) -> Result<Option<EventMeta>> {
        Ok(self.db.get_json(&maps::EVENT_META, &short.to_be_bytes())?)
    }

    /// The stored canonical JSON of an event.
    pub fn pdu_json(&self, short: u64) -> Result<Option<CanonicalJsonObject>> {
        Ok(self.db.get_json(&maps::PDUS, &short.to_be_bytes())?)
    }

    pub fn pdu_by_short(&self, short: u64) -> Result<Option<Pdu>> {
        let Some(json) = self.db.get(&maps::PDUS, &short.to_be_bytes())? else { return Ok(None) };
        let event_id = ruma::OwnedEventId::try_from(self.short.name(short)?).map_err(Error::internal)?;
        Ok(Some(Pdu::from_json(event_id, &json)?))
    }

    pub fn pdu(&self, event_id: &ruma::EventId) -> Result<Option<Pdu>> {
        match self.event_short(event_id)? {
            Some(short) => self.pdu_by_short(short),
            None => Ok(None),
        }
    }

    /// The event at `(type, state_key)` in a state map.
    pub fn state_event(&self, state: &StateMap, event_type: &str, state_key: &str) -> Result<Option<Pdu>> {
        let Some(key) = self.short.get(Kind::StateKey, &state_key_name(event_type, state_key))? else {
            return Ok(None);
        };
        match state.get(&key) {
            Some(event) => self.pdu_by_short(*event),
            None => Ok(None),
        }
    }

    /// The current state of a room.
    pub fn current_state(&self, record: &RoomRecord) -> Result<Arc<StateMap>> {
        match record.current_snapshot {
            Some(id) => self.state.load(id),
            None => Ok(Arc::new(StateMap::new())),
        }
    }

    /// A string field of the content of the current state at
    /// `(type, state_key)`: a room's name, a member's display name.
    pub fn current_state_field(
        &self,
        room_short: u64,
        event_type: &str,
        state_key: &str,
        field: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .current_state_event(room_short, event_type, state_key)?
            .and_then(|event| event.content_value()[field].as_str().map(str::to_owned)))
    }

    /// Whether the room lets guests join (`m.room.guest_access` is `can_join`).
    pub fn admits_guests(&self, room_short: u64) -> Result<bool> {
        Ok(self.current_state_field(room_short, "m.room.guest_access", "", "guest_access")?.as_deref()
            == Some("can_join"))
    }

    /// The event of the current state at `(type, state_key)`, by keyed read.
    pub fn current_state_event(
        &self,
        room_short: u64,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        let Some(key) = self.short.get(Kind::StateKey, &state_key_name(event_type, state_key))? else {
            return Ok(None);
        };
        let room_state_key = [room_short.to_be_bytes(), key.to_be_bytes()].concat();
        match self.db.get(&maps::ROOM_STATE, &room_state_key)? {
            Some(event) => self.pdu_by_short(decode_u64(&event)?),
            None => Ok(None),
        }
    }

    /// A room's type (`m.room.create`'s `type`), read once.
    pub fn room_type(&self, room_short: u64) -> Result<Option<String>> {
        if let Some(kind) = self.room_types.lock().expect("room types").get(room_short) {
            return Ok(kind);
        }
        let Some(create) = self.current_state_event(room_short, "m.room.create", "")? else {
            return Ok(None);
        };
        let kind = create.content_value()["type"].as_str().map(str::to_owned);
        self.room_types.lock().expect("room types").insert(room_short, kind.clone(), 1);
        Ok(kind)
    }

    /// Whether a room is encrypted (has `m.room.encryption`, whose state
    /// key's short ID is `key`, if the server has one: the caller looks it
    /// up once for many rooms).
    pub fn encrypted(&self, room_short: u64, key: Option<u64>) -> Result<bool> {
        let Some(key) = key else { return Ok(false) };
        if self.encrypted_rooms.lock().expect("encrypted rooms").contains(&room_short) {
            return Ok(true);
        }
        let state_key = [room_short.to_be_bytes(), key.to_be_bytes()].concat();
        let encrypted = self.db.contains(&maps::ROOM_STATE, &state_key)?;
        if encrypted {
            self.encrypted_rooms.lock().expect("encrypted rooms").insert(room_short);
        }
        Ok(encrypted)
    }

    /// A user's membership in a room, from the membership index.
    pub fn membership(&self, user_id: &UserId, room_short: u64) -> Result<Option<String>> {
        if self.is_purging(room_short) {
            return Ok(None);
        }
        let value = self.db.get(&maps::USER_ROOMS, &key(&[user_id.as_bytes(), &room_short.to_be_bytes()]))?;
        value.map(|v| String::from_utf8(v).map_err(Error::internal)).transpose()
    }

    /// Every room the user has a membership in (short ID, membership).
    pub fn memberships(&self, user_id: &UserId) -> Result<Vec<(u64, String)>> {
        let prefix = crate::storage::prefix(&[user_id.as_bytes()]);
        self.db
            .scan_prefix(&maps::USER_ROOMS, &prefix)?
            .into_iter()
            .map(|(k, v)| {
                Ok((decode_u64(&k[prefix.len()..])?, String::from_utf8(v).map_err(Error::internal)?))
            })
            .filter(|row| row.as_ref().map_or(true, |(room, _)| !self.is_purging(*room)))
            .collect()
    }

    /// Rooms where the user has the given membership.
    pub fn rooms_with_membership(&self, user_id: &UserId, membership: &str) -> Result<Vec<OwnedRoomId>> {
        let prefix = crate::storage::prefix(&[user_id.as_bytes()]);
        let mut rooms = Vec::new();
        for (k, v) in self.db.scan_prefix(&maps::USER_ROOMS, &prefix)? {
            if v == membership.as_bytes() {
                let short = decode_u64(&k[prefix.len()..])?;
                if self.is_purging(short) {
                    continue;
                }
                rooms.push(OwnedRoomId::try_from(self.short.name(short)?).map_err(Error::internal)?);
            }
        }
        Ok(rooms)
    }

    /// The servers with a joined member in a room (this one included when
    /// it has one), one seek each.
    pub fn servers_in_room(&self, room_short: u64) -> Result<Vec<OwnedServerName>> {
        let prefix = room_short.to_be_bytes();
        let mut servers = Vec::new();
        let mut from = None;
        while let Some((key, _)) =
            self.db.scan_range(&maps::ROOM_SERVERS, &prefix, from.as_deref(), false, 1)?.pop()
        {
            let rest = &key[prefix.len()..];
            let end = rest.iter().position(|b| *b == crate::storage::SEP).unwrap_or(rest.len());
            let server = std::str::from_utf8(&rest[..end]).map_err(Error::internal)?;
            servers.push(OwnedServerName::try_from(server).map_err(Error::internal)?);
            // Past every member of that server: user IDs hold no SEP byte.
            from = Some([&key[..prefix.len() + end + 1], &[crate::storage::SEP]].concat());
        }
        Ok(servers)
    }

    /// Whether a room has a joined member of this server (one seek).
    pub fn has_local_member(&self, room_short: u64) -> Result<bool> {
        Ok(!self.local_members_prefix_scan(room_short, 1)?.is_empty())
    }

    /// Whether a room has a joined member of this server other than `user`.
    pub(crate) fn has_local_member_besides(&self, room_short: u64, user: &UserId) -> Result<bool> {
        let own = room_server_key(room_short, user.as_str());
        Ok(self.local_members_prefix_scan(room_short, 2)?.iter().any(|(key, _)| *key != own))
    }

    fn local_members_prefix_scan(
        &self,
        room_short: u64,
        limit: usize,
    ) -> Result<Vec<crate::storage::KeyValue>> {
        let prefix =
            [&room_short.to_be_bytes()[..], self.server_name.as_bytes(), &[crate::storage::SEP]].concat();
        Ok(self.db.scan_range(&maps::ROOM_SERVERS, &prefix, None, false, limit)?)
    }

    /// Whether `user` is joined to a room that has a joined member of this
    /// server (for another server's user: whether its device list is ours
    /// to follow).
    pub fn shares_room_with_local(&self, user: &UserId) -> Result<bool> {
        self.shares_room_with_local_besides(user, None)
    }

    /// [`Rooms::shares_room_with_local`], leaving out one room.
    pub(crate) fn shares_room_with_local_besides(&self, user: &UserId, besides: Option<u64>) -> Result<bool> {
        for (room_short, membership) in self.memberships(user)? {
            if membership == "join" && Some(room_short) != besides && self.has_local_member(room_short)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How many members are joined to the room in its stored current state,
    /// `snapshot` (counted once per snapshot).
    pub(crate) fn joined_count(&self, room_short: u64, snapshot: Option<u64>) -> Result<usize> {
        if let Some((at, count)) = self.joined_counts.lock().expect("joined counts").get(room_short)
            && at == snapshot
        {
            return Ok(count);
        }
        let prefix = room_short.to_be_bytes();
        let count =
            self.db.scan_prefix(&maps::ROOM_MEMBERS, &prefix)?.iter().filter(|(_, m)| m == b"join").count();
        self.joined_counts.lock().expect("joined counts").insert(room_short, (snapshot, count), 1);
        Ok(count)
    }

    /// This server's members joined to the room.
    pub(crate) fn local_joined(&self, room_short: u64) -> Result<Vec<ruma::OwnedUserId>> {
        let prefix =
            [&room_short.to_be_bytes()[..], self.server_name.as_bytes(), &[crate::storage::SEP]].concat();
        self.db
            .scan_prefix(&maps::ROOM_SERVERS, &prefix)?
            .into_iter()
            .map(|(k, _)| {
                ruma::OwnedUserId::try_from(
                    String::from_utf8(k[prefix.len()..].to_vec()).map_err(Error::internal)?,
                )
                .map_err(Error::internal)
            })
            .collect()
    }

    /// Members of a room and their current membership.
    pub fn members(&self, room_short: u64) -> Result<Vec<(ruma::OwnedUserId, String)>> {
        let prefix = room_short.to_be_bytes();
        self.db
            .scan_prefix(&maps::ROOM_MEMBERS, &prefix)?
            .into_iter()
            .map(|(k, v)| {
                let user = ruma::OwnedUserId::try_from(
                    String::from_utf8(k[prefix.len()..].to_vec()).map_err(Error::internal)?,
                )
                .map_err(Error::internal)?;
                Ok((user, String::from_utf8(v).map_err(Error::internal)?))
            })
            .collect()
    }
}

/// The `room_servers` key of a joined member (`user` is a user ID).
pub(super) fn room_server_key(room_short: u64, user: &str) -> Vec<u8> {
    let server = user.split_once(':').map_or("", |(_, server)| server);
    [&room_short.to_be_bytes()[..], server.as_bytes(), &[crate::storage::SEP], user.as_bytes()].concat()
}

/// Releases a claimed event ID when the append ends.
pub(super) struct EventIdClaim<'a> {
    rooms: &'a Rooms,
    event_id: OwnedEventId,
}

impl Drop for EventIdClaim<'_> {
    fn drop(&mut self) {
        self.rooms.appending.lock().expect("appending").remove(&self.event_id);
    }
}
