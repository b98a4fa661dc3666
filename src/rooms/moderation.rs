//! Forgetting rooms, reporting content, and guests leaving rooms that no
//! longer admit them.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Rooms;
use crate::{
    Result,
    storage::{Batch, decode_u64, key, maps},
    util,
};

/// What `reports` stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub room_id: OwnedRoomId,
    pub event_id: Option<OwnedEventId>,
    pub reporter: OwnedUserId,
    pub reason: Option<String>,
    pub ts: u64,
}

impl Rooms {
    /// Once a room's `m.room.guest_access` no longer says `can_join`, each
    /// local guest joined or invited there leaves, by its own leave event
    /// (as Synapse does: no kick by whoever changed the setting, so power
    /// levels do not matter).
    pub async fn remove_guests(&self, room_id: &RoomId) -> Result<()> {
        let Some(short) = self.room_short(room_id)? else { return Ok(()) };
        if self.admits_guests(short)? {
            return Ok(());
        }
        for (user, membership) in self.members(short)? {
            if !matches!(membership.as_str(), "join" | "invite") || !self.users.is_guest(&user)? {
                continue;
            }
            let content = serde_json::json!({"membership": "leave", "kind": "guest"});
            let builder = super::builder::PduBuilder::state("m.room.member", user.as_str(), content);
            if let Err(e) = self.send(room_id, &user, builder, None).await {
                tracing::warn!("guest {user} could not leave {room_id}: {e}");
            }
        }
        Ok(())
    }

    pub fn forget(&self, user: &UserId, room_short: u64) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(&maps::FORGOTTEN_ROOMS, key(&[user.as_bytes(), &room_short.to_be_bytes()]), Vec::new());
        self.db.write(batch)?;
        Ok(())
    }

    pub fn is_forgotten(&self, user: &UserId, room_short: u64) -> Result<bool> {
        Ok(self.db.contains(&maps::FORGOTTEN_ROOMS, &key(&[user.as_bytes(), &room_short.to_be_bytes()]))?)
    }

    /// The rooms a user has forgotten (one scan, for callers asking of many).
    pub fn forgotten_rooms(&self, user: &UserId) -> Result<std::collections::HashSet<u64>> {
        let prefix = crate::storage::prefix(&[user.as_bytes()]);
        let rows = self.db.scan_prefix(&maps::FORGOTTEN_ROOMS, &prefix)?;
        Ok(rows.iter().map(|(k, _)| decode_u64(&k[prefix.len()..])).collect::<Result<_, _>>()?)
    }

    /// Stores a report for the server's admins.
    pub fn report(&self, report: Report) -> Result<()> {
        let _guard = self.report_lock.lock().expect("report lock");
        let last = self.db.scan_range(&maps::REPORTS, b"", None, true, 1)?;
        let next = match last.first() {
            Some((k, _)) => decode_u64(k)? + 1,
            None => 0,
        };
        self.db.put_json(&maps::REPORTS, &next.to_be_bytes(), &Report { ts: util::now_ms(), ..report })?;
        Ok(())
    }

    /// Every report, oldest first.
    pub fn reports(&self) -> Result<Vec<Report>> {
        Ok(self.db.scan_json(&maps::REPORTS, b"")?.into_iter().map(|(_, r)| r).collect())
    }
}
