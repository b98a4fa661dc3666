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

/// A JSON value as ruma's `Raw<T>`, for events built as JSON.
pub fn raw<T>(value: serde_json::Value) -> crate::Result<ruma::serde::Raw<T>> {
    Ok(ruma::serde::Raw::from_json(serde_json::value::to_raw_value(&value).map_err(crate::Error::internal)?))
}
