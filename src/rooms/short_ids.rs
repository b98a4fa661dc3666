//! Short IDs: a u64 for each event ID, room ID and (event type, state key)
//! pair, so that state snapshots, timelines and indexes use small keys.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use crate::{
    Error, Result,
    storage::{Batch, Db, decode_u64, maps},
    util::Lru,
};

/// Names kept in memory (an ID's name never changes; ~100 bytes each).
const NAMES_CACHED: usize = 1 << 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Event = b'e' as isize,
    Room = b'r' as isize,
    StateKey = b'k' as isize,
}

pub struct ShortIds {
    db: Db,
    next: AtomicU64,
    /// Serialises get-or-create of shared strings (rooms, state keys).
    lock: Mutex<()>,
    names: Mutex<Lru<Arc<str>>>,
    /// Rooms' and state keys' IDs by a hash of their name (with the name,
    /// to tell collisions apart): an ID never changes once given.
    ids: Mutex<Lru<(Arc<str>, u64)>>,
}

fn name_key(kind: Kind, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(kind as u8);
    key.extend_from_slice(name.as_bytes());
    key
}

impl ShortIds {
    /// Loads the allocator; the next ID follows the largest one stored.
    pub fn open(db: Db) -> Result<Self> {
        let last = db.scan_range(&maps::SHORT_ID_NAMES, b"", None, true, 1)?;
        let next = match last.first() {
            Some((k, _)) => decode_u64(k)? + 1,
            None => 1,
        };
        Ok(Self {
            db,
            next: AtomicU64::new(next),
            lock: Mutex::new(()),
            names: Mutex::new(Lru::new(NAMES_CACHED)),
            ids: Mutex::new(Lru::new(NAMES_CACHED)),
        })
    }

    pub fn get(&self, kind: Kind, name: &str) -> Result<Option<u64>> {
        let key = name_key(kind, name);
        // Event IDs are read once or twice each: not worth the memory.
        let hash = (kind != Kind::Event).then(|| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(&key)
        });
        if let Some(hash) = hash
            && let Some((cached, id)) = self.ids.lock().expect("short IDs").get(hash)
            && cached.as_bytes() == key.as_slice()
        {
            return Ok(Some(id));
        }
        let id = self.db.get(&maps::SHORT_IDS, &key)?.map(|v| decode_u64(&v)).transpose()?;
        if let (Some(hash), Some(id)) = (hash, id) {
            let name: Arc<str> = String::from_utf8(key).map_err(Error::internal)?.into();
            self.ids.lock().expect("short IDs").insert(hash, (name, id), 1);
        }
        Ok(id)
    }

    /// The short ID of a room or state key, created (and written) if new.
    pub fn get_or_create(&self, kind: Kind, name: &str) -> Result<u64> {
        if let Some(id) = self.get(kind, name)? {
            return Ok(id);
        }
        let _guard = self.lock.lock().expect("short id lock");
        if let Some(id) = self.get(kind, name)? {
            return Ok(id);
        }
        let mut batch = Batch::new();
        let id = self.allocate_into(&mut batch, kind, name);
        self.db.write(batch)?;
        Ok(id)
    }

    /// Allocates a short ID for a string known to be new (an event ID) into
    /// the caller's batch, so it is written with what uses it.
    pub fn allocate_into(&self, batch: &mut Batch, kind: Kind, name: &str) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        batch.put(&maps::SHORT_IDS, name_key(kind, name), id.to_be_bytes());
        let mut value = vec![kind as u8];
        value.extend_from_slice(name.as_bytes());
        batch.put(&maps::SHORT_ID_NAMES, id.to_be_bytes(), value);
        id
    }

    /// Forgets a name's ID in memory (its row was deleted: a purged room).
    pub fn forget(&self, kind: Kind, name: &str) {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(name_key(kind, name));
        self.ids.lock().expect("short IDs").remove(hash);
    }

    /// Empties the in-memory names (benchmarks).
    pub fn clear_cache(&self) {
        self.names.lock().expect("short ID names").clear();
        self.ids.lock().expect("short IDs").clear();
    }

    /// The string behind a short ID.
    pub fn name(&self, id: u64) -> Result<String> {
        if let Some(name) = self.names.lock().expect("short ID names").get(id) {
            return Ok(name.to_string());
        }
        let value = self
            .db
            .get(&maps::SHORT_ID_NAMES, &id.to_be_bytes())?
            .ok_or_else(|| Error::internal(format!("short ID {id} has no name")))?;
        let name = String::from_utf8(value[1..].to_vec()).map_err(Error::internal)?;
        self.names.lock().expect("short ID names").insert(id, name.as_str().into(), 1);
        Ok(name)
    }
}

/// The name of a state key in `short_ids`: the event type's byte length,
/// `:`, the event type, then the state key (unambiguous whatever they hold).
pub fn state_key_name(event_type: &str, state_key: &str) -> String {
    format!("{}:{event_type}{state_key}", event_type.len())
}

/// Splits a [`state_key_name`] back into (event type, state key).
pub fn split_state_key_name(name: &str) -> Option<(&str, &str)> {
    let (len, rest) = name.split_once(':')?;
    let len: usize = len.parse().ok()?;
    (rest.len() >= len && rest.is_char_boundary(len)).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_key_names_round_trip() {
        for (t, k) in [("m.room.member", "@a:b"), ("x:y", ":"), ("", ""), ("m.room.name", "")] {
            assert_eq!(split_state_key_name(&state_key_name(t, k)), Some((t, k)));
        }
    }
}
