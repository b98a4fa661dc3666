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
