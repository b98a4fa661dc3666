//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a new room with a
//! predecessor link and the transferable state, the old room tombstoned,
//! aliases moved, and the old room's power levels tightened.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::{
    Rooms,
    builder::PduBuilder,
    create::{CreateRoom, Preset},
};
use crate::{Error, Result};

/// State copied to the new room, as the spec lists it.
const TRANSFERABLE: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.power_levels",
];

impl Rooms {
    pub async fn upgrade_room(
        &self,
        user: &UserId,
        old_room: &RoomId,
        version: RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        let (old_short, record) = self.room(old_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let old_rules = record.rules()?;
        let state = self.current_state(&record)?;
        if self.membership(user, old_short)?.as_deref() != Some("join")
            || !self.may_send_state(&state, user, "m.room.tombstone", &old_rules)?
        {
            return Err(Error::forbidden("You may not upgrade this room."));
        }
        let new_rules = version.rules();
        let new_is_v12 =
            new_rules.as_ref().is_some_and(|r| r.authorization.explicitly_privilege_room_creators);

        let mut creation_content = Map::new();
        let create = self
            .state_event(&state, "m.room.create", "")?
            .ok_or_else(|| Error::internal("room without create"))?;
        let old_create = create.content_value();
        for key in ["type", "m.federate"] {
            if let Some(value) = old_create.get(key) {
                creation_content.insert(key.to_owned(), value.clone());
            }
        }
        // Where the new room's ID is known before its create event (not in
        // v12, where it is that event's hash), the old room is tombstoned
        // first, so the new room can name the tombstone as its predecessor
        // event, as Synapse does.
        let chosen_id = match new_rules.as_ref().map(|r| r.room_id_format) {
            Some(ruma::room_version_rules::RoomIdFormatVersion::V1) => Some(self.new_room_id()?),
            _ => None,
        };
        let mut predecessor = json!({"room_id": old_room});
        if let Some(new_room) = &chosen_id {
            predecessor["event_id"] = json!(self.tombstone(old_room, user, new_room).await?);
        }
        creation_content.insert("predecessor".into(), predecessor);
        if new_is_v12 && !additional_creators.is_empty() {
            creation_content.insert("additional_creators".into(), json!(additional_creators));
        }

        let mut initial_state = Vec::new();
        for kind in TRANSFERABLE {
            let Some(pdu) = self.state_event(&state, kind, "")? else { continue };
            let mut content = pdu.content_value();
            if *kind == "m.room.power_levels" {
                let users = content["users"].as_object_mut();
                if let Some(users) = users {
                    if new_is_v12 {
                        // Creators have infinite power and may not be listed.
                        users.remove(user.as_str());
                        for creator in &additional_creators {
                            users.remove(creator.as_str());
                        }
                    } else {
                        let level = users.get(user.as_str()).and_then(Value::as_i64).unwrap_or(0).max(100);
                        users.insert(user.to_string(), json!(level));
                    }
                } else if !new_is_v12 {
                    content["users"] = json!({user.as_str(): 100});
                }
            }
            initial_state.push(((*kind).to_owned(), String::new(), content));
        }
        // The preset would add guest access the old room did not have.
        if self.state_event(&state, "m.room.guest_access", "")?.is_none() {
            initial_state.push((
                "m.room.guest_access".into(),
                String::new(),
                json!({"guest_access": "forbidden"}),
            ));
        }
        if let Some(canonical) = self.state_event(&state, "m.room.canonical_alias", "")? {
            initial_state.push(("m.room.canonical_alias".into(), String::new(), canonical.content_value()));
        }

        let request = CreateRoom {
            creation_content,
            initial_state,
            publish: self.is_published(old_room)?,
            room_id: chosen_id.clone(),
            ..CreateRoom::new(version, Preset::PrivateChat)
        };
        let new_room = self.create_room(user, request).await?;
        if chosen_id.is_none() {
            self.tombstone(old_room, user, &new_room).await?;
        }

        // Bans carry over, from the upgrader, with their reasons.
        for (member, membership) in self.members(old_short)? {
            if membership == "ban"
                && let Some(ban) = self.state_event(&state, "m.room.member", member.as_str())?
            {
                let builder = PduBuilder::state("m.room.member", member.as_str(), ban.content_value());
                if let Err(e) = self.send(&new_room, user, builder, None).await {
                    tracing::warn!("ban of {member} not copied to {new_room}: {e}");
                }
            }
        }
        self.carry_over(old_room, &new_room, Some(user))?;
        // The aliases now name the new room: the old one stops claiming
        // them (as Synapse).
        if let Some(canonical) = self.state_event(&state, "m.room.canonical_alias", "")?
            && canonical.content_value().as_object().is_some_and(|c| !c.is_empty())
        {
            self.send(old_room, user, PduBuilder::state("m.room.canonical_alias", "", json!({})), None)
                .await?;
        }
        if let Some(levels) = self.state_event(&state, "m.room.power_levels", "")? {
            let mut content = levels.content_value();
            let floor = (content["users_default"].as_i64().unwrap_or(0) + 1).max(50);
            let mut changed = false;
            for key in ["events_default", "invite"] {
                if content[key].as_i64().unwrap_or(0) < floor {
                    content[key] = json!(floor);
                    changed = true;
                }
            }
            if changed {
                self.send(old_room, user, PduBuilder::state("m.room.power_levels", "", content), None)
                    .await?;
            }
        }
        Ok(new_room)
    }

    /// What this server keeps about a room that another now continues (an
    /// upgrade made here, or the first join of one made elsewhere, as
    /// Synapse does): each local member's tags, direct-chat listing and
    /// room push rules, the old room's local aliases (owned by `new_owner`
    /// when given), and its place in the public directory.
    pub fn carry_over(&self, old_room: &RoomId, new_room: &RoomId, new_owner: Option<&UserId>) -> Result<()> {
        let Some(old_short) = self.room_short(old_room)? else { return Ok(()) };
        for (member, membership) in self.members(old_short)? {
            if membership == "join" && member.server_name() == self.server_name() {
                self.users.copy_room_account_data(&member, old_room, new_room)?;
                self.users.copy_room_push_rules(&member, old_room, new_room)?;
            }
        }
        for alias in self.room_aliases(old_short)? {
            if let Some(record) = self.alias(&alias)? {
                self.remove_alias(&alias, &record)?;
                self.put_alias(&alias, new_room, new_owner.unwrap_or(&record.creator))?;
            }
        }
        if self.is_published(old_room)? {
            self.set_published(new_room, true)?;
            self.set_published(old_room, false)?;
        }
        Ok(())
    }

    async fn tombstone(
        &self,
        old_room: &RoomId,
        user: &UserId,
        new_room: &RoomId,
    ) -> Result<ruma::OwnedEventId> {
        let tombstone = json!({"body": "This room has been replaced", "replacement_room": new_room});
        self.send(old_room, user, PduBuilder::state("m.room.tombstone", "", tombstone), None).await
    }
}
