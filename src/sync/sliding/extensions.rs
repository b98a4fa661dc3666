//! Sliding sync extensions: send-to-device messages and end-to-end
//! encryption data (the device's), account data, receipts and typing (of
//! the rooms in each extension's scope).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId,
    api::client::sync::sync_events::v5::{request, response},
};
use serde_json::json;

use super::{Context, Relevant};
use crate::{
    Error, Result,
    sync::{default_push_rules, device_lists, key_counts},
    util::raw,
};

/// Send-to-device messages per response at most (and by default).
const TO_DEVICE_LIMIT: usize = 100;
/// Past this many receipt changes, each room's are read on their own.
const CHANGES_READ_AT_ONCE: usize = 5_000;

/// A room in scope of the room extensions.
pub struct InScope {
    pub short: u64,
    pub room_id: OwnedRoomId,
    /// Where the connection had the room's data up to (`None`: it has none,
    /// or the room was sent whole in this response).
    pub since: Option<u64>,
    /// The events of its timeline in this response.
    pub timeline: BTreeSet<String>,
    pub joined: bool,
}

/// The `to_device` extension's `since`: the last message the device has.
pub fn to_device_since(config: &request::ToDevice) -> Result<Option<u64>> {
    if config.enabled != Some(true) {
        return Ok(None);
    }
    config
        .since
        .as_deref()
        .map(|since| since.parse().map_err(|_| Error::invalid_param("to_device.since is not a token")))
        .transpose()
}

/// Fills the response's extensions as of `upto`.
pub fn build(
    cx: &Context,
    relevant: &Relevant,
    rooms: &[InScope],
    upto: u64,
    out: &mut response::Extensions,
) -> Result<()> {
    let extensions = &cx.request.extensions;
    let (services, user, device) = (cx.services, cx.user, cx.device);
    if extensions.to_device.enabled == Some(true) {
        let since = to_device_since(&extensions.to_device)?.unwrap_or(0);
        let limit = extensions
            .to_device
            .limit
            .map_or(TO_DEVICE_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(TO_DEVICE_LIMIT))
            .clamp(1, TO_DEVICE_LIMIT);
        let messages = services.users.to_device_messages(user, device, since.min(upto), upto, limit)?;
        let next = match messages.last() {
            Some((last, _)) if messages.len() == limit => *last,
            _ => upto.max(since),
        };
        let mut to_device = response::ToDevice::default();
        to_device.next_batch = next.to_string();
        to_device.events = messages.into_iter().map(|(_, m)| m).collect();
        out.to_device = Some(to_device);
    }
    if extensions.e2ee.enabled == Some(true) {
        let e2ee = &mut out.e2ee;
        let (counts, fallback) = key_counts(services, user, device)?;
        e2ee.device_one_time_keys_count = counts;
        e2ee.device_unused_fallback_key_types = Some(fallback);
        if let Some(since) = cx.since {
            e2ee.device_lists = device_lists(services, user, since, upto)?;
        }
    }
    let config = &extensions.account_data;
    if config.enabled == Some(true) {
        let scope = scope(relevant, config.lists.as_deref(), config.rooms.as_deref());
        account_data(cx, rooms, &scope, upto, &mut out.account_data)?;
    }
    let config = &extensions.receipts;
    if config.enabled == Some(true) {
        let scope = scope(relevant, config.lists.as_deref(), config.rooms.as_deref());
        receipts(cx, rooms, &scope, upto, &mut out.receipts)?;
    }
    let config = &extensions.typing;
    if config.enabled == Some(true) {
        let scope = scope(relevant, config.lists.as_deref(), config.rooms.as_deref());
        for room in rooms.iter().filter(|r| r.joined && scope.contains(&r.short)) {
            if let Some(users) = services.rooms.typing.changed(room.short, room.since, upto)
                && (room.since.is_some() || !users.is_empty())
            {
                let event = json!({"type": "m.typing", "content": {"user_ids": users}});
                out.typing.rooms.insert(room.room_id.clone(), raw(event)?);
            }
        }
    }
    Ok(())
}

/// The rooms (short IDs) an extension covers: every room in a list's
/// windows or subscribed unless it names both lists and rooms; `"*"` in
/// either is all of them.
fn scope(
    relevant: &Relevant,
    lists: Option<&[String]>,
    rooms: Option<&[request::ExtensionRoomConfig]>,
) -> BTreeSet<u64> {
    let (Some(lists), Some(rooms)) = (lists, rooms) else { return relevant.all.clone() };
    let mut out = BTreeSet::new();
    for name in lists {
        if name == "*" {
            out.extend(relevant.by_list.values().flatten());
        } else if let Some(shorts) = relevant.by_list.get(name) {
            out.extend(shorts);
        }
    }
    for room in rooms {
        match room {
            request::ExtensionRoomConfig::AllSubscribed => return relevant.all.clone(),
            request::ExtensionRoomConfig::Room(id) => {
                if let Some(short) = relevant.ids.get(id) {
                    out.insert(*short);
                }
            }
            _ => {}
        }
    }
    out
}

/// Global account data (all of it on a new connection, with the push
/// rules; else what changed), and the rooms' in scope (all of a room's when
/// the connection did not have it).
fn account_data(
    cx: &Context,
    rooms: &[InScope],
    scope: &BTreeSet<u64>,
    upto: u64,
    out: &mut response::AccountData,
) -> Result<()> {
    let users = &cx.services.users;
    let changed = users.account_data_since(cx.user, cx.since, upto)?;
    for (room, kind, content) in &changed {
        if room.is_none() {
            out.global.push(raw(json!({"type": kind, "content": content}))?);
        }
    }
    if cx.since.is_none()
        && let Some(rules) = default_push_rules(cx.services, cx.user)?
    {
        out.global.push(raw(rules)?);
    }
    let in_scope: Vec<&InScope> = rooms.iter().filter(|r| scope.contains(&r.short)).collect();
    if in_scope.is_empty() {
        return Ok(());
    }
    // Read once from the earliest point any room needs (more is harmless:
    // room account data replaces what the client has).
    let earliest = in_scope.iter().map(|r| r.since).min().flatten();
    let by_id: BTreeMap<&OwnedRoomId, &InScope> = in_scope.iter().map(|r| (&r.room_id, *r)).collect();
    let entries = match earliest == cx.since {
        true => changed,
        false => users.account_data_since(cx.user, earliest, upto)?,
    };
    for (room, kind, content) in entries {
        if let Some(room) = room
            && by_id.contains_key(&room)
        {
            out.rooms.entry(room).or_default().push(raw(json!({"type": kind, "content": content}))?);
        }
    }
    Ok(())
}

/// Receipts of the rooms in scope: for a room sent whole, those on its
/// timeline's events and the user's own; else those that changed.
fn receipts(
    cx: &Context,
    rooms: &[InScope],
    scope: &BTreeSet<u64>,
    upto: u64,
    out: &mut response::Receipts,
) -> Result<()> {
    let store = &cx.services.rooms;
    // The rooms the connection has up to its `pos`: one read of the changes.
    let changes = match cx.since {
        Some(since) => store.receipt_changes(since, upto, CHANGES_READ_AT_ONCE)?,
        None => None,
    };
    for room in rooms.iter().filter(|r| scope.contains(&r.short)) {
        let receipts = match &changes {
            Some(changes) if room.since == cx.since => changes.get(&room.short).cloned().unwrap_or_default(),
            _ => store.room_receipts(room.short, room.since)?,
        };
        let mut receipts: Vec<_> = receipts.into_iter().filter(|(_, r)| r.position <= upto).collect();
        if room.since.is_none() {
            receipts.retain(|(key, r)| key.user == cx.user || room.timeline.contains(r.event_id.as_str()));
        }
        if let Some(event) = crate::rooms::receipts::receipt_event(cx.user, &receipts) {
            out.rooms.insert(room.room_id.clone(), raw(event)?);
        }
    }
    Ok(())
}
