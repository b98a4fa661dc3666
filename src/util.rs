//! Small helpers with no better home.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// A JSON value as ruma's `Raw<T>`, for events built as JSON.
pub fn raw<T>(value: serde_json::Value) -> crate::Result<ruma::serde::Raw<T>> {
    Ok(ruma::serde::Raw::from_json(serde_json::value::to_raw_value(&value).map_err(crate::Error::internal)?))
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
