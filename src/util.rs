//! Small helpers with no better home.

use std::{
    collections::{BTreeMap, HashMap},
    time::{SystemTime, UNIX_EPOCH},
};

use rand::{Rng, distributions::Alphanumeric};

/// A random alphanumeric string (~5.95 bits of entropy per character).
pub fn random_string(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs CPU-heavy synchronous work (appending an event: state resolution,
/// push evaluation, state hashing) without stalling the other tasks of an
/// async worker: on the multi-threaded runtime the worker hands its queue
/// to another thread first. Elsewhere (single-threaded test runtimes) it
/// simply runs.
pub fn heavy<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// A cache keyed by u64 IDs, bounded by the entries its values hold (as the
/// caller counts them), least recently used out first.
pub struct Lru<V> {
    /// ID → (value, entries it holds, last use).
    map: HashMap<u64, (V, usize, u64)>,
    /// Last use → ID, oldest first.
    order: BTreeMap<u64, u64>,
    held: usize,
    budget: usize,
    clock: u64,
}

impl<V: Clone> Lru<V> {
    pub fn new(budget: usize) -> Self {
        Self { map: HashMap::new(), order: BTreeMap::new(), held: 0, budget, clock: 0 }
    }

    pub fn get(&mut self, id: u64) -> Option<V> {
        let (value, _, used) = self.map.get_mut(&id)?;
        self.order.remove(used);
        self.clock += 1;
        *used = self.clock;
        self.order.insert(self.clock, id);
        Some(value.clone())
    }

    pub fn insert(&mut self, id: u64, value: V, entries: usize) {
        if entries > self.budget {
            return;
        }
        self.clock += 1;
        if let Some((_, old, used)) = self.map.insert(id, (value, entries, self.clock)) {
            self.held -= old;
            self.order.remove(&used);
        }
        self.order.insert(self.clock, id);
        self.held += entries;
        while self.held > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((_, entries, _)) = self.map.remove(&oldest) {
                self.held -= entries;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops one entry.
    pub fn remove(&mut self, id: u64) {
        if let Some((_, entries, used)) = self.map.remove(&id) {
            self.order.remove(&used);
            self.held -= entries;
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.held = 0;
    }
}

/// A JSON value as ruma's `Raw<T>`, for events built as JSON.
/// A JSON object's map (empty for anything else): event content built
/// with `json!`.
pub fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

pub fn raw<T>(value: serde_json::Value) -> crate::Result<ruma::serde::Raw<T>> {
    Ok(ruma::serde::Raw::from_json(serde_json::value::to_raw_value(&value).map_err(crate::Error::internal)?))
}

/// One async lock per key (a room, a user), made on first use. Locks
/// nobody holds or waits for are dropped now and then, so the map holds the
/// keys in use, not every key ever asked for.
pub struct KeyedLocks<K> {
    locks: std::sync::Mutex<HashMap<K, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// Locks kept before the unused ones are dropped.
pub const LOCKS_KEPT: usize = 1024;

impl<K: std::hash::Hash + Eq + Clone> KeyedLocks<K> {
    pub fn new() -> Self {
        Self { locks: std::sync::Mutex::new(HashMap::new()) }
    }

    pub async fn lock<Q>(&self, key: &Q) -> tokio::sync::OwnedMutexGuard<()>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mutex = {
            let mut locks = self.locks.lock().expect("keyed locks");
            if locks.len() >= LOCKS_KEPT {
                locks.retain(|_, lock| std::sync::Arc::strong_count(lock) > 1);
            }
            match locks.get(key) {
                Some(lock) => lock.clone(),
                None => locks.entry(key.to_owned()).or_default().clone(),
            }
        };
        mutex.lock_owned().await
    }

    /// How many locks the map holds.
    pub fn len(&self) -> usize {
        self.locks.lock().expect("keyed locks").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the map holds a lock for `key`.
    pub fn holds<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.locks.lock().expect("keyed locks").contains_key(key)
    }
}

impl<K: std::hash::Hash + Eq + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (the filters' wildcard).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod glob_tests {
    use super::glob_match;

    #[test]
    fn stars_match_anywhere() {
        for (pattern, text, matches) in [
            ("m.room.*", "m.room.message", true),
            ("m.room.*", "m.roomy", false),
            ("*", "", true),
            ("m.*.message", "m.room.message", true),
            ("*.message", "m.room.message", true),
            ("m.room.message", "m.room.message", true),
            ("m.room.message", "m.room.messages", false),
            ("a*b*c", "abxbc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_match(pattern, text), matches, "{pattern} ~ {text}");
        }
    }
}

#[cfg(test)]
mod heavy_tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::{Duration, Instant},
    };

    /// With one async worker, other tasks still run while heavy work does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn other_tasks_run_during_heavy_work() {
        let seen = tokio::spawn(async {
            // Both on the one worker: the other task is queued behind this one.
            let ran = Arc::new(AtomicBool::new(false));
            let flag = ran.clone();
            let other = tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
            let seen = super::heavy(|| {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !ran.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                ran.load(Ordering::SeqCst)
            });
            other.await.unwrap();
            seen
        })
        .await
        .unwrap();
        assert!(seen, "the other task was stalled behind the heavy work");
    }
}

#[cfg(test)]
mod lru_tests {
    use super::Lru;

    #[test]
    fn caches_hold_entries_up_to_their_budget_least_recently_used_out() {
        let mut lru = Lru::new(100);
        for id in 0..10 {
            lru.insert(id, id, 30);
            assert!(lru.held <= 100);
            // The first stays in use, so it stays.
            assert_eq!(lru.get(0), Some(0));
        }
        assert_eq!(lru.held, 90);
        assert!(lru.get(0).is_some() && lru.get(9).is_some() && lru.get(8).is_some());
        assert!(lru.get(1).is_none(), "the least recently used went first");
        lru.insert(99, 99, 101);
        assert!(lru.get(99).is_none(), "what exceeds the whole budget is not kept");
    }
}

/// An error with its causes, `: `-separated (reqwest's own text is terse).
/// The bytes of the files directly under `dir` (files that vanish while it
/// looks are skipped).
pub fn directory_size(dir: &std::path::Path) -> std::io::Result<u64> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum())
}

pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
