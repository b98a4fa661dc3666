//! The operator's side: what a server admin does to accounts and rooms
//! that spans several services (listing them with what admins see,
//! deactivating with leaving every room, shutting rooms down), the jobs
//! that run in the background with their progress, and server notices.
//! The HTTP face is `api::admin` (Synapse's admin API) and the console.

pub mod accounts;
pub mod moderation;
pub mod notices;
pub mod retention;
pub mod rooms;
