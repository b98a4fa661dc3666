//! The room protocol between servers, above `services`: sending this
//! server's events and EDUs (`sender`), taking in other servers' PDUs
//! through the one pipeline (`ingest`). The network itself (discovery,
//! signed requests, keys) is `servers`'.

pub mod audience;
pub mod backfill;
pub mod devices;
pub mod edus;
pub mod ingest;
pub mod membership;
pub mod query;
pub mod sender;
pub mod v1;
