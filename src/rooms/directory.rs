//! Room aliases and the published room directory.

use std::sync::{Arc, Mutex, atomic::AtomicU64};

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Rooms;
use crate::{
    Error, Result,
    storage::{Batch, maps},
};

/// What `aliases` stores per alias.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

/// The directory's listing, built when first asked for after a change.
#[derive(Default)]
pub struct DirectoryCache {
    generation: AtomicU64,
    listing: Mutex<Option<(u64, Arc<Vec<DirectoryEntry>>)>>,
}

/// A room as the directory lists it.
pub struct DirectoryEntry {
    pub room_id: OwnedRoomId,
    pub joined_members: u64,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub join_rule: Option<String>,
    pub room_type: Option<String>,
    pub world_readable: bool,
    pub guest_can_join: bool,
}

fn room_alias_key(room_short: u64, alias: &RoomAliasId) -> Vec<u8> {
    [&room_short.to_be_bytes()[..], alias.as_bytes()].concat()
}

impl Rooms {
    pub fn alias(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>> {
        Ok(self.db.get_json(&maps::ALIASES, alias.as_bytes())?)
    }

    /// Maps a local alias to a room; the caller has checked it is free.
    pub fn put_alias(&self, alias: &RoomAliasId, room_id: &RoomId, creator: &UserId) -> Result<()> {
        let room_short = self.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let mut batch = Batch::new();
        batch.put_json(
            &maps::ALIASES,
            alias.as_bytes(),
            &AliasRecord { room_id: room_id.to_owned(), creator: creator.to_owned() },
        );
        batch.put(&maps::ROOM_ALIASES, room_alias_key(room_short, alias), Vec::new());
        self.db.write(batch)?;
        Ok(())
    }

    pub fn remove_alias(&self, alias: &RoomAliasId, record: &AliasRecord) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete(&maps::ALIASES, alias.as_bytes());
        if let Some(room_short) = self.room_short(&record.room_id)? {
            batch.delete(&maps::ROOM_ALIASES, room_alias_key(room_short, alias));
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// The local aliases of a room.
    pub fn room_aliases(&self, room_short: u64) -> Result<Vec<OwnedRoomAliasId>> {
        let prefix = room_short.to_be_bytes();
        self.db
            .scan_prefix(&maps::ROOM_ALIASES, &prefix)?
            .into_iter()
            .map(|(k, _)| {
                OwnedRoomAliasId::try_from(String::from_utf8(k[8..].to_vec()).map_err(Error::internal)?)
                    .map_err(Error::internal)
            })
            .collect()
    }

    pub fn set_published(&self, room_id: &RoomId, published: bool) -> Result<()> {
        let mut batch = Batch::new();
        if published {
            batch.put(&maps::PUBLISHED_ROOMS, room_id.as_bytes(), Vec::new());
        } else {
            batch.delete(&maps::PUBLISHED_ROOMS, room_id.as_bytes());
        }
        self.db.write(batch)?;
        self.directory_changed();
        Ok(())
    }

    /// Marks the directory's cached listing stale: a room was published or
    /// unpublished, or a published room's state changed.
    pub(super) fn directory_changed(&self) {
        self.directory.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every published room's ID (one scan, for admins' room lists).
    pub fn published_room_ids(&self) -> Result<std::collections::HashSet<OwnedRoomId>> {
        self.db
            .scan_prefix(&maps::PUBLISHED_ROOMS, b"")?
            .into_iter()
            .map(|(k, _)| {
                OwnedRoomId::try_from(String::from_utf8(k).map_err(Error::internal)?).map_err(Error::internal)
            })
            .collect()
    }

    pub fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.db.contains(&maps::PUBLISHED_ROOMS, room_id.as_bytes())?)
    }

    /// What a room directory or a space hierarchy shows of a room.
    pub fn summary_entry(&self, room_id: OwnedRoomId, room_short: u64) -> Result<DirectoryEntry> {
        let joined_members =
            self.members(room_short)?.iter().filter(|(_, membership)| membership == "join").count() as u64;
        let field = |kind: &str, name: &str| self.current_state_field(room_short, kind, "", name);
        Ok(DirectoryEntry {
            joined_members,
            name: field("m.room.name", "name")?,
            topic: field("m.room.topic", "topic")?,
            canonical_alias: field("m.room.canonical_alias", "alias")?,
            avatar_url: field("m.room.avatar", "url")?,
            join_rule: field("m.room.join_rules", "join_rule")?,
            room_type: field("m.room.create", "type")?,
            world_readable: field("m.room.history_visibility", "history_visibility")?.as_deref()
                == Some("world_readable"),
            guest_can_join: self.admits_guests(room_short)?,
            room_id,
        })
    }

    /// The published rooms, largest first (then by room ID), as the
    /// directory shows them: built once per change of the directory, so an
    /// unauthenticated `/publicRooms` costs a page, not a scan of every
    /// published room's members (review §2.4).
    pub fn directory(&self) -> Result<Arc<Vec<DirectoryEntry>>> {
        use std::sync::atomic::Ordering;
        let generation = self.directory.generation.load(Ordering::SeqCst);
        if let Some((built, entries)) = &*self.directory.listing.lock().expect("directory cache")
            && *built == generation
        {
            return Ok(entries.clone());
        }
        let entries = Arc::new(self.build_directory()?);
        *self.directory.listing.lock().expect("directory cache") = Some((generation, entries.clone()));
        Ok(entries)
    }

    fn build_directory(&self) -> Result<Vec<DirectoryEntry>> {
        let mut entries = Vec::new();
        for (k, _) in self.db.scan_prefix(&maps::PUBLISHED_ROOMS, b"")? {
            let room_id = OwnedRoomId::try_from(String::from_utf8(k).map_err(Error::internal)?)
                .map_err(Error::internal)?;
            let Some((room_short, _)) = self.room(&room_id)? else { continue };
            entries.push(self.summary_entry(room_id, room_short)?);
        }
        entries
            .sort_by(|a, b| b.joined_members.cmp(&a.joined_members).then_with(|| a.room_id.cmp(&b.room_id)));
        Ok(entries)
    }
}
