//! Simplified sliding sync (MSC4186, the unstable dialect Synapse serves at
//! `/_matrix/client/unstable/org.matrix.simplified_msc3575/sync`): the sync
//! Element X and every app on matrix-rust-sdk's room list speak. Lists of
//! the user's rooms in windows ([`lists`]), room subscriptions, and
//! extensions ([`extensions`]) over long-lived connections whose every
//! `pos` names what the client was sent (`users::sliding`).
//!
//! A request is answered at once when there is something to say (or no
//! `pos`, or no `timeout`); else when something arrives for the user, or
//! the timeout passes, with the lists' counts and a new `pos`.

mod extensions;
pub mod lists;
pub mod required;
mod room;
pub mod stable;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use ruma::{
    DeviceId, OwnedRoomId, RoomId, UInt, UserId,
    api::client::sync::sync_events::v5::{self, response},
    directory::RoomTypeFilter,
};

use self::{
    extensions::InScope,
    lists::{Entry, Filters, RoomKey, Standing},
};
use crate::{
    Error, Result,
    services::Services,
    users::sliding::{Pos, RoomConfig, Snapshot, unknown_pos},
};

/// The longest a long poll is held.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Lists and room subscriptions per request at most (the MSC's bound).
const MAX_LISTS: usize = 100;

/// One request as the builders see it.
pub struct Context<'a> {
    pub services: &'a Services,
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    /// The stream position of the request's `pos` (`None`: a new connection).
    pub since: Option<u64>,
    pub request: &'a Request,
}

/// A request, in either dialect.
#[derive(Debug, Default)]
pub struct Request {
    pub conn_id: String,
    pub pos: Option<String>,
    pub timeout: Duration,
    pub txn_id: Option<String>,
    pub lists: BTreeMap<String, List>,
    pub subscriptions: BTreeMap<OwnedRoomId, RoomConfig>,
    pub extensions: v5::request::Extensions,
}

/// One list of a request.
#[derive(Debug, Default)]
pub struct List {
    /// Inclusive windows (`(0, u64::MAX)`: the whole list).
    pub ranges: Vec<(u64, u64)>,
    pub config: RoomConfig,
    pub filters: Filters,
    /// Only the rooms these spaces name as children (the stable dialect).
    pub spaces: Option<Vec<OwnedRoomId>>,
}

impl Request {
    /// The unstable dialect's request (what matrix-rust-sdk sends).
    pub fn unstable(request: &v5::Request) -> Self {
        let lists = request
            .lists
            .iter()
            .map(|(name, list)| {
                let list = List {
                    ranges: list.ranges.iter().map(|(a, b)| (u64::from(*a), u64::from(*b))).collect(),
                    config: config(list.room_details.timeline_limit, &list.room_details.required_state),
                    filters: filters(list.filters.as_ref()),
                    spaces: None,
                };
                (name.clone(), list)
            })
            .collect();
        Self {
            conn_id: request.conn_id.clone().unwrap_or_default(),
            pos: request.pos.clone(),
            timeout: request.timeout.unwrap_or_default(),
            txn_id: request.txn_id.clone(),
            lists,
            subscriptions: request
                .room_subscriptions
                .iter()
                .map(|(room, s)| (room.clone(), config(s.timeline_limit, &s.required_state)))
                .collect(),
            extensions: request.extensions.clone(),
        }
    }
}

/// What the stable dialect says of a room beyond the unstable one.
#[derive(Debug, Default)]
pub struct RoomExtra {
    pub membership: Option<String>,
    /// The lists whose windows hold the room.
    pub lists: Vec<String>,
    /// The latest events again, for a larger `timeline_limit`.
    pub expanded_timeline: bool,
    /// The name was removed.
    pub name_removed: bool,
}

/// A response, with what the stable dialect adds per room.
pub struct Answer {
    pub response: v5::Response,
    pub extras: BTreeMap<OwnedRoomId, RoomExtra>,
}

/// The local rooms a response covers: in a list's windows, or subscribed.
#[derive(Default)]
pub struct Relevant {
    pub by_list: BTreeMap<String, Vec<u64>>,
    pub all: BTreeSet<u64>,
    pub ids: BTreeMap<OwnedRoomId, u64>,
}

/// Answers a sliding sync request of `user`'s `device`.
pub async fn sync(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
    request: &Request,
) -> Result<Answer> {
    if request.lists.len() > MAX_LISTS || request.subscriptions.len() > MAX_LISTS {
        return Err(Error::invalid_param("At most 100 lists and 100 room subscriptions"));
    }
    let conn_id = request.conn_id.as_str();
    let now = crate::util::now_ms();
    let pos = request.pos.as_deref().map(Pos::parse).transpose()?;
    let visible = services.stream.visible();
    if pos.is_some_and(|pos| pos.upto > visible) {
        return Err(unknown_pos());
    }
    let snapshot = match pos {
        Some(pos) => services.users.sliding.resume(user, device, conn_id, pos, now)?,
        None => Snapshot::default(),
    };
    let cx = Context { services, user, device, since: pos.map(|p| p.upto), request };
    // What the device acknowledged by coming back with this `since` is done.
    if let Some(since) = extensions::to_device_since(&request.extensions.to_device)? {
        services.users.acknowledge_to_device(user, device, since.min(visible))?;
    }
    let (mut answer, mut next) = build(&cx, &snapshot, visible)?;
    let timeout = request.timeout.min(MAX_TIMEOUT);
    if pos.is_some() && !timeout.is_zero() && is_empty(&answer.response) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut checked = visible;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let position = services
                .stream
                .wait(checked, remaining, |topic| super::concerns(services, user, topic))
                .await;
            if position == checked {
                break;
            }
            (answer, next) = build(&cx, &snapshot, position)?;
            if !is_empty(&answer.response) {
                break;
            }
            checked = position;
        }
    }
    // A connection without lists nor subscriptions (the encryption one)
    // has nothing to remember.
    let new_pos = match request.lists.is_empty() && request.subscriptions.is_empty() {
        true => Pos { snapshot: 0, upto: next.upto },
        false => services.users.sliding.record(user, device, conn_id, pos.map(|p| p.snapshot), next, now)?,
    };
    answer.response.pos = new_pos.to_string();
    answer.response.txn_id = request.txn_id.clone();
    Ok(answer)
}

fn is_empty(response: &v5::Response) -> bool {
    let extensions = &response.extensions;
    response.rooms.is_empty()
        && extensions.to_device.as_ref().is_none_or(|t| t.events.is_empty())
        && extensions.e2ee.device_lists.is_empty()
        && extensions.account_data.is_empty()
        && extensions.receipts.is_empty()
        && extensions.typing.is_empty()
}

/// The response as of `upto` to a connection that had `snapshot`, and what
/// it has after it.
fn build(cx: &Context, snapshot: &Snapshot, upto: u64) -> Result<(Answer, Snapshot)> {
    let rooms = &cx.services.rooms;
    let pending = lists::pending_remote_invites(cx.services, cx.user)?;
    let mut entries = lists::gather(cx.services, cx.user, &pending, |room, left_at| {
        keep_left(cx, snapshot, room, left_at, upto)
    })?;
    if cx.request.lists.values().any(|l| !l.filters.tags.is_empty() || !l.filters.not_tags.is_empty()) {
        lists::add_tags(cx.services, cx.user, &mut entries)?;
    }
    lists::sort(&mut entries);
    let mut response = v5::Response::new(String::new());
    let mut configs: BTreeMap<RoomKey, Vec<RoomConfig>> = BTreeMap::new();
    let mut in_lists: BTreeMap<RoomKey, Vec<String>> = BTreeMap::new();
    let mut relevant = Relevant::default();
    for (name, list) in &cx.request.lists {
        let mut filters = list.filters.clone();
        if let Some(spaces) = &list.spaces {
            filters.in_spaces = Some(lists::space_children(cx.services, cx.user, spaces)?);
        }
        let (count, keys) = lists::window(&entries, &filters, &list.ranges);
        let mut counted = response::List::default();
        counted.count = UInt::try_from(count).unwrap_or_default();
        response.lists.insert(name.clone(), counted);
        let in_list = relevant.by_list.entry(name.clone()).or_default();
        for key in keys {
            if let RoomKey::Local(short) = key {
                in_list.push(short);
            }
            in_lists.entry(key.clone()).or_default().push(name.clone());
            configs.entry(key).or_default().push(list.config.clone());
        }
    }
    for (room_id, config) in &cx.request.subscriptions {
        if let Some(key) = subscribed(cx, &entries, room_id)? {
            configs.entry(key).or_default().push(config.clone());
        }
    }

    let by_key: HashMap<&RoomKey, &Entry> = entries.iter().map(|e| (&e.room, e)).collect();
    let mut next = Snapshot { upto, ..Snapshot::default() };
    let mut in_scope = Vec::new();
    let mut extras = BTreeMap::new();
    // The local rooms to look at, then built (in parallel when several),
    // then put in the response in order.
    let mut jobs = Vec::new();
    for (key, configs) in &configs {
        let config = required::merge(configs);
        match key {
            RoomKey::Local(short) => {
                let short = *short;
                let entry = by_key.get(key);
                let before = snapshot
                    .room(short)
                    .map(|(config, behind)| room::Before { config, at: behind.unwrap_or(snapshot.upto) });
                let build = match before {
                    Some(before) => news(cx, short, &config, before)?,
                    None => true,
                };
                let stamp = match entry {
                    Some(entry) => entry.stamp,
                    None if build => rooms.membership_since(cx.user, short)?.unwrap_or_default(),
                    None => 0,
                };
                let job = Job {
                    key,
                    short,
                    config,
                    before,
                    build,
                    stamp,
                    is_dm: entry.is_some_and(|e| e.is_dm),
                    joined: entry.is_some_and(|e| e.standing == Standing::Joined),
                };
                jobs.push(job);
            }
            RoomKey::Remote(room_id) => {
                let Some(invite) = pending.get(room_id) else { continue };
                if snapshot.remote.get(room_id) != Some(&invite.position) {
                    response.rooms.insert(room_id.clone(), room::remote(invite)?);
                    let membership = Some(if invite.knock { "knock" } else { "invite" }.to_owned());
                    let lists = in_lists.remove(key).unwrap_or_default();
                    extras.insert(room_id.clone(), RoomExtra { membership, lists, ..RoomExtra::default() });
                }
                next.remote.insert(room_id.clone(), invite.position);
            }
        }
    }
    let built = build_rooms(cx, &jobs, upto)?;
    for (job, built) in jobs.iter().zip(built) {
        let room_id = OwnedRoomId::try_from(rooms.short.name(job.short)?).map_err(Error::internal)?;
        let mut scoped = InScope {
            short: job.short,
            room_id: room_id.clone(),
            since: job.before.map(|b| b.at),
            timeline: BTreeSet::new(),
            joined: job.joined,
        };
        if let Some(built) = built {
            if built.initial {
                scoped.since = None;
            }
            scoped.timeline = built.timeline;
            response.rooms.insert(room_id.clone(), built.room);
            let lists = in_lists.remove(job.key).unwrap_or_default();
            extras.insert(room_id.clone(), RoomExtra { lists, ..built.extra });
        }
        in_scope.push(scoped);
        relevant.all.insert(job.short);
        relevant.ids.insert(room_id, job.short);
        next.set_room(job.short, &job.config, None);
    }
    // Rooms the connection had that no list window nor subscription covers
    // now: the client has them as they were.
    for short in snapshot.rooms.keys() {
        if !relevant.all.contains(short)
            && let Some((config, behind)) = snapshot.room(*short)
        {
            next.set_room(*short, config, Some(behind.unwrap_or(snapshot.upto)));
        }
    }
    rescinded_invites(cx, snapshot, &pending, upto, &mut response)?;
    extensions::build(cx, &relevant, &in_scope, upto, &mut response.extensions)?;
    Ok((Answer { response, extras }, next))
}

/// A local room of the response.
struct Job<'a> {
    key: &'a RoomKey,
    short: u64,
    config: RoomConfig,
    before: Option<room::Before<'a>>,
    /// Whether it may have news (else it is not built).
    build: bool,
    stamp: u64,
    is_dm: bool,
    joined: bool,
}

/// Rooms at least this many are built on every core.
const PARALLEL_FROM: usize = 4;

/// Builds the rooms that may have news (a connection's first response
/// builds every room of its windows: on every core).
fn build_rooms(cx: &Context, jobs: &[Job], upto: u64) -> Result<Vec<Option<room::Built>>> {
    let one = |job: &Job| match job.build {
        true => room::local(cx, job.short, &job.config, job.before, job.stamp, job.is_dm, upto),
        false => Ok(None),
    };
    let building = jobs.iter().filter(|j| j.build).count();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(building);
    if building < PARALLEL_FROM || threads < 2 {
        return jobs.iter().map(one).collect();
    }
    // Job i goes to thread i mod n; the results come back in order.
    let mut done: Vec<Vec<Result<Option<room::Built>>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let one = &one;
                scope.spawn(move || jobs.iter().skip(t).step_by(threads).map(one).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a room builder panicked")).collect()
    });
    let mut out = Vec::with_capacity(jobs.len());
    let mut iters: Vec<_> = done.iter_mut().map(|d| d.drain(..)).collect();
    for i in 0..jobs.len() {
        out.push(iters[i % threads].next().expect("one result per job")?);
    }
    Ok(out)
}

/// Whether a room the connection has as of `before` may have news for it:
/// events since, or a configuration asking for more than it had.
fn news(cx: &Context, short: u64, config: &RoomConfig, before: room::Before) -> Result<bool> {
    let rooms = &cx.services.rooms;
    if config.timeline_limit > before.config.timeline_limit
        || required::Wanted::new(config, cx.user.as_str())
            .grew_from(&required::Wanted::new(before.config, cx.user.as_str()))
    {
        return Ok(true);
    }
    Ok(rooms.latest_position(short)? > before.at
        || rooms.membership_since(cx.user, short)?.is_some_and(|at| at > before.at))
}

/// Whether lists show a room the user no longer is in: one they were
/// removed from (kicked, banned), or left themselves since the
/// connection's `pos`, or left while the connection had it and was not
/// told yet.
fn keep_left(cx: &Context, snapshot: &Snapshot, room: u64, left_at: u64, upto: u64) -> Result<bool> {
    if left_at > upto {
        return Ok(false);
    }
    let removed = cx
        .services
        .rooms
        .current_state_event(room, "m.room.member", cx.user.as_str())?
        .is_some_and(|member| member.sender != cx.user);
    let newly = cx.since.is_some_and(|since| left_at > since);
    let untold = snapshot.room(room).is_some_and(|(_, behind)| behind.unwrap_or(snapshot.upto) < left_at);
    Ok(removed || newly || untold)
}

/// The room a subscription names, if the user has (or had) a membership
/// there, or a pending invite over federation.
fn subscribed(cx: &Context, entries: &[Entry], room_id: &RoomId) -> Result<Option<RoomKey>> {
    let rooms = &cx.services.rooms;
    if let Some(short) = rooms.room_short(room_id)? {
        let key = RoomKey::Local(short);
        // Beyond the lists' rooms: one the user left (not an invite the
        // lists leave out, from someone ignored).
        let left = matches!(rooms.membership(cx.user, short)?.as_deref(), Some("leave" | "ban"));
        if entries.iter().any(|e| e.room == key) || (left && !rooms.is_forgotten(cx.user, short)?) {
            return Ok(Some(key));
        }
    }
    let key = RoomKey::Remote(room_id.to_owned());
    Ok(entries.iter().any(|e| e.room == key).then_some(key))
}

/// Invites over federation the connection was sent that were since
/// rejected or withdrawn: the leave, as the room's own membership.
fn rescinded_invites(
    cx: &Context,
    snapshot: &Snapshot,
    pending: &BTreeMap<OwnedRoomId, crate::rooms::invites::RemoteInvite>,
    upto: u64,
    response: &mut v5::Response,
) -> Result<()> {
    if snapshot.remote.keys().all(|room| pending.contains_key(room)) {
        return Ok(());
    }
    for (room_id, invite) in cx.services.rooms.remote_invites(cx.user)? {
        let sent = snapshot.remote.get(&room_id);
        if let Some(leave) = &invite.rejected
            && sent.is_some_and(|sent| *sent < invite.position)
            && invite.position <= upto
        {
            let mut room = response::Room::new();
            room.required_state.push(crate::util::raw(leave.clone())?);
            room.timeline.push(crate::util::raw(leave.clone())?);
            response.rooms.insert(room_id, room);
        }
    }
    Ok(())
}

/// A list's or subscription's configuration as stored.
fn config(timeline_limit: UInt, required_state: &[(ruma::events::StateEventType, String)]) -> RoomConfig {
    RoomConfig {
        timeline_limit: timeline_limit.into(),
        required_state: required_state.iter().map(|(kind, key)| (kind.to_string(), key.clone())).collect(),
        exclude: Default::default(),
    }
}

fn filters(request: Option<&v5::request::ListFilters>) -> Filters {
    let Some(request) = request else { return Filters::default() };
    let kinds = |types: &[RoomTypeFilter]| -> Vec<Option<String>> {
        types
            .iter()
            .map(|t| match t {
                RoomTypeFilter::Default => None,
                other => other.as_str().map(str::to_owned),
            })
            .collect()
    };
    Filters {
        is_dm: request.is_dm,
        is_encrypted: request.is_encrypted,
        is_invite: request.is_invite,
        room_types: kinds(&request.room_types),
        not_room_types: kinds(&request.not_room_types),
        ..Filters::default()
    }
}
