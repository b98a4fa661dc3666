//! Ending a room, a Hearth extension for its admins (the power to change
//! power levels): the door closes (invite-only, out of the directory, its
//! local aliases gone), then everyone the admin's power lets them remove
//! is removed — members kicked, invites withdrawn, knocks refused, here
//! and on other servers. The admin leaves last, once nobody else is left;
//! those they could not remove (admins of the same power) are named.

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::json;

use super::{Rooms, builder::PduBuilder};
use crate::{Error, Result, util};

#[derive(Debug, Default)]
pub struct Ended {
    pub removed: Vec<OwnedUserId>,
    pub not_removed: Vec<OwnedUserId>,
    /// Whether the admin left (everyone else was removed).
    pub left: bool,
}

impl Rooms {
    pub async fn end_room(&self, room_id: &RoomId, by: &UserId, reason: Option<&str>) -> Result<Ended> {
        self.check_room_admin(room_id, by, "Only the room's admins may end it")?;
        let (short, _) = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if self.current_state_field(short, "m.room.join_rules", "", "join_rule")?.as_deref() != Some("invite")
        {
            let closed = PduBuilder::state("m.room.join_rules", "", json!({"join_rule": "invite"}));
            self.send(room_id, by, closed, None).await?;
        }
        self.set_published(room_id, false)?;
        for alias in self.room_aliases(short)? {
            if let Some(record) = self.alias(&alias)? {
                self.remove_alias(&alias, &record)?;
            }
        }
        let reason = reason.unwrap_or("This room has ended");
        let mut ended = Ended::default();
        for (user, membership) in self.members(short)? {
            if user == by || !matches!(membership.as_str(), "join" | "invite" | "knock") {
                continue;
            }
            // The room's auth rules decide (power to kick, and above theirs).
            let leave = util::object(json!({"membership": "leave", "reason": reason}));
            match self.change_membership(room_id, by, &user, leave).await {
                Ok(_) => ended.removed.push(user),
                Err(e) => {
                    tracing::info!("ending {room_id}: {by} cannot remove {user}: {e}");
                    ended.not_removed.push(user);
                }
            }
        }
        if ended.not_removed.is_empty() {
            self.change_membership(
                room_id,
                by,
                by,
                util::object(json!({"membership": "leave", "reason": reason})),
            )
            .await?;
            ended.left = true;
        }
        tracing::info!(
            "{by} ended {room_id}: {} removed, {} left in it",
            ended.removed.len(),
            ended.not_removed.len()
        );
        Ok(ended)
    }
}
