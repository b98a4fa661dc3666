//! Room state as shared, deduplicated snapshots.
//!
//! A snapshot is a full map (state key short ID → event short ID), stored as
//! a delta against a parent snapshot. A new snapshot's delta is taken against
//! the nearest ancestor whose own delta is more than twice as large, so the
//! deltas shrink geometrically down a chain: chains stay O(log n) long and a
//! room with n state changes stores O(n log n) entries, not O(n²). Equal
//! states share one snapshot (looked up by the hash of their content).
//!
//! Memory is bounded by entries held, not by a count of states: full states
//! and deltas each have an entry budget, least recently used out first. A
//! single key of a snapshot ([`StateStore::get`]) is read down the chain of
//! deltas (binary searches), without building the full state.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    Error, Result,
    storage::{Batch, Db, decode_u64, maps},
    util::Lru,
};

/// state key short ID → event short ID
pub type StateMap = BTreeMap<u64, u64>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    parent: Option<u64>,
    added: Vec<(u64, u64)>,
    removed: Vec<u64>,
}

impl Snapshot {
    fn delta_len(&self) -> usize {
        self.added.len() + self.removed.len()
    }
}

/// State entries (state key → event) the full states kept in memory may
/// hold in all: about 64 bytes each in a map, so ~64 MB.
const FULL_STATE_ENTRIES: usize = 1 << 20;
/// Delta entries kept in memory in all (~16 bytes each).
const DELTA_ENTRIES: usize = 1 << 21;
const RECENT_SNAPSHOTS: usize = 4096;

pub struct StateStore {
    db: Db,
    next: AtomicU64,
    cache: Mutex<Lru<Arc<StateMap>>>,
    deltas: Mutex<Lru<Arc<Snapshot>>>,
    /// The latest snapshots saved, readable before their batch is written:
    /// one append may build a snapshot on another it has just made.
    recent: Mutex<BTreeMap<u64, Snapshot>>,
}

impl StateStore {
    pub fn open(db: Db) -> Result<Self> {
        let last = db.scan_range(&maps::STATE_SNAPSHOTS, b"", None, true, 1)?;
        let next = match last.first() {
            Some((k, _)) => decode_u64(k)? + 1,
            None => 1,
        };
        Ok(Self {
            db,
            next: AtomicU64::new(next),
            cache: Mutex::new(Lru::new(FULL_STATE_ENTRIES)),
            deltas: Mutex::new(Lru::new(DELTA_ENTRIES)),
            recent: Mutex::default(),
        })
    }

    fn snapshot(&self, id: u64) -> Result<Arc<Snapshot>> {
        if let Some(snapshot) = self.recent.lock().expect("recent snapshots").get(&id) {
            return Ok(Arc::new(snapshot.clone()));
        }
        if let Some(snapshot) = self.deltas.lock().expect("delta cache").get(id) {
            return Ok(snapshot);
        }
        let snapshot: Arc<Snapshot> = Arc::new(
            self.db
                .get_json(&maps::STATE_SNAPSHOTS, &id.to_be_bytes())?
                .ok_or_else(|| Error::internal(format!("state snapshot {id} missing")))?,
        );
        self.deltas.lock().expect("delta cache").insert(id, snapshot.clone(), snapshot.delta_len() + 1);
        Ok(snapshot)
    }

    /// The event at one state key of a snapshot, read down its chain of
    /// deltas (or from the full state, when it is in memory).
    pub fn get(&self, id: u64, key: u64) -> Result<Option<u64>> {
        if let Some(state) = self.cache.lock().expect("state cache").get(id) {
            return Ok(state.get(&key).copied());
        }
        let mut at = Some(id);
        while let Some(id) = at {
            let snapshot = self.snapshot(id)?;
            // Deltas are written in key order.
            if let Ok(i) = snapshot.added.binary_search_by_key(&key, |(k, _)| *k) {
                return Ok(Some(snapshot.added[i].1));
            }
            if snapshot.removed.binary_search(&key).is_ok() {
                return Ok(None);
            }
            at = snapshot.parent;
        }
        Ok(None)
    }

    /// The full state of a snapshot.
    pub fn load(&self, id: u64) -> Result<Arc<StateMap>> {
        if let Some(state) = self.cache.lock().expect("state cache").get(id) {
            return Ok(state);
        }
        let snapshot = self.snapshot(id)?;
        let mut state = match snapshot.parent {
            Some(parent) => (*self.load(parent)?).clone(),
            None => StateMap::new(),
        };
        for key in &snapshot.removed {
            state.remove(key);
        }
        state.extend(snapshot.added.iter().copied());
        let state = Arc::new(state);
        self.remember(id, state.clone());
        Ok(state)
    }

    /// Empties the in-memory cache (benchmarks measure cold look-ups).
    pub fn clear_cache(&self) {
        self.cache.lock().expect("state cache").clear();
        self.deltas.lock().expect("delta cache").clear();
    }

    fn remember(&self, id: u64, state: Arc<StateMap>) {
        let entries = state.len() + 1;
        self.cache.lock().expect("state cache").insert(id, state, entries);
    }

    /// Stores `state` (derived from the snapshot `base`, if any) and returns
    /// its snapshot ID; an equal state already stored is reused.
    pub fn save(&self, batch: &mut Batch, base: Option<u64>, state: StateMap) -> Result<u64> {
        let hash = hash_state(&state);
        if let Some(existing) = self.db.get(&maps::STATE_SNAPSHOT_HASHES, &hash)? {
            return Ok(decode_u64(&existing)?);
        }
        let mut parent = base;
        let mut delta = match base {
            Some(b) => diff(&*self.load(b)?, &state),
            None => (state.iter().map(|(k, v)| (*k, *v)).collect(), Vec::new()),
        };
        // Climb while our delta is not clearly smaller than the parent's own.
        while let Some(p) = parent {
            let p_snapshot = self.snapshot(p)?;
            if (delta.0.len() + delta.1.len()) * 2 < p_snapshot.delta_len() {
                break;
            }
            parent = p_snapshot.parent;
            delta = match parent {
                Some(pp) => diff(&*self.load(pp)?, &state),
                None => (state.iter().map(|(k, v)| (*k, *v)).collect(), Vec::new()),
            };
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let snapshot = Snapshot { parent, added: delta.0, removed: delta.1 };
        batch.put_json(&maps::STATE_SNAPSHOTS, id.to_be_bytes(), &snapshot);
        let mut recent = self.recent.lock().expect("recent snapshots");
        recent.insert(id, snapshot);
        if recent.len() > RECENT_SNAPSHOTS {
            recent.pop_first();
        }
        drop(recent);
        batch.put(&maps::STATE_SNAPSHOT_HASHES, hash, id.to_be_bytes());
        self.remember(id, Arc::new(state));
        Ok(id)
    }
}

/// What to add and remove to turn `from` into `to`.
fn diff(from: &StateMap, to: &StateMap) -> (Vec<(u64, u64)>, Vec<u64>) {
    let added = to.iter().filter(|(k, v)| from.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect();
    let removed = from.keys().filter(|k| !to.contains_key(k)).copied().collect();
    (added, removed)
}

fn hash_state(state: &StateMap) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for (k, v) in state {
        hasher.update(k.to_be_bytes());
        hasher.update(v.to_be_bytes());
    }
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_dedupe_and_stay_small() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        let store = StateStore::open(db.clone()).unwrap();
        let mut state = StateMap::new();
        let mut current = None;
        let mut ids = Vec::new();
        // 2,000 joins, one state change each.
        for i in 0..2000u64 {
            state.insert(i, 10_000 + i);
            let mut batch = Batch::new();
            let id = store.save(&mut batch, current, state.clone()).unwrap();
            db.write(batch).unwrap();
            current = Some(id);
            ids.push((id, state.clone()));
        }
        // Everything loads back exactly, also with a cold cache.
        store.cache.lock().unwrap().clear();
        for (id, expected) in ids.iter().step_by(97) {
            assert_eq!(&*store.load(*id).unwrap(), expected);
        }
        // Single keys read down the deltas, with nothing in memory.
        store.clear_cache();
        for (id, expected) in ids.iter().step_by(89) {
            for key in [0, 5, 999, 1999, 5000] {
                assert_eq!(
                    store.get(*id, key).unwrap(),
                    expected.get(&key).copied(),
                    "snapshot {id} key {key}"
                );
            }
        }
        assert!(store.cache.lock().unwrap().is_empty(), "no full state was built");
        // Stored entries grow like n log n, not n².
        let stored: usize = db
            .scan_json::<Snapshot>(&maps::STATE_SNAPSHOTS, b"")
            .unwrap()
            .iter()
            .map(|(_, s)| s.delta_len())
            .sum();
        assert!(stored < 2000 * 16, "{stored} entries stored for 2000 changes");
        // An equal state reuses its snapshot.
        let mut batch = Batch::new();
        assert_eq!(store.save(&mut batch, None, ids[10].1.clone()).unwrap(), ids[10].0);
    }
}
