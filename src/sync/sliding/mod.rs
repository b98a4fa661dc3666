//! Simplified sliding sync (MSC4186), the sync Element X and every app on
//! matrix-rust-sdk's room list speak: lists of the user's rooms in windows,
//! room subscriptions and extensions over long-lived connections.
//!
//! Being built (issue 19): so far the store of what each connection was
//! sent ([`connections`]), the room lists ([`lists`]) and what a room's
//! `required_state` asks for ([`required`]); the endpoint is not served
//! yet, and `/versions` does not advertise it.

pub mod connections;
pub mod lists;
pub mod required;
