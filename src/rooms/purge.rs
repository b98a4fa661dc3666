//! Purging a room: every trace of it leaves the database (Synapse's
//! `purge: true` when an admin deletes a room). The room is first marked
//! (`room_purges`, one write): from then on it is unknown to readers —
//! membership look-ups skip it, joins and appends are refused — and a
//! restart resumes where the work stopped. Then, in phases, each a series
//! of writes of at most [`BATCH_OPS`] deletions: collect the room's events
//! (one scan of `event_meta`: outliers and rejected events are in no
//! timeline), per-user rows, room-keyed rows, each event's rows (all of one
//! event in one write), and last the room's short ID.
//!
//! Kept on purpose: `short_id_names` (IDs are never reused), state
//! snapshots (they hold only event short IDs, never reused; deleting them
//! safely needs an allocator floor — left for later), reports, jobs, the
//! block, sliding sync connections (stale entries are only carried along),
//! and the federation queue (the room's PDUs there are skipped).

use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EventMeta, Rooms, redaction::Pending, short_ids::Kind};
use crate::{
    Error, Result,
    storage::{Batch, KeyValue, decode_u64, key, maps, maps::MapDef, prefix},
};

/// Deletions per write.
pub const BATCH_OPS: usize = 10_000;
/// Rows read per scan.
const READ_CHUNK: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Collect,
    Users,
    Rooms,
    Events,
    Finish,
}

/// What `room_purges` keeps of a purge under way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeRecord {
    pub room_id: OwnedRoomId,
    pub phase: Phase,
    /// Collect: the last event short ID scanned.
    #[serde(default)]
    pub cursor: Option<u64>,
}

fn work_prefix(room: u64) -> Vec<u8> {
    [&room.to_be_bytes()[..], b"e"].concat()
}

/// Writes a batch once it is big enough (`force`: whatever it holds).
struct Writer<'a> {
    rooms: &'a Rooms,
    batch: Batch,
    done: u64,
    progress: &'a dyn Fn(u64),
}

impl Writer<'_> {
    fn delete(&mut self, map: &MapDef, key: impl Into<Vec<u8>>) {
        self.batch.delete(map, key);
    }

    fn flush(&mut self, force: bool) -> Result<()> {
        if self.batch.len() >= BATCH_OPS || (force && !self.batch.is_empty()) {
            self.done += self.batch.len() as u64;
            let batch = std::mem::take(&mut self.batch);
            self.rooms.db.write_unsynced(batch)?;
            (self.progress)(self.done);
        }
        Ok(())
    }

    /// Deletes every row under `prefix`, with what `also` adds per row.
    fn drain(
        &mut self,
        map: &MapDef,
        prefix: &[u8],
        mut also: impl FnMut(&mut Self, &KeyValue) -> Result<()>,
    ) -> Result<()> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = match &after {
                None => self.rooms.db.scan_range(map, prefix, None, false, READ_CHUNK)?,
                Some(last) => {
                    let mut start = last.clone();
                    start.push(0);
                    self.rooms.db.scan_range(map, prefix, Some(&start), false, READ_CHUNK)?
                }
            };
            let Some(last) = rows.last() else { return Ok(()) };
            after = Some(last.0.clone());
            for row in &rows {
                also(self, row)?;
                self.delete(map, row.0.clone());
            }
            self.flush(false)?;
        }
    }
}

impl Rooms {
    /// Whether the room is being purged (then unknown to readers).
    pub fn is_purging(&self, room: u64) -> bool {
        self.purging_any.load(std::sync::atomic::Ordering::Relaxed)
            && self.purging.read().expect("purging rooms").contains(&room)
    }

    /// The purges under way (to resume at start).
    pub fn purges(&self) -> Result<Vec<(u64, PurgeRecord)>> {
        let mut purges = Vec::new();
        for (k, v) in self.db.scan_prefix(&maps::ROOM_PURGES, b"")? {
            if k.len() == 8 {
                purges.push((decode_u64(&k)?, serde_json::from_slice(&v).map_err(Error::internal)?));
            }
        }
        Ok(purges)
    }

    /// Loads the purges under way into memory (at start).
    pub(super) fn load_purges(&self) -> Result<()> {
        for (room, _) in self.purges()? {
            self.mark_purging(room, true);
        }
        Ok(())
    }

    fn mark_purging(&self, room: u64, purging: bool) {
        let mut set = self.purging.write().expect("purging rooms");
        match purging {
            true => set.insert(room),
            false => set.remove(&room),
        };
        self.purging_any.store(!set.is_empty(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops what memory holds of a room.
    fn evict(&self, room: u64) {
        self.bump_cache.lock().expect("bump cache").remove(room);
        self.joined_counts.lock().expect("joined counts").remove(room);
        self.room_types.lock().expect("room types").remove(room);
        self.stats_cache.lock().expect("room stats").remove(room);
        self.encrypted_rooms.lock().expect("encrypted rooms").remove(&room);
        self.typing.forget_room(room);
        self.users.sent_members.forget_room(room);
        self.directory_changed();
    }

    /// Marks the room for purging (one write, under the room's lock): it
    /// leaves the room list, the directory and its aliases; readers no
    /// longer see it. Its short ID, or `None` for an unknown room. A room
    /// already marked is left as it is (the purge resumes).
    pub async fn start_purge(&self, room_id: &RoomId) -> Result<Option<u64>> {
        let Some(room) = self.room_short(room_id)? else { return Ok(None) };
        if self.db.contains(&maps::ROOM_PURGES, &room.to_be_bytes())? {
            self.mark_purging(room, true);
            return Ok(Some(room));
        }
        let _lock = self.lock(room_id).await;
        let mut batch = Batch::new();
        let record = PurgeRecord { room_id: room_id.to_owned(), phase: Phase::Collect, cursor: None };
        batch.put_json(&maps::ROOM_PURGES, room.to_be_bytes(), &record);
        batch.delete(&maps::ROOMS, room.to_be_bytes().to_vec());
        batch.delete(&maps::PUBLISHED_ROOMS, room_id.as_bytes());
        for alias in self.room_aliases(room)? {
            if self.alias(&alias)?.is_some_and(|record| record.room_id == room_id) {
                batch.delete(&maps::ALIASES, alias.as_bytes());
            }
            batch.delete(&maps::ROOM_ALIASES, [&room.to_be_bytes()[..], alias.as_bytes()].concat());
        }
        self.db.write(batch)?;
        self.mark_purging(room, true);
        self.evict(room);
        Ok(Some(room))
    }

    fn set_phase(&self, room: u64, record: &mut PurgeRecord, phase: Phase) -> Result<()> {
        record.phase = phase;
        record.cursor = None;
        self.db.put_json(&maps::ROOM_PURGES, &room.to_be_bytes(), record)?;
        Ok(())
    }

    /// Deletes the room's data, resuming where a previous run stopped;
    /// blocking work (run it off the async workers). `progress` hears the
    /// rows deleted so far. The number of events purged.
    pub fn purge_room(&self, room: u64, progress: &dyn Fn(u64)) -> Result<u64> {
        let Some(mut record) = self.db.get_json::<PurgeRecord>(&maps::ROOM_PURGES, &room.to_be_bytes())?
        else {
            return Ok(0);
        };
        let mut out = Writer { rooms: self, batch: Batch::new(), done: 0, progress };
        if record.phase == Phase::Collect {
            self.collect(room, &mut record)?;
            self.set_phase(room, &mut record, Phase::Users)?;
        }
        if record.phase == Phase::Users {
            self.purge_users(room, &record.room_id, &mut out)?;
            out.flush(true)?;
            self.set_phase(room, &mut record, Phase::Rooms)?;
        }
        if record.phase == Phase::Rooms {
            self.purge_room_rows(room, &mut out)?;
            out.flush(true)?;
            self.set_phase(room, &mut record, Phase::Events)?;
        }
        let mut events = 0;
        if record.phase == Phase::Events {
            events = self.purge_events(room, &record.room_id, &mut out)?;
            out.flush(true)?;
            self.set_phase(room, &mut record, Phase::Finish)?;
        }
        Ok(events)
    }

    /// Ends a purge: the room's short ID goes (a room of that ID made again
    /// gets a new one) with the mark, and memory forgets it.
    pub fn finish_purge(&self, room: u64) -> Result<()> {
        let Some(record) = self.db.get_json::<PurgeRecord>(&maps::ROOM_PURGES, &room.to_be_bytes())? else {
            return Ok(());
        };
        if record.phase != Phase::Finish {
            return Err(Error::internal("a purge finished before its work"));
        }
        let mut batch = Batch::new();
        batch.delete(&maps::SHORT_IDS, [&[Kind::Room as u8][..], record.room_id.as_bytes()].concat());
        batch.delete(&maps::ROOM_PURGES, room.to_be_bytes().to_vec());
        self.db.write(batch)?;
        self.short.forget(Kind::Room, record.room_id.as_str());
        self.mark_purging(room, false);
        self.evict(room);
        Ok(())
    }

    /// Collect: one scan of `event_meta` lists the room's events.
    fn collect(&self, room: u64, record: &mut PurgeRecord) -> Result<()> {
        loop {
            let start = record.cursor.map(|c| (c + 1).to_be_bytes());
            let rows = self.db.scan_range(
                &maps::EVENT_META,
                b"",
                start.as_ref().map(|s| &s[..]),
                false,
                READ_CHUNK,
            )?;
            let Some(last) = rows.last() else { return Ok(()) };
            let mut batch = Batch::new();
            for (k, v) in &rows {
                #[derive(Deserialize)]
                struct RoomOnly {
                    room: u64,
                }
                let meta: RoomOnly = serde_json::from_slice(v).map_err(Error::internal)?;
                if meta.room == room {
                    batch.put(&maps::ROOM_PURGES, [&work_prefix(room)[..], k].concat(), Vec::new());
                }
            }
            record.cursor = Some(decode_u64(&last.0)?);
            batch.put_json(&maps::ROOM_PURGES, room.to_be_bytes(), &*record);
            self.db.write_unsynced(batch)?;
        }
    }

    /// A user's rows about the room.
    fn purge_user_rows(&self, out: &mut Writer<'_>, user: &[u8], room: u64, room_id: &RoomId) -> Result<()> {
        let r8 = room.to_be_bytes();
        for map in [&maps::USER_ROOMS, &maps::MEMBERSHIP_SINCE, &maps::LAST_JOINS, &maps::FORGOTTEN_ROOMS] {
            out.delete(map, key(&[user, &r8]));
        }
        out.delete(&maps::REMOTE_INVITES, key(&[user, room_id.as_bytes()]));
        out.drain(&maps::NOTIFICATIONS, &[user, &[crate::storage::SEP], &r8].concat(), |out, (k, _)| {
            let position = &k[k.len() - 8..];
            out.delete(&maps::NOTIFICATION_LOG, key(&[user, position]));
            Ok(())
        })?;
        out.drain(&maps::READ_POSITIONS, &prefix(&[user, &r8]), |_, _| Ok(()))?;
        out.drain(&maps::ACCOUNT_DATA_POSITIONS, &prefix(&[user, room_id.as_bytes()]), |out, (k, v)| {
            out.delete(&maps::ACCOUNT_DATA, k.clone());
            out.delete(&maps::ACCOUNT_DATA_CHANGES, key(&[user, v]));
            Ok(())
        })?;
        Ok(())
    }

    /// Users: every member's (ever) rows about the room.
    fn purge_users(&self, room: u64, room_id: &RoomId, out: &mut Writer<'_>) -> Result<()> {
        for (user, _) in self.members(room)? {
            self.purge_user_rows(out, user.as_bytes(), room, room_id)?;
            out.flush(false)?;
        }
        Ok(())
    }

    /// Rooms: the rows keyed by the room.
    fn purge_room_rows(&self, room: u64, out: &mut Writer<'_>) -> Result<()> {
        let r8 = room.to_be_bytes();
        out.drain(&maps::TIMELINE, &r8, |out, (k, _)| {
            let position = &k[8..16];
            out.delete(&maps::STREAM, position.to_vec());
            let changes = [position, &r8[..]].concat();
            out.drain(&maps::MEMBERSHIP_CHANGES, &changes, |_, _| Ok(()))
        })?;
        for map in [
            &maps::ROOM_TIMESTAMPS,
            &maps::ROOM_HISTORY,
            &maps::ROOM_STATE,
            &maps::ROOM_MEMBERS,
            &maps::ROOM_SERVERS,
            &maps::BACKWARD_EXTREMITIES,
            &maps::THREADS,
            &maps::THREAD_ACTIVITY,
            &maps::RETENTION_CURSORS,
        ] {
            out.drain(map, &r8, |_, _| Ok(()))?;
        }
        out.delete(&maps::ROOM_BUMP, r8.to_vec());
        out.drain(&maps::RECEIPTS, &r8, |out, (_, v)| {
            #[derive(Deserialize)]
            struct Positioned {
                position: u64,
            }
            if let Ok(receipt) = serde_json::from_slice::<Positioned>(v) {
                out.delete(&maps::RECEIPT_CHANGES, receipt.position.to_be_bytes().to_vec());
            }
            Ok(())
        })
    }

    /// Events: each listed event's rows, all in one write.
    fn purge_events(&self, room: u64, room_id: &RoomId, out: &mut Writer<'_>) -> Result<u64> {
        let work = work_prefix(room);
        let mut purged = 0;
        loop {
            let rows = self.db.scan_range(&maps::ROOM_PURGES, &work, None, false, READ_CHUNK / 10)?;
            if rows.is_empty() {
                return Ok(purged);
            }
            for (k, _) in rows {
                let short = decode_u64(&k[work.len()..])?;
                self.purge_event(out, short, room, room_id)?;
                out.delete(&maps::ROOM_PURGES, k);
                purged += 1;
            }
            // Every row of an event is in the batch with its work row.
            out.flush(true)?;
        }
    }

    fn purge_event(&self, out: &mut Writer<'_>, short: u64, room: u64, room_id: &RoomId) -> Result<()> {
        let e8 = short.to_be_bytes();
        let meta: Option<EventMeta> = self.event_meta(short)?;
        let json = self.pdu_json(short)?;
        let event_id = self.short.name(short).ok();
        for map in [&maps::PDUS, &maps::EVENT_META, &maps::AUTH_EDGES, &maps::SEARCH_HISTORY] {
            out.delete(map, e8.to_vec());
        }
        for map in [&maps::RELATIONS, &maps::RELATION_TYPES, &maps::ANNOTATIONS, &maps::THREAD_PARTICIPANTS] {
            out.drain(map, &e8, |_, _| Ok(()))?;
        }
        let value = json.map(|j| serde_json::to_value(j).unwrap_or_default()).unwrap_or_default();
        if let Some(event_id) = &event_id {
            out.drain(&maps::EVENT_EDGES, &prefix(&[event_id.as_bytes()]), |_, _| Ok(()))?;
            out.drain(&maps::WAITING_FOR_TARGETS, &prefix(&[event_id.as_bytes()]), |_, _| Ok(()))?;
            out.delete(&maps::SHORT_IDS, [&[Kind::Event as u8][..], event_id.as_bytes()].concat());
        }
        for prev in value["prev_events"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            out.delete(&maps::EVENT_EDGES, key(&[prev.as_bytes(), &e8]));
        }
        let redacts = value["redacts"].as_str().or_else(|| value["content"]["redacts"].as_str());
        let relates = value["content"]["m.relates_to"]["event_id"].as_str();
        for (target, kind) in [(redacts, Pending::Redaction), (relates, Pending::Relation)] {
            if let Some(target) = target {
                out.delete(
                    &maps::WAITING_FOR_TARGETS,
                    [target.as_bytes(), &[crate::storage::SEP, kind as u8], &e8].concat(),
                );
            }
        }
        if let Some(at) = value["content"][super::expiry::SELF_DESTRUCT_AFTER].as_u64() {
            out.delete(&maps::EVENT_EXPIRY, [at.to_be_bytes(), e8].concat());
        }
        if let (Some(meta), Some(sender)) = (&meta, value["sender"].as_str())
            && let Some((device, txn)) = &meta.txn
        {
            for endpoint in ["send", "redact"] {
                let txn_key = key(&[
                    sender.as_bytes(),
                    device.as_bytes(),
                    room_id.as_bytes(),
                    endpoint.as_bytes(),
                    txn.as_bytes(),
                ]);
                out.delete(&maps::TRANSACTIONS, txn_key);
            }
        }
        if value["type"] == "m.room.member"
            && let Some(user) = value["state_key"].as_str()
        {
            let r8 = room.to_be_bytes();
            for map in [&maps::USER_ROOMS, &maps::MEMBERSHIP_SINCE, &maps::LAST_JOINS, &maps::FORGOTTEN_ROOMS]
            {
                out.delete(map, key(&[user.as_bytes(), &r8]));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{OwnedEventId, RoomVersionId, UserId, user_id};
    use serde_json::json;

    use super::*;
    use crate::{
        rooms::{
            builder::PduBuilder,
            create::{CreateRoom, Preset},
            pipeline::Txn,
            receipts::ReceiptKey,
        },
        services::Services,
    };

    /// Maps allowed to keep something of a purged room (see the module's
    /// doc): names of IDs, snapshots, and what is kept on purpose.
    const KEEPERS: &[&str] = &[
        "short_id_names",
        "state_snapshots",
        "state_snapshot_hashes",
        "resolved_states",
        "blocked_rooms",
        "reports",
        "jobs",
        "sliding_connections",
        "federation_queue",
        "federation_txns",
        "stream",
    ];

    /// Maps whose keys start with a room short ID.
    const ROOM_KEYED: &[&str] = &[
        "timeline",
        "room_timestamps",
        "room_history",
        "room_state",
        "rooms",
        "room_members",
        "room_servers",
        "backward_extremities",
        "threads",
        "thread_activity",
        "room_bump",
        "receipts",
        "room_aliases",
        "retention_cursors",
    ];

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn a_purged_room_leaves_no_trace_and_other_rooms_stay() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::for_tests(dir.path());
        let rooms = &services.rooms;
        let (alice, bob) = (user_id!("@alice:localhost"), user_id!("@bob:localhost"));
        for user in [alice, bob] {
            services.users.create(user, None, false, None).unwrap();
        }
        let room =
            rooms.create_room(alice, CreateRoom::new(RoomVersionId::V11, Preset::PublicChat)).await.unwrap();
        let kept =
            rooms.create_room(alice, CreateRoom::new(RoomVersionId::V11, Preset::PublicChat)).await.unwrap();
        let join =
            |user: &UserId| PduBuilder::state("m.room.member", user.as_str(), json!({"membership": "join"}));
        rooms.send(&room, bob, join(bob), None).await.unwrap();
        let message =
            |body: &str| PduBuilder::message("m.room.message", json!({"msgtype": "m.text", "body": body}));
        let mut events: Vec<OwnedEventId> = Vec::new();
        let txn = Txn { device_id: "DEV".into(), txn_id: "t1".into(), endpoint: "send" };
        let root = rooms.send(&room, alice, message("root"), Some(txn)).await.unwrap();
        events.push(root.clone());
        let reply = json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
        events
            .push(rooms.send(&room, bob, PduBuilder::message("m.room.message", reply), None).await.unwrap());
        let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}});
        events.push(rooms.send(&room, bob, PduBuilder::message("m.reaction", reaction), None).await.unwrap());
        let edit = json!({"msgtype": "m.text", "body": "* root!", "m.new_content": {"msgtype": "m.text", "body": "root!"}, "m.relates_to": {"rel_type": "m.replace", "event_id": root}});
        events
            .push(rooms.send(&room, alice, PduBuilder::message("m.room.message", edit), None).await.unwrap());
        let doomed = rooms.send(&room, alice, message("oops"), None).await.unwrap();
        let mut redaction = PduBuilder::message("m.room.redaction", json!({"redacts": doomed}));
        redaction.redacts = Some(doomed.clone());
        events.push(doomed);
        events.push(rooms.send(&room, alice, redaction, None).await.unwrap());
        events.push(
            rooms
                .send(&room, alice, PduBuilder::state("m.room.topic", "", json!({"topic": "t"})), None)
                .await
                .unwrap(),
        );
        let short = rooms.room_short(&room).unwrap().unwrap();
        let receipt = ReceiptKey { kind: "m.read".into(), thread: String::new(), user: bob.to_owned() };
        rooms.set_receipt(short, receipt, root.clone()).unwrap();
        let tag = serde_json::value::to_raw_value(&json!({"tags": {"u.work": {}}})).unwrap();
        services.users.set_account_data(bob, Some(&room), "m.tag", &tag).unwrap();
        let alias = ruma::RoomAliasId::parse("#doomed:localhost").unwrap();
        rooms.put_alias(&alias, &room, alice).unwrap();
        rooms.set_published(&room, true).unwrap();
        rooms.forget(bob, short).unwrap();
        rooms.send(&kept, alice, message("still here"), None).await.unwrap();
        assert!(!rooms.notifications(bob, None, 10, false).unwrap().0.is_empty(), "bob has notifications");

        assert_eq!(rooms.start_purge(&room).await.unwrap(), Some(short));
        assert!(rooms.is_purging(short));
        assert_eq!(rooms.membership(bob, short).unwrap(), None, "readers no longer see it");
        assert!(rooms.send(&room, alice, message("late"), None).await.is_err(), "nothing more is appended");
        let purged = rooms.purge_room(short, &|_| {}).unwrap();
        assert!(purged >= 10, "{purged}");
        rooms.finish_purge(short).unwrap();
        assert!(!rooms.is_purging(short));
        assert_eq!(rooms.room_short(&room).unwrap(), None);

        let r8 = short.to_be_bytes();
        for map in maps::ALL.iter().filter(|m| !KEEPERS.contains(&m.name)) {
            for (k, v) in services.db.scan_prefix(map, b"").unwrap() {
                assert!(
                    !contains(&k, room.as_bytes()) && !contains(&v, room.as_bytes()),
                    "{}: the room ID",
                    map.name
                );
                for event in &events {
                    assert!(
                        !contains(&k, event.as_bytes()) && !contains(&v, event.as_bytes()),
                        "{}: {event}",
                        map.name
                    );
                }
                if ROOM_KEYED.contains(&map.name) {
                    assert!(!k.starts_with(&r8), "{}: a row of the room", map.name);
                }
                if map.name == "user_rooms" || map.name == "forgotten_rooms" || map.name == "notifications" {
                    assert!(!contains(&k, &r8), "{}: a user's row of the room", map.name);
                }
            }
        }
        // The other room and its messages are untouched.
        let kept_short = rooms.room_short(&kept).unwrap().unwrap();
        assert_eq!(rooms.membership(alice, kept_short).unwrap().as_deref(), Some("join"));
        assert!(rooms.latest_position(kept_short).unwrap() > 0);
        assert_eq!(rooms.notifications(bob, None, 10, false).unwrap().0.len(), 0);
    }
}
