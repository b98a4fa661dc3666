//! The RocksDB engine: one database, one column family per declared map.

use std::path::Path;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
};

use super::{
    Error, Result,
    engine::{Batch, KeyValue, KvEngine, Op},
    maps::{ALL, MapDef},
};

pub struct RocksEngine {
    db: DB,
    /// Each write waits for its WAL to reach the disk (RocksDB commits
    /// concurrent writers as a group, so they share the sync).
    sync_writes: bool,
    /// (Tests read RocksDB's counters: whether the WAL was synced.)
    #[cfg(test)]
    options: Options,
}

impl RocksEngine {
    /// Opens (creating if needed) the database at `path` with every declared
    /// map, plus any column family an earlier version left behind.
    pub fn open(path: &Path, cache_mb: usize, sync_writes: bool) -> Result<Self> {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::Engine(format!("cannot create {}: {e}", path.display())))?;
        let cache = Cache::new_lru_cache(cache_mb.max(1) * 1024 * 1024);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache, partitioned so a
        // read loads only the small partitions it needs: whole ones are
        // megabytes per table file once the database outgrows the cache,
        // and reloading them on every miss made reads of a million-message
        // database several times slower. The partitions' top levels stay
        // pinned.
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(DBCompressionType::Lz4);
        cf_opts.set_bottommost_compression_type(DBCompressionType::Zstd);

        let mut db_opts = cf_opts.clone();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(512);
        db_opts.set_keep_log_file_num(3);
        db_opts.increase_parallelism(2);
        #[cfg(test)]
        db_opts.enable_statistics();

        let mut names: Vec<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
        if let Ok(existing) = DB::list_cf(&db_opts, path) {
            for name in existing {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let cfs = names.into_iter().map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| {
            let msg = e.into_string();
            if msg.contains("lock") {
                Error::Engine(format!(
                    "the database at {} is in use (is Hearth already running?): {msg}",
                    path.display()
                ))
            } else {
                Error::Engine(msg)
            }
        })?;
        Ok(Self {
            db,
            sync_writes,
            #[cfg(test)]
            options: db_opts,
        })
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Engine(format!("column family {name} missing")))
    }
}

fn rocks_err(e: rocksdb::Error) -> Error {
    Error::Engine(e.into_string())
}

impl KvEngine for RocksEngine {
    fn get(&self, map: &MapDef, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(map.name)?, key).map_err(rocks_err)
    }

    fn scan(
        &self,
        map: &MapDef,
        prefix: &[u8],
        from: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let cf = self.cf(map.name)?;
        let upper = prefix_upper_bound(prefix);
        let mode = match (from, reverse, &upper) {
            (Some(f), false, _) => IteratorMode::From(f, Direction::Forward),
            (Some(f), true, _) => IteratorMode::From(f, Direction::Reverse),
            (None, false, _) => IteratorMode::From(prefix, Direction::Forward),
            // Seeks to the last key <= upper; upper itself lacks the prefix and is skipped.
            (None, true, Some(u)) => IteratorMode::From(u, Direction::Reverse),
            (None, true, None) => IteratorMode::End,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, mode) {
            let (k, v) = item.map_err(rocks_err)?;
            if !k.starts_with(prefix) {
                if reverse && from.is_none() && upper.as_deref() == Some(&*k) {
                    continue;
                }
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn write(&self, batch: Batch) -> Result<()> {
        self.write_with(batch, self.sync_writes)
    }

    fn write_unsynced(&self, batch: Batch) -> Result<()> {
        self.write_with(batch, false)
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        // Summed over the maps; the block cache is shared, read once.
        const PER_MAP: &[(&str, &str)] = &[
            ("live_data_bytes", "rocksdb.estimate-live-data-size"),
            ("sst_files_bytes", "rocksdb.total-sst-files-size"),
            ("memtable_bytes", "rocksdb.cur-size-all-mem-tables"),
            ("estimated_keys", "rocksdb.estimate-num-keys"),
            ("pending_compaction_bytes", "rocksdb.estimate-pending-compaction-bytes"),
        ];
        let mut out: Vec<(&'static str, u64)> = PER_MAP.iter().map(|(name, _)| (*name, 0)).collect();
        for map in ALL {
            let Ok(cf) = self.cf(map.name) else { continue };
            for (slot, (_, property)) in out.iter_mut().zip(PER_MAP) {
                slot.1 += self.db.property_int_value_cf(cf, *property).ok().flatten().unwrap_or(0);
            }
        }
        let cache = self.db.property_int_value("rocksdb.block-cache-usage").ok().flatten().unwrap_or(0);
        out.push(("block_cache_bytes", cache));
        out
    }

    fn flush(&self) -> Result<()> {
        for map in ALL {
            self.db.flush_cf(self.cf(map.name)?).map_err(rocks_err)?;
        }
        self.db.flush_wal(true).map_err(rocks_err)
    }

    fn compact(&self) -> Result<()> {
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for map in ALL {
            self.db.compact_range_cf_opt(self.cf(map.name)?, None::<&[u8]>, None::<&[u8]>, &options);
        }
        Ok(())
    }
}

impl RocksEngine {
    fn write_with(&self, batch: Batch, sync: bool) -> Result<()> {
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put(name, k, v) => wb.put_cf(self.cf(name)?, k, v),
                Op::Delete(name, k) => wb.delete_cf(self.cf(name)?, k),
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(wb, &options).map_err(rocks_err)
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xFF {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{KvEngine, maps};

    /// Review §3.3: a kill -9 cannot tell a synced write from one left in
    /// the page cache; RocksDB's own counter of WAL syncs can.
    #[test]
    fn acknowledged_writes_reach_the_disk_unless_told_otherwise() {
        for sync_writes in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let engine = RocksEngine::open(dir.path(), 8, sync_writes).unwrap();
            let before = engine.options.get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced);
            let mut batch = Batch::new();
            batch.put(&maps::USERS, b"@a:x".to_vec(), b"{}".to_vec());
            engine.write(batch).unwrap();
            let synced = engine.options.get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced) - before;
            assert_eq!(synced > 0, sync_writes, "sync_writes = {sync_writes}: {synced} WAL syncs");
        }
    }

    #[test]
    fn upper_bound() {
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_upper_bound(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_upper_bound(b""), None);
    }
}
