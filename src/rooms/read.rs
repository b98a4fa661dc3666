//! Reading rooms for clients: history visibility (applied on every read
//! path), client-format events, and timeline pagination.

use ruma::{OwnedEventId, OwnedRoomId, UserId};
use serde_json::{Map, Value, json};

use super::{
    EventMeta, Rooms,
    pdu::{Pdu, client_event},
    short_ids::{Kind, state_key_name},
    state::StateMap,
};
use crate::{
    Error, Result,
    storage::{decode_u64, maps},
    util,
};

/// The most timeline rows one read examines for visible events: a page
/// of a room whose history the reader may not see stops here and hands
/// back a token to go on from.
pub const SCAN_BUDGET: usize = 500;

/// Membership strength, for "the most joined of before and after".
fn rank(membership: &str) -> u8 {
    match membership {
        "join" => 4,
        "invite" => 3,
        "knock" => 2,
        "leave" => 1,
        _ => 0,
    }
}

/// One page of a room's timeline.
pub struct Page {
    pub events: Vec<Value>,
    /// The stream position of each event in `events`.
    pub positions: Vec<u64>,
    /// The short ID of each event in `events`.
    pub shorts: Vec<u64>,
    /// Where the next page in the same direction starts, if there may be one.
    pub next: Option<u64>,
    /// The gap the scan stopped at, whether or not more events follow.
    pub cursor: u64,
}

impl Rooms {
    /// The event at one state key of a snapshot (`None`: the empty state),
    /// read without building the snapshot's full state.
    pub fn state_event_at(
        &self,
        snapshot: Option<u64>,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        let Some(snapshot) = snapshot else { return Ok(None) };
        let Some(key) = self.short.get(Kind::StateKey, &state_key_name(event_type, state_key))? else {
            return Ok(None);
        };
        match self.state.get(snapshot, key)? {
            Some(event) => self.pdu_by_short(event),
            None => Ok(None),
        }
    }

    fn membership_in(&self, snapshot: Option<u64>, user: &UserId) -> Result<Option<String>> {
        Ok(self
            .state_event_at(snapshot, "m.room.member", user.as_str())?
            .and_then(|pdu| pdu.content_value()["membership"].as_str().map(str::to_owned)))
    }

    pub(super) fn history_visibility_in(&self, snapshot: Option<u64>) -> Result<String> {
        Ok(self
            .state_event_at(snapshot, "m.room.history_visibility", "")?
            .and_then(|pdu| pdu.content_value()["history_visibility"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "shared".into()))
    }

    /// Whether `user` may see an event, by the room's history visibility at
    /// that event and the user's membership then (and now, for `shared`).
    /// Reads the two state keys it needs, never a full state.
    pub fn can_see(&self, user: &UserId, pdu: &Pdu, meta: &EventMeta) -> Result<bool> {
        if !meta.accepted() || meta.state_after.is_none() {
            return Ok(false);
        }
        let (after, before) = (meta.state_after, meta.state_before);
        let mut visibility = self.history_visibility_in(after)?;
        if pdu.kind.to_string() == "m.room.history_visibility" {
            // The least restrictive of before and after.
            let earlier = self.history_visibility_in(before)?;
            let order = ["joined", "invited", "shared", "world_readable"];
            let pos = |v: &str| order.iter().position(|o| *o == v).unwrap_or(2);
            if pos(&earlier) > pos(&visibility) {
                visibility = earlier;
            }
        }
        if visibility == "world_readable" {
            return Ok(true);
        }
        let mut membership = self.membership_in(after, user)?.unwrap_or_default();
        if pdu.kind.to_string() == "m.room.member" && pdu.state_key.as_deref() == Some(user.as_str()) {
            let earlier = self.membership_in(before, user)?.unwrap_or_default();
            if rank(&earlier) > rank(&membership) {
                membership = earlier;
            }
        }
        Ok(match membership.as_str() {
            "join" => true,
            "invite" => visibility == "invited" || visibility == "shared" && self.joined_since(user, meta)?,
            _ => visibility == "shared" && self.joined_since(user, meta)?,
        })
    }

    /// Whether the user was ever joined to the room.
    pub fn ever_joined(&self, user: &UserId, room_short: u64) -> Result<bool> {
        let key = crate::storage::key(&[user.as_bytes(), &room_short.to_be_bytes()]);
        Ok(self.db.contains(&maps::LAST_JOINS, &key)?)
    }

    /// Whether the user joined the event's room at some point after it.
    fn joined_since(&self, user: &UserId, meta: &EventMeta) -> Result<bool> {
        let key = crate::storage::key(&[user.as_bytes(), &meta.room.to_be_bytes()]);
        match self.db.get(&maps::LAST_JOINS, &key)? {
            Some(position) => Ok(decode_u64(&position)? >= meta.stream),
            None => Ok(false),
        }
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub fn is_world_readable(&self, room_short: u64) -> Result<bool> {
        if self.is_purging(room_short) {
            return Ok(false);
        }
        Ok(self
            .current_state_event(room_short, "m.room.history_visibility", "")?
            .is_some_and(|p| p.content_value()["history_visibility"] == "world_readable"))
    }

    /// An event in the client format, with `unsigned` filled in for `viewer`.
    pub fn client_event(
        &self,
        short: u64,
        viewer_device: Option<&ruma::DeviceId>,
        viewer: &UserId,
    ) -> Result<Value> {
        let mut json = self.pdu_json(short)?.ok_or_else(|| Error::internal("event without JSON"))?;
        let meta = self.event_meta(short)?.ok_or_else(|| Error::internal("event without meta"))?;
        let event_id = OwnedEventId::try_from(self.short.name(short)?).map_err(Error::internal)?;
        let room_id = OwnedRoomId::try_from(self.short.name(meta.room)?).map_err(Error::internal)?;
        // An erased user's events reach only who was in the room then (Synapse).
        let sender = json.get("sender").and_then(|s| s.as_str()).and_then(|s| UserId::parse(s).ok());
        if sender.is_some_and(|sender| self.users.is_erased(&sender)) && !self.was_joined_at(viewer, &meta)? {
            let (_, record) =
                self.room(&room_id)?.ok_or_else(|| Error::internal("event of an unknown room"))?;
            json = ruma::canonical_json::redact(json, &record.rules()?.redaction, None)
                .map_err(Error::internal)?;
        }
        let mut unsigned = Map::new();
        if let Some(ruma::CanonicalJsonValue::Integer(ts)) = json.get("origin_server_ts") {
            let ts = u64::try_from(i64::from(*ts)).unwrap_or(0);
            unsigned.insert("age".into(), json!(util::now_ms().saturating_sub(ts)));
        }
        if let Some((device, txn)) = &meta.txn
            && viewer_device == Some(device.as_ref())
            && json.get("sender").and_then(|s| s.as_str()) == Some(viewer.as_str())
        {
            unsigned.insert("transaction_id".into(), json!(txn));
        }
        // The previous state only for viewers who could see that event.
        if let Some(replaced) = meta.replaces_state
            && let Some(previous) = self.pdu_by_short(replaced)?
            && let Some(previous_meta) = self.event_meta(replaced)?
            && self.can_see(viewer, &previous, &previous_meta)?
        {
            unsigned.insert("replaces_state".into(), json!(previous.event_id));
            unsigned.insert("prev_content".into(), previous.content_value());
            unsigned.insert("prev_sender".into(), json!(previous.sender));
        }
        if let Some(redaction) = meta.redacted_by {
            let because = self.client_event(redaction, None, viewer)?;
            // The redaction's ID alone too, as Synapse adds it.
            unsigned.insert("redacted_by".into(), because["event_id"].clone());
            unsigned.insert("redacted_because".into(), because);
        }
        let mut event = client_event(&event_id, &room_id, &json, unsigned);
        // v11+ moved `redacts` into the content; clients still read the top level.
        if event["type"] == "m.room.redaction" && event.get("redacts").is_none() {
            let redacts = event["content"]["redacts"].clone();
            if !redacts.is_null() {
                event["redacts"] = redacts;
            }
        }
        Ok(event)
    }

    /// Whether the user was joined to the room as of an event.
    fn was_joined_at(&self, user: &UserId, meta: &EventMeta) -> Result<bool> {
        let Some(state) = meta.state_after else { return Ok(false) };
        let state = self.state.load(state)?;
        Ok(self
            .state_event(&state, "m.room.member", user.as_str())?
            .is_some_and(|member| member.content_value()["membership"] == "join"))
    }

    /// The newest stream position in a room (the end of its timeline).
    /// Timeline events at stream positions after `after`, in order, at most
    /// `limit`: (position, event short ID, room short ID).
    pub fn stream_events(&self, after: u64, limit: usize) -> Result<Vec<(u64, u64, u64)>> {
        let start = (after + 1).to_be_bytes();
        let rows = self.db.scan_range(&maps::STREAM, b"", Some(&start), false, limit)?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            if value.len() >= 16 {
                out.push((decode_u64(&key)?, decode_u64(&value[..8])?, decode_u64(&value[8..16])?));
            }
        }
        Ok(out)
    }

    /// Backfilled events the search index has yet to take, at most `limit`.
    pub fn history_to_index(&self, limit: usize) -> Result<Vec<u64>> {
        let rows = self.db.scan_range(&maps::SEARCH_HISTORY, b"", None, false, limit)?;
        rows.iter().map(|(key, _)| Ok(decode_u64(key)?)).collect()
    }

    /// Marks backfilled events as taken by the search index.
    pub fn history_indexed(&self, events: &[u64]) -> Result<()> {
        let mut batch = crate::storage::Batch::new();
        for event in events {
            batch.delete(&maps::SEARCH_HISTORY, event.to_be_bytes());
        }
        Ok(self.db.write_unsynced(batch)?)
    }

    /// Queues every backfilled event for the search index again (it is
    /// being rebuilt).
    pub fn queue_history_for_index(&self) -> Result<()> {
        const CHUNK: usize = 10_000;
        let mut from: Option<Vec<u8>> = None;
        loop {
            let rows = self.db.scan_range(&maps::ROOM_HISTORY, b"", from.as_deref(), false, CHUNK + 1)?;
            let mut batch = crate::storage::Batch::new();
            for (_, event) in rows.iter().take(CHUNK) {
                batch.put(&maps::SEARCH_HISTORY, event.clone(), []);
            }
            self.db.write(batch)?;
            match rows.get(CHUNK) {
                Some((key, _)) => from = Some(key.clone()),
                None => return Ok(()),
            }
        }
    }

    /// The stream position of the room's last event that moves it up a
    /// room list ([`super::bumps`]), if it has one in its live timeline.
    pub fn bump_position(&self, room_short: u64) -> Result<Option<u64>> {
        if let Some(position) = self.bump_cache.lock().expect("bump positions").get(room_short) {
            return Ok(position);
        }
        let position =
            self.db.get(&maps::ROOM_BUMP, &room_short.to_be_bytes())?.map(|v| decode_u64(&v)).transpose()?;
        // Only if the pipeline did not write a newer one meanwhile.
        let mut cache = self.bump_cache.lock().expect("bump positions");
        if cache.get(room_short).is_none() {
            cache.insert(room_short, position, 1);
        }
        Ok(position)
    }

    /// Notes a room's new bump position, once written.
    pub(super) fn bumped(&self, room_short: u64, position: u64) {
        self.bump_cache.lock().expect("bump positions").insert(room_short, Some(position), 1);
    }

    pub fn latest_position(&self, room_short: u64) -> Result<u64> {
        let last = self.db.scan_range(&maps::TIMELINE, &room_short.to_be_bytes(), None, true, 1)?;
        match last.first() {
            Some((k, _)) => Ok(decode_u64(&k[8..])?),
            None => Ok(0),
        }
    }

    /// The room's (resolved, current) state after its last event at or
    /// before `position`.
    pub fn state_at_position(&self, room_short: u64, position: u64) -> Result<std::sync::Arc<StateMap>> {
        let prefix = room_short.to_be_bytes();
        let start = [prefix, position.to_be_bytes()].concat();
        let found = self.db.scan_range(&maps::TIMELINE, &prefix, Some(&start), true, 1)?;
        let meta = match found.first() {
            Some((_, v)) => self.event_meta(decode_u64(v)?)?,
            None => None,
        };
        match meta.and_then(|m| m.current.or(m.state_after)) {
            Some(id) => self.state.load(id),
            None => Ok(std::sync::Arc::new(StateMap::new())),
        }
    }

    /// Up to `limit` visible events from the gap `from` (a token stands
    /// between events: `from = p` means just before position `p`),
    /// backwards or forwards, stopping at the gap `to` when given; only
    /// those `keep` keeps. With `current_state_always`, the current state's
    /// events count as visible whatever the history visibility.
    #[allow(clippy::too_many_arguments)]
    pub fn page(
        &self,
        room_short: u64,
        viewer: &UserId,
        viewer_device: Option<&ruma::DeviceId>,
        from: u64,
        to: Option<u64>,
        backwards: bool,
        limit: usize,
        current_state_always: bool,
        keep: impl FnMut(&Pdu) -> bool,
    ) -> Result<Page> {
        let order = Order::Live;
        let sight = if current_state_always { Sight::WithCurrentState } else { Sight::Visible };
        let scan = Scan { viewer, viewer_device, backwards, limit, sight };
        let found = self.scan(
            room_short,
            order,
            &from.to_be_bytes(),
            to.map(u64::to_be_bytes).as_ref().map(|t| &t[..]),
            &scan,
            keep,
        )?;
        let position = |gap: &[u8]| decode_u64(gap);
        Ok(Page {
            events: found.events,
            positions: found.gaps.iter().map(|g| position(g)).collect::<Result<_, _>>()?,
            shorts: found.shorts,
            next: found.next.as_deref().map(position).transpose()?,
            cursor: position(&found.cursor)?,
        })
    }

    /// The same over the room's whole order: backfilled history (by depth,
    /// oldest first), then the live timeline. A page that runs out of one
    /// goes on in the other.
    #[allow(clippy::too_many_arguments)]
    pub fn page_all(
        &self,
        room_short: u64,
        viewer: &UserId,
        viewer_device: Option<&ruma::DeviceId>,
        from: Gap,
        to: Option<Gap>,
        backwards: bool,
        limit: usize,
        keep: impl FnMut(&Pdu) -> bool,
    ) -> Result<GapPage> {
        let scan = Scan { viewer, viewer_device, backwards, limit, sight: Sight::Visible };
        self.page_all_seeing(room_short, &scan, from, to, keep)
    }

    /// The same with every event of the room, whatever its history
    /// visibility (a server admin's view: `/_synapse/admin/v1/rooms/…`).
    pub fn page_all_unfiltered(
        &self,
        room_short: u64,
        admin: &UserId,
        (from, to): (Gap, Option<Gap>),
        backwards: bool,
        limit: usize,
    ) -> Result<GapPage> {
        let scan = Scan { viewer: admin, viewer_device: None, backwards, limit, sight: Sight::Everything };
        self.page_all_seeing(room_short, &scan, from, to, |_| true)
    }

    fn page_all_seeing(
        &self,
        room_short: u64,
        scan: &Scan<'_>,
        from: Gap,
        to: Option<Gap>,
        mut keep: impl FnMut(&Pdu) -> bool,
    ) -> Result<GapPage> {
        let (backwards, limit) = (scan.backwards, scan.limit);
        let mut page = GapPage { events: Vec::new(), shorts: Vec::new(), next: None, cursor: from };
        let mut at = from;
        loop {
            let (order, gap) = at.split();
            let bound = to.filter(|t| t.order() == order).map(|t| t.split().1);
            let rest = Scan { limit: limit - page.events.len(), ..*scan };
            let found = self.scan(room_short, order, &gap, bound.as_deref(), &rest, &mut keep)?;
            page.events.extend(found.events);
            page.shorts.extend(found.shorts);
            page.cursor = Gap::join(order, &found.cursor)?;
            page.next = found.next.as_deref().map(|g| Gap::join(order, g)).transpose()?;
            // Run out of this order (and `to` lies beyond it): the other.
            let beyond = |gap: Gap| to.is_none_or(|t| if backwards { t < gap } else { t > gap });
            let other = match order {
                Order::Live if backwards => Some(Gap::history_end()),
                Order::History if !backwards => Some(Gap::Live(0)),
                _ => None,
            };
            match other {
                Some(other) if page.next.is_none() && page.events.len() < limit && beyond(other) => {
                    at = other;
                    page.cursor = other;
                }
                Some(other)
                    if page.next.is_none()
                        && beyond(other)
                        && self.has_events_besides(room_short, order)? =>
                {
                    // Full, and the other order has events: say where to go on.
                    page.next = Some(other);
                    return Ok(page);
                }
                _ => return Ok(page),
            }
        }
    }

    /// Whether the order other than `order` holds any event of the room.
    fn has_events_besides(&self, room_short: u64, order: Order) -> Result<bool> {
        let other = match order {
            Order::Live => &maps::ROOM_HISTORY,
            Order::History => &maps::TIMELINE,
        };
        Ok(self.db.contains_prefix(other, &room_short.to_be_bytes())?)
    }

    /// The scan behind [`Rooms::page`] and [`Rooms::page_all`]: rows of one
    /// order, keyed `room ‖ gap`, from the gap `from` (a key suffix; a gap
    /// stands just before the row with that suffix), at most
    /// [`SCAN_BUDGET`] rows examined.
    fn scan(
        &self,
        room_short: u64,
        order: Order,
        from: &[u8],
        to: Option<&[u8]>,
        scan: &Scan<'_>,
        mut keep: impl FnMut(&Pdu) -> bool,
    ) -> Result<Found> {
        let Scan { viewer, viewer_device, backwards, limit, sight } = *scan;
        let map = match order {
            Order::Live => &maps::TIMELINE,
            Order::History => &maps::ROOM_HISTORY,
        };
        let prefix = room_short.to_be_bytes();
        // Ignored users' events stay hidden; their state events do not.
        let ignored = match sight {
            Sight::Everything => Default::default(),
            _ => self.users.ignored_users(viewer)?,
        };
        let mut found = Found {
            events: Vec::new(),
            gaps: Vec::new(),
            shorts: Vec::new(),
            next: None,
            cursor: from.to_vec(),
        };
        let mut exhausted = false;
        let mut scanned = 0;
        // Scan in slices: invisible events do not count towards `limit`, but
        // no page reads more than [`SCAN_BUDGET`] rows; the caller's next
        // token goes on from where the scan stopped (review §2.4).
        while found.events.len() < limit && !exhausted && scanned < SCAN_BUDGET {
            let start = [&prefix[..], &found.cursor].concat();
            let slice = self.db.scan_range(map, &prefix, Some(&start), backwards, 101)?;
            exhausted = slice.len() < 101;
            let mut progressed = false;
            for (k, v) in slice {
                let gap = &k[8..];
                // Backwards, the row at the gap itself lies after it.
                if backwards && gap >= &found.cursor[..] {
                    continue;
                }
                progressed = true;
                if to.is_some_and(|to| if backwards { gap < to } else { gap >= to }) {
                    exhausted = true;
                    break;
                }
                if scanned == SCAN_BUDGET {
                    break;
                }
                scanned += 1;
                found.cursor = if backwards { gap.to_vec() } else { after(gap) };
                let short = decode_u64(&v)?;
                let (Some(pdu), Some(meta)) = (self.pdu_by_short(short)?, self.event_meta(short)?) else {
                    continue;
                };
                if (pdu.state_key.is_none() && ignored.contains(&pdu.sender)) || !keep(&pdu) {
                    continue;
                }
                // Sync shows the events of the current state even where
                // history visibility hides them (Synapse): the client must
                // learn the room as it is.
                let current = |pdu: &Pdu| -> Result<bool> {
                    let Some(state_key) = pdu.state_key.as_deref() else { return Ok(false) };
                    let now = self.current_state_event(room_short, &pdu.kind.to_string(), state_key)?;
                    Ok(now.is_some_and(|now| now.event_id == pdu.event_id))
                };
                let seen = match sight {
                    Sight::Everything => true,
                    Sight::Visible => self.can_see(viewer, &pdu, &meta)?,
                    Sight::WithCurrentState => self.can_see(viewer, &pdu, &meta)? || current(&pdu)?,
                };
                if !seen {
                    continue;
                }
                found.events.push(self.client_event(short, viewer_device, viewer)?);
                found.gaps.push(gap.to_vec());
                found.shorts.push(short);
                if found.events.len() >= limit {
                    break;
                }
            }
            if !progressed {
                exhausted = true;
            }
        }
        let more = !exhausted || found.events.len() >= limit || scanned == SCAN_BUDGET;
        found.next = more.then(|| found.cursor.clone());
        Ok(found)
    }
}

/// The key suffix just after `gap` (the gap after its row).
fn after(gap: &[u8]) -> Vec<u8> {
    let mut next = gap.to_vec();
    for byte in next.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return next;
        }
    }
    // Past the largest key: nothing lies after it.
    vec![u8::MAX; gap.len() + 1]
}

/// The two orders of a room's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Backfilled history (`room_history`), by depth.
    History,
    /// The live timeline (`timeline`), by stream position.
    Live,
}

/// A gap in a room's whole order: within the history (just before the
/// event at depth, short ID), or within the live timeline (just before
/// the stream position). All history lies before all of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gap {
    History { depth: u64, short: u64 },
    Live(u64),
}

impl Gap {
    /// The gaps just before and just after an event, in history or the
    /// timeline.
    pub fn around(short: u64, meta: &EventMeta) -> (Self, Self) {
        match meta.status {
            super::Status::History => (
                Gap::History { depth: meta.depth, short },
                Gap::History { depth: meta.depth, short: short + 1 },
            ),
            _ => (Gap::Live(meta.stream), Gap::Live(meta.stream + 1)),
        }
    }

    /// The gap after all history.
    pub fn history_end() -> Self {
        Gap::History { depth: u64::MAX, short: u64::MAX }
    }

    fn order(&self) -> Order {
        match self {
            Gap::History { .. } => Order::History,
            Gap::Live(_) => Order::Live,
        }
    }

    fn split(&self) -> (Order, Vec<u8>) {
        match *self {
            Gap::History { depth, short } => {
                (Order::History, [depth.to_be_bytes(), short.to_be_bytes()].concat())
            }
            Gap::Live(position) => (Order::Live, position.to_be_bytes().to_vec()),
        }
    }

    fn join(order: Order, gap: &[u8]) -> Result<Self> {
        Ok(match order {
            // (Past the last key, the 9-byte marker of `after`, is the end.)
            Order::History if gap.len() != 16 => Gap::history_end(),
            Order::History => Gap::History { depth: decode_u64(&gap[..8])?, short: decode_u64(&gap[8..])? },
            Order::Live if gap.len() != 8 => Gap::Live(u64::MAX),
            Order::Live => Gap::Live(decode_u64(gap)?),
        })
    }
}

/// One page over the room's whole order.
pub struct GapPage {
    pub events: Vec<Value>,
    pub shorts: Vec<u64>,
    pub next: Option<Gap>,
    pub cursor: Gap,
}

/// How a scan reads.
#[derive(Clone, Copy)]
struct Scan<'a> {
    viewer: &'a UserId,
    viewer_device: Option<&'a ruma::DeviceId>,
    backwards: bool,
    limit: usize,
    sight: Sight,
}

/// Which events a scan shows.
#[derive(Clone, Copy)]
enum Sight {
    /// Those history visibility lets the viewer see.
    Visible,
    /// Those, and the events of the current state (sync).
    WithCurrentState,
    /// All (a server admin's view).
    Everything,
}

/// What a scan found: events, the gap before each, their short IDs, where
/// a next page starts (if there may be one) and where the scan stopped.
struct Found {
    events: Vec<Value>,
    gaps: Vec<Vec<u8>>,
    shorts: Vec<u64>,
    next: Option<Vec<u8>>,
    cursor: Vec<u8>,
}

impl Rooms {
    /// The visible event nearest to `ts`: the first at or after it going
    /// forwards, the last at or before it going backwards.
    pub fn event_at_timestamp(
        &self,
        room_short: u64,
        viewer: &UserId,
        ts: u64,
        forwards: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        self.event_near(room_short, ts, forwards, |pdu, meta| self.can_see(viewer, pdu, meta))
    }

    /// The event sent nearest `ts` in one direction that `visible` allows
    /// (clients' and other servers' `timestamp_to_event`).
    pub fn event_near(
        &self,
        room_short: u64,
        ts: u64,
        forwards: bool,
        visible: impl Fn(&Pdu, &EventMeta) -> Result<bool>,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        let prefix = room_short.to_be_bytes();
        let start = [prefix, ts.to_be_bytes(), if forwards { 0 } else { u64::MAX }.to_be_bytes()].concat();
        // By the sending-time index, at most [`SCAN_BUDGET`] rows: the
        // nearest visible event, not a walk through the room's history.
        let rows =
            self.db.scan_range(&maps::ROOM_TIMESTAMPS, &prefix, Some(&start), !forwards, SCAN_BUDGET)?;
        for (k, v) in rows {
            let short = decode_u64(&v)?;
            let (Some(pdu), Some(meta)) = (self.pdu_by_short(short)?, self.event_meta(short)?) else {
                continue;
            };
            if visible(&pdu, &meta)? {
                return Ok(Some((pdu.event_id, decode_u64(&k[8..16])?)));
            }
        }
        Ok(None)
    }
}

impl Rooms {
    /// The room state a user may read: the current state for members (and
    /// anyone, in a world-readable room); for those who left, the state as
    /// it was when they left; nothing for everyone else (a banned user
    /// included, as Synapse and SyTest have it), or once the user has
    /// forgotten the room.
    pub fn readable_state(
        &self,
        user: &UserId,
        room_short: u64,
        record: &super::RoomRecord,
    ) -> Result<Option<std::sync::Arc<StateMap>>> {
        if self.is_forgotten(user, room_short)? {
            return Ok(None);
        }
        let current = self.current_state(record)?;
        let world_readable = self.is_world_readable(room_short)?;
        match self.membership(user, room_short)?.as_deref() {
            Some("join") => Ok(Some(current)),
            _ if world_readable => Ok(Some(current)),
            Some("leave") => {
                let Some(member) = self.state_event(&current, "m.room.member", user.as_str())? else {
                    return Ok(None);
                };
                let short = self
                    .event_short(&member.event_id)?
                    .ok_or_else(|| Error::internal("member event without short ID"))?;
                match self.event_meta(short)?.and_then(|m| m.state_after) {
                    Some(id) => Ok(Some(self.state.load(id)?)),
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }
}

impl Rooms {
    /// For a user who left or was banned (in a room that is not
    /// world-readable): the gap just after their membership event, past which
    /// nothing is visible to them. `None` when no such bound applies.
    pub fn visible_end(&self, user: &UserId, room_short: u64) -> Result<Option<u64>> {
        if !matches!(self.membership(user, room_short)?.as_deref(), Some("leave" | "ban")) {
            return Ok(None);
        }
        let Some(member) = self.current_state_event(room_short, "m.room.member", user.as_str())? else {
            return Ok(None);
        };
        if self.is_world_readable(room_short)? {
            return Ok(None);
        }
        Ok(Some(self.membership_changed_at(user, room_short, &member)? + 1))
    }

    /// Where the user's membership in the room last changed, if recorded.
    pub fn membership_since(&self, user: &UserId, room_short: u64) -> Result<Option<u64>> {
        let key = crate::storage::key(&[user.as_bytes(), &room_short.to_be_bytes()]);
        Ok(self.db.get(&maps::MEMBERSHIP_SINCE, &key)?.map(|v| decode_u64(&v)).transpose()?)
    }

    /// The stream position at which the user's current membership took
    /// effect: where the current state changed (for a membership that won a
    /// state resolution, not its member event's own position).
    pub fn membership_changed_at(&self, user: &UserId, room_short: u64, member: &Pdu) -> Result<u64> {
        let since = self.membership_since(user, room_short)?;
        let short = self
            .event_short(&member.event_id)?
            .ok_or_else(|| Error::internal("member event without short ID"))?;
        let own = self.event_meta(short)?.map_or(0, |meta| meta.stream);
        Ok(since.unwrap_or(0).max(own))
    }
}

/// Whether an event passes a room event filter's type and sender lists.
pub fn filter_allows(filter: &ruma::api::client::filter::RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind.to_string();
    let type_matches = |pattern: &String| util::glob_match(pattern, &kind);
    if filter.types.as_ref().is_some_and(|types| !types.iter().any(type_matches)) {
        return false;
    }
    if filter.not_types.iter().any(type_matches) {
        return false;
    }
    if filter.senders.as_ref().is_some_and(|s| !s.contains(&pdu.sender))
        || filter.not_senders.contains(&pdu.sender)
    {
        return false;
    }
    true
}
