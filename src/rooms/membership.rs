//! The one path of every membership change a local user asks for: the
//! membership endpoints, `PUT /state/m.room.member/{userId}`, profile
//! changes and accepted third-party invites all come through here.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{Rooms, builder::PduBuilder};
use crate::{Error, Result};

impl Rooms {
    /// A new display name or avatar reaches the user's rooms as a new
    /// `m.room.member` join in each, as Synapse sends them.
    pub async fn update_member_events(&self, user: &UserId, field: &str) -> Result<()> {
        if !matches!(field, "displayname" | "avatar_url") {
            return Ok(());
        }
        let value = self.users.profile(user)?.and_then(|p| p.get(field).cloned());
        let rooms = self;
        for room_id in rooms.rooms_with_membership(user, "join")? {
            let Some(room_short) = rooms.room_short(&room_id)? else { continue };
            let Some(member) = rooms.current_state_event(room_short, "m.room.member", user.as_str())? else {
                continue;
            };
            let serde_json::Value::Object(mut content) = member.content_value() else { continue };
            if content.get(field) == value.as_ref() {
                continue;
            }
            match &value {
                Some(value) => content.insert(field.to_owned(), value.clone()),
                None => content.remove(field),
            };
            // Through the membership path, which drops an old restricted-join
            // authorisation: only the profile changes.
            if let Err(e) = self.change_membership(&room_id, user, user, content).await {
                tracing::warn!("profile change of {user} not sent to {room_id}: {e}");
            }
        }
        Ok(())
    }

    /// The one path of every membership change a local client asks for, from
    /// the membership endpoints and from `PUT /state/m.room.member/{userId}`
    /// alike: the server, never the client, names the authoriser of a
    /// restricted join; invites to users of other servers take
    /// `federation::membership::invite_remote` instead.
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        mut content: Map<String, Value>,
    ) -> Result<ruma::OwnedEventId> {
        let rooms = self;
        let room_short = rooms.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let membership = content
            .get("membership")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("`membership` must be a string"))?
            .to_owned();
        if matches!(membership.as_str(), "join" | "invite" | "knock") {
            self.check_not_blocked(room_id)?;
        }
        content.remove("join_authorised_via_users_server");
        if self.users.is_guest(sender)? {
            self.check_guest_membership(room_short, sender, target, &membership)?;
            content.insert("kind".to_owned(), json!("guest"));
        } else {
            content.remove("kind");
        }
        if membership == "invite" {
            if target.server_name() != rooms.server_name() {
                // Signed by their server first: `federation::membership::invite_remote`.
                return Err(Error::forbidden("An invite of another server's user goes through that server"));
            }
            if rooms.membership(target, room_short)?.as_deref() == Some("join") {
                return Err(Error::forbidden(format!("{target} is already in the room.")));
            }
        }
        if membership == "join" || membership == "invite" {
            self.add_profile(target, &mut content)?;
        }
        if membership == "join"
            && sender == target
            && let Some(authoriser) = rooms.restricted_join_authoriser(room_short, target)?
        {
            content.insert("join_authorised_via_users_server".to_owned(), json!(authoriser));
        }
        rooms
            .send(
                room_id,
                sender,
                PduBuilder::state("m.room.member", target.as_str(), Value::Object(content)),
                None,
            )
            .await
    }

    /// Joins carry the member's profile (for invites: the invitee's), unless
    /// the client set its own.
    pub fn add_profile(&self, target: &UserId, content: &mut Map<String, Value>) -> Result<()> {
        if let Some(profile) = self.users.profile(target)? {
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = profile.get(field)
                    && !content.contains_key(field)
                {
                    content.insert(field.to_owned(), value.clone());
                }
            }
        }
        Ok(())
    }

    /// A guest may only join (a room whose `m.room.guest_access` is
    /// `can_join`) and leave, and only itself.
    fn check_guest_membership(
        &self,
        room_short: u64,
        sender: &UserId,
        target: &UserId,
        membership: &str,
    ) -> Result<()> {
        if sender != target || !matches!(membership, "join" | "leave") {
            return Err(Error::guest_forbidden());
        }
        if membership == "join" && !self.admits_guests(room_short)? {
            return Err(Error::forbidden("Guest access not allowed"));
        }
        Ok(())
    }
}
