//! What a sync (and `/keys/changes`) tells a device for end-to-end
//! encryption: whose device lists changed, who no longer shares a room,
//! its one-time key counts and its send-to-device messages.
//!
//! Device-list changes come from two logs read over `(since, upto]`: key
//! changes (`device_list_changes`) and membership changes
//! (`membership_changes`). Someone newly sharing a room is "changed" (the
//! client must fetch their keys); someone sharing none any more is "left".
//! "Sharing a room" means both joined, encrypted or not, as in Synapse: a
//! superset of the spec's encrypted rooms, which clients filter.

use std::collections::{BTreeSet, HashMap};

use ruma::{OwnedUserId, UserId, api::client::sync::sync_events::DeviceLists};

use crate::{
    Result,
    presence::share_a_room,
    services::Services,
    storage::{SEP, decode_u64, maps},
};

/// Past this many log entries since the last sync, everyone sharing a room
/// counts as changed (and nobody as left) instead of reading the logs.
const SCAN_LIMIT: usize = 10_000;

/// The most to-device messages in one response, as the spec recommends.
pub const TO_DEVICE_LIMIT: usize = 100;

struct Sharing<'a> {
    services: &'a Services,
    user: &'a UserId,
    known: HashMap<OwnedUserId, bool>,
}

impl Sharing<'_> {
    fn with(&mut self, other: &UserId) -> Result<bool> {
        if other == self.user {
            return Ok(true);
        }
        if let Some(known) = self.known.get(other) {
            return Ok(*known);
        }
        let shares = share_a_room(&self.services.rooms, self.user, other)?;
        self.known.insert(other.to_owned(), shares);
        Ok(shares)
    }
}

/// Device-list changes `user` should hear about in `(since, upto]`.
pub fn device_lists(services: &Services, user: &UserId, since: u64, upto: u64) -> Result<DeviceLists> {
    let mut lists = DeviceLists::new();
    if since >= upto {
        return Ok(lists);
    }
    let start = (since + 1).to_be_bytes();
    let keys =
        services.db.scan_range(&maps::DEVICE_LIST_CHANGES, b"", Some(&start), false, SCAN_LIMIT + 1)?;
    let members =
        services.db.scan_range(&maps::MEMBERSHIP_CHANGES, b"", Some(&start), false, SCAN_LIMIT + 1)?;
    if keys.len() > SCAN_LIMIT || members.len() > SCAN_LIMIT {
        lists.changed = everyone_sharing(services, user)?.into_iter().collect();
        return Ok(lists);
    }
    let mut sharing = Sharing { services, user, known: HashMap::new() };
    let mut changed = BTreeSet::new();
    // Changes only `user` may see (their user-signing key signed someone).
    let mut private = BTreeSet::new();
    let mut maybe_left = BTreeSet::new();
    for (k, v) in keys {
        if decode_u64(&k)? > upto {
            break;
        }
        // user ‖ SEP ‖ audience
        let (whose, audience) = match v.iter().position(|b| *b == SEP) {
            Some(at) => (&v[..at], &v[at + 1..]),
            None => (&v[..], &b""[..]),
        };
        let Ok(whose) = UserId::parse(String::from_utf8_lossy(whose).as_ref()) else { continue };
        match audience.is_empty() {
            true => changed.insert(whose),
            false if audience == user.as_bytes() => private.insert(whose),
            false => false,
        };
    }
    for (k, v) in members {
        if k.len() < 16 || decode_u64(&k[..8])? > upto {
            break;
        }
        let room = decode_u64(&k[8..16])?;
        let Ok(target) = UserId::parse(String::from_utf8_lossy(&k[16..]).as_ref()) else { continue };
        if services.rooms.membership(user, room)?.is_none() {
            continue;
        }
        let joined = v == b"join";
        if v == b"invite" || v == b"knock" {
            // Someone invited to (or knocking on) a room of ours: their
            // devices may need keys for it (Synapse tells this too).
            if target != user && services.rooms.membership(user, room)?.as_deref() == Some("join") {
                private.insert(target);
            }
            continue;
        }
        if target == user {
            // We joined or left: everyone in there is new, or maybe gone.
            for (member, membership) in services.rooms.members(room)? {
                if membership == "join" && member != user {
                    match joined {
                        true => changed.insert(member),
                        false => maybe_left.insert(member),
                    };
                }
            }
        } else {
            match joined {
                true => changed.insert(target),
                false => maybe_left.insert(target),
            };
        }
    }
    for other in maybe_left {
        if !sharing.with(&other)? {
            changed.remove(&other);
            lists.left.push(other);
        }
    }
    for other in changed {
        if sharing.with(&other)? {
            private.insert(other);
        }
    }
    lists.changed = private.into_iter().collect();
    Ok(lists)
}

/// Everyone who shares a room with `user`, and `user`.
fn everyone_sharing(services: &Services, user: &UserId) -> Result<BTreeSet<OwnedUserId>> {
    let mut all = BTreeSet::from([user.to_owned()]);
    for (room, membership) in services.rooms.memberships(user)? {
        if membership == "join" {
            all.extend(
                services.rooms.members(room)?.into_iter().filter(|(_, m)| m == "join").map(|(u, _)| u),
            );
        }
    }
    Ok(all)
}
