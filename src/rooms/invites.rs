//! Invites to rooms this server is not in (from another server's
//! `/invite`), and knocks on such rooms: the invite or knock event, the
//! stripped state the other server sent, and, once rejected, the leave. They reach the invitee's `/sync`
//! at their own stream positions, until a join makes the room known or
//! the rejection has been seen.

use ruma::{CanonicalJsonObject, OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Rooms;
use crate::{
    Error, Result,
    storage::{Batch, SEP, maps},
    stream::Topic,
};

/// An invite to a room we do not know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteInvite {
    pub room_version: RoomVersionId,
    /// The invite event, signed by both servers.
    pub event: CanonicalJsonObject,
    /// The stripped state events the inviting server sent.
    pub stripped: Vec<Value>,
    /// The stream position of the last change (the invite, its rejection).
    pub position: u64,
    /// The leave that rejected it (client format), once rejected.
    #[serde(default)]
    pub rejected: Option<Value>,
    /// A knock of ours, not an invite.
    #[serde(default)]
    pub knock: bool,
}

impl RemoteInvite {
    /// What the invitee sees of the room: the stripped state the inviting
    /// server sent, then the invite (or knock) itself, stripped.
    pub fn stripped_state(&self) -> Result<Vec<Value>> {
        let event = serde_json::to_value(&self.event).map_err(Error::internal)?;
        let mut events = self.stripped.clone();
        events.push(serde_json::json!({
            "type": event["type"], "state_key": event["state_key"],
            "sender": event["sender"], "content": event["content"],
        }));
        Ok(events)
    }

    /// The invite's sender.
    pub fn sender(&self) -> Option<ruma::OwnedUserId> {
        match self.event.get("sender") {
            Some(ruma::CanonicalJsonValue::String(s)) => ruma::OwnedUserId::try_from(s.as_str()).ok(),
            _ => None,
        }
    }
}

fn invite_key(user: &UserId, room_id: &RoomId) -> Vec<u8> {
    [user.as_bytes(), &[SEP], room_id.as_bytes()].concat()
}

impl Rooms {
    /// Stores an invite of a local user to a room we are not in, or
    /// (`knock`) the user's knock on one.
    pub fn store_remote_membership(
        &self,
        user: &UserId,
        room_id: &RoomId,
        room_version: RoomVersionId,
        event: CanonicalJsonObject,
        stripped: Vec<Value>,
        knock: bool,
    ) -> Result<()> {
        let notification = match knock {
            false => self.invite_notification(user, room_id, &event, &stripped)?,
            true => None,
        };
        let position = self.stream.allocate()?;
        let invite =
            RemoteInvite { room_version, event, stripped, position: position.get(), rejected: None, knock };
        let mut batch = Batch::new();
        batch.put_json(&maps::REMOTE_INVITES, invite_key(user, room_id), &invite);
        if let Some(notification) = &notification {
            batch.put_json(
                &maps::INVITE_NOTIFICATIONS,
                crate::storage::key(&[user.as_bytes(), &position.get().to_be_bytes()]),
                notification,
            );
        }
        self.db.write(batch)?;
        match notification {
            Some(_) => position.publish([Topic::User(user.to_owned()), Topic::Pushes]),
            None => position.publish([Topic::User(user.to_owned())]),
        }
        Ok(())
    }

    /// A local user's invite to a room we are not in.
    pub fn remote_invite(&self, user: &UserId, room_id: &RoomId) -> Result<Option<RemoteInvite>> {
        Ok(self.db.get_json(&maps::REMOTE_INVITES, &invite_key(user, room_id))?)
    }

    /// A local user's invites to rooms we are not in (and rejections).
    pub fn remote_invites(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, RemoteInvite)>> {
        let prefix = [user.as_bytes(), &[SEP]].concat();
        self.db
            .scan_json::<RemoteInvite>(&maps::REMOTE_INVITES, &prefix)?
            .into_iter()
            .map(|(key, invite)| {
                let room = std::str::from_utf8(&key[prefix.len()..]).map_err(Error::internal)?;
                Ok((OwnedRoomId::try_from(room).map_err(Error::internal)?, invite))
            })
            .collect()
    }

    /// The invite is rejected: `/sync` shows the leave once.
    pub fn reject_remote_invite(&self, user: &UserId, room_id: &RoomId, leave: Value) -> Result<()> {
        let Some(mut invite) = self.remote_invite(user, room_id)? else { return Ok(()) };
        let position = self.stream.allocate()?;
        invite.position = position.get();
        invite.rejected = Some(leave);
        let mut batch = Batch::new();
        batch.put_json(&maps::REMOTE_INVITES, invite_key(user, room_id), &invite);
        self.db.write(batch)?;
        position.publish([Topic::User(user.to_owned())]);
        Ok(())
    }

    /// The invite is settled by a join (the room is known now).
    pub fn forget_remote_invite(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete(&maps::REMOTE_INVITES, invite_key(user, room_id));
        Ok(self.db.write(batch)?)
    }
}
