//! What server admins see of each room (Synapse's room stats): name,
//! alias, members (all and local), version, creator, encryption, join
//! rules and the rest, counted from the current state once per state
//! change and kept in memory.

use std::sync::Arc;

use ruma::OwnedRoomId;
use serde_json::Value;

use super::{RoomRecord, Rooms};
use crate::{
    Error, Result,
    storage::{decode_u64, maps},
};

/// One room's facts as an admin's list shows them.
#[derive(Debug, Clone)]
pub struct RoomStats {
    pub room_id: OwnedRoomId,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar: Option<String>,
    pub canonical_alias: Option<String>,
    pub joined_members: u64,
    pub joined_local_members: u64,
    pub version: String,
    pub creator: Option<String>,
    pub encryption: Option<String>,
    pub federatable: bool,
    pub join_rules: Option<String>,
    pub guest_access: Option<String>,
    pub history_visibility: Option<String>,
    pub state_events: u64,
    pub room_type: Option<String>,
    pub tombstone: Option<String>,
}

/// Rooms whose stats are kept in memory.
pub(super) const STATS_CACHED: usize = 100_000;

impl Rooms {
    /// Every room this server has, in short ID order.
    pub fn all_rooms(&self) -> Result<Vec<(u64, RoomRecord)>> {
        self.db
            .scan_json::<RoomRecord>(&maps::ROOMS, b"")?
            .into_iter()
            .map(|(k, record)| Ok((decode_u64(&k)?, record)))
            .collect()
    }

    /// A room's stats, computed again only when its state changed.
    pub fn stats(&self, room_short: u64, record: &RoomRecord) -> Result<Arc<RoomStats>> {
        if let Some((at, stats)) = self.stats_cache.lock().expect("room stats").get(room_short)
            && at == record.current_snapshot
        {
            return Ok(stats);
        }
        let stats = Arc::new(self.compute_stats(room_short, record)?);
        self.stats_cache.lock().expect("room stats").insert(
            room_short,
            (record.current_snapshot, stats.clone()),
            1,
        );
        Ok(stats)
    }

    fn compute_stats(&self, room_short: u64, record: &RoomRecord) -> Result<RoomStats> {
        let state = self.current_state(record)?;
        let content = |kind: &str| -> Result<Option<Value>> {
            Ok(self.state_event(&state, kind, "")?.map(|event| event.content_value()))
        };
        let field = |kind: &str, name: &str| -> Result<Option<String>> {
            Ok(content(kind)?.and_then(|c| c[name].as_str().map(str::to_owned)))
        };
        let create = self.state_event(&state, "m.room.create", "")?;
        let create_content = create.as_ref().map(|c| c.content_value());
        let joined_members = self.joined_count(room_short, record.current_snapshot)? as u64;
        Ok(RoomStats {
            room_id: record.room_id.clone(),
            name: field("m.room.name", "name")?,
            topic: field("m.room.topic", "topic")?,
            avatar: field("m.room.avatar", "url")?,
            canonical_alias: field("m.room.canonical_alias", "alias")?,
            joined_members,
            joined_local_members: self.local_joined(room_short)?.len() as u64,
            version: record.version.to_string(),
            creator: create.as_ref().map(|c| c.sender.to_string()),
            encryption: field("m.room.encryption", "algorithm")?,
            federatable: create_content.as_ref().is_none_or(|c| c["m.federate"] != Value::Bool(false)),
            join_rules: field("m.room.join_rules", "join_rule")?,
            guest_access: field("m.room.guest_access", "guest_access")?,
            history_visibility: field("m.room.history_visibility", "history_visibility")?,
            state_events: state.len() as u64,
            room_type: create_content.and_then(|c| c["type"].as_str().map(str::to_owned)),
            tombstone: field("m.room.tombstone", "replacement_room")?,
        })
    }

    /// A room by ID with its stats, if this server has it.
    pub fn stats_of(&self, room_id: &ruma::RoomId) -> Result<Option<Arc<RoomStats>>> {
        match self.room(room_id)? {
            Some((short, record)) => Ok(Some(self.stats(short, &record)?)),
            None => Ok(None),
        }
    }
}

/// The error of a room that is not there.
pub fn room_not_found() -> Error {
    Error::not_found("Room not found")
}
