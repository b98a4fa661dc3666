//! Room aliases and the room directory: `PUT/GET/DELETE /directory/room/{roomAlias}`,
//! `GET /rooms/{roomId}/aliases`, `GET/PUT /directory/list/room/{roomId}`,
//! `GET/POST /publicRooms`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::{
    RoomId, UInt, UserId,
    api::{
        client::{
            alias::{create_alias, delete_alias, get_alias},
            directory::{
                get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
            },
            room::{Visibility, aliases},
        },
        error::ErrorKind,
    },
    directory::PublicRoomsChunk,
};

use super::room::check_can_read;
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::builder::PduBuilder,
    rooms::directory::DirectoryEntry,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(put_alias)
        .ruma(get_alias_handler)
        .ruma(delete_alias_handler)
        .ruma(room_aliases)
        .ruma(get_visibility)
        .ruma(set_visibility)
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
}

fn check_local(services: &Services, alias: &ruma::RoomAliasId) -> Result<()> {
    if alias.server_name() != services.rooms.server_name() {
        return Err(Error::invalid_param("Room alias must be on this server"));
    }
    Ok(())
}

/// Whether the user is joined and may send the event type in the room now.
fn may_manage(services: &Services, user: &UserId, room_id: &RoomId, kind: &str) -> Result<bool> {
    let rooms = &services.rooms;
    let Some((room_short, record)) = rooms.room(room_id)? else { return Ok(false) };
    if rooms.membership(user, room_short)?.as_deref() != Some("join") {
        return Ok(false);
    }
    rooms.may_send_state(&*rooms.current_state(&record)?, user, kind, &record.rules()?)
}

async fn put_alias(req: Ruma<create_alias::v3::Request>) -> Result<create_alias::v3::Response> {
    let services = &req.services;
    let body = &req.body;
    check_local(services, &body.room_alias)?;
    if services.rooms.alias(&body.room_alias)?.is_some() {
        return Err(Error::new(StatusCode::CONFLICT, ErrorKind::Unknown, "Room alias already exists."));
    }
    let room_short =
        services.rooms.room_short(&body.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if services.rooms.membership(req.user(), room_short)?.as_deref() != Some("join") {
        return Err(Error::forbidden("You must be in the room to give it an alias."));
    }
    services.rooms.put_alias(&body.room_alias, &body.room_id, req.user())?;
    Ok(create_alias::v3::Response::new())
}

async fn get_alias_handler(req: Ruma<get_alias::v3::Request>) -> Result<get_alias::v3::Response> {
    let (room_id, servers) =
        crate::federation::query::resolve_alias(&req.services, &req.body.room_alias).await?;
    Ok(get_alias::v3::Response::new(room_id, servers))
}

async fn delete_alias_handler(req: Ruma<delete_alias::v3::Request>) -> Result<delete_alias::v3::Response> {
    let services = &req.services;
    let alias = &req.body.room_alias;
    check_local(services, alias)?;
    let record = services.rooms.alias(alias)?.ok_or_else(|| Error::not_found("Room alias not found."))?;
    let allowed = record.creator == *req.user()
        || services.users.is_admin(req.user())?
        || may_manage(services, req.user(), &record.room_id, "m.room.canonical_alias")?;
    if !allowed {
        return Err(Error::forbidden("You may not remove this alias."));
    }
    services.rooms.remove_alias(alias, &record)?;
    drop_from_canonical_alias(services, req.user(), &record.room_id, alias).await;
    Ok(delete_alias::v3::Response::new())
}

/// A deleted alias leaves the room's `m.room.canonical_alias` too, sent by
/// the user who deleted it when they may (as Synapse; otherwise the event
/// keeps naming it, which clients check before use).
async fn drop_from_canonical_alias(
    services: &Services,
    user: &ruma::UserId,
    room_id: &ruma::RoomId,
    alias: &ruma::RoomAliasId,
) {
    let rooms = &services.rooms;
    let Ok(Some(room_short)) = rooms.room_short(room_id) else { return };
    let Ok(Some(current)) = rooms.current_state_event(room_short, "m.room.canonical_alias", "") else {
        return;
    };
    let mut content = current.content_value();
    let mut changed = false;
    if content["alias"] == alias.as_str()
        && let Some(object) = content.as_object_mut()
    {
        object.remove("alias");
        changed = true;
    }
    if let Some(alt) = content["alt_aliases"].as_array_mut() {
        let before = alt.len();
        alt.retain(|a| a != alias.as_str());
        changed |= alt.len() != before;
    }
    if changed {
        let builder = PduBuilder::state("m.room.canonical_alias", "", content);
        if let Err(e) = rooms.send(room_id, user, builder, None).await {
            tracing::debug!("{alias} stays in {room_id}'s canonical alias event: {e}");
        }
    }
}

async fn room_aliases(req: Ruma<aliases::v3::Request>) -> Result<aliases::v3::Response> {
    let rooms = &req.services.rooms;
    let room_short =
        rooms.room_short(&req.body.room_id)?.ok_or_else(|| Error::forbidden("You are not in this room."))?;
    // Server admins see any room's aliases (Synapse; synadm relies on it).
    if !req.services.users.is_admin(req.user())? {
        check_can_read(&req.services, req.user(), room_short)?;
    }
    Ok(aliases::v3::Response::new(rooms.room_aliases(room_short)?))
}

async fn get_visibility(
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    let rooms = &req.services.rooms;
    rooms.room_short(&req.body.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let visibility =
        if rooms.is_published(&req.body.room_id)? { Visibility::Public } else { Visibility::Private };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

async fn set_visibility(
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let services = &req.services;
    let room_id = &req.body.room_id;
    services.rooms.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !may_manage(services, req.user(), room_id, "m.room.canonical_alias")? {
        return Err(Error::forbidden("You may not change this room's visibility."));
    }
    let publish = match &req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::bad_json("Unknown visibility")),
    };
    services.rooms.set_published(room_id, publish)?;
    Ok(set_room_visibility::v3::Response::new())
}

/// One page of the directory. `since` tokens are offsets: `o<n>`.
pub struct DirectoryPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: u64,
}

/// A page of this server's published rooms (for clients and, through
/// `/_matrix/federation/v1/publicRooms`, other servers).
pub fn directory_page(
    services: &Services,
    limit: Option<UInt>,
    since: Option<&str>,
    search: Option<&str>,
    room_types: &[ruma::directory::RoomTypeFilter],
) -> Result<DirectoryPage> {
    let offset = match since {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let needle = search.map(str::to_lowercase);
    // No room_types: every room; `null` in the list stands for rooms without a type.
    let type_matches = |e: &DirectoryEntry| {
        room_types.is_empty() || room_types.iter().any(|t| t.as_str() == e.room_type.as_deref())
    };
    let matches = |e: &DirectoryEntry| {
        type_matches(e)
            && needle.as_ref().is_none_or(|n| {
                [&e.name, &e.topic, &e.canonical_alias]
                    .iter()
                    .any(|f| f.as_ref().is_some_and(|v| v.to_lowercase().contains(n)))
            })
    };
    let listing = services.rooms.directory()?;
    let limit = limit.map(u64::from).filter(|l| *l > 0).unwrap_or(100) as usize;
    // Unfiltered (as unauthenticated `GET /publicRooms` always is), a page
    // of the cached listing costs the page.
    let (total, page): (usize, Vec<&DirectoryEntry>) = if needle.is_some() || !room_types.is_empty() {
        let matching: Vec<&DirectoryEntry> = listing.iter().filter(|e| matches(e)).collect();
        (matching.len(), matching.into_iter().skip(offset).take(limit).collect())
    } else {
        (listing.len(), listing.iter().skip(offset).take(limit).collect())
    };
    let end = offset.saturating_add(limit);
    let next_batch = (end < total).then(|| format!("o{end}"));
    let prev_batch = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
    let chunk = page.into_iter().map(to_chunk).collect();
    let total = total as u64;
    Ok(DirectoryPage { chunk, next_batch, prev_batch, total })
}

fn to_chunk(e: &DirectoryEntry) -> PublicRoomsChunk {
    let mut chunk: PublicRoomsChunk = ruma::directory::PublicRoomsChunkInit {
        num_joined_members: UInt::new(e.joined_members).unwrap_or_default(),
        room_id: e.room_id.clone(),
        world_readable: e.world_readable,
        guest_can_join: e.guest_can_join,
    }
    .into();
    chunk.name = e.name.clone();
    chunk.topic = e.topic.clone();
    chunk.canonical_alias = e.canonical_alias.as_deref().and_then(|a| a.try_into().ok());
    chunk.avatar_url = e.avatar_url.as_deref().map(Into::into);
    chunk.join_rule = e.join_rule.as_deref().map(Into::into).unwrap_or_default();
    chunk.room_type = e.room_type.as_deref().map(Into::into);
    chunk
}

/// Another server named by a client's `server` parameter, if not this one.
fn remote<'a>(services: &Services, server: Option<&'a ruma::ServerName>) -> Option<&'a ruma::ServerName> {
    server.filter(|s| *s != services.config.server_name)
}

async fn public_rooms(req: Ruma<get_public_rooms::v3::Request>) -> Result<get_public_rooms::v3::Response> {
    let body = &req.body;
    if let Some(server) = remote(&req.services, body.server.as_deref()) {
        let mut request = ruma::api::federation::directory::get_public_rooms::v1::Request::new();
        request.limit = body.limit;
        request.since = body.since.clone();
        let answer =
            req.services.servers.client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
        let mut response = get_public_rooms::v3::Response::new(answer.chunk);
        response.next_batch = answer.next_batch;
        response.prev_batch = answer.prev_batch;
        response.total_room_count_estimate = answer.total_room_count_estimate;
        return Ok(response);
    }
    let page = directory_page(&req.services, body.limit, body.since.as_deref(), None, &[])?;
    let mut response = get_public_rooms::v3::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = UInt::new(page.total);
    Ok(response)
}

async fn public_rooms_filtered(
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let body = &req.body;
    if let Some(server) = remote(&req.services, body.server.as_deref()) {
        let mut request = ruma::api::federation::directory::get_public_rooms_filtered::v1::Request::new();
        request.limit = body.limit;
        request.since = body.since.clone();
        request.filter = body.filter.clone();
        let answer =
            req.services.servers.client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
        let mut response = get_public_rooms_filtered::v3::Response::new();
        response.chunk = answer.chunk;
        response.next_batch = answer.next_batch;
        response.prev_batch = answer.prev_batch;
        response.total_room_count_estimate = answer.total_room_count_estimate;
        return Ok(response);
    }
    let search = body.filter.generic_search_term.as_deref();
    let page =
        directory_page(&req.services, body.limit, body.since.as_deref(), search, &body.filter.room_types)?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = UInt::new(page.total);
    Ok(response)
}
