//! What waits to be sent to each other server: PDUs (by short event ID) and
//! EDUs (as JSON), in RocksDB so a restart loses nothing, in the order they
//! were queued. `federation::sender` drains it; anything may add to it and
//! wake the sender.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{
    Error, Result,
    storage::{Batch, Db, SEP, decode_u64, maps::FEDERATION_QUEUE},
};

/// One queued item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// A PDU, by its short event ID.
    Pdu(u64),
    /// An EDU as it goes on the wire (`edu_type`, `content`).
    Edu(serde_json::Value),
}

pub struct Outbox {
    db: Db,
    next: AtomicU64,
    /// Destinations with something new, or worth retrying now.
    woken: Mutex<HashSet<OwnedServerName>>,
    /// Destinations that contacted us since the sender last looked: up again.
    contacted: Mutex<HashSet<OwnedServerName>>,
    notify: Notify,
    /// How each destination tried since the start has answered.
    health: Mutex<HashMap<OwnedServerName, Health>>,
}

/// How a destination has answered the sender (times in ms since the epoch;
/// Synapse's destination retry fields).
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub last_success_ts: Option<u64>,
    /// When it started failing; none while it answers.
    pub failure_ts: Option<u64>,
    /// The last try, and the wait before the next (0 while it answers).
    pub retry_last_ts: u64,
    pub retry_interval: u64,
}

impl Outbox {
    pub fn open(db: Db) -> Result<Self> {
        // Continue after the highest sequence number still queued.
        let mut last = 0;
        for destination in destinations(&db)? {
            let prefix = prefix(&destination);
            if let Some((key, _)) = db.scan_range(&FEDERATION_QUEUE, &prefix, None, true, 1)?.pop() {
                last = last.max(decode_u64(&key[prefix.len()..])?);
            }
        }
        Ok(Self {
            db,
            next: AtomicU64::new(last + 1),
            woken: Mutex::default(),
            contacted: Mutex::default(),
            notify: Notify::new(),
            health: Mutex::default(),
        })
    }

    /// Adds `item` for each destination to `batch`; call [`Outbox::wake`]
    /// with them once the batch is written.
    pub fn queue_into(&self, batch: &mut Batch, destinations: &[OwnedServerName], item: &Item) {
        for destination in destinations {
            let seq = self.next.fetch_add(1, Ordering::Relaxed);
            batch.put_json(
                &FEDERATION_QUEUE,
                [prefix(destination), seq.to_be_bytes().to_vec()].concat(),
                item,
            );
        }
    }

    /// Queues `item` for each destination now.
    pub fn queue(&self, destinations: &[OwnedServerName], item: Item) -> Result<()> {
        let mut batch = Batch::new();
        self.queue_into(&mut batch, destinations, &item);
        self.db.write(batch)?;
        self.wake(destinations.iter().cloned());
        Ok(())
    }

    /// Tells the sender these destinations have something, or should be
    /// tried again now (they just contacted us).
    pub fn wake(&self, destinations: impl IntoIterator<Item = OwnedServerName>) {
        self.woken.lock().expect("woken").extend(destinations);
        self.notify.notify_one();
    }

    /// `server` just contacted us: whatever waits for it goes now, backoff or not.
    pub fn contacted(&self, server: &ServerName) {
        self.contacted.lock().expect("contacted").insert(server.to_owned());
        self.wake([server.to_owned()]);
    }

    /// Whether `server` contacted us since the last call (then forgotten).
    pub fn take_contacted(&self, server: &ServerName) -> bool {
        self.contacted.lock().expect("contacted").remove(server)
    }

    /// Waits for a wake-up; the destinations woken since the last call.
    pub async fn woken(&self) -> HashSet<OwnedServerName> {
        loop {
            let woken = std::mem::take(&mut *self.woken.lock().expect("woken"));
            if !woken.is_empty() {
                return woken;
            }
            self.notify.notified().await;
        }
    }

    /// The first `limit` items queued for `destination`, with their sequence numbers.
    pub fn peek(&self, destination: &ServerName, limit: usize) -> Result<Vec<(u64, Item)>> {
        let prefix = prefix(destination);
        self.db
            .scan_range(&FEDERATION_QUEUE, &prefix, None, false, limit)?
            .into_iter()
            .map(|(key, value)| {
                let seq = decode_u64(&key[prefix.len()..])?;
                let item = serde_json::from_slice(&value).map_err(Error::internal)?;
                Ok((seq, item))
            })
            .collect()
    }

    /// Removes delivered items.
    pub fn remove(&self, destination: &ServerName, seqs: impl IntoIterator<Item = u64>) -> Result<()> {
        let prefix = prefix(destination);
        let mut batch = Batch::new();
        for seq in seqs {
            batch.delete(&FEDERATION_QUEUE, [prefix.clone(), seq.to_be_bytes().to_vec()].concat());
        }
        Ok(self.db.write(batch)?)
    }

    /// The sender's try of `destination` ended: delivered, or failed and
    /// not tried again for `retry_interval`.
    pub fn record_try(&self, destination: &ServerName, delivered: bool, retry_interval: std::time::Duration) {
        let now = crate::util::now_ms();
        let mut health = self.health.lock().expect("health");
        let entry = health.entry(destination.to_owned()).or_default();
        entry.retry_last_ts = now;
        if delivered {
            entry.last_success_ts = Some(now);
            entry.failure_ts = None;
            entry.retry_interval = 0;
        } else {
            entry.failure_ts.get_or_insert(now);
            entry.retry_interval = retry_interval.as_millis() as u64;
        }
    }

    /// Every destination tried since the start, with how it answered.
    pub fn health(&self) -> Vec<(OwnedServerName, Health)> {
        self.health.lock().expect("health").iter().map(|(d, h)| (d.clone(), h.clone())).collect()
    }

    /// Every destination with something queued.
    pub fn destinations(&self) -> Result<Vec<OwnedServerName>> {
        destinations(&self.db)
    }
}

fn prefix(destination: &ServerName) -> Vec<u8> {
    [destination.as_bytes(), &[SEP]].concat()
}

/// The destinations in the queue, one seek each.
fn destinations(db: &Db) -> Result<Vec<OwnedServerName>> {
    let mut found = Vec::new();
    let mut from: Option<Vec<u8>> = None;
    while let Some((key, _)) = db.scan_range(&FEDERATION_QUEUE, b"", from.as_deref(), false, 1)?.pop() {
        let end =
            key.iter().position(|b| *b == SEP).ok_or_else(|| Error::internal("queue key without SEP"))?;
        let name = std::str::from_utf8(&key[..end]).map_err(Error::internal)?;
        found.push(OwnedServerName::try_from(name).map_err(Error::internal)?);
        from = Some([&key[..=end], &[SEP; 9]].concat());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_stay_queued_in_order_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        let (a, b): (OwnedServerName, OwnedServerName) =
            ("a.test".try_into().unwrap(), "a.testb".try_into().unwrap());
        let outbox = Outbox::open(db.clone()).unwrap();
        outbox.queue(&[a.clone(), b.clone()], Item::Pdu(7)).unwrap();
        outbox
            .queue(std::slice::from_ref(&a), Item::Edu(serde_json::json!({"edu_type": "m.typing"})))
            .unwrap();
        let mut destinations = outbox.destinations().unwrap();
        destinations.sort();
        assert_eq!(destinations, [a.clone(), b.clone()]);
        drop(outbox);
        let outbox = Outbox::open(db).unwrap();
        let queued = outbox.peek(&a, 10).unwrap();
        assert_eq!(
            queued.iter().map(|(_, item)| item.clone()).collect::<Vec<_>>(),
            [Item::Pdu(7), Item::Edu(serde_json::json!({"edu_type": "m.typing"}))]
        );
        outbox.queue(std::slice::from_ref(&a), Item::Pdu(8)).unwrap();
        let later = outbox.peek(&a, 10).unwrap();
        assert!(later[2].0 > queued[1].0, "sequence numbers go on after a restart");
        outbox.remove(&a, queued.iter().map(|(seq, _)| *seq)).unwrap();
        assert_eq!(outbox.peek(&a, 10).unwrap().len(), 1);
        assert_eq!(outbox.peek(&b, 10).unwrap().len(), 1);
    }
}
