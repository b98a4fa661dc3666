//! Pruning old messages (message retention, an admin's history purge):
//! an event's content goes — its stored JSON becomes the redacted form, as
//! a redaction leaves it — while the event stays in the DAG as a stub, so
//! the room's history, state and federation stay whole. Its notifications
//! and relation go with it. State events are never pruned.

use ruma::{OwnedRoomId, RoomId};
use serde_json::Value;

use super::{Rooms, notifications::notification_key};
use crate::{
    Error, Result,
    storage::{Batch, decode_u64, key, maps},
};

/// Events pruned per write (and per hold of the room's lock).
pub const PRUNE_BATCH: usize = 500;

/// What a pruned event held, for the caller (its media, its search
/// document).
#[derive(Debug)]
pub struct Pruned {
    pub short: u64,
    pub sender: ruma::OwnedUserId,
    pub content: Value,
}

impl Rooms {
    /// The room's messages (not state) sent before `before` (ms) and at
    /// or after `after`, oldest first, at most `limit`: (sent at, event
    /// short ID). Backfilled history (whose rows carry no time) is read by
    /// its events' own timestamps.
    pub fn messages_between(
        &self,
        room: u64,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>> {
        let r8 = room.to_be_bytes();
        let start = [&r8[..], &after.to_be_bytes()].concat();
        let mut out = Vec::new();
        let mut from = start;
        'scan: loop {
            let rows = self.db.scan_range(&maps::ROOM_TIMESTAMPS, &r8, Some(&from), false, 1000)?;
            let Some(last) = rows.last() else { break };
            from = [last.0.clone(), vec![0]].concat();
            for (k, v) in &rows {
                let ts = decode_u64(&k[8..16])?;
                let short = decode_u64(v)?;
                let sent = match ts {
                    0 => self.pdu_by_short(short)?.map_or(0, |p| u64::from(p.origin_server_ts.get())),
                    ts => ts,
                };
                if ts != 0 && ts >= before {
                    break 'scan;
                }
                if sent < after || sent >= before {
                    continue;
                }
                let Some(meta) = self.event_meta(short)? else { continue };
                if meta.redacted_by.is_some() || meta.pruned || meta.room != room {
                    continue;
                }
                if self.pdu_by_short(short)?.is_some_and(|p| p.state_key.is_none()) {
                    out.push((sent, short));
                    if out.len() >= limit {
                        break 'scan;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Prunes events of one room (under its lock, in one write): their
    /// content goes, they stay as stubs. What each held.
    pub async fn prune_events(&self, room_id: &RoomId, shorts: &[u64]) -> Result<Vec<Pruned>> {
        let Some((room, record)) = self.room(room_id)? else { return Ok(Vec::new()) };
        let rules = record.rules()?;
        let _lock = self.lock(room_id).await;
        let local_members: Vec<ruma::OwnedUserId> = self
            .members(room)?
            .into_iter()
            .map(|(u, _)| u)
            .filter(|u| u.server_name() == self.server_name)
            .collect();
        let mut batch = Batch::new();
        let mut pruned = Vec::new();
        for &short in shorts {
            let (Some(mut meta), Some(pdu), Some(json)) =
                (self.event_meta(short)?, self.pdu_by_short(short)?, self.pdu_json(short)?)
            else {
                continue;
            };
            if meta.room != room || meta.redacted_by.is_some() || meta.pruned || pdu.state_key.is_some() {
                continue;
            }
            let stub = ruma::canonical_json::redact(json, &rules.redaction, None).map_err(Error::internal)?;
            batch.put_json(&maps::PDUS, short.to_be_bytes(), &stub);
            meta.pruned = true;
            batch.put_json(&maps::EVENT_META, short.to_be_bytes(), &meta);
            for user in &local_members {
                batch.delete(&maps::NOTIFICATIONS, notification_key(user, room, meta.stream));
                batch.delete(&maps::NOTIFICATION_LOG, key(&[user.as_bytes(), &meta.stream.to_be_bytes()]));
            }
            self.unindex_relation(&mut batch, &pdu, short, meta.stream, room)?;
            pruned.push(Pruned { short, sender: pdu.sender.clone(), content: pdu.content_value() });
        }
        self.db.write(batch)?;
        Ok(pruned)
    }

    /// Up to when (ms) the room's messages were pruned by retention.
    pub fn retention_cursor(&self, room: u64) -> Result<u64> {
        Ok(self
            .db
            .get(&maps::RETENTION_CURSORS, &room.to_be_bytes())?
            .map(|v| decode_u64(&v))
            .transpose()?
            .unwrap_or(0))
    }

    pub fn set_retention_cursor(&self, room: u64, upto: u64) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(&maps::RETENTION_CURSORS, room.to_be_bytes(), upto.to_be_bytes());
        self.db.write(batch)?;
        Ok(())
    }

    /// Every room's ID with its short ID (for passes over all rooms).
    pub fn room_ids(&self) -> Result<Vec<(u64, OwnedRoomId)>> {
        Ok(self.all_rooms()?.into_iter().map(|(short, record)| (short, record.room_id)).collect())
    }

    /// When the room last had an event (ms), from its newest timeline row.
    pub fn last_activity(&self, room: u64) -> Result<Option<u64>> {
        let r8 = room.to_be_bytes();
        let newest = self.db.scan_range(&maps::ROOM_TIMESTAMPS, &r8, None, true, 1)?;
        Ok(newest.first().map(|(k, _)| decode_u64(&k[8..16])).transpose()?)
    }

    /// Deletes notifications older than `before` (ms), at most `limit` in
    /// one write; how many went.
    pub fn prune_notifications(&self, before: u64, limit: usize) -> Result<usize> {
        #[derive(serde::Deserialize)]
        struct Sent {
            ts: u64,
        }
        let mut batch = Batch::new();
        let mut count = 0;
        for (k, v) in self.db.scan_prefix(&maps::NOTIFICATIONS, b"")? {
            let Ok(sent) = serde_json::from_slice::<Sent>(&v) else { continue };
            if sent.ts >= before {
                continue;
            }
            // user ‖ SEP ‖ room (8) ‖ position (8)
            let (user, position) = (&k[..k.len() - 17], &k[k.len() - 8..]);
            batch.delete(&maps::NOTIFICATION_LOG, key(&[user, position]));
            batch.delete(&maps::NOTIFICATIONS, k);
            count += 1;
            if count >= limit {
                break;
            }
        }
        self.db.write(batch)?;
        Ok(count)
    }
}
