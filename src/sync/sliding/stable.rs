//! The accepted MSC4186's own shape, `POST /_matrix/client/v4/sync`:
//! `pos`, `timeout` and `set_presence` in the body, one optional `range`
//! per list (none: the whole list), `required_state` as `include` /
//! `exclude` / `lazy_members`, `is_invited`, `spaces`, `tags`; rooms with
//! `membership`, `lists`, `stripped_state`, `expanded_timeline`, a removed
//! name as `null`, and no notification counts. Served over the same engine
//! as the unstable dialect.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, api::client::sync::sync_events::v5};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{List, Request, RoomExtra, lists::Filters};
use crate::users::sliding::RoomConfig;
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Element {
    #[serde(rename = "type")]
    kind: Option<String>,
    state_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RequiredState {
    #[serde(default)]
    include: Vec<Element>,
    #[serde(default)]
    exclude: Vec<Element>,
    #[serde(default)]
    lazy_members: bool,
}

#[derive(Debug, Deserialize)]
pub struct RoomSubscription {
    timeline_limit: u64,
    required_state: RequiredState,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListFilters {
    is_dm: Option<bool>,
    spaces: Option<Vec<OwnedRoomId>>,
    is_encrypted: Option<bool>,
    is_invited: Option<bool>,
    room_types: Option<Vec<Option<String>>>,
    not_room_types: Option<Vec<Option<String>>>,
    tags: Option<Vec<String>>,
    not_tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct ListConfig {
    timeline_limit: u64,
    required_state: RequiredState,
    range: Option<(u64, u64)>,
    #[serde(default)]
    filters: ListFilters,
}

/// The request body.
#[derive(Debug, Deserialize)]
pub struct Body {
    #[serde(default)]
    conn_id: Option<String>,
    #[serde(default)]
    pos: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    pub set_presence: Option<String>,
    #[serde(default)]
    lists: BTreeMap<String, ListConfig>,
    #[serde(default)]
    room_subscriptions: BTreeMap<OwnedRoomId, RoomSubscription>,
    #[serde(default)]
    extensions: v5::request::Extensions,
}

/// `set_presence` as `/v3/sync` reads it: 400 `M_INVALID_PARAM` for any
/// other value.
pub fn presence(body: &Body) -> Result<ruma::presence::PresenceState> {
    use ruma::presence::PresenceState;
    match body.set_presence.as_deref() {
        None | Some("online") => Ok(PresenceState::Online),
        Some("offline") => Ok(PresenceState::Offline),
        Some("unavailable") => Ok(PresenceState::Unavailable),
        Some(other) => Err(Error::invalid_param(format!("Unknown set_presence {other:?}"))),
    }
}

fn config(timeline_limit: u64, required: &RequiredState) -> RoomConfig {
    let pair =
        |e: &Element| (e.kind.clone().unwrap_or("*".into()), e.state_key.clone().unwrap_or("*".into()));
    let mut required_state: std::collections::BTreeSet<(String, String)> =
        required.include.iter().map(pair).collect();
    if required.lazy_members {
        required_state.insert(("m.room.member".into(), "$LAZY".into()));
    }
    RoomConfig { timeline_limit, required_state, exclude: required.exclude.iter().map(pair).collect() }
}

impl Request {
    /// The stable dialect's request.
    pub fn stable(body: Body) -> Self {
        let lists = body
            .lists
            .into_iter()
            .map(|(name, list)| {
                let f = list.filters;
                let filters = Filters {
                    is_dm: f.is_dm,
                    is_encrypted: f.is_encrypted,
                    is_invite: f.is_invited,
                    room_types: f.room_types.unwrap_or_default(),
                    not_room_types: f.not_room_types.unwrap_or_default(),
                    in_spaces: None,
                    tags: f.tags.unwrap_or_default(),
                    not_tags: f.not_tags.unwrap_or_default(),
                };
                let list = List {
                    ranges: vec![list.range.unwrap_or((0, u64::MAX))],
                    config: config(list.timeline_limit, &list.required_state),
                    filters,
                    spaces: f.spaces,
                };
                (name, list)
            })
            .collect();
        Self {
            conn_id: body.conn_id.unwrap_or_default(),
            pos: body.pos,
            timeout: std::time::Duration::from_millis(body.timeout.unwrap_or_default()),
            txn_id: None,
            lists,
            subscriptions: body
                .room_subscriptions
                .into_iter()
                .map(|(room, s)| (room, config(s.timeline_limit, &s.required_state)))
                .collect(),
            extensions: body.extensions,
        }
    }
}

/// The answer (`body`: its response as the unstable dialect's JSON) in
/// the stable shape.
pub fn response(mut body: Value, extras: &BTreeMap<OwnedRoomId, RoomExtra>) -> Value {
    let Some(rooms) = body.get_mut("rooms").and_then(Value::as_object_mut) else {
        return body;
    };
    for (room_id, room) in rooms.iter_mut() {
        let Some(room) = room.as_object_mut() else { continue };
        room.remove("notification_count");
        room.remove("highlight_count");
        if let Some(stripped) = room.remove("invite_state") {
            room.insert("stripped_state".into(), stripped);
        }
        let Some(extra) = OwnedRoomId::try_from(room_id.as_str()).ok().and_then(|id| extras.get(&id)) else {
            continue;
        };
        let set = |room: &mut Map<String, Value>, key: &str, value: Value| {
            room.insert(key.to_owned(), value);
        };
        if let Some(membership) = &extra.membership {
            set(room, "membership", Value::from(membership.as_str()));
        }
        if !extra.lists.is_empty() {
            set(room, "lists", Value::from(extra.lists.clone()));
        }
        if extra.expanded_timeline {
            set(room, "expanded_timeline", Value::Bool(true));
        }
        if extra.name_removed {
            set(room, "name", Value::Null);
        }
    }
    body
}
