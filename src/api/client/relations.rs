//! Relations and threads: `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`
//! and `GET /rooms/{roomId}/threads`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedEventId, OwnedRoomId, UInt,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
};
use serde_json::Value;

use super::room::{check_can_read, parse_token, readable_room, token};
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::relations::{RECURSION_DEPTH, RelationsQuery},
    services::Services,
    util::raw,
};

/// Synapse's default page sizes.
const DEFAULT_LIMIT: u64 = 5;
const MAX_LIMIT: u64 = 1000;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(all).ruma(by_rel_type).ruma(by_rel_and_event_type).ruma(threads)
}

/// What the three /relations endpoints share.
struct Query<'a> {
    room_id: &'a OwnedRoomId,
    event_id: &'a OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

struct Page {
    chunk: Vec<Value>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

fn relations<T>(req: &Ruma<T>, q: Query<'_>) -> Result<Page> {
    let services = &req.services;
    let rooms = &services.rooms;
    let not_found = || Error::not_found("Event not found.");
    let room_short = rooms.room_short(q.room_id)?.ok_or_else(not_found)?;
    check_can_read(services, req.user(), room_short)?;
    let parent = rooms.event_short(q.event_id)?.ok_or_else(not_found)?;
    let (Some(pdu), Some(meta)) = (rooms.pdu_by_short(parent)?, rooms.event_meta(parent)?) else {
        return Err(not_found());
    };
    if meta.room != room_short || !rooms.can_see(req.user(), &pdu, &meta)? {
        return Err(not_found());
    }
    let query = RelationsQuery {
        rel_type: q.rel_type.as_deref(),
        event_type: q.event_type.as_deref(),
        recurse: q.recurse,
        from: q.from.map(parse_token).transpose()?,
        to: q.to.map(parse_token).transpose()?,
        backwards: q.dir == Direction::Backward,
        limit: q.limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT) as usize,
    };
    let (children, next) = rooms.relations_page(parent, req.user(), &query)?;
    let next_batch = next.map(token);
    let device = req.sender_device.as_deref();
    let mut chunk = Vec::with_capacity(children.len());
    for (_, child) in children {
        let mut event = rooms.client_event(child, device, req.user())?;
        rooms.bundle(child, req.user(), device, &mut event)?;
        chunk.push(event);
    }
    Ok(Page {
        chunk,
        next_batch,
        prev_batch: q.from.map(str::to_owned),
        recursion_depth: q.recurse.then(|| UInt::from(RECURSION_DEPTH as u32)),
    })
}

/// The query of any of the three endpoints (their bodies share these fields).
macro_rules! query {
    ($b:expr, $rel_type:expr, $event_type:expr) => {
        Query {
            room_id: &$b.room_id,
            event_id: &$b.event_id,
            rel_type: $rel_type,
            event_type: $event_type,
            from: $b.from.as_deref(),
            to: $b.to.as_deref(),
            dir: $b.dir,
            limit: $b.limit,
            recurse: $b.recurse,
        }
    };
}

macro_rules! respond {
    ($module:ident, $page:expr) => {{
        let page = $page;
        let mut response =
            $module::v1::Response::new(page.chunk.into_iter().map(raw).collect::<Result<_>>()?);
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.recursion_depth = page.recursion_depth;
        Ok(response)
    }};
}

async fn all(req: Ruma<get_relating_events::v1::Request>) -> Result<get_relating_events::v1::Response> {
    let query = query!(req.body, None, None);
    respond!(get_relating_events, relations(&req, query)?)
}

async fn by_rel_type(
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let query = query!(req.body, Some(req.body.rel_type.to_string()), None);
    respond!(get_relating_events_with_rel_type, relations(&req, query)?)
}

async fn by_rel_and_event_type(
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let query = query!(req.body, Some(req.body.rel_type.to_string()), Some(req.body.event_type.to_string()));
    respond!(get_relating_events_with_rel_type_and_event_type, relations(&req, query)?)
}

async fn threads(req: Ruma<get_threads::v1::Request>) -> Result<get_threads::v1::Response> {
    let services = &req.services;
    let rooms = &services.rooms;
    let body = &req.body;
    let room_short = readable_room(services, req.user(), &body.room_id)?;
    let from = body.from.as_deref().map(parse_token).transpose()?;
    let limit = body.limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT) as usize;
    let participated = matches!(body.include, IncludeThreads::Participated);
    let (roots, next) = rooms.threads(room_short, req.user(), participated, from, limit)?;
    let device = req.sender_device.as_deref();
    let mut chunk = Vec::with_capacity(roots.len());
    let ignored = services.users.ignored_users(req.user())?;
    let rules = rooms.room(&body.room_id)?.map(|(_, record)| record.rules()).transpose()?;
    for (_, root) in roots {
        let mut event = rooms.client_event(root, device, req.user())?;
        rooms.bundle(root, req.user(), device, &mut event)?;
        // A thread started by an ignored user shows, but redacted.
        if let Some(rules) = &rules
            && event["sender"].as_str().is_some_and(|s| ignored.iter().any(|u| u.as_str() == s))
        {
            let content = std::mem::take(&mut event["content"]);
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            event["content"] = redacted_content(&kind, content, &rules.redaction);
        }
        chunk.push(raw(event)?);
    }
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = next.map(token);
    Ok(response)
}

/// An event's content as the room version's redaction algorithm leaves it.
fn redacted_content(kind: &str, content: Value, rules: &ruma::room_version_rules::RedactionRules) -> Value {
    let Ok(ruma::CanonicalJsonValue::Object(mut content)) = ruma::CanonicalJsonValue::try_from(content)
    else {
        return Value::Object(Default::default());
    };
    ruma::canonical_json::redact_content_in_place(&mut content, rules, kind);
    serde_json::to_value(content).unwrap_or_default()
}
