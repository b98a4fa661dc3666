//! What other servers read from a room: events (redacted where the
//! asking server may not see them), the state and auth chain at an event,
//! the events between their extremities and ours, and backfill.

use std::collections::{BTreeSet, BinaryHeap, HashSet};

use ruma::{CanonicalJsonObject, EventId, OwnedEventId, ServerName};

use super::{EventMeta, Rooms, Status, short_ids::split_state_key_name};
use crate::{Error, Result};

/// Most events one `/backfill` or `/get_missing_events` answer carries.
pub const MAX_EVENTS: usize = 100;

impl Rooms {
    /// Whether `server` has a joined member in the room now.
    pub fn server_in_room(&self, server: &ServerName, room_short: u64) -> Result<bool> {
        Ok(self.servers_in_room(room_short)?.iter().any(|s| s == server))
    }

    /// Whether the room's `m.room.server_acl` lets `server` take part.
    pub fn acl_allows(&self, server: &ServerName, room_short: u64) -> Result<bool> {
        let Some(acl) = self.current_state_event(room_short, "m.room.server_acl", "")? else {
            return Ok(true);
        };
        match serde_json::from_value::<ruma::events::room::server_acl::RoomServerAclEventContent>(
            acl.content_value(),
        ) {
            Ok(content) => Ok(content.is_allowed(server)),
            // An ACL that does not parse allows nobody (as Synapse).
            Err(_) => Ok(false),
        }
    }

    /// Whether `server` may see an event in full (as Synapse decides): in
    /// rooms whose history is `shared` or `world_readable` at the event, yes;
    /// otherwise when one of its users was joined then (or invited, for
    /// `invited`). State events outside the timeline (outliers) are served.
    pub fn server_can_see(&self, server: &ServerName, meta: &EventMeta) -> Result<bool> {
        if meta.status == Status::Outlier {
            return Ok(true);
        }
        let visibility = self.history_visibility_in(meta.state_after)?;
        if matches!(visibility.as_str(), "shared" | "world_readable") {
            return Ok(true);
        }
        let state = self.load_state(meta.state_after)?;
        for (key, event) in state.iter() {
            let name = self.short.name(*key)?;
            let Some(("m.room.member", user)) = split_state_key_name(&name) else { continue };
            if !user.ends_with(&format!(":{server}")) {
                continue;
            }
            let membership = self.pdu_by_short(*event)?.map(|p| p.content_value()["membership"].clone());
            match membership.as_ref().and_then(|m| m.as_str()) {
                Some("join") => return Ok(true),
                Some("invite") if visibility == "invited" => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    /// An event as another server gets it: `None` when unknown or rejected;
    /// redacted when `server` may not see it, or its sender was erased.
    pub fn event_for_server(&self, server: &ServerName, short: u64) -> Result<Option<CanonicalJsonObject>> {
        let (Some(meta), Some(object)) = (self.event_meta(short)?, self.pdu_json(short)?) else {
            return Ok(None);
        };
        if meta.status == Status::Rejected {
            return Ok(None);
        }
        // An erased user's events go out redacted, as Synapse sends them.
        let erased = match object.get("sender") {
            Some(ruma::CanonicalJsonValue::String(sender)) => {
                ruma::UserId::parse(sender.as_str()).is_ok_and(|user| self.users.is_erased(&user))
            }
            _ => false,
        };
        if !erased && self.server_can_see(server, &meta)? {
            return Ok(Some(object));
        }
        let rules = self.room_by_short(meta.room)?.rules()?;
        Ok(Some(ruma::canonical_json::redact(object, &rules.redaction, None).map_err(Error::internal)?))
    }

    /// The state before an event in the room's DAG, as event short IDs, and
    /// their auth chain (`/state_ids`, `/state`).
    pub fn state_and_auth_before(&self, short: u64) -> Result<Option<(Vec<u64>, Vec<u64>)>> {
        let Some(meta) = self.event_meta(short)? else { return Ok(None) };
        if !matches!(meta.status, Status::Timeline | Status::SoftFailed | Status::History) {
            return Ok(None);
        }
        let state: Vec<u64> = self.load_state(meta.state_before)?.values().copied().collect();
        let chain = self.auth_chain_of(&state)?;
        Ok(Some((state, chain)))
    }

    /// Every event on an `auth_events` path from `start`, `start` excluded
    /// unless reached again.
    pub fn auth_chain_of(&self, start: &[u64]) -> Result<Vec<u64>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<u64> = Vec::new();
        for s in start {
            todo.extend(self.auth_edges(*s)?.iter());
        }
        while let Some(s) = todo.pop() {
            if seen.insert(s) {
                todo.extend(self.auth_edges(s)?.iter());
            }
        }
        Ok(seen.into_iter().collect())
    }

    /// The events reachable backwards through `prev_events` from `latest`
    /// (excluded) that are not reachable from `earliest`, deepest first
    /// explored, at most `limit`, none below `min_depth`; oldest first
    /// (`/get_missing_events`).
    pub fn missing_events(
        &self,
        room_short: u64,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<u64>> {
        let stop: HashSet<&EventId> = earliest.iter().map(|e| &**e).collect();
        let mut found = self.walk_back(room_short, latest, limit.min(MAX_EVENTS), min_depth, &stop, false)?;
        found.reverse();
        Ok(found)
    }

    /// `/backfill`: the events from `from` (included) backwards through
    /// `prev_events`, newest first, at most `limit`.
    pub fn backfill_events(&self, room_short: u64, from: &[OwnedEventId], limit: usize) -> Result<Vec<u64>> {
        self.walk_back(room_short, from, limit.min(MAX_EVENTS), 0, &HashSet::new(), true)
    }

    /// Walks `prev_events` backwards from `start`, deepest first; events of
    /// other rooms, unknown events and those in `stop` end a path.
    fn walk_back(
        &self,
        room_short: u64,
        start: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
        stop: &HashSet<&EventId>,
        include_start: bool,
    ) -> Result<Vec<u64>> {
        // (depth, short ID, prev events), deepest first.
        type Queue = BinaryHeap<(u64, u64, Vec<OwnedEventId>)>;
        let mut queue: Queue = BinaryHeap::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut out = Vec::new();
        let push = |queue: &mut Queue, seen: &mut HashSet<OwnedEventId>, id: &EventId| {
            if !seen.insert(id.to_owned()) || stop.contains(id) {
                return Ok::<_, Error>(());
            }
            if let Some(short) = self.event_short(id)?
                && let (Some(meta), Some(pdu)) = (self.event_meta(short)?, self.pdu_by_short(short)?)
                && meta.room == room_short
                && meta.status != Status::Outlier
                && meta.status != Status::Rejected
                && u64::from(pdu.depth) >= min_depth
            {
                queue.push((pdu.depth.into(), short, pdu.prev_events));
            }
            Ok(())
        };
        for id in start {
            if include_start {
                push(&mut queue, &mut seen, id)?;
            } else if let Some(pdu) = self.pdu(id)? {
                seen.insert(id.clone());
                for prev in &pdu.prev_events {
                    push(&mut queue, &mut seen, prev)?;
                }
            }
        }
        while let Some((_, short, prevs)) = queue.pop() {
            if out.len() >= limit {
                break;
            }
            out.push(short);
            for prev in &prevs {
                push(&mut queue, &mut seen, prev)?;
            }
        }
        Ok(out)
    }
}
