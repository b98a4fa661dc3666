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
    /// The room reported, or where the event is (none for a user report).
    pub room_id: Option<OwnedRoomId>,
    pub event_id: Option<OwnedEventId>,
    /// The user reported (`POST /users/{userId}/report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<OwnedUserId>,
    pub reporter: OwnedUserId,
    pub reason: Option<String>,
    /// The event report's `score` (-100 worst to 0), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    pub ts: u64,
}

impl Report {
    pub fn is_event_report(&self) -> bool {
        self.event_id.is_some()
    }

    pub fn is_user_report(&self) -> bool {
        self.user_id.is_some()
    }
}

/// What `blocked_rooms` stores: who blocked the room, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Block {
    pub user_id: OwnedUserId,
    pub ts: u64,
}

impl Rooms {
    /// Blocks a room (`Some(admin)`) or lifts the block (`None`): nobody
    /// here may join it or be invited to it.
    pub fn set_blocked(&self, room_id: &RoomId, by: Option<&UserId>) -> Result<()> {
        let mut batch = Batch::new();
        match by {
            Some(admin) => batch.put_json(
                &maps::BLOCKED_ROOMS,
                room_id.as_bytes(),
                &Block { user_id: admin.to_owned(), ts: util::now_ms() },
            ),
            None => batch.delete(&maps::BLOCKED_ROOMS, room_id.as_bytes()),
        }
        self.db.write(batch)?;
        Ok(())
    }

    pub fn blocked(&self, room_id: &RoomId) -> Result<Option<Block>> {
        Ok(self.db.get_json(&maps::BLOCKED_ROOMS, room_id.as_bytes())?)
    }

    /// Refuses (403) a join, invite or knock of a blocked room.
    pub fn check_not_blocked(&self, room_id: &RoomId) -> Result<()> {
        if self.room_short(room_id)?.is_some_and(|room| self.is_purging(room)) {
            return Err(crate::Error::forbidden("This room is being purged from this server"));
        }
        match self.db.contains(&maps::BLOCKED_ROOMS, room_id.as_bytes())? {
            true => Err(crate::Error::forbidden("This room has been blocked on this server")),
            false => Ok(()),
        }
    }

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

    /// Stores a report for the server's admins; its number.
    pub fn report(&self, report: Report) -> Result<u64> {
        let _guard = self.report_lock.lock().expect("report lock");
        let last = self.db.scan_range(&maps::REPORTS, b"", None, true, 1)?;
        let next = match last.first() {
            Some((k, _)) => decode_u64(k)? + 1,
            None => 0,
        };
        self.db.put_json(&maps::REPORTS, &next.to_be_bytes(), &Report { ts: util::now_ms(), ..report })?;
        Ok(next)
    }

    /// Every report with its number, oldest first.
    pub fn reports(&self) -> Result<Vec<(u64, Report)>> {
        self.db.scan_json(&maps::REPORTS, b"")?.into_iter().map(|(k, r)| Ok((decode_u64(&k)?, r))).collect()
    }

    pub fn get_report(&self, id: u64) -> Result<Option<Report>> {
        Ok(self.db.get_json(&maps::REPORTS, &id.to_be_bytes())?)
    }

    /// Deletes a report (dealt with); whether there was one.
    pub fn delete_report(&self, id: u64) -> Result<bool> {
        let _guard = self.report_lock.lock().expect("report lock");
        if self.get_report(id)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.delete(&maps::REPORTS, id.to_be_bytes().to_vec());
        self.db.write(batch)?;
        Ok(true)
    }
}
