//! Room lists: the user's rooms that pass a list's filters, most recent
//! activity first, and the windows (`ranges`) of them the client asked for.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ruma::{OwnedRoomId, UserId};
use serde_json::Value;

use crate::{
    Result,
    rooms::{
        invites::RemoteInvite,
        short_ids::{Kind, state_key_name},
    },
    services::Services,
};

/// How the user stands in a room, for lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Joined,
    Invited,
    Knocked,
    /// Left by their own choice, kicked or banned (shown only as the
    /// gatherer decides: newly, or when the connection had the room).
    Left,
}

/// A room of the user's: one this server is in (its short ID), or one
/// only an invite or knock over federation names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoomKey {
    Local(u64),
    Remote(OwnedRoomId),
}

/// One room as lists see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub room: RoomKey,
    pub standing: Standing,
    /// Its `bump_stamp`: the position of its last activity the user may
    /// see (for joined rooms the last event that bumps it, else the
    /// user's membership event); larger is more recent.
    pub stamp: u64,
    pub is_dm: bool,
    pub encrypted: bool,
    /// `m.room.create`'s `type` (`None`: a room without one).
    pub room_type: Option<String>,
    /// The user's tags on it (only read when a list filters by tags).
    pub tags: Vec<String>,
}

/// A list's filters (all of them must pass; an absent one passes all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub is_dm: Option<bool>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    /// Room types to keep (`None` in it: rooms without a type); empty:
    /// every type.
    pub room_types: Vec<Option<String>>,
    /// Room types to leave out (wins over `room_types`).
    pub not_room_types: Vec<Option<String>>,
    /// Only these rooms (the children of the spaces a list names).
    pub in_spaces: Option<HashSet<RoomKey>>,
    /// Rooms with one of these tags (empty: any).
    pub tags: Vec<String>,
    /// Rooms with none of these tags (wins over `tags`).
    pub not_tags: Vec<String>,
}

impl Filters {
    pub fn allows(&self, entry: &Entry) -> bool {
        self.is_dm.is_none_or(|dm| dm == entry.is_dm)
            && self.is_encrypted.is_none_or(|e| e == entry.encrypted)
            && self.is_invite.is_none_or(|i| i == (entry.standing == Standing::Invited))
            && (self.room_types.is_empty() || self.room_types.contains(&entry.room_type))
            && !self.not_room_types.contains(&entry.room_type)
            && self.in_spaces.as_ref().is_none_or(|rooms| rooms.contains(&entry.room))
            && (self.tags.is_empty() || entry.tags.iter().any(|t| self.tags.contains(t)))
            && !entry.tags.iter().any(|t| self.not_tags.contains(t))
    }
}

/// The user's rooms as lists see them, not forgotten ones: joined,
/// invited (not by someone they ignore), knocked, and the rooms they left
/// or were removed from that `keep_left(room, position of the leave)`
/// keeps; and `pending`, the invites and knocks to rooms this server is
/// not in ([`pending_remote_invites`]).
pub fn gather(
    services: &Services,
    user: &UserId,
    pending: &BTreeMap<OwnedRoomId, RemoteInvite>,
    mut keep_left: impl FnMut(u64, u64) -> Result<bool>,
) -> Result<Vec<Entry>> {
    let rooms = &services.rooms;
    let forgotten = rooms.forgotten_rooms(user)?;
    let ignored = services.users.ignored_users(user)?;
    let direct = direct_rooms(services, user)?;
    let encryption = rooms.short.get(Kind::StateKey, &state_key_name("m.room.encryption", ""))?;
    let mut out = Vec::new();
    for (room, membership) in rooms.memberships(user)? {
        if forgotten.contains(&room) {
            continue;
        }
        let since = || Ok::<_, crate::Error>(rooms.membership_since(user, room)?.unwrap_or(0));
        let standing = match membership.as_str() {
            "join" => Standing::Joined,
            "invite" => {
                let inviter =
                    rooms.current_state_event(room, "m.room.member", user.as_str())?.map(|m| m.sender);
                if inviter.is_some_and(|inviter| ignored.contains(&inviter)) {
                    continue;
                }
                Standing::Invited
            }
            "knock" => Standing::Knocked,
            _ if keep_left(room, since()?)? => Standing::Left,
            _ => continue,
        };
        let stamp = match standing {
            Standing::Joined => match rooms.bump_position(room)? {
                Some(stamp) => stamp,
                None => since()?,
            },
            _ => since()?,
        };
        out.push(Entry {
            room: RoomKey::Local(room),
            standing,
            stamp,
            is_dm: direct.shorts.contains(&room),
            encrypted: rooms.encrypted(room, encryption)?,
            room_type: rooms.room_type(room)?,
            tags: Vec::new(),
        });
    }
    for (room_id, invite) in pending {
        let stripped = |kind: &str| invite.stripped.iter().find(|e| e["type"] == kind);
        out.push(Entry {
            standing: if invite.knock { Standing::Knocked } else { Standing::Invited },
            stamp: invite.position,
            is_dm: direct.ids.contains(room_id),
            encrypted: stripped("m.room.encryption").is_some(),
            room_type: stripped("m.room.create")
                .and_then(|c| c["content"]["type"].as_str().map(str::to_owned)),
            tags: Vec::new(),
            room: RoomKey::Remote(room_id.clone()),
        });
    }
    Ok(out)
}

/// Fills in the user's tags on each local room (`m.tag` room account data).
pub fn add_tags(services: &Services, user: &UserId, entries: &mut [Entry]) -> Result<()> {
    for entry in entries {
        let RoomKey::Local(short) = entry.room else { continue };
        let room_id =
            OwnedRoomId::try_from(services.rooms.short.name(short)?).map_err(crate::Error::internal)?;
        if let Some(raw) = services.users.account_data(user, Some(&room_id), "m.tag")? {
            let content: Value = serde_json::from_str(raw.get()).unwrap_or_default();
            entry.tags = content["tags"].as_object().map(|t| t.keys().cloned().collect()).unwrap_or_default();
        }
    }
    Ok(())
}

/// The rooms the given spaces name as children (`m.space.child` with a
/// `via`), only of the spaces the user is joined to; no subspaces' own.
pub fn space_children(
    services: &Services,
    user: &UserId,
    spaces: &[OwnedRoomId],
) -> Result<HashSet<RoomKey>> {
    let rooms = &services.rooms;
    let mut out = HashSet::new();
    for space in spaces {
        let Some(short) = rooms.room_short(space)? else { continue };
        if rooms.membership(user, short)?.as_deref() != Some("join") {
            continue;
        }
        for child in rooms.space_children(short, false)? {
            let Some(Ok(child)) = child["state_key"].as_str().map(OwnedRoomId::try_from) else { continue };
            match rooms.room_short(&child)? {
                Some(short) => out.insert(RoomKey::Local(short)),
                None => out.insert(RoomKey::Remote(child)),
            };
        }
    }
    Ok(out)
}

/// Invites and knocks over federation to rooms this server is not in,
/// still pending, not from someone the user ignores.
pub fn pending_remote_invites(
    services: &Services,
    user: &UserId,
) -> Result<BTreeMap<OwnedRoomId, RemoteInvite>> {
    let ignored = services.users.ignored_users(user)?;
    let mut out = BTreeMap::new();
    for (room_id, invite) in services.rooms.remote_invites(user)? {
        if invite.rejected.is_some() || invite.sender().is_some_and(|s| ignored.contains(&s)) {
            continue;
        }
        // Known here with a membership: the room's own entry says it all.
        if let Some(short) = services.rooms.room_short(&room_id)?
            && services.rooms.membership(user, short)?.is_some()
        {
            continue;
        }
        out.insert(room_id, invite);
    }
    Ok(out)
}

/// The rooms the user's `m.direct` names: their IDs, and the short IDs of
/// those this server knows.
#[derive(Default)]
struct Direct {
    ids: HashSet<OwnedRoomId>,
    shorts: HashSet<u64>,
}

fn direct_rooms(services: &Services, user: &UserId) -> Result<Direct> {
    let Some(raw) = services.users.account_data(user, None, "m.direct")? else {
        return Ok(Direct::default());
    };
    let content: Value = serde_json::from_str(raw.get()).unwrap_or_default();
    let mut out = Direct::default();
    let named =
        content.as_object().into_iter().flat_map(|people| people.values()).filter_map(|r| r.as_array());
    for room in named.flatten().filter_map(|room| room.as_str()) {
        if let Ok(room) = OwnedRoomId::try_from(room) {
            if let Some(short) = services.rooms.room_short(&room)? {
                out.shorts.insert(short);
            }
            out.ids.insert(room);
        }
    }
    Ok(out)
}

/// Orders rooms for lists: most recent first, then by key (stable).
pub fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| b.stamp.cmp(&a.stamp).then(a.room.cmp(&b.room)));
}

/// A list over `sorted` rooms: how many pass its filters, and the rooms
/// in its windows (inclusive index ranges, in list order, each once).
pub fn window(sorted: &[Entry], filters: &Filters, ranges: &[(u64, u64)]) -> (usize, Vec<RoomKey>) {
    let passing: Vec<&Entry> = sorted.iter().filter(|e| filters.allows(e)).collect();
    let mut picked = BTreeSet::new();
    for &(start, end) in ranges {
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else { continue };
        if start > end || start >= passing.len() {
            continue;
        }
        picked.extend(start..=end.min(passing.len() - 1));
    }
    (passing.len(), picked.into_iter().map(|i| passing[i].room.clone()).collect())
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, user_id};
    use serde_json::json;

    use super::*;
    use crate::rooms::{
        builder::PduBuilder,
        create::{CreateRoom, Preset},
    };

    #[tokio::test]
    async fn the_users_rooms_as_lists_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::for_tests(dir.path());
        let rooms = &services.rooms;
        let (alice, bob) = (user_id!("@alice:localhost"), user_id!("@bob:localhost"));
        let create = |kind: Option<&str>| {
            let mut request = CreateRoom::new(RoomVersionId::V11, Preset::PublicChat);
            if let Some(kind) = kind {
                request.creation_content.insert("type".into(), json!(kind));
            }
            request
        };
        let member = |user: &UserId, membership: &str| {
            PduBuilder::state("m.room.member", user.as_str(), json!({"membership": membership}))
        };
        let plain = rooms.create_room(alice, create(None)).await.unwrap();
        let space = rooms.create_room(alice, create(Some("m.space"))).await.unwrap();
        let secret = rooms.create_room(alice, create(None)).await.unwrap();
        let encryption =
            PduBuilder::state("m.room.encryption", "", json!({"algorithm": "m.megolm.v1.aes-sha2"}));
        rooms.send(&secret, alice, encryption, None).await.unwrap();
        let dm = rooms.create_room(bob, create(None)).await.unwrap();
        rooms.send(&dm, bob, member(alice, "invite"), None).await.unwrap();
        let left = rooms.create_room(alice, create(None)).await.unwrap();
        rooms.send(&left, alice, member(alice, "leave"), None).await.unwrap();
        let direct = serde_json::value::to_raw_value(&json!({bob.as_str(): [dm.as_str()]})).unwrap();
        services.users.set_account_data(alice, None, "m.direct", &direct).unwrap();
        // A message moves `plain` to the top; the encryption event does not
        // move `secret` (it is state).
        let hello = PduBuilder::message("m.room.message", json!({"body": "hi", "msgtype": "m.text"}));
        rooms.send(&plain, alice, hello, None).await.unwrap();

        let short = |room: &ruma::RoomId| RoomKey::Local(rooms.room_short(room).unwrap().unwrap());
        let mut entries = gather(&services, alice, &BTreeMap::new(), |_, _| Ok(false)).unwrap();
        sort(&mut entries);
        let order: Vec<RoomKey> = entries.iter().map(|e| e.room.clone()).collect();
        assert_eq!(order, [short(&plain), short(&dm), short(&secret), short(&space)], "{entries:?}");
        let of = |room: &ruma::RoomId| entries.iter().find(|e| e.room == short(room)).unwrap().clone();
        assert_eq!(of(&dm).standing, Standing::Invited);
        assert!(of(&dm).is_dm && !of(&plain).is_dm);
        assert!(of(&secret).encrypted && !of(&plain).encrypted);
        assert_eq!(of(&space).room_type.as_deref(), Some("m.space"));
        assert_eq!(of(&plain).room_type, None);
        // The left room only when the caller keeps it, at its leave.
        let with_left =
            gather(&services, alice, &BTreeMap::new(), |room, _| Ok(RoomKey::Local(room) == short(&left)))
                .unwrap();
        let gone = with_left.iter().find(|e| e.room == short(&left)).unwrap();
        assert_eq!(gone.standing, Standing::Left);
        assert_eq!(
            Some(gone.stamp),
            rooms.membership_since(alice, rooms.room_short(&left).unwrap().unwrap()).unwrap()
        );
    }

    fn entry(room: u64, stamp: u64, standing: Standing) -> Entry {
        Entry {
            room: RoomKey::Local(room),
            standing,
            stamp,
            is_dm: false,
            encrypted: false,
            room_type: None,
            tags: Vec::new(),
        }
    }

    fn locals(shorts: &[u64]) -> Vec<RoomKey> {
        shorts.iter().map(|s| RoomKey::Local(*s)).collect()
    }

    #[test]
    fn lists_are_most_recent_first_in_windows() {
        let mut rooms: Vec<Entry> = (1..=30).map(|r| entry(r, r * 10, Standing::Joined)).collect();
        rooms.push(entry(31, 50, Standing::Invited)); // ties room 5 on its stamp
        sort(&mut rooms);
        let all = Filters::default();
        let (count, first) = window(&rooms, &all, &[(0, 4)]);
        assert_eq!((count, first), (31, locals(&[30, 29, 28, 27, 26])));
        // Several windows, overlapping and past the end.
        let (_, picked) = window(&rooms, &all, &[(0, 1), (1, 2), (29, 99)]);
        assert_eq!(picked, locals(&[30, 29, 28, 2, 1]));
        assert_eq!(window(&rooms, &all, &[(40, 50), (3, 2)]).1, Vec::<RoomKey>::new());
        // Equal stamps: by short ID.
        let at = rooms.iter().position(|e| e.room == RoomKey::Local(5)).unwrap();
        assert_eq!(rooms[at + 1].room, RoomKey::Local(31));
    }

    #[test]
    fn filters_narrow_the_list_and_its_count() {
        let mut rooms = vec![
            Entry { is_dm: true, ..entry(1, 5, Standing::Joined) },
            Entry { encrypted: true, ..entry(2, 4, Standing::Joined) },
            entry(3, 3, Standing::Invited),
            Entry { room_type: Some("m.space".into()), ..entry(4, 2, Standing::Joined) },
            entry(5, 1, Standing::Knocked),
        ];
        sort(&mut rooms);
        let ids = |filters: Filters| {
            let (count, picked) = window(&rooms, &filters, &[(0, 99)]);
            let shorts: Vec<u64> = picked
                .iter()
                .map(|k| match k {
                    RoomKey::Local(s) => *s,
                    RoomKey::Remote(_) => 0,
                })
                .collect();
            (count, shorts)
        };
        assert_eq!(ids(Filters { is_dm: Some(true), ..Default::default() }), (1, vec![1]));
        assert_eq!(ids(Filters { is_dm: Some(false), ..Default::default() }).0, 4);
        assert_eq!(ids(Filters { is_encrypted: Some(true), ..Default::default() }).1, [2]);
        assert_eq!(ids(Filters { is_invite: Some(true), ..Default::default() }).1, [3]);
        assert_eq!(ids(Filters { is_invite: Some(false), ..Default::default() }).1, [1, 2, 4, 5]);
        let spaces = Filters { room_types: vec![Some("m.space".into())], ..Default::default() };
        assert_eq!(ids(spaces).1, [4]);
        let no_spaces = Filters { not_room_types: vec![Some("m.space".into())], ..Default::default() };
        assert_eq!(ids(no_spaces).1, [1, 2, 3, 5]);
        let untyped = Filters { room_types: vec![None], not_room_types: vec![None], ..Default::default() };
        assert_eq!(ids(untyped).0, 0, "not_room_types wins");
    }
}
