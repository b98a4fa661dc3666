//! Read receipts: one per (room, user, receipt type, thread), each change
//! stamped with a stream position and logged so sync sends only what moved.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Rooms;
use crate::{
    Error, Result,
    storage::{Batch, SEP, decode_u64, maps},
    stream::Topic,
    util,
};

/// Receipts by room short ID.
pub type ReceiptsByRoom = BTreeMap<u64, Vec<(ReceiptKey, Receipt)>>;

/// What `receipts` stores per receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: OwnedEventId,
    pub ts: u64,
    /// The stream position of the event read (for unread counts).
    pub event_position: u64,
    /// The stream position of this receipt (its row in `receipt_changes`).
    pub position: u64,
}

/// A receipt's identity within a room.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReceiptKey {
    /// `m.read` or `m.read.private`.
    pub kind: String,
    /// Empty for an unthreaded receipt, else `main` or a thread root.
    pub thread: String,
    pub user: OwnedUserId,
}

impl ReceiptKey {
    fn encode(&self, room_short: u64) -> Vec<u8> {
        let mut key = room_short.to_be_bytes().to_vec();
        for part in [self.kind.as_bytes(), self.thread.as_bytes()] {
            key.extend_from_slice(part);
            key.push(SEP);
        }
        key.extend_from_slice(self.user.as_bytes());
        key
    }

    fn decode(bytes: &[u8]) -> Result<(u64, Self)> {
        let bad = || Error::internal("bad receipt key");
        let room = decode_u64(bytes.get(..8).ok_or_else(bad)?)?;
        let mut parts = bytes[8..].splitn(3, |b| *b == SEP);
        let mut text = || -> Result<String> {
            String::from_utf8(parts.next().ok_or_else(bad)?.to_vec()).map_err(Error::internal)
        };
        let (kind, thread, user) = (text()?, text()?, text()?);
        Ok((room, Self { kind, thread, user: OwnedUserId::try_from(user).map_err(Error::internal)? }))
    }
}

impl Rooms {
    /// Records a receipt and wakes the room's syncs.
    pub fn set_receipt(&self, room_short: u64, key: ReceiptKey, event_id: OwnedEventId) -> Result<()> {
        let event_short = self.event_short(&event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
        let meta = self.event_meta(event_short)?.filter(|m| m.room == room_short && m.accepted());
        let meta = meta.ok_or_else(|| Error::not_found("Event not found in this room"))?;
        let _guard = self.receipt_lock.lock().expect("receipt lock");
        let row = key.encode(room_short);
        let position = self.stream.allocate()?;
        let mut batch = Batch::new();
        if let Some(old) = self.db.get_json::<Receipt>(&maps::RECEIPTS, &row)? {
            // A receipt for an earlier event changes nothing (as Synapse).
            if old.event_position > meta.stream {
                return Ok(());
            }
            batch.delete(&maps::RECEIPT_CHANGES, old.position.to_be_bytes());
        }
        let receipt =
            Receipt { event_id, ts: util::now_ms(), event_position: meta.stream, position: position.get() };
        self.advance_read(&mut batch, &key.user, room_short, &key.thread, meta.stream)?;
        batch.put_json(&maps::RECEIPTS, row.clone(), &receipt);
        batch.put(&maps::RECEIPT_CHANGES, position.get().to_be_bytes(), row);
        self.db.write(batch)?;
        position.publish([Topic::Room(room_short)]);
        Ok(())
    }

    /// A user's receipt of one kind and thread in a room.
    pub fn receipt(&self, room_short: u64, key: &ReceiptKey) -> Result<Option<Receipt>> {
        Ok(self.db.get_json(&maps::RECEIPTS, &key.encode(room_short))?)
    }

    /// Receipts that changed in `(since, upto]`, by room; `None` if more
    /// than `limit` changed (the caller then asks room by room).
    pub fn receipt_changes(&self, since: u64, upto: u64, limit: usize) -> Result<Option<ReceiptsByRoom>> {
        let start = (since + 1).to_be_bytes();
        let rows = self.db.scan_range(&maps::RECEIPT_CHANGES, b"", Some(&start), false, limit + 1)?;
        if rows.len() > limit {
            return Ok(None);
        }
        let mut changes: BTreeMap<u64, Vec<(ReceiptKey, Receipt)>> = BTreeMap::new();
        for (position, row) in rows {
            if decode_u64(&position)? > upto {
                break;
            }
            let (room, key) = ReceiptKey::decode(&row)?;
            if let Some(receipt) = self.db.get_json::<Receipt>(&maps::RECEIPTS, &row)? {
                changes.entry(room).or_default().push((key, receipt));
            }
        }
        Ok(Some(changes))
    }

    /// Every receipt in a room, or those changed after `since`.
    pub fn room_receipts(&self, room_short: u64, since: Option<u64>) -> Result<Vec<(ReceiptKey, Receipt)>> {
        let mut out = Vec::new();
        for (row, value) in self.db.scan_prefix(&maps::RECEIPTS, &room_short.to_be_bytes())? {
            let receipt: Receipt = serde_json::from_slice(&value).map_err(Error::internal)?;
            if since.is_none_or(|s| receipt.position > s) {
                out.push((ReceiptKey::decode(&row)?.1, receipt));
            }
        }
        Ok(out)
    }
}

/// The `m.receipt` event for `viewer`: private receipts only their own.
pub fn receipt_event(viewer: &UserId, receipts: &[(ReceiptKey, Receipt)]) -> Option<Value> {
    let mut content = Map::new();
    for (key, receipt) in receipts {
        if key.kind == "m.read.private" && key.user != viewer {
            continue;
        }
        let mut entry = json!({"ts": receipt.ts});
        if !key.thread.is_empty() {
            entry["thread_id"] = json!(key.thread);
        }
        let by_event = content.entry(receipt.event_id.to_string()).or_insert_with(|| json!({}));
        by_event[key.kind.as_str()][key.user.as_str()] = entry;
    }
    (!content.is_empty()).then(|| json!({"type": "m.receipt", "content": content}))
}
