//! The narrow key-value interface every storage engine provides.
//!
//! Hearth's services talk to [`super::Db`], which sits on a `dyn KvEngine`;
//! RocksDB ([`super::rocks::RocksEngine`]) is the engine today, and another
//! one only has to implement this trait.

use super::{Result, maps::MapDef};

/// A key and its value, as raw bytes.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One change inside an atomic [`Batch`].
#[derive(Debug, Clone)]
pub enum Op {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
}

/// Changes to several maps that are applied all together or not at all.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn put(&mut self, map: &MapDef, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(map.name, key.into(), value.into()));
    }

    /// Serialises `value` as JSON.
    pub fn put_json<T: serde::Serialize>(&mut self, map: &MapDef, key: impl Into<Vec<u8>>, value: &T) {
        let bytes = serde_json::to_vec(value).expect("values stored as JSON always serialise");
        self.put(map, key, bytes);
    }

    pub fn delete(&mut self, map: &MapDef, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(map.name, key.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What a storage engine must do. Every method addresses one map by its
/// declaration in [`super::maps`].
pub trait KvEngine: Send + Sync + 'static {
    fn get(&self, map: &MapDef, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Entries whose keys start with `prefix`, in key order (reversed when
    /// `reverse`), beginning at `from` (inclusive) when given, at most `limit`.
    fn scan(
        &self,
        map: &MapDef,
        prefix: &[u8],
        from: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<KeyValue>>;

    /// Applies every change of `batch` atomically.
    fn write(&self, batch: Batch) -> Result<()>;

    /// Like [`KvEngine::write`], without waiting for the disk: readable at
    /// once, durable with the next synced write (the log is kept in order).
    fn write_unsynced(&self, batch: Batch) -> Result<()>;

    /// Persists memory tables to disk (used at shutdown).
    fn flush(&self) -> Result<()>;

    /// The engine's own figures (name, value) for metrics: sizes, caches.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Rewrites every map's files in the current format, dropping what
    /// deletes left behind (`hearth database compact`).
    fn compact(&self) -> Result<()>;
}
