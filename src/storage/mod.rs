//! Persistent storage: a typed layer ([`Db`]) over a narrow key-value engine.
//!
//! Services never see RocksDB: they read and write named maps (declared in
//! [`maps`]) through [`Db`], and group multi-map changes in a [`Batch`] so a
//! crash leaves all of a change or none of it.

pub mod engine;
pub mod maps;
mod migrations;
pub mod rocks;

use std::{path::Path, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};

pub use engine::{Batch, KeyValue, KvEngine};
use maps::MapDef;

/// The schema this build reads and writes. Bump it with a migration when a
/// map's key or value layout changes.
pub const SCHEMA_VERSION: u64 = 4;

/// Separates the parts of a composite key. 0xFF never occurs in UTF-8.
pub const SEP: u8 = 0xFF;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt value in map {map}: {reason}")]
    Corrupt { map: &'static str, reason: String },
    #[error(
        "the database has schema version {found}, this Hearth understands {SCHEMA_VERSION}; \
         {hint}"
    )]
    Schema { found: u64, hint: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A u64 stored big-endian (positions, short IDs).
pub fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt {
        map: "(a u64 field)",
        reason: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// Joins key parts with [`SEP`].
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(part);
    }
    out
}

/// Splits two UTF-8 key parts joined by [`SEP`].
pub fn split_at_sep(bytes: &[u8]) -> Option<(&str, &str)> {
    let at = bytes.iter().position(|b| *b == SEP)?;
    Some((std::str::from_utf8(&bytes[..at]).ok()?, std::str::from_utf8(&bytes[at + 1..]).ok()?))
}

/// A key prefix that matches every key whose first parts are `parts`.
pub fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = key(parts);
    out.push(SEP);
    out
}

/// The typed handle services share.
#[derive(Clone)]
pub struct Db {
    engine: Arc<dyn KvEngine>,
}

impl Db {
    /// Opens the RocksDB database at `path` and checks its schema version.
    /// Opens the database; with `sync_writes`, a write returns once it is on
    /// disk (it survives a power cut, not only a crash of the process).
    pub fn open(path: &Path, cache_mb: usize, sync_writes: bool) -> Result<Self> {
        let db = Self::with_engine(Arc::new(rocks::RocksEngine::open(path, cache_mb, sync_writes)?));
        db.check_schema()?;
        Ok(db)
    }

    pub fn with_engine(engine: Arc<dyn KvEngine>) -> Self {
        Self { engine }
    }

    /// The engine's figures for metrics.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        self.engine.stats()
    }

    fn check_schema(&self) -> Result<()> {
        const KEY: &[u8] = b"schema_version";
        match self.get(&maps::GLOBAL, KEY)? {
            None => {
                let mut batch = Batch::new();
                batch.put(&maps::GLOBAL, KEY, SCHEMA_VERSION.to_be_bytes());
                self.write(batch)
            }
            Some(bytes) => {
                let found = u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| Error::Corrupt {
                    map: maps::GLOBAL.name,
                    reason: "schema_version".into(),
                })?);
                match found.cmp(&SCHEMA_VERSION) {
                    std::cmp::Ordering::Equal => Ok(()),
                    std::cmp::Ordering::Greater => {
                        Err(Error::Schema { found, hint: "it was written by a newer Hearth" })
                    }
                    std::cmp::Ordering::Less => {
                        if !migrations::run(self, found)? {
                            return Err(Error::Schema { found, hint: "no migration from it exists" });
                        }
                        let mut batch = Batch::new();
                        batch.put(&maps::GLOBAL, KEY, SCHEMA_VERSION.to_be_bytes());
                        self.write(batch)
                    }
                }
            }
        }
    }

    pub fn get(&self, map: &MapDef, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine.get(map, key)
    }

    pub fn get_json<T: DeserializeOwned>(&self, map: &MapDef, key: &[u8]) -> Result<Option<T>> {
        self.get(map, key)?.map(|bytes| decode(map, &bytes)).transpose()
    }

    pub fn contains(&self, map: &MapDef, key: &[u8]) -> Result<bool> {
        Ok(self.get(map, key)?.is_some())
    }

    /// Writes one value; for several changes that belong together use [`Db::write`].
    pub fn put_json<T: Serialize>(&self, map: &MapDef, key: &[u8], value: &T) -> Result<()> {
        let mut batch = Batch::new();
        batch.put_json(map, key, value);
        self.write(batch)
    }

    /// Whether any key starts with `prefix`.
    pub fn contains_prefix(&self, map: &MapDef, prefix: &[u8]) -> Result<bool> {
        Ok(!self.engine.scan(map, prefix, None, false, 1)?.is_empty())
    }

    /// All entries under `prefix`, in key order.
    pub fn scan_prefix(&self, map: &MapDef, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        self.engine.scan(map, prefix, None, false, usize::MAX)
    }

    /// Up to `limit` entries under `prefix`, starting at `from`, forwards or backwards.
    pub fn scan_range(
        &self,
        map: &MapDef,
        prefix: &[u8],
        from: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        self.engine.scan(map, prefix, from, reverse, limit)
    }

    /// All values under `prefix`, decoded from JSON.
    pub fn scan_json<T: DeserializeOwned>(&self, map: &MapDef, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>> {
        self.scan_prefix(map, prefix)?.into_iter().map(|(k, v)| Ok((k, decode(map, &v)?))).collect()
    }

    /// Adds the deletion of every key under `prefix` to `batch`.
    pub fn delete_prefix(&self, batch: &mut Batch, map: &MapDef, prefix: &[u8]) -> Result<()> {
        for (k, _) in self.scan_prefix(map, prefix)? {
            batch.delete(map, k);
        }
        Ok(())
    }

    pub fn write(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.write(batch)
    }

    /// A write that does not wait for the disk (see
    /// [`KvEngine::write_unsynced`]): for what a later synced write makes
    /// durable, or what can be fetched again if lost.
    pub fn write_unsynced(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.write_unsynced(batch)
    }

    pub fn flush(&self) -> Result<()> {
        self.engine.flush()
    }

    pub fn compact(&self) -> Result<()> {
        self.engine.compact()
    }
}

fn decode<T: DeserializeOwned>(map: &MapDef, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt { map: map.name, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        (dir, db)
    }

    #[test]
    fn batch_is_atomic_across_maps_and_scans_follow_prefixes() {
        let (_dir, db) = temp_db();
        let mut batch = Batch::new();
        batch.put_json(&maps::USERS, b"@a:x".to_vec(), &1u32);
        batch.put_json(&maps::DEVICES, key(&[b"@a:x", b"D1"]), &"one");
        batch.put_json(&maps::DEVICES, key(&[b"@a:x", b"D2"]), &"two");
        batch.put_json(&maps::DEVICES, key(&[b"@ab:x", b"D3"]), &"other user");
        db.write(batch).unwrap();

        let devices: Vec<(Vec<u8>, String)> = db.scan_json(&maps::DEVICES, &prefix(&[b"@a:x"])).unwrap();
        assert_eq!(devices.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(), ["one", "two"]);

        let rev = db.scan_range(&maps::DEVICES, &prefix(&[b"@a:x"]), None, true, 1).unwrap();
        assert_eq!(rev[0].0, key(&[b"@a:x", b"D2"]));
        assert_eq!(db.get_json::<u32>(&maps::USERS, b"@a:x").unwrap(), Some(1));
    }

    #[test]
    fn schema_version_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path(), 8, false).unwrap();
            let mut batch = Batch::new();
            batch.put(&maps::GLOBAL, b"schema_version".to_vec(), (SCHEMA_VERSION + 1).to_be_bytes());
            db.write(batch).unwrap();
        }
        let err = Db::open(dir.path(), 8, false).err().expect("newer schema must be refused");
        assert!(matches!(err, Error::Schema { .. }), "{err}");
    }

    #[test]
    fn schema_3_gains_each_rooms_last_activity() {
        let dir = tempfile::tempdir().unwrap();
        let row = |room: u64, position: u64| [room.to_be_bytes(), position.to_be_bytes()].concat();
        {
            let db = Db::open(dir.path(), 8, false).unwrap();
            let mut batch = Batch::new();
            batch.put(&maps::GLOBAL, b"schema_version".to_vec(), 3u64.to_be_bytes());
            // Room 1: a message at 2, then 150 reactions (past one chunk);
            // room 2: only state after its creation at 3; room 3: nothing.
            let mut event = 100u64;
            let mut put = |batch: &mut Batch, room: u64, position: u64, kind: &str| {
                event += 1;
                batch.put(&maps::TIMELINE, row(room, position), event.to_be_bytes());
                batch.put_json(&maps::PDUS, event.to_be_bytes(), &serde_json::json!({"type": kind}));
            };
            put(&mut batch, 1, 1, "m.room.create");
            put(&mut batch, 1, 2, "m.room.message");
            for position in 10..160 {
                put(&mut batch, 1, position, "m.reaction");
            }
            put(&mut batch, 2, 3, "m.room.create");
            put(&mut batch, 2, 4, "m.room.topic");
            for room in [1u64, 2, 3] {
                batch.put_json(&maps::ROOMS, room.to_be_bytes(), &serde_json::json!({}));
            }
            db.write(batch).unwrap();
        }
        let db = Db::open(dir.path(), 8, false).unwrap();
        let bump = |room: u64| {
            db.get(&maps::ROOM_BUMP, &room.to_be_bytes()).unwrap().map(|v| decode_u64(&v).unwrap())
        };
        assert_eq!((bump(1), bump(2), bump(3)), (Some(2), Some(3), None));
    }

    #[test]
    fn schema_1_gains_the_timestamp_and_relation_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let row = |room: u64, position: u64| [room.to_be_bytes(), position.to_be_bytes()].concat();
        {
            let db = Db::open(dir.path(), 8, false).unwrap();
            let mut batch = Batch::new();
            batch.put(&maps::GLOBAL, b"schema_version".to_vec(), 1u64.to_be_bytes());
            for (room, position, event, ts) in [(1u64, 5u64, 10u64, 900u64), (1, 6, 11, 800), (2, 7, 12, 700)]
            {
                batch.put(&maps::TIMELINE, row(room, position), event.to_be_bytes());
                batch.put_json(
                    &maps::PDUS,
                    event.to_be_bytes(),
                    &serde_json::json!({"origin_server_ts": ts}),
                );
            }
            // Root 10 has two thread replies (11, 12) and a reaction (13); 12
            // was redacted.
            let relation = |child: u64, rel_type: &str| serde_json::json!({"child": child, "rel_type": rel_type, "event_type": "m.room.message", "sender": "@b:x"});
            for (child, position, rel_type, redacted) in
                [(11u64, 6u64, "m.thread", false), (12, 7, "m.thread", true), (13, 8, "m.annotation", false)]
            {
                batch.put_json(&maps::RELATIONS, row(10, position), &relation(child, rel_type));
                let meta = serde_json::json!({"room": 1, "redacted_by": redacted.then_some(99)});
                batch.put_json(&maps::EVENT_META, child.to_be_bytes(), &meta);
            }
            batch.put_json(
                &maps::EVENT_META,
                10u64.to_be_bytes(),
                &serde_json::json!({"room": 1, "soft_failed": true}),
            );
            batch.put_json(
                &maps::EVENT_META,
                20u64.to_be_bytes(),
                &serde_json::json!({"room": 1, "rejected": true, "soft_failed": false}),
            );
            batch.put(&maps::THREADS, row(1, 10), 7u64.to_be_bytes());
            db.write(batch).unwrap();
        }
        let db = Db::open(dir.path(), 8, false).unwrap();
        let typed = db.scan_prefix(&maps::RELATION_TYPES, &10u64.to_be_bytes()).unwrap();
        let typed_key = |rel_type: &str, position: u64| {
            [&10u64.to_be_bytes()[..], rel_type.as_bytes(), &[SEP], &position.to_be_bytes()].concat()
        };
        assert_eq!(
            typed,
            [
                (typed_key("m.annotation", 8), 13u64.to_be_bytes().to_vec()),
                (typed_key("m.thread", 6), 11u64.to_be_bytes().to_vec())
            ]
        );
        assert!(!db.contains(&maps::RELATIONS, &row(10, 7)).unwrap(), "the redacted reply no longer relates");
        let thread = db.get(&maps::THREADS, &row(1, 10)).unwrap().unwrap();
        assert_eq!(thread, [6u64.to_be_bytes(), 1u64.to_be_bytes()].concat(), "latest 6, one reply");
        assert_eq!(
            db.scan_prefix(&maps::THREAD_ACTIVITY, b"").unwrap(),
            [(row(1, 6), 10u64.to_be_bytes().to_vec())]
        );
        assert!(
            db.contains(&maps::THREAD_PARTICIPANTS, &[&10u64.to_be_bytes()[..], b"@b:x"].concat()).unwrap()
        );
        let meta = |short: u64| {
            db.get_json::<serde_json::Value>(&maps::EVENT_META, &short.to_be_bytes()).unwrap().unwrap()
        };
        assert_eq!(meta(10), serde_json::json!({"room": 1, "status": "soft_failed"}));
        assert_eq!(meta(20), serde_json::json!({"room": 1, "status": "rejected"}));
        assert_eq!(meta(11), serde_json::json!({"room": 1, "redacted_by": null}));
        let index = db.scan_prefix(&maps::ROOM_TIMESTAMPS, &1u64.to_be_bytes()).unwrap();
        let expected = [([1u64, 800, 6], 11u64), ([1, 900, 5], 10)].map(|(k, v)| {
            (k.iter().flat_map(|p| p.to_be_bytes()).collect::<Vec<u8>>(), v.to_be_bytes().to_vec())
        });
        assert_eq!(index, expected);
        let version = db.get(&maps::GLOBAL, b"schema_version").unwrap().unwrap();
        assert_eq!(decode_u64(&version).unwrap(), SCHEMA_VERSION);
    }
}
