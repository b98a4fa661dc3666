//! `POST /search`: the `room_events` category over the search index, each
//! hit checked against what the searching user may see (as `/messages`
//! decides), with context, profiles, room state, groups and highlights in
//! Synapse's shape. Paging works by rank too (Synapse pages by recency
//! only): a rank token keeps reading the index state the first page came
//! from, so new messages do not shift later pages.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use axum::Router;
use http::StatusCode;
use ruma::{UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter, json_reply},
    rooms::EventMeta,
    search::{self, Criteria, Cursor, Order, query},
    services::Services,
};

pub(super) mod endpoint {
    use ruma::{
        api::{auth_scheme::AccessToken, request},
        metadata,
    };

    pub use crate::api::ruma::JsonResponse as Response;

    metadata! {
        method: POST,
        authentication: AccessToken,
        rate_limited: true,
        history: {
            1.0 => "/_matrix/client/r0/search",
            1.1 => "/_matrix/client/v3/search",
        }
    }

    /// Read by hand rather than as ruma's type, which cannot tell an absent
    /// `event_context` (no context wanted) from a default one.
    #[request]
    pub struct Request {
        #[ruma_api(query)]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<String>,
        pub search_categories: super::Categories,
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Categories {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room_events: Option<RoomEvents>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct RoomEvents {
    search_term: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<String>>,
    #[serde(default)]
    filter: ruma::api::client::filter::RoomEventFilter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_context: Option<EventContext>,
    #[serde(default)]
    include_state: bool,
    #[serde(default)]
    groupings: Groupings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct EventContext {
    #[serde(default = "five")]
    before_limit: u64,
    #[serde(default = "five")]
    after_limit: u64,
    #[serde(default)]
    include_profile: bool,
}

fn five() -> u64 {
    5
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<Grouping>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Grouping {
    key: String,
}

/// Results per page when the filter does not say (Synapse's), and the most.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// How long a search waits for the index to take in what came before it.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);
/// Most events of context on either side of a hit.
const MAX_CONTEXT: u64 = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(search)
}

fn bad(message: &str) -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
}

/// A next_batch token: a rank or recency cursor, within one room's group
/// when it came from that group (`g<room short>.` before it).
fn parse_batch(token: &str) -> Option<(Option<u64>, Cursor)> {
    match token.strip_prefix('g') {
        Some(rest) => {
            let (room, cursor) = rest.split_once('.')?;
            Some((Some(room.parse().ok()?), Cursor::parse(cursor)?))
        }
        None => Some((None, Cursor::parse(token)?)),
    }
}

async fn search(req: Ruma<endpoint::Request>) -> Result<endpoint::Response> {
    let services = &req.services;
    let index = services.search.as_ref().ok_or_else(|| bad("Search is disabled on this homeserver"))?;
    let criteria =
        req.body.search_categories.room_events.as_ref().ok_or_else(|| bad("Invalid search query"))?;
    let order = match criteria.order_by.as_deref().unwrap_or("rank") {
        "rank" => Order::Rank,
        "recent" => Order::Recent,
        other => return Err(bad(&format!("Invalid order by: {other:?}"))),
    };
    if let Some(g) =
        criteria.groupings.group_by.iter().find(|g| !matches!(g.key.as_str(), "room_id" | "sender"))
    {
        return Err(bad(&format!("Invalid group by key: {:?}", g.key)));
    }
    let batch = match &req.body.next_batch {
        Some(token) => Some(parse_batch(token).ok_or_else(|| bad("Invalid batch"))?),
        None => None,
    };
    let user = req.user();
    // What was written before the search is searched (a client searching
    // for what it just sent finds it), if the index gets there in time.
    index.wait_for(services.stream.visible(), CATCH_UP).await;
    let parsed = query::parse(&mut index.analyzer(), &criteria.search_term);
    let rooms = searched_rooms(services, user, criteria, &parsed, batch.and_then(|b| b.0)).await?;
    let reply = crate::util::heavy(|| answer(services, index, &req, criteria, &parsed, rooms, order, batch))?;
    json_reply(&json!({"search_categories": {"room_events": reply}}))
}

/// The rooms a search covers: those the user is or was in (not forgotten),
/// narrowed by the filter, `in:` and a group's token.
async fn searched_rooms(
    services: &Services,
    user: &UserId,
    criteria: &RoomEvents,
    parsed: &query::Parsed,
    group: Option<u64>,
) -> Result<Vec<u64>> {
    let rooms = &services.rooms;
    let forgotten = rooms.forgotten_rooms(user)?;
    let mut out = Vec::new();
    for (room, membership) in rooms.memberships(user)? {
        if matches!(membership.as_str(), "join" | "leave" | "ban" | "invite") && !forgotten.contains(&room) {
            out.push(room);
        }
    }
    let shorts = |ids: &[ruma::OwnedRoomId]| -> Result<HashSet<u64>> {
        Ok(ids
            .iter()
            .map(|id| rooms.room_short(id))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    };
    if let Some(wanted) = &criteria.filter.rooms {
        // A room named takes its predecessors along (upgrades), as in Synapse.
        let mut wanted = shorts(wanted)?;
        let mut next: Vec<u64> = wanted.iter().copied().collect();
        while let Some(room) = next.pop() {
            let create = rooms.current_state_event(room, "m.room.create", "")?;
            let older =
                create.and_then(|c| c.content_value()["predecessor"]["room_id"].as_str().map(str::to_owned));
            if let Some(older) = older.and_then(|o| ruma::OwnedRoomId::try_from(o).ok())
                && let Some(short) = rooms.room_short(&older)?
                && wanted.insert(short)
            {
                next.push(short);
            }
        }
        out.retain(|r| wanted.contains(r));
    }
    let unwanted = shorts(&criteria.filter.not_rooms)?;
    out.retain(|r| !unwanted.contains(r));
    if !parsed.rooms.is_empty() {
        let mut named = Vec::new();
        for name in &parsed.rooms {
            let id = match ruma::OwnedRoomAliasId::try_from(name.as_str()) {
                Ok(alias) => {
                    crate::federation::query::resolve_alias(services, &alias).await.ok().map(|r| r.0)
                }
                Err(_) => ruma::OwnedRoomId::try_from(name.as_str()).ok(),
            };
            named.extend(id);
        }
        let named = shorts(&named)?;
        out.retain(|r| named.contains(r));
    }
    if let Some(group) = group {
        out.retain(|r| *r == group);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn answer(
    services: &Services,
    index: &search::Search,
    req: &Ruma<endpoint::Request>,
    criteria: &RoomEvents,
    parsed: &query::Parsed,
    searched: Vec<u64>,
    order: Order,
    batch: Option<(Option<u64>, Cursor)>,
) -> Result<Value> {
    let rooms = &services.rooms;
    let user = req.user();
    let device = req.sender_device.as_deref();
    let filter = &criteria.filter;
    let empty = json!({"results": [], "count": 0, "highlights": []});
    if parsed.is_empty() || searched.is_empty() {
        return Ok(empty);
    }
    let glob = |patterns: &[String], kind: &str| patterns.iter().any(|p| crate::util::glob_match(p, kind));
    let types: Vec<&'static str> = search::TYPES
        .iter()
        .map(|(kind, _)| *kind)
        .filter(|kind| {
            filter.types.as_deref().is_none_or(|t| glob(t, kind)) && !glob(&filter.not_types, kind)
        })
        .collect();
    if types.is_empty() {
        return Ok(empty);
    }
    let mut senders: Option<Vec<String>> =
        filter.senders.as_ref().map(|s| s.iter().map(ToString::to_string).collect());
    if !parsed.senders.is_empty() {
        let from: Vec<String> = parsed.senders.iter().map(ToString::to_string).collect();
        senders = Some(match senders {
            Some(s) => s.into_iter().filter(|s| from.contains(s)).collect(),
            None => from,
        });
    }
    let keys: Vec<&str> = match &criteria.keys {
        Some(keys) => keys.iter().map(String::as_str).collect(),
        None => search::TYPES.iter().map(|(_, key)| *key).collect(),
    };
    let c = Criteria {
        parsed,
        keys,
        rooms: searched,
        senders,
        not_senders: filter.not_senders.iter().map(ToString::to_string).collect(),
        types: (types.len() < search::TYPES.len()).then_some(types),
        contains_url: filter.url_filter.map(|f| f == ruma::api::client::filter::UrlFilter::EventsWithUrl),
        // With no words every hit ranks the same: newest first.
        order: if parsed.groups.is_empty() { Order::Recent } else { order },
    };
    let limit = filter.limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT));
    let ignored = services.users.ignored_users(user)?;
    let mut events = BTreeMap::new();
    let found = index.find(&c, batch.map(|b| b.1), limit.clamp(1, MAX_LIMIT), |hit| {
        let (Some(pdu), Some(meta)) = (rooms.pdu_by_short(hit.event)?, rooms.event_meta(hit.event)?) else {
            return Ok(false);
        };
        let visible = !ignored.contains(&pdu.sender) && rooms.can_see(user, &pdu, &meta)?;
        if visible {
            events.insert(hit.event, meta);
        }
        Ok(visible)
    })?;

    let mut results = Vec::new();
    let mut highlights = BTreeSet::new();
    let mut by_room: BTreeMap<String, Value> = BTreeMap::new();
    let mut by_sender: BTreeMap<String, Value> = BTreeMap::new();
    let mut result_rooms = BTreeSet::new();
    for hit in &found.hits {
        let meta = &events[&hit.event];
        let mut event = rooms.client_event(hit.event, device, user)?;
        rooms.bundle(hit.event, user, device, &mut event)?;
        let content = &event["content"];
        let edited = &event["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"];
        // An edited message was found by its latest text; a topic by the
        // texts of `topic` and `m.topic`.
        let topic = crate::search::indexer::topic(content);
        let texts = match edited["body"].as_str() {
            Some(body) => vec![body],
            None => [content["body"].as_str(), content["name"].as_str(), topic.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
        };
        index.highlights(parsed, texts, &mut highlights);
        let mut result = json!({"result": event, "rank": f64::from(hit.score)});
        if let Some(context) = &criteria.event_context {
            result["context"] = self::context(services, user, device, hit.event, meta, context)?;
        } else {
            result["context"] = json!({});
        }
        let event_id = result["result"]["event_id"].clone();
        let room_id = result["result"]["room_id"].as_str().unwrap_or_default().to_owned();
        let sender = result["result"]["sender"].as_str().unwrap_or_default().to_owned();
        for (groups, key) in [(&mut by_room, room_id.clone()), (&mut by_sender, sender)] {
            let group = groups.entry(key).or_insert_with(|| json!({"results": []}));
            group["results"].as_array_mut().expect("results").push(event_id.clone());
            if c.order == Order::Rank && group.get("order").is_none() {
                group["order"] = json!(f64::from(hit.score));
            }
        }
        result_rooms.insert((hit.room, room_id));
        results.push(result);
    }

    let mut reply = json!({
        "results": results,
        "count": found.count,
        "highlights": highlights.into_iter().collect::<Vec<_>>(),
    });
    if let Some(next) = found.next {
        let group = batch.and_then(|b| b.0);
        reply["next_batch"] = json!(match group {
            Some(room) => format!("g{room}.{next}"),
            None => next.to_string(),
        });
        for (room_short, room_id) in &result_rooms {
            if let Some(group) = by_room.get_mut(room_id) {
                group["next_batch"] = json!(format!("g{room_short}.{next}"));
            }
        }
    }
    if criteria.include_state {
        let mut state = serde_json::Map::new();
        for (_, room_id) in &result_rooms {
            let Ok(room_id) = ruma::RoomId::parse(room_id) else { continue };
            let Ok((_, room_state)) = super::room::readable_state(services, user, &room_id) else { continue };
            let events = room_state
                .values()
                .map(|s| rooms.client_event(*s, device, user))
                .collect::<Result<Vec<_>>>()?;
            state.insert(room_id.to_string(), Value::Array(events));
        }
        reply["state"] = Value::Object(state);
    }
    if !criteria.groupings.group_by.is_empty() {
        let mut groups = serde_json::Map::new();
        for g in &criteria.groupings.group_by {
            let map = if g.key == "room_id" { &by_room } else { &by_sender };
            groups.insert(g.key.clone(), json!(map));
        }
        reply["groups"] = Value::Object(groups);
    }
    Ok(reply)
}

/// The events around a hit that the user may see, with tokens to page on
/// from, and the senders' profiles as of the last of them.
fn context(
    services: &Services,
    user: &UserId,
    device: Option<&ruma::DeviceId>,
    short: u64,
    meta: &EventMeta,
    wanted: &EventContext,
) -> Result<Value> {
    let rooms = &services.rooms;
    let limit = |l: u64| l.min(MAX_CONTEXT) as usize;
    let (before, after) = super::room::events_around(
        services,
        (user, device),
        (short, meta),
        (limit(wanted.before_limit), limit(wanted.after_limit)),
        |_| true,
    )?;
    let mut context = json!({
        "start": super::room::gap_token(before.cursor),
        "end": super::room::gap_token(after.cursor),
    });
    if wanted.include_profile {
        let mut shown = before.events.clone();
        shown.extend(after.events.iter().cloned());
        shown.push(rooms.client_event(short, device, user)?);
        let mut profiles = serde_json::Map::new();
        for member in super::room::sender_members(services, user, &shown)? {
            let Some(who) = member["state_key"].as_str() else { continue };
            let content = &member["content"];
            profiles.insert(
                who.to_owned(),
                json!({"displayname": content["displayname"], "avatar_url": content["avatar_url"]}),
            );
        }
        context["profile_info"] = Value::Object(profiles);
    }
    context["events_before"] = Value::Array(before.events);
    context["events_after"] = Value::Array(after.events);
    Ok(context)
}
