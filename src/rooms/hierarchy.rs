//! Space hierarchies (`/hierarchy`): the rooms below a space, depth first
//! (a child space before the rooms after it), as far as the requester may
//! preview them, as Synapse walks them.

use std::collections::HashSet;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::{Rooms, short_ids::split_state_key_name};
use crate::{Error, Result, storage::maps};

/// Most rooms in one page (Synapse's).
pub const MAX_ROOMS: usize = 50;

/// Which part of a hierarchy to return.
pub struct Query {
    pub suggested_only: bool,
    pub max_depth: Option<u64>,
    /// Rooms of the walk already returned on earlier pages.
    pub skip: usize,
    pub limit: usize,
}

impl Rooms {
    /// Whether a user may see a room's summary without being in it: a
    /// member or invitee, a room anyone may join or knock on, a
    /// world-readable one, or a restricted one the user meets the rule of.
    pub fn may_preview(&self, user: &UserId, room_short: u64) -> Result<bool> {
        if matches!(self.membership(user, room_short)?.as_deref(), Some("join" | "invite")) {
            return Ok(true);
        }
        let join_rules =
            self.current_state_event(room_short, "m.room.join_rules", "")?.map(|e| e.content_value());
        let rule = join_rules.as_ref().and_then(|c| c["join_rule"].as_str()).unwrap_or("invite");
        if matches!(rule, "public" | "knock" | "knock_restricted") || self.is_world_readable(room_short)? {
            return Ok(true);
        }
        if matches!(rule, "restricted" | "knock_restricted") {
            for allowed in join_rules.as_ref().and_then(|c| c["allow"].as_array()).into_iter().flatten() {
                if allowed["type"] == "m.room_membership"
                    && let Some(room) = allowed["room_id"].as_str().and_then(|r| RoomId::parse(r).ok())
                    && let Some(short) = self.room_short(&room)?
                    && self.membership(user, short)?.as_deref() == Some("join")
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// One page of the hierarchy under `root`, and whether more follows.
    /// The root must be previewable (else 403); other rooms the user may
    /// not preview, and rooms of other servers, are left out.
    pub fn hierarchy(&self, user: &UserId, root: &RoomId, query: &Query) -> Result<(Vec<Value>, bool)> {
        let forbidden =
            || Error::forbidden(format!("User {user} not in room {root}, and room previews are disabled"));
        let root_short = self.room_short(root)?.ok_or_else(forbidden)?;
        if !self.may_preview(user, root_short)? {
            return Err(forbidden());
        }
        // A stack: children pushed in reverse come out in order.
        let mut stack: Vec<(OwnedRoomId, u64)> = vec![(root.to_owned(), 0)];
        let mut seen = HashSet::new();
        let (mut walked, mut page) = (0, Vec::new());
        while let Some((room_id, depth)) = stack.pop() {
            if !seen.insert(room_id.clone()) {
                continue;
            }
            let Some(room_short) = self.room_short(&room_id)? else { continue };
            if !self.may_preview(user, room_short)? {
                continue;
            }
            if page.len() == query.limit {
                return Ok((page, true));
            }
            let entry = self.summary_entry(room_id, room_short)?;
            let is_space = entry.room_type.as_deref() == Some("m.space");
            let children =
                if is_space { self.space_children(room_short, query.suggested_only)? } else { Vec::new() };
            if query.max_depth.is_none_or(|max| depth < max) {
                for child in children.iter().rev() {
                    if let Some(child) =
                        child["state_key"].as_str().and_then(|c| OwnedRoomId::try_from(c).ok())
                    {
                        stack.push((child, depth + 1));
                    }
                }
            }
            walked += 1;
            if walked <= query.skip {
                continue;
            }
            page.push(json!({
                "room_id": entry.room_id,
                "num_joined_members": entry.joined_members,
                "name": entry.name,
                "topic": entry.topic,
                "canonical_alias": entry.canonical_alias,
                "avatar_url": entry.avatar_url,
                "join_rule": entry.join_rule.unwrap_or_else(|| "invite".into()),
                "room_type": entry.room_type,
                "world_readable": entry.world_readable,
                "guest_can_join": entry.guest_can_join,
                "children_state": children,
            }));
        }
        Ok((page, false))
    }

    /// A space's `m.space.child` events naming a server to join through
    /// (`via`), as stripped events, in the spec's order: by `order`, then
    /// by age, then by room ID.
    pub fn space_children(&self, room_short: u64, suggested_only: bool) -> Result<Vec<Value>> {
        let prefix = room_short.to_be_bytes();
        let mut children = Vec::new();
        for (k, v) in self.db.scan_prefix(&maps::ROOM_STATE, &prefix)? {
            let Some(key) = k.get(8..16).map(crate::storage::decode_u64).transpose()? else { continue };
            let name = self.short.name(key)?;
            if split_state_key_name(&name).map(|(kind, _)| kind) != Some("m.space.child") {
                continue;
            }
            let Some(pdu) = self.pdu_by_short(crate::storage::decode_u64(&v)?)? else { continue };
            let content = pdu.content_value();
            let via = content["via"].as_array().is_some_and(|via| !via.is_empty());
            if !via || (suggested_only && content["suggested"] != true) {
                continue;
            }
            children.push(json!({
                "type": "m.space.child",
                "state_key": pdu.state_key,
                "content": content,
                "sender": pdu.sender,
                "origin_server_ts": pdu.origin_server_ts,
            }));
        }
        // A valid `order`: at most 50 printable ASCII characters.
        let order = |child: &Value| {
            child["content"]["order"]
                .as_str()
                .filter(|o| o.len() <= 50 && o.bytes().all(|b| (0x20..=0x7e).contains(&b)))
                .map(str::to_owned)
        };
        children.sort_by_cached_key(|child| {
            let order = order(child);
            (
                order.is_none(),
                order,
                child["origin_server_ts"].as_u64(),
                child["state_key"].as_str().map(str::to_owned),
            )
        });
        Ok(children)
    }
}
