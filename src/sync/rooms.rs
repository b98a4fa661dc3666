//! One room's section of a sync response: joined, invited, knocked or left.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::{
        filter::{LazyLoadOptions, RoomEventFilter},
        sync::sync_events::v3 as sync,
    },
    serde::Raw,
};
use serde_json::{Value, json};

use super::Params;
use crate::{
    Error, Result,
    rooms::{
        notifications::Counts,
        pdu::Pdu,
        read::filter_allows,
        receipts::{ReceiptsByRoom, receipt_event},
        short_ids::{Kind, split_state_key_name, state_key_name},
        state::StateMap,
    },
    services::Services,
    util::raw,
};

/// Default and largest timeline sizes, as Synapse has them.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
const MAX_TIMELINE_LIMIT: usize = 100;
/// State types shown to invitees and knockers (stripped).
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.encryption",
];

pub(super) struct RoomSync<'a> {
    pub services: &'a Services,
    pub params: &'a Params,
    pub upto: u64,
    pub response: &'a mut sync::Response,
    /// Room account data changed in the window, by room.
    pub room_data: BTreeMap<OwnedRoomId, Vec<(String, Value)>>,
    /// Receipts changed in the window, by room (`None`: ask each room).
    pub receipts: Option<ReceiptsByRoom>,
    /// Users the client has just met, whose presence it needs.
    pub presence_of: std::collections::BTreeSet<OwnedUserId>,
}

/// A timeline slice, oldest first.
pub(super) struct Timeline {
    pub events: Vec<Value>,
    /// The events' short IDs, in the same order.
    pub shorts: Vec<u64>,
    /// The events' stream positions, in the same order.
    pub positions: Vec<u64>,
    pub limited: bool,
    /// The gap before the first event.
    pub start: u64,
    /// Where `/messages` goes back from (`prev_batch`).
    pub prev_batch: u64,
}

impl Timeline {
    fn empty(end: u64) -> Self {
        Self {
            events: Vec::new(),
            shorts: Vec::new(),
            positions: Vec::new(),
            limited: false,
            start: end,
            prev_batch: end,
        }
    }
}

/// The newest `limit` events `user` may see before the gap `end`, back to
/// `since` (exclusive), that `keep` keeps, oldest first; `limited` if
/// there were more. Aggregations are bundled only where the client cannot
/// have seen the children arrive: a gap, or a room new to it (as Synapse).
#[allow(clippy::too_many_arguments)]
pub(super) fn latest(
    services: &Services,
    room_short: u64,
    user: &UserId,
    device: Option<&ruma::DeviceId>,
    since: Option<u64>,
    end: u64,
    limit: usize,
    current_state_always: bool,
    keep: impl FnMut(&Pdu) -> bool,
) -> Result<Timeline> {
    let rooms = &services.rooms;
    let page = rooms.page(
        room_short,
        user,
        device,
        end,
        since.map(|s| s + 1),
        true,
        limit + 1,
        current_state_always,
        keep,
    )?;
    let (mut events, mut positions, mut shorts) = (page.events, page.positions, page.shorts);
    let limited = events.len() > limit;
    events.truncate(limit);
    positions.truncate(limit);
    shorts.truncate(limit);
    events.reverse();
    positions.reverse();
    shorts.reverse();
    if limited || since.is_none() {
        rooms.bundle_all(&mut events, &shorts, user, device)?;
    }
    let start = positions.first().copied().unwrap_or(end);
    Ok(Timeline { events, shorts, positions, limited, start, prev_batch: start })
}

/// An event type against a filter's `types` / `not_types` (with `*`).
pub fn allowed_by(types: Option<&[String]>, not_types: &[String], kind: &str) -> bool {
    let matches = |pattern: &String| crate::util::glob_match(pattern, kind);
    types.is_none_or(|t| t.iter().any(matches)) && !not_types.iter().any(matches)
}

fn room_allowed(filter: &RoomEventFilter, room: &OwnedRoomId) -> bool {
    !filter.not_rooms.contains(room) && filter.rooms.as_ref().is_none_or(|r| r.contains(room))
}

/// Events in sync leave out `room_id` (the room is the key).
pub(super) fn without_room_id(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.remove("room_id");
    }
    event
}

fn stripped(pdu: &Pdu) -> Value {
    json!({"type": pdu.kind, "state_key": pdu.state_key, "content": pdu.content_value(), "sender": pdu.sender})
}

impl RoomSync<'_> {
    pub fn room(&mut self, room_short: u64) -> Result<()> {
        let rooms = &self.services.rooms;
        let user = &self.params.user;
        let room_id = OwnedRoomId::try_from(rooms.short.name(room_short)?).map_err(Error::internal)?;
        let filter = &self.params.filter.room;
        if filter.not_rooms.contains(&room_id) || filter.rooms.as_ref().is_some_and(|r| !r.contains(&room_id))
        {
            return Ok(());
        }
        if rooms.is_forgotten(user, room_short)? {
            return Ok(());
        }
        let membership = rooms.membership(user, room_short)?;
        if self.params.peek == Some(room_short) && membership.as_deref() != Some("join") {
            return self.joined(room_short, room_id, false);
        }
        if membership.is_none() {
            return Ok(());
        }
        let Some(mut member) = rooms.current_state_event(room_short, "m.room.member", user.as_str())? else {
            return Ok(());
        };
        let meta_of = |pdu: &Pdu| -> Result<crate::rooms::EventMeta> {
            let short = rooms
                .event_short(&pdu.event_id)?
                .ok_or_else(|| Error::internal("member event without short ID"))?;
            rooms.event_meta(short)?.ok_or_else(|| Error::internal("member event without meta"))
        };
        let mut member_meta = meta_of(&member)?;
        // Where the membership took effect: a ban that won a state
        // resolution counts from the resolution, not from its own event.
        let mut changed_at = rooms.membership_changed_at(user, room_short, &member)?;
        // The membership as of `upto`, not a later one this sync must not show.
        if changed_at > self.upto {
            let state = rooms.state_at_position(room_short, self.upto)?;
            let Some(earlier) = rooms.state_event(&state, "m.room.member", user.as_str())? else {
                return Ok(());
            };
            member_meta = meta_of(&earlier)?;
            changed_at = member_meta.stream;
            member = earlier;
        }
        let membership = member.content_value()["membership"].as_str().unwrap_or("leave").to_owned();
        let since = self.params.since;
        let changed = since.is_none_or(|s| changed_at > s) || self.params.full_state;
        match membership.as_str() {
            "join" => {
                // Joined in the window (not a profile change): the room is new
                // to the client, so it gets the full state.
                let was_joined = match member_meta.replaces_state {
                    Some(previous) => rooms
                        .pdu_by_short(previous)?
                        .is_some_and(|p| p.content_value()["membership"] == "join"),
                    None => false,
                };
                let newly_joined = since.is_some() && changed && !was_joined;
                self.joined(room_short, room_id, newly_joined)
            }
            "invite" if changed && !self.services.users.ignored_users(user)?.contains(&member.sender) => {
                let state = stripped_state(self.services, room_short, &member)?;
                let mut invited = sync::InvitedRoom::new();
                invited.invite_state.events = state;
                self.response.rooms.invite.insert(room_id, invited);
                Ok(())
            }
            "knock" if changed => {
                let state = stripped_state(self.services, room_short, &member)?;
                let mut knocked = sync::KnockedRoom::new();
                knocked.knock_state.events = state;
                self.response.rooms.knock.insert(room_id, knocked);
                Ok(())
            }
            "leave" | "ban" if (since.is_some() && changed) || (since.is_none() && filter.include_leave) => {
                self.left(room_short, room_id, changed_at)
            }
            _ => Ok(()),
        }
    }

    fn joined(&mut self, room_short: u64, room_id: OwnedRoomId, newly_joined: bool) -> Result<()> {
        let since = if newly_joined || self.params.since.is_none() { None } else { self.params.since };
        let full = since.is_none() || self.params.full_state;
        let mut timeline = self.timeline(room_short, &room_id, since, self.upto + 1)?;
        // A room new to the client has history before what it gets (Synapse
        // marks it limited, and clients page back from `prev_batch`).
        timeline.limited |= newly_joined;
        let (state, members_changed) = self.state(room_short, &room_id, since, full, &timeline, self.upto)?;
        let account_data = self.account_data(&room_id)?;
        let (ephemeral, own_receipt) = self.ephemeral(room_short, &room_id, since)?;
        if !full
            && !own_receipt
            && timeline.events.is_empty()
            && state.is_empty()
            && account_data.is_empty()
            && ephemeral.is_empty()
        {
            return Ok(());
        }
        let mut joined = sync::JoinedRoom::new();
        let mut state = state;
        if full || members_changed || timeline_has_members(&timeline) {
            joined.summary = summary(self.services, &self.params.user, room_short)?;
            // A lazy-loading client needs the heroes' names.
            if !self.params.filter.room.state.lazy_load_options.is_disabled() {
                let rooms = &self.services.rooms;
                let sent = &self.services.users.sent_members;
                for hero in &joined.summary.heroes {
                    if let Some(pdu) =
                        rooms.current_state_event(room_short, "m.room.member", hero.as_str())?
                        && let Some(short) = rooms.event_short(&pdu.event_id)?
                        && !state.contains(&short)
                        && !sent.has(
                            &self.params.user,
                            &self.params.device,
                            room_short,
                            hero.as_str(),
                            pdu.event_id.as_str(),
                        )
                    {
                        state.push(short);
                        sent.remember(
                            &self.params.user,
                            &self.params.device,
                            room_short,
                            [(hero.to_string(), pdu.event_id.to_string())],
                        );
                    }
                }
            }
        }
        self.note_new_members(room_short, newly_joined, &timeline, &state)?;
        joined.timeline = self.sync_timeline(timeline)?;
        joined.state = self.state_section(state)?;
        joined.account_data.events = account_data;
        joined.ephemeral.events = ephemeral;
        let by_thread = self.params.filter.room.timeline.unread_thread_notifications;
        let (counts, threads) =
            self.services.rooms.unread_counts(&self.params.user, room_short, by_thread)?;
        joined.unread_notifications = unread(counts);
        joined.unread_thread_notifications = threads.into_iter().map(|(root, c)| (root, unread(c))).collect();
        self.response.rooms.join.insert(room_id, joined);
        Ok(())
    }

    /// Users the client meets in this sync: every member of a room it just
    /// joined; else whoever joined in the window (timeline or state).
    fn note_new_members(
        &mut self,
        room_short: u64,
        newly_joined: bool,
        timeline: &Timeline,
        state: &[u64],
    ) -> Result<()> {
        let rooms = &self.services.rooms;
        let Some(since) = self.params.since else { return Ok(()) };
        if newly_joined {
            let members = rooms.members(room_short)?;
            self.presence_of.extend(members.into_iter().filter(|(_, m)| m == "join").map(|(user, _)| user));
            return Ok(());
        }
        let joined_now = |event: &Value| {
            event["type"] == "m.room.member"
                && event["content"]["membership"] == "join"
                && event["unsigned"]["prev_content"]["membership"] != "join"
        };
        for event in timeline.events.iter().filter(|e| joined_now(e)) {
            if let Some(user) = event["state_key"].as_str().and_then(|u| OwnedUserId::try_from(u).ok()) {
                self.presence_of.insert(user);
            }
        }
        for short in state {
            // Only joins in the window (not members lazy loading brings).
            let recent = rooms.event_meta(*short)?.is_some_and(|meta| meta.stream > since);
            if recent
                && let Some(pdu) = rooms.pdu_by_short(*short)?
                && pdu.kind.to_string() == "m.room.member"
                && pdu.content_value()["membership"] == "join"
                && let Some(user) = pdu.state_key.as_deref().and_then(|u| OwnedUserId::try_from(u).ok())
            {
                self.presence_of.insert(user);
            }
        }
        Ok(())
    }

    /// Whether the user was joined to the room at stream position `position`.
    fn joined_at(&self, room_short: u64, position: u64) -> Result<bool> {
        let rooms = &self.services.rooms;
        let state = rooms.state_at_position(room_short, position)?;
        Ok(rooms
            .state_event(&state, "m.room.member", self.params.user.as_str())?
            .is_some_and(|member| member.content_value()["membership"] == "join"))
    }

    fn left(&mut self, room_short: u64, room_id: OwnedRoomId, leave_position: u64) -> Result<()> {
        let since = self.params.since.filter(|s| *s < leave_position);
        let end = leave_position.min(self.upto);
        let timeline = self.timeline(room_short, &room_id, since, end + 1)?;
        // Someone who never joined (a rejected invite, a withdrawn knock)
        // never had the room's state: they get none now either.
        let state = if self.services.rooms.ever_joined(&self.params.user, room_short)? {
            // Joined and left within the window: the client never had the
            // room's state, so it gets all of it.
            let state_since = match since {
                Some(since) if self.joined_at(room_short, since)? => Some(since),
                _ => None,
            };
            self.state(room_short, &room_id, state_since, state_since.is_none(), &timeline, end)?.0
        } else {
            Vec::new()
        };
        let mut left = sync::LeftRoom::new();
        left.timeline = self.sync_timeline(timeline)?;
        left.state = self.state_section(state)?;
        left.account_data.events = self.account_data(&room_id)?;
        self.response.rooms.leave.insert(room_id, left);
        Ok(())
    }

    /// The newest events before the gap `end`, back to `since` (exclusive).
    fn timeline(
        &self,
        room_short: u64,
        room_id: &OwnedRoomId,
        since: Option<u64>,
        end: u64,
    ) -> Result<Timeline> {
        let filter = &self.params.filter.room.timeline;
        let limit = filter
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_TIMELINE_LIMIT))
            .clamp(1, MAX_TIMELINE_LIMIT);
        if !room_allowed(filter, room_id) {
            return Ok(Timeline::empty(end));
        }
        if filter.limit.is_some_and(|l| l == UInt::MIN) {
            // A limit of 0: no events, only whether there were any; the
            // state then covers everything up to `end`.
            let peeking = self.params.peek == Some(room_short);
            let any =
                latest(self.services, room_short, &self.params.user, None, since, end, 1, !peeking, |pdu| {
                    filter_allows(filter, pdu) && contains_url_allows(filter, pdu)
                })?;
            let start = end + 1;
            return Ok(Timeline {
                limited: !any.events.is_empty(),
                start,
                prev_batch: start,
                ..Timeline::empty(end)
            });
        }
        let mut timeline = latest(
            self.services,
            room_short,
            &self.params.user,
            Some(&self.params.device),
            since,
            end,
            limit,
            // Members learn the room's current state; one peeking in sees
            // only what the history visibility shows.
            self.params.peek != Some(room_short),
            |pdu| filter_allows(filter, pdu) && contains_url_allows(filter, pdu),
        )?;
        // The whole history of a room new to the client: Synapse names the
        // end of the timeline, so paging back returns it again.
        if since.is_none() && !timeline.limited {
            timeline.prev_batch = end;
        }
        Ok(timeline)
    }

    fn sync_timeline(&self, timeline: Timeline) -> Result<sync::Timeline> {
        let mut out = sync::Timeline::new();
        out.limited = timeline.limited;
        out.prev_batch = Some(format!("t{}", timeline.prev_batch));
        out.events = timeline
            .events
            .into_iter()
            .zip(timeline.shorts)
            .map(|(event, short)| raw(self.formatted(short, event)?))
            .collect::<Result<_>>()?;
        Ok(out)
    }

    /// An event as the filter's `event_format` asks: the client format
    /// without the room ID, or the federation format (the PDU as stored,
    /// with its ID and the client event's `unsigned`).
    fn formatted(&self, short: u64, client_event: Value) -> Result<Value> {
        if self.params.filter.event_format != ruma::api::client::filter::EventFormat::Federation {
            return Ok(without_room_id(client_event));
        }
        let Some(pdu) = self.services.rooms.pdu_json(short)? else {
            return Ok(without_room_id(client_event));
        };
        let mut event = serde_json::to_value(pdu).map_err(Error::internal)?;
        event["event_id"] = client_event["event_id"].clone();
        if let Some(unsigned) = client_event.get("unsigned") {
            event["unsigned"] = unsigned.clone();
        }
        Ok(event)
    }

    /// The state section's events (event short IDs): the state at the start
    /// of the timeline (or, with `use_state_after`, at `end`), in full or as
    /// the change since `since`; lazily loaded members if the filter says
    /// so. Also says whether any membership changed.
    fn state(
        &self,
        room_short: u64,
        room_id: &OwnedRoomId,
        since: Option<u64>,
        full: bool,
        timeline: &Timeline,
        end: u64,
    ) -> Result<(Vec<u64>, bool)> {
        let rooms = &self.services.rooms;
        let filter = &self.params.filter.room.state;
        let at = if self.params.use_state_after { end } else { timeline.start.saturating_sub(1) };
        let current: Arc<StateMap> = rooms.state_at_position(room_short, at)?;
        let previous = match since {
            Some(since) if !full => Some(rooms.state_at_position(room_short, since)?),
            _ => None,
        };
        if !room_allowed(filter, room_id) {
            return Ok((Vec::new(), false));
        }
        let lazy = !filter.lazy_load_options.is_disabled();
        // Members a lazy-loading client needs: the timeline's senders, and
        // itself when the room is new to it.
        let mut wanted_members: Vec<String> =
            timeline.events.iter().filter_map(|e| e["sender"].as_str().map(str::to_owned)).collect();
        if full {
            wanted_members.push(self.params.user.to_string());
        }
        wanted_members.sort_unstable();
        wanted_members.dedup();
        // Only what changed is looked at (an incremental sync of a big room
        // must not read every member), plus the wanted members.
        let mut candidates: Vec<(u64, u64)> = match &previous {
            Some(previous) => {
                current.iter().filter(|(k, e)| previous.get(k) != Some(e)).map(|(k, e)| (*k, *e)).collect()
            }
            None => current.iter().map(|(k, e)| (*k, *e)).collect(),
        };
        if lazy && previous.is_some() {
            for member in &wanted_members {
                if let Some(key) =
                    rooms.short.get(Kind::StateKey, &state_key_name("m.room.member", member))?
                    && let Some(event) = current.get(&key)
                    && !candidates.iter().any(|(k, _)| *k == key)
                {
                    candidates.push((key, *event));
                }
            }
        }
        // Unless the filter asks for them, members the device already has
        // are not sent again (Synapse).
        let skip_redundant = lazy
            && !matches!(
                filter.lazy_load_options,
                LazyLoadOptions::Enabled { include_redundant_members: true }
            );
        let mut events = Vec::new();
        let mut members_changed = false;
        let mut sent_members = Vec::new();
        for (key, event) in candidates {
            let name = rooms.short.name(key)?;
            let (kind, state_key) = split_state_key_name(&name).unwrap_or_default();
            let is_member = kind == "m.room.member";
            let changed = previous.as_ref().is_none_or(|p| p.get(&key) != Some(&event));
            if is_member && changed && !full {
                members_changed = true;
            }
            // A lazy client gets changed members (a gap's joins and leaves)
            // and the ones its timeline needs; full state only the latter.
            let keep = !(is_member && lazy)
                || (changed && !full)
                || wanted_members.binary_search(&state_key.to_owned()).is_ok();
            if !keep || !allowed_by(filter.types.as_deref(), &filter.not_types, kind) {
                continue;
            }
            let Some(pdu) = rooms.pdu_by_short(event)? else { continue };
            if !filter_allows(filter, &pdu) {
                continue;
            }
            if is_member && skip_redundant {
                if self.services.users.sent_members.has(
                    &self.params.user,
                    &self.params.device,
                    room_short,
                    state_key,
                    pdu.event_id.as_str(),
                ) {
                    continue;
                }
                sent_members.push((state_key.to_owned(), pdu.event_id.to_string()));
            }
            events.push(event);
        }
        if skip_redundant {
            // The timeline's member events reach the device too.
            let in_timeline =
                timeline.events.iter().filter(|e| e["type"] == "m.room.member").filter_map(|e| {
                    Some((e["state_key"].as_str()?.to_owned(), e["event_id"].as_str()?.to_owned()))
                });
            sent_members.extend(in_timeline);
            self.services.users.sent_members.remember(
                &self.params.user,
                &self.params.device,
                room_short,
                sent_members,
            );
        }
        Ok((events, members_changed))
    }

    fn state_section(&self, events: Vec<u64>) -> Result<sync::State> {
        let rooms = &self.services.rooms;
        let mut batch = sync::StateEvents::new();
        for short in events {
            let event = rooms.client_event(short, Some(&self.params.device), &self.params.user)?;
            batch.events.push(raw(self.formatted(short, event)?)?);
        }
        Ok(if self.params.use_state_after { sync::State::After(batch) } else { sync::State::Before(batch) })
    }

    /// Typing (the whole current set, if it changed) and receipts (those
    /// that changed), as the room's ephemeral events.
    /// Typing (the whole current set, if it changed) and receipts (those
    /// that changed), as the room's ephemeral events; and whether the user's
    /// own receipt moved (their unread counts changed even if the filter
    /// hides receipts).
    fn ephemeral(
        &mut self,
        room_short: u64,
        room_id: &OwnedRoomId,
        since: Option<u64>,
    ) -> Result<(Vec<Raw<ruma::events::AnySyncEphemeralRoomEvent>>, bool)> {
        let rooms = &self.services.rooms;
        let receipts = match (since, &mut self.receipts) {
            (Some(_), Some(changes)) => changes.remove(&room_short).unwrap_or_default(),
            _ => rooms.room_receipts(room_short, since)?,
        };
        let receipts: Vec<_> = receipts.into_iter().filter(|(_, r)| r.position <= self.upto).collect();
        let own_receipt = since.is_some() && receipts.iter().any(|(k, _)| k.user == self.params.user);
        let filter = &self.params.filter.room.ephemeral;
        if !room_allowed(filter, room_id) {
            return Ok((Vec::new(), own_receipt));
        }
        let wanted = |kind: &str| allowed_by(filter.types.as_deref(), &filter.not_types, kind);
        let mut events = Vec::new();
        if wanted("m.typing")
            && let Some(users) = rooms.typing.changed(room_short, since, self.upto)
        {
            events.push(raw(json!({"type": "m.typing", "content": {"user_ids": users}}))?);
        }
        if wanted("m.receipt")
            && let Some(event) = receipt_event(&self.params.user, &receipts)
        {
            events.push(raw(event)?);
        }
        Ok((events, own_receipt))
    }

    fn account_data(
        &mut self,
        room_id: &OwnedRoomId,
    ) -> Result<Vec<Raw<ruma::events::AnyRoomAccountDataEvent>>> {
        let filter = &self.params.filter.room.account_data;
        let Some(entries) = self.room_data.remove(room_id) else { return Ok(Vec::new()) };
        if !room_allowed(filter, room_id) {
            return Ok(Vec::new());
        }
        entries
            .into_iter()
            .filter(|(kind, _)| allowed_by(filter.types.as_deref(), &filter.not_types, kind))
            .map(|(_, event)| raw(event))
            .collect()
    }
}

/// Member counts and, for rooms without a name or alias, heroes: the
/// first five other joined or invited members by when they became so
/// (left and banned ones if there are none).
pub(super) fn summary(services: &Services, user: &UserId, room_short: u64) -> Result<sync::RoomSummary> {
    let rooms = &services.rooms;
    let members = rooms.members(room_short)?;
    let count = |m: &str| UInt::try_from(members.iter().filter(|(_, x)| x == m).count()).unwrap_or_default();
    let mut summary = sync::RoomSummary::new();
    summary.joined_member_count = Some(count("join"));
    summary.invited_member_count = Some(count("invite"));
    let named = ["m.room.name", "m.room.canonical_alias"].iter().any(|kind| {
        rooms.current_state_event(room_short, kind, "").ok().flatten().is_some_and(|p| {
            let content = p.content_value();
            content["name"].as_str().is_some_and(|n| !n.is_empty())
                || content["alias"].as_str().is_some_and(|a| !a.is_empty())
        })
    });
    if named {
        return Ok(summary);
    }
    let others = |wanted: &[&str]| -> Vec<&OwnedUserId> {
        members.iter().filter(|(u, m)| *u != user && wanted.contains(&m.as_str())).map(|(u, _)| u).collect()
    };
    let mut candidates = others(&["join", "invite"]);
    if candidates.is_empty() {
        candidates = others(&["leave", "ban"]);
    }
    // Stream order of their member events (only worth it for small rooms).
    let mut ordered: Vec<(u64, OwnedUserId)> = Vec::new();
    for user in candidates.iter().take(100) {
        let position = rooms
            .current_state_event(room_short, "m.room.member", user.as_str())?
            .and_then(|p| rooms.event_short(&p.event_id).ok().flatten())
            .and_then(|s| rooms.event_meta(s).ok().flatten())
            .map_or(u64::MAX, |m| m.stream);
        ordered.push((position, (*user).clone()));
    }
    ordered.sort();
    summary.heroes = ordered.into_iter().take(5).map(|(_, u)| u).collect();
    Ok(summary)
}

/// What an invitee or knocker sees of a room: a few stripped state
/// events and their own membership event.
pub(super) fn stripped_state(
    services: &Services,
    room_short: u64,
    member: &Pdu,
) -> Result<Vec<Raw<ruma::events::AnyStrippedStateEvent>>> {
    let rooms = &services.rooms;
    let mut events = Vec::new();
    for kind in STRIPPED_STATE_TYPES {
        if let Some(pdu) = rooms.current_state_event(room_short, kind, "")? {
            events.push(raw(stripped(&pdu))?);
        }
    }
    // Who invited: clients show the inviter's name (Synapse sends it).
    if member.state_key.as_deref() != Some(member.sender.as_str())
        && let Some(inviter) =
            rooms.current_state_event(room_short, "m.room.member", member.sender.as_str())?
    {
        events.push(raw(stripped(&inviter))?);
    }
    events.push(raw(stripped(member))?);
    Ok(events)
}

fn timeline_has_members(timeline: &Timeline) -> bool {
    timeline.events.iter().any(|e| e["type"] == "m.room.member")
}

fn contains_url_allows(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    match filter.url_filter {
        None => true,
        Some(url_filter) => {
            let has_url = pdu.content_value().get("url").is_some();
            has_url == matches!(url_filter, ruma::api::client::filter::UrlFilter::EventsWithUrl)
        }
    }
}

fn unread(counts: Counts) -> ruma::api::client::sync::sync_events::UnreadNotificationsCount {
    let mut out = ruma::api::client::sync::sync_events::UnreadNotificationsCount::new();
    out.notification_count = Some(UInt::try_from(counts.notifications).unwrap_or_default());
    out.highlight_count = Some(UInt::try_from(counts.highlights).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::{
        CanonicalJsonObject, OwnedEventId, RoomId, RoomVersionId, UserId,
        api::client::filter::FilterDefinition, user_id,
    };
    use serde_json::{Value, json};

    use crate::{
        rooms::{
            RoomRecord,
            builder::PduBuilder,
            create::{CreateRoom, Preset},
            pipeline::{Origin, Outcome, StateBefore},
            testing::Remote,
        },
        services::Services,
        sync::{Params, sync},
    };

    /// An event `sender` (of remote.test) builds on `prevs`, with the auth
    /// events of the state after the first of them, signed by remote.test.
    fn remote_event(
        services: &Services,
        remote: &Remote,
        room_id: &RoomId,
        prevs: &[&OwnedEventId],
        sender: &UserId,
        builder: PduBuilder,
    ) -> (OwnedEventId, CanonicalJsonObject) {
        let rooms = &services.rooms;
        let (_, mut record): (u64, RoomRecord) = rooms.room(room_id).unwrap().unwrap();
        let meta = rooms.event_meta(rooms.event_short(prevs[0]).unwrap().unwrap()).unwrap().unwrap();
        let state = rooms.state.load(meta.state_after.unwrap()).unwrap();
        record.forward_extremities = prevs.iter().map(|p| (*p).clone()).collect();
        let (_, object) = rooms.build(&record, &state, sender, &builder).unwrap();
        let mut event = serde_json::to_value(&object).unwrap();
        let fields = event.as_object_mut().unwrap();
        fields.remove("hashes");
        fields.remove("signatures");
        remote.sign(event, &record.version)
    }

    fn deliver(
        services: &Services,
        remote: &Remote,
        room_id: &RoomId,
        event: (OwnedEventId, CanonicalJsonObject),
    ) -> Outcome {
        let (short, mut record) = services.rooms.room(room_id).unwrap().unwrap();
        services
            .rooms
            .append(
                short,
                &mut record,
                event.0,
                event.1,
                Origin::Remote(remote.keys()),
                StateBefore::FromPrevs,
            )
            .unwrap()
    }

    async fn sync_once(services: &Services, user: &UserId, since: Option<u64>) -> Value {
        let params = Params {
            user: user.to_owned(),
            device: "DEVICE".into(),
            since,
            to_device_since: since,
            full_state: false,
            filter: FilterDefinition::default(),
            timeout: Duration::ZERO,
            use_state_after: false,
            to_device: false,
            peek: None,
            upto: None,
        };
        use ruma::api::OutgoingResponseExt;
        let response = sync(services, &params).await.unwrap().try_into_http_response::<Vec<u8>>().unwrap();
        serde_json::from_slice(response.body()).unwrap()
    }

    /// Review §1d: a ban that arrives soft-failed (its sender has since
    /// left, as far as we know) and then wins a state resolution reaches the
    /// banned user's `/sync` as a leave, at the position of the resolution.
    #[tokio::test]
    async fn a_soft_failed_ban_that_wins_resolution_reaches_sync_as_a_leave() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::for_tests(dir.path());
        let rooms = &services.rooms;
        let remote = Remote::new("remote.test");
        let (alice, bob) = (user_id!("@alice:localhost"), user_id!("@bob:localhost"));
        let (carol, dave) = (user_id!("@carol:remote.test"), user_id!("@dave:remote.test"));
        let room =
            rooms.create_room(alice, CreateRoom::new(RoomVersionId::V11, Preset::PublicChat)).await.unwrap();
        let join =
            |user: &UserId| PduBuilder::state("m.room.member", user.as_str(), json!({"membership": "join"}));
        rooms.send(&room, bob, join(bob), None).await.unwrap();
        for user in [carol, dave] {
            let tip = rooms.room(&room).unwrap().unwrap().1.forward_extremities[0].clone();
            let event = remote_event(&services, &remote, &room, &[&tip], user, join(user));
            assert!(matches!(deliver(&services, &remote, &room, event), Outcome::Accepted { .. }));
        }
        let levels = json!({"users": {alice.as_str(): 100, carol.as_str(): 100}});
        rooms.send(&room, alice, PduBuilder::state("m.room.power_levels", "", levels), None).await.unwrap();
        let fork = rooms.room(&room).unwrap().unwrap().1.forward_extremities[0].clone();

        // Carol leaves; concurrently (on the fork) she bans bob, which no
        // longer passes against the room as we know it.
        let leave = PduBuilder::state("m.room.member", carol.as_str(), json!({"membership": "leave"}));
        let leave = remote_event(&services, &remote, &room, &[&fork], carol, leave);
        let leave_id = leave.0.clone();
        assert!(matches!(deliver(&services, &remote, &room, leave), Outcome::Accepted { .. }));
        let ban = PduBuilder::state("m.room.member", bob.as_str(), json!({"membership": "ban"}));
        let ban = remote_event(&services, &remote, &room, &[&fork], carol, ban);
        let ban_id = ban.0.clone();
        assert_eq!(deliver(&services, &remote, &room, ban), Outcome::SoftFailed);

        let before = sync_once(&services, bob, None).await;
        assert!(before["rooms"]["join"].get(room.as_str()).is_some(), "{before}");
        let since: u64 = before["next_batch"].as_str().unwrap()[1..].parse().unwrap();

        // Dave builds on both branches: the resolution keeps the ban.
        let merge = PduBuilder::message("m.room.message", json!({"body": "merged", "msgtype": "m.text"}));
        let merge = remote_event(&services, &remote, &room, &[&leave_id, &ban_id], dave, merge);
        assert!(matches!(deliver(&services, &remote, &room, merge), Outcome::Accepted { .. }));
        let short = rooms.room_short(&room).unwrap().unwrap();
        assert_eq!(rooms.membership(bob, short).unwrap().as_deref(), Some("ban"));

        let after = sync_once(&services, bob, Some(since)).await;
        let left = &after["rooms"]["leave"][room.as_str()];
        assert!(left.is_object(), "bob learns he is out: {after}");
        assert!(after["rooms"]["join"].get(room.as_str()).is_none(), "{after}");
        let events: Vec<&Value> = left["state"]["events"]
            .as_array()
            .into_iter()
            .chain(left["timeline"]["events"].as_array())
            .flatten()
            .collect();
        assert!(
            events.iter().any(|e| e["type"] == "m.room.member"
                && e["state_key"] == bob.as_str()
                && e["content"]["membership"] == "ban"),
            "the ban is in the leave section: {left}"
        );
    }
}
