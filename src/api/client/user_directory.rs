//! `POST /user_directory/search`: local users who share a room with the
//! searcher or are in a public or world-readable room, and other servers'
//! users joined to a room the searcher is in (named as their membership
//! names them), matched without regard to case on their user ID and
//! display name.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedUserId, UserId,
    api::client::user_directory::search_users::{self, v3::User},
};

use crate::{
    Result,
    api::ruma::{Ruma, RumaRouter},
    presence::share_a_room,
    services::Services,
};

/// Synapse clamps the limit to this.
const MAX_LIMIT: u64 = 50;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(search)
}

/// Whether `user` is joined to a room anyone may see into.
fn in_public_room(services: &Services, user: &UserId) -> Result<bool> {
    let rooms = &services.rooms;
    for (room, membership) in rooms.memberships(user)? {
        if membership != "join" {
            continue;
        }
        let public = rooms
            .current_state_event(room, "m.room.join_rules", "")?
            .is_some_and(|p| p.content_value()["join_rule"] == "public");
        if public || rooms.is_world_readable(room)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Other servers' users joined to the rooms `searcher` is joined to, each
/// once, with the name and avatar of their membership.
fn remote_room_mates(
    services: &Services,
    searcher: &UserId,
) -> Result<Vec<(OwnedUserId, serde_json::Value)>> {
    let rooms = &services.rooms;
    let mut seen = std::collections::BTreeMap::new();
    for (room, membership) in rooms.memberships(searcher)? {
        if membership != "join" {
            continue;
        }
        for (member, membership) in rooms.members(room)? {
            if membership != "join" || services.users.is_local(&member) || seen.contains_key(&member) {
                continue;
            }
            let content = rooms
                .current_state_event(room, "m.room.member", member.as_str())?
                .map(|event| event.content_value())
                .unwrap_or_default();
            seen.insert(member, content);
        }
    }
    Ok(seen.into_iter().collect())
}

async fn search(req: Ruma<search_users::v3::Request>) -> Result<search_users::v3::Response> {
    let services = &req.services;
    let term = req.body.search_term.to_lowercase();
    let limit = u64::from(req.body.limit).min(MAX_LIMIT) as usize;
    let mut found: Vec<(u8, OwnedUserId, Option<String>, Option<String>)> = Vec::new();
    let mut candidates: Vec<(OwnedUserId, serde_json::Value)> = Vec::new();
    for user in services.users.active_users()? {
        let profile = services.users.profile(&user)?.unwrap_or_default();
        candidates.push((user, serde_json::Value::Object(profile)));
    }
    candidates.extend(remote_room_mates(services, req.user())?);
    for (user, profile) in candidates {
        let name = profile.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
        let id = user.as_str().to_lowercase();
        let lower_name = name.as_deref().map(str::to_lowercase);
        // Rank: a prefix of the name or the localpart beats a substring.
        let rank =
            if lower_name.as_deref().is_some_and(|n| n.starts_with(&term)) || id[1..].starts_with(&term) {
                0
            } else if id.contains(&term) || lower_name.as_deref().is_some_and(|n| n.contains(&term)) {
                1
            } else {
                continue;
            };
        // Users who share a room with the searcher or sit in a public one;
        // the searcher only in the second case (as Synapse: sharing a room
        // with oneself is no reason to be found).
        let visible = match user == *req.user() {
            true => in_public_room(services, &user)?,
            false if !services.users.is_local(&user) => true,
            false => share_a_room(&services.rooms, req.user(), &user)? || in_public_room(services, &user)?,
        };
        if !visible {
            continue;
        }
        let avatar = profile.get("avatar_url").and_then(|v| v.as_str()).map(str::to_owned);
        found.push((rank, user, name, avatar));
    }
    found.sort_by(|a, b| (a.0, a.2.is_none(), &a.1).cmp(&(b.0, b.2.is_none(), &b.1)));
    let limited = found.len() > limit;
    let results = found
        .into_iter()
        .take(limit)
        .map(|(_, user_id, name, avatar)| {
            let mut user = User::new(user_id);
            user.display_name = name;
            user.avatar_url = avatar.map(Into::into);
            user
        })
        .collect();
    let mut response = search_users::v3::Response::new(results, limited);
    response.limited = limited;
    Ok(response)
}
