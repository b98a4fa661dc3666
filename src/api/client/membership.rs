//! Membership: join (by ID or alias), leave, invite, kick, ban, unban;
//! `GET /rooms/{roomId}/members`, `/joined_members`.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias,
            joined_members, kick_user, leave_room, unban_user,
        },
    },
};
use serde_json::{Map, Value, json};

use super::room::{parse_token, readable_state};
use crate::util::raw;
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter, ensure},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(join_by_id)
        .ruma(join_by_id_or_alias)
        .ruma(leave)
        .ruma(invite)
        .ruma(kick)
        .ruma(ban)
        .ruma(unban)
        .ruma(members)
        .ruma_shaped(joined, |body| {
            // Synapse names both profile fields of every member, null when unset.
            if let Some(joined) = body["joined"].as_object_mut() {
                for member in joined.values_mut() {
                    ensure(member, "display_name", || Value::Null);
                    ensure(member, "avatar_url", || Value::Null);
                }
            }
        })
        .ruma(forget)
        .ruma(knock)
}

/// Sends an `m.room.member` event for `target` from the membership
/// endpoints, with `reason` when given.
async fn set_membership(
    services: &Arc<Services>,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
) -> Result<()> {
    let mut content = Map::new();
    content.insert("membership".to_owned(), json!(membership));
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), json!(reason));
    }
    if matches!(membership, "invite" | "knock") {
        services.users.check_not_suspended(sender)?;
    }
    services.limiters.membership.check_user(sender)?;
    crate::federation::membership::change_membership(services, room_id, sender, target, content).await?;
    Ok(())
}

async fn join_by_id(req: Ruma<join_room_by_id::v3::Request>) -> Result<join_room_by_id::v3::Response> {
    let room_id = &req.body.room_id;
    req.services.users.check_not_suspended(req.user())?;
    req.services.limiters.membership.check_user(req.user())?;
    accept_third_party_invite(&req, room_id, req.body.third_party_signed.as_ref()).await?;
    join(&req, room_id, Vec::new()).await?;
    Ok(join_room_by_id::v3::Response::new(room_id.clone()))
}

/// Joins the room here when this server is in it, else through the
/// servers that may help (`servers_to_ask`).
async fn join<T>(req: &Ruma<T>, room_id: &RoomId, via: Vec<ruma::OwnedServerName>) -> Result<()> {
    let services = &req.services;
    services.rooms.check_not_blocked(room_id)?;
    let via = servers_to_ask(services, req.user(), room_id, via)?;
    if via.is_empty() {
        services.rooms.change_membership(room_id, req.user(), req.user(), join_content(req)).await?;
        return Ok(());
    }
    // A guest joins only where `m.room.guest_access` lets it: of a room this
    // server is not in, only the state shown with an invite can say so
    // (Synapse, which never sends it with invites, refuses them all).
    if services.users.is_guest(req.user())? {
        let invite = services.rooms.remote_invite(req.user(), room_id)?.filter(|i| i.rejected.is_none());
        let admitted = invite.is_some_and(|invite| {
            invite.stripped.iter().any(|event| {
                event["type"] == "m.room.guest_access" && event["content"]["guest_access"] == "can_join"
            })
        });
        if !admitted {
            return Err(Error::forbidden("Guest access not allowed"));
        }
    }
    let mut content = join_content(req);
    services.rooms.add_profile(req.user(), &mut content)?;
    crate::federation::membership::join_remote(services, room_id, req.user(), &via, content).await?;
    services.rooms.forget_remote_invite(req.user(), room_id)?;
    Ok(())
}

/// A join that answers a third-party invite (`third_party_signed`) turns
/// it into an invite first, which the join then accepts.
async fn accept_third_party_invite<T>(
    req: &Ruma<T>,
    room_id: &RoomId,
    signed: Option<&ruma::api::client::membership::ThirdPartySigned>,
) -> Result<()> {
    let Some(signed) = signed else { return Ok(()) };
    let value = serde_json::to_value(signed).map_err(Error::internal)?;
    super::third_party::accept(&req.services, room_id, &signed.sender, req.user(), &value).await
}

/// A join's content: the request body's own keys too (Synapse keeps them;
/// clients and bridges put custom keys there), `membership` set.
fn join_content<T>(req: &Ruma<T>) -> Map<String, Value> {
    let mut content: Map<String, Value> = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    content.remove("third_party_signed");
    content.insert("membership".to_owned(), json!("join"));
    content
}

/// A room ID as given, or the room an alias names (asked of its server),
/// with the servers that can help join it.
async fn resolve_room(
    services: &Services,
    room_id_or_alias: &ruma::RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    match OwnedRoomId::try_from(room_id_or_alias.to_owned()) {
        Ok(room_id) => Ok((room_id, Vec::new())),
        Err(alias) => crate::federation::query::resolve_alias(services, &alias).await,
    }
}

async fn join_by_id_or_alias(
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let (room_id, mut via) = resolve_room(&req.services, &req.body.room_id_or_alias).await?;
    req.services.users.check_not_suspended(req.user())?;
    req.services.limiters.membership.check_user(req.user())?;
    accept_third_party_invite(&req, &room_id, req.body.third_party_signed.as_ref()).await?;
    via.splice(0..0, req.body.via.iter().cloned());
    join(&req, &room_id, via).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

async fn leave(req: Ruma<leave_room::v3::Request>) -> Result<leave_room::v3::Response> {
    let (services, room_id) = (&req.services, &req.body.room_id);
    if crate::admin::notices::is_notices_room(services, req.user(), room_id)?
        && let Some(short) = services.rooms.room_short(room_id)?
        && services.rooms.membership(req.user(), short)?.as_deref() == Some("invite")
    {
        return Err(Error::custom(
            http::StatusCode::FORBIDDEN,
            "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
            "You cannot reject this invite",
        ));
    }
    set_membership(
        &req.services,
        &req.body.room_id,
        req.user(),
        req.user(),
        "leave",
        req.body.reason.as_deref(),
    )
    .await?;
    Ok(leave_room::v3::Response::new())
}

async fn invite(req: Ruma<invite_user::v3::Request>) -> Result<invite_user::v3::Response> {
    req.services.users.check_not_suspended(req.user())?;
    if let invite_user::v3::InvitationRecipient::UserId(recipient) = &req.body.recipient
        && crate::admin::notices::notices_user(&req.services).as_ref() == Some(&recipient.user_id)
    {
        return Err(Error::forbidden("Cannot invite this user"));
    }
    if req.services.users.is_shadow_banned(req.user()) {
        // Seems done; nobody is invited (Synapse's shadow-ban).
        return Ok(invite_user::v3::Response::new());
    }
    let recipient = match &req.body.recipient {
        invite_user::v3::InvitationRecipient::UserId(recipient) => recipient,
        invite_user::v3::InvitationRecipient::ThirdPartyId(invite) => {
            if req.sender_is_guest {
                return Err(Error::guest_forbidden());
            }
            req.services.limiters.membership.check_user(req.user())?;
            super::third_party::invite(&req.services, &req.body.room_id, req.user(), invite).await?;
            return Ok(invite_user::v3::Response::new());
        }
        _ => return Err(Error::invalid_param("Unknown kind of invitee")),
    };
    let user_id = &recipient.user_id;
    // An invite from someone the invitee ignores is dropped: it seems made.
    if req.services.users.is_local(user_id) && req.services.users.ignored_users(user_id)?.contains(req.user())
    {
        tracing::debug!("dropped an invite of {user_id} by {}, whom they ignore", req.user());
        return Ok(invite_user::v3::Response::new());
    }
    set_membership(
        &req.services,
        &req.body.room_id,
        req.user(),
        user_id,
        "invite",
        recipient.reason.as_deref(),
    )
    .await?;
    Ok(invite_user::v3::Response::new())
}

async fn kick(req: Ruma<kick_user::v3::Request>) -> Result<kick_user::v3::Response> {
    let body = &req.body;
    // Only someone in the room (joined, invited or knocking) can be kicked; a
    // kick must not turn a ban into a leave.
    let short =
        req.services.rooms.room_short(&body.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !matches!(
        req.services.rooms.membership(&body.user_id, short)?.as_deref(),
        Some("join" | "invite" | "knock")
    ) {
        return Err(Error::forbidden(format!("{} is not in the room.", body.user_id)));
    }
    set_membership(&req.services, &body.room_id, req.user(), &body.user_id, "leave", body.reason.as_deref())
        .await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban(req: Ruma<ban_user::v3::Request>) -> Result<ban_user::v3::Response> {
    let body = &req.body;
    set_membership(&req.services, &body.room_id, req.user(), &body.user_id, "ban", body.reason.as_deref())
        .await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban(req: Ruma<unban_user::v3::Request>) -> Result<unban_user::v3::Response> {
    let body = &req.body;
    let short =
        req.services.rooms.room_short(&body.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if req.services.rooms.membership(&body.user_id, short)?.as_deref() != Some("ban") {
        return Err(Error::forbidden(format!("{} is not banned.", body.user_id)));
    }
    set_membership(&req.services, &body.room_id, req.user(), &body.user_id, "leave", body.reason.as_deref())
        .await?;
    Ok(unban_user::v3::Response::new())
}

async fn members(req: Ruma<get_member_events::v3::Request>) -> Result<get_member_events::v3::Response> {
    let rooms = &req.services.rooms;
    let body = &req.body;
    let (room_short, readable) = readable_state(&req.services, req.user(), &body.room_id)?;
    let state = match &body.at {
        // `at` names a gap: the state after the last event before it; for a
        // former member, no later than their leaving (review §2.2).
        Some(at) => {
            let mut at = parse_token(at)?;
            if let Some(end) = rooms.visible_end(req.user(), room_short)? {
                at = at.min(end);
            }
            rooms.state_at_position(room_short, at.saturating_sub(1))?
        }
        None => readable,
    };
    let wanted = |membership: &str| {
        body.membership.as_ref().is_none_or(|m| m.as_str() == membership)
            && body.not_membership.as_ref().is_none_or(|m| m.as_str() != membership)
    };
    let mut chunk = Vec::new();
    for (user, _) in rooms.members(room_short)? {
        let Some(pdu) = rooms.state_event(&state, "m.room.member", user.as_str())? else { continue };
        if !wanted(pdu.content_value()["membership"].as_str().unwrap_or("")) {
            continue;
        }
        let short = rooms
            .event_short(&pdu.event_id)?
            .ok_or_else(|| Error::internal("member event without short ID"))?;
        chunk.push(raw(rooms.client_event(short, None, req.user())?)?);
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

async fn joined(req: Ruma<joined_members::v3::Request>) -> Result<joined_members::v3::Response> {
    let rooms = &req.services.rooms;
    let room_short =
        rooms.room_short(&req.body.room_id)?.ok_or_else(|| Error::forbidden("You are not in this room."))?;
    if rooms.membership(req.user(), room_short)?.as_deref() != Some("join") {
        return Err(Error::forbidden("You are not in this room."));
    }
    let mut joined = BTreeMap::new();
    for (user, membership) in rooms.members(room_short)? {
        if membership != "join" {
            continue;
        }
        let pdu = rooms.current_state_event(room_short, "m.room.member", user.as_str())?;
        let content = pdu.map(|p| p.content_value()).unwrap_or(Value::Null);
        let mut member = joined_members::v3::RoomMember::new();
        member.display_name = content["displayname"].as_str().map(str::to_owned);
        member.avatar_url = content["avatar_url"].as_str().map(Into::into);
        joined.insert(user, member);
    }
    Ok(joined_members::v3::Response::new(joined))
}

async fn forget(req: Ruma<forget_room::v3::Request>) -> Result<forget_room::v3::Response> {
    let rooms = &req.services.rooms;
    let room_short = rooms.room_short(&req.body.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    match rooms.membership(req.user(), room_short)?.as_deref() {
        Some("join" | "invite" | "knock") => Err(Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "Leave the room first",
        )),
        None => Err(Error::not_found("You were never in this room")),
        Some(_) => {
            rooms.forget(req.user(), room_short)?;
            Ok(forget_room::v3::Response::new())
        }
    }
}

async fn knock(req: Ruma<knock_room::v3::Request>) -> Result<knock_room::v3::Response> {
    let services = &req.services;
    let (room_id, mut via) = resolve_room(services, &req.body.room_id_or_alias).await?;
    via.splice(0..0, req.body.via.iter().cloned());
    let via = servers_to_ask(services, req.user(), &room_id, via)?;
    if via.is_empty() {
        set_membership(services, &room_id, req.user(), req.user(), "knock", req.body.reason.as_deref())
            .await?;
    } else {
        services.users.check_not_suspended(req.user())?;
        services.limiters.membership.check_user(req.user())?;
        let mut content = Map::new();
        if let Some(reason) = &req.body.reason {
            content.insert("reason".to_owned(), json!(reason));
        }
        services.rooms.add_profile(req.user(), &mut content)?;
        crate::federation::membership::knock_remote(services, &room_id, req.user(), &via, content).await?;
    }
    Ok(knock_room::v3::Response::new(room_id))
}

/// The servers to ask about a room this server is not in (none when it
/// is, or federation is off): `via`, the server of `user`'s invite, the
/// room ID's server (before room version 12 it names the creator's).
fn servers_to_ask(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    mut via: Vec<ruma::OwnedServerName>,
) -> Result<Vec<ruma::OwnedServerName>> {
    let ours = &services.config.server_name;
    let in_room = match services.rooms.room_short(room_id)? {
        Some(short) => services.rooms.server_in_room(ours, short)?,
        None => false,
    };
    if in_room || !services.config.federation.enabled {
        return Ok(Vec::new());
    }
    if let Some(invite) = services.rooms.remote_invite(user, room_id)?
        && let Some(inviter) = invite.sender()
    {
        via.push(inviter.server_name().to_owned());
    }
    if let Some(server) = room_id.server_name() {
        via.push(server.to_owned());
    }
    via.retain(|server| server != ours);
    Ok(via)
}
