//! What an operator reads of a room to see whether the servers that share
//! it agree: its forward extremities and a fingerprint of its current
//! state (a SHA-256 over the sorted (type, state key, event ID) triples,
//! the same on every server holding the same state).

use ruma::{OwnedEventId, RoomId};
use sha2::{Digest, Sha256};

use super::{Rooms, short_ids::split_state_key_name};
use crate::{Error, Result};

/// A room as `Rooms::fingerprint` describes it.
pub struct Fingerprint {
    /// The forward extremities with their depths.
    pub extremities: Vec<(OwnedEventId, u64)>,
    /// Hex SHA-256 of the current state's sorted `type\0state_key\0event_id\n` lines.
    pub state_hash: String,
    /// How many state events the current state holds.
    pub state_events: usize,
}

impl Rooms {
    /// The room's forward extremities and current-state fingerprint;
    /// `None` for a room this server does not have.
    pub fn fingerprint(&self, room_id: &RoomId) -> Result<Option<Fingerprint>> {
        let Some((_, record)) = self.room(room_id)? else { return Ok(None) };
        let mut extremities = Vec::new();
        for event_id in &record.forward_extremities {
            let depth = match self.event_short(event_id)? {
                Some(short) => self.event_meta(short)?.map_or(0, |meta| meta.depth),
                None => 0,
            };
            extremities.push((event_id.clone(), depth));
        }
        let state = self.current_state(&record)?;
        let mut lines = Vec::with_capacity(state.len());
        for (key, event) in state.iter() {
            let name = self.short.name(*key)?;
            let (kind, state_key) =
                split_state_key_name(&name).ok_or_else(|| Error::internal("a malformed state key"))?;
            lines.push(format!("{kind}\0{state_key}\0{}\n", self.short.name(*event)?));
        }
        lines.sort_unstable();
        let mut hasher = Sha256::new();
        for line in &lines {
            hasher.update(line.as_bytes());
        }
        Ok(Some(Fingerprint {
            extremities,
            state_hash: hex::encode(hasher.finalize()),
            state_events: lines.len(),
        }))
    }
}
