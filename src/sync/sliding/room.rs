//! One room of a sliding sync response: what the connection has not seen
//! of it, as its configuration asks (timeline, `required_state`), with the
//! room's name, avatar, heroes, counts and `bump_stamp`.

use std::collections::BTreeSet;

use ruma::JsOption;
use ruma::{OwnedMxcUri, OwnedUserId, UInt, api::client::sync::sync_events::v5::response, serde::Raw};
use serde_json::Value;

use super::{Context, RoomExtra, required::Wanted};
use crate::{
    Error, Result,
    rooms::{
        invites::RemoteInvite,
        short_ids::{Kind, split_state_key_name, state_key_name},
        state::StateMap,
    },
    sync::rooms::{Timeline, latest, stripped_state, summary, without_room_id},
    users::sliding::RoomConfig,
    util::raw,
};

/// The largest `timeline_limit` served (Synapse's bound).
const MAX_TIMELINE_LIMIT: u64 = 1_000;

/// What the connection had of a room before this response.
#[derive(Debug, Clone, Copy)]
pub struct Before<'a> {
    pub config: &'a RoomConfig,
    /// The stream position the client has the room as of.
    pub at: u64,
}

/// A room built for the response, and what the extensions need of it.
pub struct Built {
    pub room: response::Room,
    /// What the stable dialect says beyond `room`.
    pub extra: RoomExtra,
    /// Sent whole (`initial`): the extensions send the room's all too.
    pub initial: bool,
    /// The IDs of the timeline's events.
    pub timeline: BTreeSet<String>,
}

/// A room the user is in, was invited to, knocked on or left, as of `upto`;
/// `None` when the connection has it already and nothing changed.
pub fn local(
    cx: &Context,
    short: u64,
    config: &RoomConfig,
    before: Option<Before>,
    stamp: u64,
    is_dm: bool,
    upto: u64,
) -> Result<Option<Built>> {
    let rooms = &cx.services.rooms;
    let Some(member) = rooms.current_state_event(short, "m.room.member", cx.user.as_str())? else {
        return Ok(None);
    };
    let membership = member.content_value()["membership"].as_str().unwrap_or("leave").to_owned();
    let changed_at = rooms.membership_changed_at(cx.user, short, &member)?;
    let membership_new = before.is_none_or(|b| changed_at > b.at);
    let mut out = response::Room::new();
    out.bump_stamp = Some(UInt::try_from(stamp).unwrap_or_default());
    out.is_dm = is_dm.then_some(true);
    let built = match membership.as_str() {
        "invite" | "knock" => {
            if !membership_new {
                return Ok(None);
            }
            out.invite_state = Some(stripped_state(cx.services, short, &member)?);
            out.initial = Some(true);
            Ok(Some(Built {
                room: out,
                extra: RoomExtra::default(),
                initial: true,
                timeline: BTreeSet::new(),
            }))
        }
        "join" => {
            // Joined since the connection last had it (it had an invite, or
            // the room as it was when the user left): sent whole again. (A
            // new display name is no new membership.)
            let joined_at = rooms.membership_since(cx.user, short)?.unwrap_or_default();
            let before = before.filter(|b| joined_at <= b.at);
            shown(cx, short, config, before, upto, out)
        }
        // Left, kicked or banned: the room up to that, once.
        _ if before.is_some_and(|b| b.at >= changed_at) => Ok(None),
        _ if !rooms.ever_joined(cx.user, short)? => {
            // A rejected invite, a withdrawn knock: only the leave.
            let event = rooms
                .event_short(&member.event_id)?
                .ok_or_else(|| Error::internal("member without short ID"))?;
            let event = rooms.client_event(event, Some(cx.device), cx.user)?;
            out.required_state.push(raw(without_room_id(event))?);
            out.initial = before.is_none().then_some(true);
            Ok(Some(Built {
                room: out,
                extra: RoomExtra::default(),
                initial: before.is_none(),
                timeline: BTreeSet::new(),
            }))
        }
        _ => shown(cx, short, config, before, changed_at, out),
    }?;
    Ok(built.map(|mut built| {
        built.extra.membership = Some(membership);
        built
    }))
}

/// A joined room as of `end`, or a left one as of its leave.
fn shown(
    cx: &Context,
    short: u64,
    config: &RoomConfig,
    before: Option<Before>,
    end: u64,
    mut out: response::Room,
) -> Result<Option<Built>> {
    let rooms = &cx.services.rooms;
    let initial = before.is_none();
    // A larger timeline than the connection had: the latest events again,
    // however many of them it has (Element X pages in this way).
    let expanded = before.is_some_and(|b| b.config.timeline_limit < config.timeline_limit);
    let since = before.filter(|_| !expanded).map(|b| b.at);
    let limit = config.timeline_limit.min(MAX_TIMELINE_LIMIT);
    let timeline = match limit {
        0 => None,
        limit => Some(latest(
            cx.services,
            short,
            cx.user,
            Some(cx.device),
            since,
            end + 1,
            usize::try_from(limit).unwrap_or(usize::MAX),
            true,
            |_| true,
        )?),
    };
    let wanted = Wanted::new(config, cx.user.as_str());
    let had = before.map(|b| Wanted::new(b.config, cx.user.as_str()));
    let state = required_state(
        cx,
        short,
        &wanted,
        before.zip(had.as_ref()).map(|(b, had)| (b.at, had)),
        timeline.as_ref(),
        end,
    )?;

    if !initial
        && !expanded
        && state.events.is_empty()
        && timeline.as_ref().is_none_or(|t| t.events.is_empty())
    {
        return Ok(None);
    }
    let mut ids = BTreeSet::new();
    if let Some(timeline) = timeline {
        ids = timeline.events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect();
        let live = cx.since.map_or(0, |since| timeline.positions.iter().filter(|p| **p > since).count());
        out.num_live = Some(UInt::try_from(live).unwrap_or_default());
        out.limited = timeline.limited;
        out.prev_batch = Some(format!("t{}", timeline.prev_batch));
        out.timeline = timeline.events.into_iter().map(|e| raw(without_room_id(e))).collect::<Result<_>>()?;
    }
    for event in &state.events {
        let event = rooms.client_event(*event, Some(cx.device), cx.user)?;
        out.required_state.push(raw(without_room_id(event))?);
    }
    let current = &state.at_end;
    let content = |kind: &str| -> Result<Option<Value>> {
        Ok(rooms.state_event(current, kind, "")?.map(|pdu| pdu.content_value()))
    };
    let mut name_removed = false;
    if initial || state.kinds.contains("m.room.name") {
        out.name = content("m.room.name")?
            .and_then(|c| c["name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned));
        name_removed = !initial && out.name.is_none();
    }
    if initial || state.kinds.contains("m.room.avatar") {
        let url = content("m.room.avatar")?.and_then(|c| c["url"].as_str().map(OwnedMxcUri::from));
        out.avatar = match url {
            Some(url) if !url.as_str().is_empty() => JsOption::Some(url),
            _ if initial => JsOption::Undefined,
            _ => JsOption::Null,
        };
    }
    if initial || state.kinds.contains("m.room.member") {
        let summary = summary(cx.services, cx.user, short)?;
        out.joined_count = summary.joined_member_count;
        out.invited_count = summary.invited_member_count;
        if !summary.heroes.is_empty() {
            out.heroes = Some(heroes(cx, current, summary.heroes)?);
        }
    }
    let (counts, _) = rooms.unread_counts(cx.user, short, false)?;
    out.unread_notifications.notification_count =
        Some(UInt::try_from(counts.notifications).unwrap_or_default());
    out.unread_notifications.highlight_count = Some(UInt::try_from(counts.highlights).unwrap_or_default());
    if initial {
        out.initial = Some(true);
    }
    let extra = RoomExtra { expanded_timeline: expanded, name_removed, ..RoomExtra::default() };
    Ok(Some(Built { room: out, extra, initial, timeline: ids }))
}

/// The state events to send, the types that changed among them, and the
/// room's state at the end.
struct State {
    events: Vec<u64>,
    kinds: BTreeSet<String>,
    at_end: std::sync::Arc<StateMap>,
}

/// `required_state`: the state at `end` the configuration wants, for a room
/// new to the connection; else what changed since the connection had it
/// (`before`: that position and what was wanted then), and what is wanted
/// now that was not then. With `$LAZY`, the members the timeline shows
/// (sent again each time: a correct superset) and, incrementally, every
/// change of membership.
fn required_state(
    cx: &Context,
    short: u64,
    wanted: &Wanted,
    before: Option<(u64, &Wanted)>,
    timeline: Option<&Timeline>,
    end: u64,
) -> Result<State> {
    let rooms = &cx.services.rooms;
    let current = rooms.state_at_position(short, end)?;
    let previous = before.map(|(at, _)| rooms.state_at_position(short, at)).transpose()?;
    let grew = before.is_some_and(|(_, had)| wanted.grew_from(had));
    let mut out = State { events: Vec::new(), kinds: BTreeSet::new(), at_end: current.clone() };
    for (key, event) in current.iter() {
        let changed = previous.as_ref().is_none_or(|p| p.get(key) != Some(event));
        if !changed && !grew {
            continue;
        }
        let name = rooms.short.name(*key)?;
        let (kind, state_key) = split_state_key_name(&name).unwrap_or_default();
        let wants = wanted.wants(kind, state_key);
        let send = match before {
            None => wants,
            Some((_, had)) => {
                (changed && (wants || (kind == "m.room.member" && wanted.lazy_members)))
                    || (wants && !had.wants(kind, state_key))
            }
        };
        if send {
            out.events.push(*event);
            if changed && before.is_some() {
                out.kinds.insert(kind.to_owned());
            }
        }
    }
    if wanted.lazy_members
        && let Some(timeline) = timeline
    {
        let mut members = BTreeSet::new();
        for event in &timeline.events {
            members.extend(event["sender"].as_str());
            if event["type"] == "m.room.member" {
                members.extend(event["state_key"].as_str());
            }
        }
        for member in members {
            if let Some(key) = rooms.short.get(Kind::StateKey, &state_key_name("m.room.member", member))?
                && let Some(event) = current.get(&key)
                && !out.events.contains(event)
            {
                out.events.push(*event);
            }
        }
    }
    Ok(out)
}

/// The heroes with their names and avatars as their member events give.
fn heroes(cx: &Context, state: &StateMap, users: Vec<OwnedUserId>) -> Result<Vec<response::Hero>> {
    let rooms = &cx.services.rooms;
    let mut out = Vec::new();
    for user in users {
        let content = rooms.state_event(state, "m.room.member", user.as_str())?.map(|p| p.content_value());
        let mut hero = response::Hero::new(user);
        if let Some(content) = content {
            hero.name = content["displayname"].as_str().map(str::to_owned);
            hero.avatar = content["avatar_url"].as_str().map(OwnedMxcUri::from);
        }
        out.push(hero);
    }
    Ok(out)
}

/// An invite or knock to a room this server is not in: the stripped state
/// the inviting server sent, and the invite or knock itself.
pub fn remote(invite: &RemoteInvite) -> Result<response::Room> {
    let mut out = response::Room::new();
    out.invite_state = Some(invite.stripped_state()?.into_iter().map(raw).collect::<Result<Vec<Raw<_>>>>()?);
    out.initial = Some(true);
    out.bump_stamp = Some(UInt::try_from(invite.position).unwrap_or_default());
    Ok(out)
}
