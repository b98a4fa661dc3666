//! `/sync`: what changed for a user between two stream positions, and the
//! long poll that waits for the next change.
//!
//! A sync token `s<p>` says "everything up to stream position `p` was seen".
//! An incremental sync finds the rooms that changed in `(since, upto]` from
//! the stream itself (its cost follows the changes, not the number of rooms
//! the user is in) and builds each room's section; a long poll with nothing
//! to say waits on the stream for a change in one of the user's rooms or of
//! the user's own data.
//!
//! Send-to-device messages are capped per response; when the cap cuts them
//! short the token also carries the last one delivered, `s<p>_<t>`, so the
//! next sync acknowledges (deletes) only those and delivers the rest.

mod e2ee;
mod rooms;
pub mod sliding;

pub use e2ee::device_lists;

use std::{collections::BTreeSet, time::Duration};

use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::client::{filter::FilterDefinition, sync::sync_events::v3 as sync},
};

use crate::{
    Error, Result,
    presence::share_a_room,
    services::Services,
    storage::{decode_u64, maps},
    stream::Topic,
    util::raw,
};

/// Past this many stream entries since the last sync, the changed rooms are
/// found by asking each of the user's rooms instead of reading the stream.
const STREAM_SCAN_LIMIT: usize = 5_000;
/// The longest a long poll is held.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Params {
    pub user: OwnedUserId,
    pub device: OwnedDeviceId,
    pub since: Option<u64>,
    /// The last send-to-device message the client has (`since` unless the
    /// token says otherwise).
    pub to_device_since: Option<u64>,
    pub full_state: bool,
    pub filter: FilterDefinition,
    pub timeout: Duration,
    pub use_state_after: bool,
    /// Deliver and acknowledge send-to-device messages (not for the legacy
    /// `/events` and `/initialSync`, which must leave them to `/sync`).
    pub to_device: bool,
    /// A world-readable room the user is not in but looks into, as if
    /// joined (the legacy `/events?room_id=` and room initialSync; never
    /// from `/sync`): its world-readable events, ephemeral events and its
    /// members' presence.
    pub peek: Option<u64>,
    /// The window ends here at the latest (the legacy `/events` with a
    /// `limit`); never from `/sync`.
    pub upto: Option<u64>,
}

pub fn token(position: u64) -> String {
    format!("s{position}")
}

/// The stream position of a sync token.
pub fn parse_token(token: &str) -> Result<u64> {
    parse_sync_token(token).map(|(position, _)| position)
}

/// A sync token's stream position and last send-to-device message.
pub fn parse_sync_token(token: &str) -> Result<(u64, u64)> {
    let parsed = token.strip_prefix('s').and_then(|rest| match rest.split_once('_') {
        None => rest.parse().ok().map(|p| (p, p)),
        Some((p, t)) => Some((p.parse().ok()?, t.parse().ok()?)),
    });
    // Synapse's answer to a token it cannot read.
    parsed.ok_or_else(|| {
        Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Invalid stream token",
        )
    })
}

/// Answers a sync: at once if there is something to say (or no `since`, or
/// `full_state`), else when something arrives or the timeout passes.
pub async fn sync(services: &Services, params: &Params) -> Result<sync::Response> {
    let visible = services.stream.visible();
    let upto = params.upto.map_or(visible, |cap| cap.min(visible));
    if params.since.is_none() {
        services.users.sent_members.forget(&params.user, &params.device);
    }
    // What the client acknowledged by coming back with this token is done;
    // deleted once here, not in every build of a long poll.
    if params.since.is_some() && params.to_device {
        services.users.acknowledge_to_device(
            &params.user,
            &params.device,
            to_device_acknowledged(params, upto),
        )?;
    }
    let response = build(services, params, upto)?;
    let capped = upto < visible;
    if params.since.is_none()
        || params.full_state
        || !is_empty(&response)
        || params.timeout.is_zero()
        || capped
    {
        return Ok(response);
    }
    let deadline = tokio::time::Instant::now() + params.timeout.min(MAX_TIMEOUT);
    let mut checked = upto;
    let mut response = response;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let position = match remaining.is_zero() {
            true => checked,
            false => {
                services.stream.wait(checked, remaining, |topic| interested(services, params, topic)).await
            }
        };
        if position == checked {
            // Nothing for this user up to `checked`: the next sync starts there.
            response.next_batch = token(checked);
            return Ok(response);
        }
        response = build(services, params, position)?;
        if !is_empty(&response) {
            return Ok(response);
        }
        checked = position;
    }
}

/// Presence that changed (all of it, initially) of users who share a room
/// with the syncing user, and the user's own.
fn presence(
    services: &Services,
    params: &Params,
    upto: u64,
) -> Result<Vec<ruma::serde::Raw<ruma::events::presence::PresenceEvent>>> {
    let mut events = Vec::new();
    for user in services.presence.changed(params.since, upto)? {
        if !presence_wanted(params, &user) {
            continue;
        }
        if user != params.user
            && !share_a_room(&services.rooms, &params.user, &user)?
            && !in_peeked(services, params, &user)
        {
            continue;
        }
        events.push(raw(presence_event(services, &user)?)?);
    }
    Ok(events)
}

/// A user's presence event, with their profile; offline for a user whose
/// presence was never recorded (as Synapse answers for them).
pub fn presence_event(services: &Services, user: &ruma::UserId) -> Result<serde_json::Value> {
    Ok(match services.presence.record(user)? {
        Some(record) => {
            let profile = services.users.profile(user)?.map(serde_json::Value::Object);
            services.presence.event(user, &record, profile.as_ref())
        }
        None => serde_json::json!({"type": "m.presence", "sender": user, "content": {"presence": "offline"}}),
    })
}

/// Whether a change may concern the syncing user.
fn interested(services: &Services, params: &Params, topic: &Topic) -> bool {
    match topic {
        Topic::Room(room) if params.peek == Some(*room) => true,
        Topic::AboutUser(user) if in_peeked(services, params, user) => true,
        _ => concerns(services, &params.user, topic),
    }
}

/// Whether a change may concern `user`: news of a room they have a
/// membership in, their own data, or a user they share a room with.
fn concerns(services: &Services, user: &ruma::UserId, topic: &Topic) -> bool {
    match topic {
        Topic::Room(room) => services.rooms.membership(user, *room).ok().flatten().is_some(),
        Topic::User(other) => other == user,
        Topic::AboutUser(other) => {
            other == user || share_a_room(&services.rooms, user, other).unwrap_or(false)
        }
        Topic::Pushes => false,
    }
}

/// Whether `user` is joined to the room the sync peeks into.
fn in_peeked(services: &Services, params: &Params, user: &ruma::UserId) -> bool {
    params
        .peek
        .is_some_and(|room| services.rooms.membership(user, room).ok().flatten().as_deref() == Some("join"))
}

fn is_empty(response: &sync::Response) -> bool {
    let rooms = &response.rooms;
    rooms.join.is_empty()
        && rooms.invite.is_empty()
        && rooms.leave.is_empty()
        && rooms.knock.is_empty()
        && response.account_data.events.is_empty()
        && response.presence.events.is_empty()
        && response.to_device.events.is_empty()
        && response.device_lists.is_empty()
}

/// The response for `(since, upto]`.
fn build(services: &Services, params: &Params, upto: u64) -> Result<sync::Response> {
    let mut response = sync::Response::new(token(upto));
    let account_data = services.users.account_data_since(&params.user, params.since, upto)?;
    // Clients read their push rules from sync: the defaults too, initially.
    if params.since.is_none()
        && rooms::allowed_by(
            params.filter.account_data.types.as_deref(),
            &params.filter.account_data.not_types,
            "m.push_rules",
        )
        && let Some(event) = default_push_rules(services, &params.user)?
    {
        response.account_data.events.push(raw(event)?);
    }
    let mut room_data = std::collections::BTreeMap::new();
    for (room, kind, content) in account_data {
        let event = serde_json::json!({"type": kind, "content": content});
        match room {
            None => {
                if rooms::allowed_by(
                    params.filter.account_data.types.as_deref(),
                    &params.filter.account_data.not_types,
                    &kind,
                ) {
                    response.account_data.events.push(raw(event)?);
                }
            }
            Some(room) => room_data.entry(room).or_insert_with(Vec::new).push((kind, event)),
        }
    }

    if services.presence.enabled {
        response.presence.events = presence(services, params, upto)?;
    }
    let mut candidates = changed_rooms(services, params, upto)?;
    for room in room_data.keys() {
        if let Some(short) = services.rooms.room_short(room)? {
            candidates.insert(short);
        }
    }
    // Rooms whose receipts or typing changed.
    let mut receipts = None;
    if let Some(since) = params.since.filter(|_| !params.full_state) {
        receipts = services.rooms.receipt_changes(since, upto, STREAM_SCAN_LIMIT)?;
        match &receipts {
            Some(changes) => candidates.extend(changes.keys().copied()),
            None => candidates.extend(services.rooms.memberships(&params.user)?.into_iter().map(|(r, _)| r)),
        }
        candidates.extend(services.rooms.typing.rooms_changed(since, upto));
    }
    e2ee(services, params, upto, &mut response)?;
    let mut builder = rooms::RoomSync {
        services,
        params,
        upto,
        response: &mut response,
        room_data,
        receipts,
        presence_of: BTreeSet::new(),
    };
    for room_short in candidates {
        builder.room(room_short)?;
    }
    let newly_met = std::mem::take(&mut builder.presence_of);
    remote_invites(services, params, upto, &mut response)?;
    if services.presence.enabled {
        add_presence_of(services, params, newly_met, &mut response)?;
    }
    Ok(response)
}

/// Invites to rooms this server is not in, new in the window (all of them
/// initially), and their rejections.
fn remote_invites(
    services: &Services,
    params: &Params,
    upto: u64,
    response: &mut sync::Response,
) -> Result<()> {
    let ignored = services.users.ignored_users(&params.user)?;
    for (room_id, invite) in services.rooms.remote_invites(&params.user)? {
        if invite.position > upto || params.since.is_some_and(|since| invite.position <= since) {
            continue;
        }
        if let Some(short) = services.rooms.room_short(&room_id)?
            && services.rooms.membership(&params.user, short)?.is_some()
            && services.rooms.membership_since(&params.user, short)?.is_none_or(|at| at > invite.position)
        {
            // The room is known, and the user's membership there is newer
            // than the invite: its own section says it all.
            continue;
        }
        match &invite.rejected {
            None if invite.sender().is_none_or(|s| !ignored.contains(&s)) => {
                let events = invite.stripped_state()?.into_iter().map(raw).collect::<Result<_>>()?;
                if invite.knock {
                    let mut knocked = sync::KnockedRoom::new();
                    knocked.knock_state.events = events;
                    response.rooms.knock.insert(room_id, knocked);
                } else {
                    let mut invited = sync::InvitedRoom::new();
                    invited.invite_state.events = events;
                    response.rooms.invite.insert(room_id, invited);
                }
            }
            Some(leave) if params.since.is_some() => {
                let mut left = sync::LeftRoom::new();
                left.timeline.events.push(raw(leave.clone())?);
                response.rooms.leave.insert(room_id, left);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Presence of users the client has just met (the members of a room it
/// joined, a member who joined its room), changed or not, as Synapse sends
/// it: offline for a user never seen.
fn add_presence_of(
    services: &Services,
    params: &Params,
    users: BTreeSet<OwnedUserId>,
    response: &mut sync::Response,
) -> Result<()> {
    let already: BTreeSet<String> = response
        .presence
        .events
        .iter()
        .filter_map(|event| event.get_field::<String>("sender").ok().flatten())
        .collect();
    for user in users {
        if user == params.user || already.contains(user.as_str()) || !presence_wanted(params, &user) {
            continue;
        }
        response.presence.events.push(raw(presence_event(services, &user)?)?);
    }
    Ok(())
}

/// Whether the presence filter lets a user's presence through.
fn presence_wanted(params: &Params, user: &OwnedUserId) -> bool {
    let filter = &params.filter.presence;
    rooms::allowed_by(filter.types.as_deref(), &filter.not_types, "m.presence")
        && filter.senders.as_ref().is_none_or(|s| s.contains(user))
        && !filter.not_senders.contains(user)
}

/// The last send-to-device message the client has: never past `upto`, so a
/// forged token cannot delete messages not yet delivered.
fn to_device_acknowledged(params: &Params, upto: u64) -> u64 {
    params.to_device_since.or(params.since).unwrap_or(0).min(upto)
}

/// The device's one-time key counts, fallback keys and send-to-device
/// messages, and (incrementally) device-list changes.
fn e2ee(services: &Services, params: &Params, upto: u64, response: &mut sync::Response) -> Result<()> {
    let users = &services.users;
    let (user, device) = (&params.user, &params.device);
    let (counts, fallback) = key_counts(services, user, device)?;
    response.device_one_time_keys_count = counts;
    response.device_unused_fallback_key_types = Some(fallback);
    if let Some(since) = params.since {
        response.device_lists = device_lists(services, user, since, upto)?;
    }
    if !params.to_device {
        return Ok(());
    }
    let acknowledged = to_device_acknowledged(params, upto);
    let messages = users.to_device_messages(user, device, acknowledged, upto, e2ee::TO_DEVICE_LIMIT)?;
    if messages.len() == e2ee::TO_DEVICE_LIMIT
        && let Some((last, _)) = messages.last()
        && *last < upto
    {
        response.next_batch = format!("s{upto}_{last}");
    }
    response.to_device.events = messages.into_iter().map(|(_, m)| m).collect();
    Ok(())
}

/// The device's one-time key counts by algorithm, and its unused fallback
/// key types (`/sync` and sliding sync's `e2ee` extension).
pub fn key_counts(
    services: &Services,
    user: &ruma::UserId,
    device: &ruma::DeviceId,
) -> Result<(std::collections::BTreeMap<ruma::OneTimeKeyAlgorithm, ruma::UInt>, Vec<ruma::OneTimeKeyAlgorithm>)>
{
    let users = &services.users;
    let counts = users
        .one_time_key_counts(user, device)?
        .into_iter()
        .map(|(algorithm, count)| (algorithm.into(), count.try_into().unwrap_or_default()))
        .collect();
    let fallback = users.unused_fallback_key_types(user, device)?.into_iter().map(Into::into).collect();
    Ok((counts, fallback))
}

/// The default push rules as the account data event clients read, unless
/// the user has stored their own (then it is among their account data).
pub fn default_push_rules(services: &Services, user: &ruma::UserId) -> Result<Option<serde_json::Value>> {
    if services.users.account_data(user, None, "m.push_rules")?.is_some() {
        return Ok(None);
    }
    let rules = services.users.push_rules(user)?;
    Ok(Some(serde_json::json!({"type": "m.push_rules", "content": {"global": rules.global()?}})))
}

/// The rooms (short IDs) the user has a membership in whose timeline moved
/// in `(since, upto]`; all of the user's rooms for an initial or full-state
/// sync, or when too much happened since to read the stream.
fn changed_rooms(services: &Services, params: &Params, upto: u64) -> Result<BTreeSet<u64>> {
    let rooms = &services.rooms;
    let since = match params.since {
        Some(since) if !params.full_state => since,
        _ => {
            let mut all: BTreeSet<u64> =
                rooms.memberships(&params.user)?.into_iter().map(|(room, _)| room).collect();
            all.extend(params.peek);
            return Ok(all);
        }
    };
    if since >= upto {
        return Ok(BTreeSet::new());
    }
    let start = (since + 1).to_be_bytes();
    let entries = services.db.scan_range(&maps::STREAM, b"", Some(&start), false, STREAM_SCAN_LIMIT + 1)?;
    if entries.len() > STREAM_SCAN_LIMIT {
        let mut changed = BTreeSet::new();
        let peeked = params.peek.into_iter().map(|room| (room, String::new()));
        for (room, _) in rooms.memberships(&params.user)?.into_iter().chain(peeked) {
            if rooms.latest_position(room)? > since {
                changed.insert(room);
            }
        }
        return Ok(changed);
    }
    let mut changed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (k, v) in entries {
        if decode_u64(&k)? > upto {
            break;
        }
        // event short ‖ room short
        let Some(room) = v.get(8..16).map(decode_u64).transpose()? else { continue };
        if seen.insert(room) && (params.peek == Some(room) || rooms.membership(&params.user, room)?.is_some())
        {
            changed.insert(room);
        }
    }
    Ok(changed)
}
