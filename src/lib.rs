//! Hearth, a Matrix homeserver.
//!
//! `docs/ARCHITECTURE.md` is the map: modules, the request path, and every
//! RocksDB column family.

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod federation;
pub mod identity;
pub mod jobs;
pub mod keys;
pub mod media;
pub mod metrics;
pub mod outbound;
pub mod presence;
pub mod pushers;
pub mod ratelimit;
pub mod rooms;
pub mod search;
pub mod server;
pub mod servers;
pub mod services;
pub mod storage;
pub mod stream;
pub mod sync;
pub mod users;
pub mod util;

pub use error::{Error, Result};
