//! Joining rooms across servers. As the joiner: `make_join` for a
//! template, our own signature on it, `send_join` (v2, or v1 where the resident lacks v2), and the room
//! installed from the answer (auth chain and state as outliers, then the
//! join). As the resident: the template for another server's user, and its
//! signed join taken in, countersigned for a restricted join, and passed
//! on to the room's other servers.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, RoomVersionId,
    ServerName, UserId,
    api::federation::membership::{
        create_invite::v2 as create_invite,
        create_join_event::v2::{self as send_join, RoomState},
        create_knock_event::v1 as send_knock,
        create_leave_event::v2 as send_leave,
        prepare_join_event::v1 as make_join,
        prepare_knock_event::v1 as make_knock,
        prepare_leave_event::v1 as make_leave,
    },
    signatures::PublicKeyMap,
};
use serde_json::{Map, Value, json};

use super::{ingest, v1};
use crate::{
    Error, Result,
    rooms::{
        SUPPORTED_ROOM_VERSIONS, builder::PduBuilder, pdu::event_id_of, pipeline::Outcome,
        remote::JoinResponse,
    },
    servers::outbox::Item,
    services::Services,
};

/// Longest wait for a `send_join` answer (big rooms send much).
const SEND_JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Largest `send_join` answer read.
const SEND_JOIN_MAX: usize = 512 * 1024 * 1024;

/// Tries `attempt` through each of `via` (each once, never this server)
/// until one succeeds; the last error otherwise.
async fn through_first<T, F>(
    services: &Services,
    via: &[OwnedServerName],
    what: &str,
    attempt: impl Fn(OwnedServerName) -> F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let mut last = Error::not_found(format!("No server in the room could be asked ({what})"));
    let mut tried: Vec<&OwnedServerName> = Vec::new();
    for server in via {
        if *server == services.config.server_name || tried.contains(&server) {
            continue;
        }
        tried.push(server);
        match attempt(server.clone()).await {
            Ok(value) => return Ok(value),
            Err(e) => {
                tracing::info!("{what} through {server}: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

/// Joins `user` (local) to a room this server is not in, through the
/// first of `via` that helps. `content` is the join's content.
pub async fn join_remote(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    content: Map<String, Value>,
) -> Result<OwnedEventId> {
    services.rooms.check_not_blocked(room_id)?;
    let what = format!("joining {room_id}");
    through_first(services, via, &what, |server| {
        let content = content.clone();
        async move { join_through(services, room_id, user, &server, content).await }
    })
    .await
}

async fn join_through(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
    server: &ServerName,
    content: Map<String, Value>,
) -> Result<OwnedEventId> {
    let client = &services.servers.client;
    let mut request = make_join::Request::new(room_id.to_owned(), user.to_owned());
    request.ver = SUPPORTED_ROOM_VERSIONS.to_vec();
    let template = client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
    let version = template.room_version.unwrap_or(RoomVersionId::V1);
    let (event_id, join, rules) =
        sign_template(services, &version, &template.event, room_id, user, "join", content)?;

    let raw = serde_json::value::to_raw_value(&join).map_err(Error::internal)?;
    let request = send_join::Request::new(room_id.to_owned(), event_id.clone(), raw.clone());
    let answer = match client.send_with(server, request, SEND_JOIN_TIMEOUT, SEND_JOIN_MAX).await {
        Ok(answer) => answer.room_state,
        // A server without v2 (as Synapse, falling back).
        Err(failure) if failure.is_unknown_endpoint() => {
            let request =
                v1::send_join::Request { room_id: room_id.to_owned(), event_id: event_id.clone(), pdu: raw };
            let answer = client
                .send_with(server, request, SEND_JOIN_TIMEOUT, SEND_JOIN_MAX)
                .await
                .map_err(|f| f.to_client_error(server))?;
            v1::unwrap::<RoomState>(&answer).map_err(Error::bad_json)?
        }
        Err(failure) => return Err(failure.to_client_error(server)),
    };
    // The resident's copy carries its signature on a restricted join.
    let join = match &answer.event {
        Some(raw) => {
            let theirs = ingest::parse_pdu(raw).map_err(Error::bad_json)?;
            if event_id_of(&theirs, &rules)? != event_id {
                return Err(Error::bad_json("send_join answered with another event"));
            }
            theirs
        }
        None => join,
    };
    let parse_all = |raws: &[Box<serde_json::value::RawValue>]| -> Vec<CanonicalJsonObject> {
        raws.iter()
            .filter_map(|raw| ingest::parse_pdu(raw).ok())
            .filter(|object| ingest::belongs_to(object, room_id, &rules))
            .collect()
    };
    let (state, auth_chain) = (parse_all(&answer.state), parse_all(&answer.auth_chain));
    let mut keys = PublicKeyMap::new();
    for object in state.iter().chain(&auth_chain).chain([&join]) {
        for (server, set) in ingest::event_keys(services, object, &rules).await? {
            keys.entry(server).or_default().extend(set);
        }
    }
    let outcome = services
        .rooms
        .install_remote_room(room_id, version, JoinResponse { state, auth_chain, join }, keys)
        .await
        .map_err(|e| match e {
            crate::rooms::pipeline::AppendError::Refused(e) => e,
            other => Error::bad_json(format!("The join answer is incomplete: {other:?}")),
        })?;
    match outcome {
        Outcome::Accepted { .. } | Outcome::Duplicate => {
            carry_over_predecessor(services, room_id)?;
            if let Some(room_short) = services.rooms.room_short(room_id)? {
                super::edus::presence_for_joiner(services, room_short, user)?;
            }
            Ok(event_id)
        }
        other => Err(Error::forbidden(format!("The join was not accepted: {other:?}"))),
    }
}

/// A room joined from elsewhere that continues another (its creation names
/// a predecessor) takes over what this server kept about the old one:
/// aliases, directory listing, local members' tags and push rules.
fn carry_over_predecessor(services: &Services, room_id: &RoomId) -> Result<()> {
    let rooms = &services.rooms;
    let Some((_, record)) = rooms.room(room_id)? else { return Ok(()) };
    let state = rooms.current_state(&record)?;
    let Some(create) = rooms.state_event(&state, "m.room.create", "")? else { return Ok(()) };
    let content = create.content_value();
    let Some(old_room) = content["predecessor"]["room_id"].as_str().and_then(|id| RoomId::parse(id).ok())
    else {
        return Ok(());
    };
    rooms.carry_over(&old_room, room_id, None)
}

/// Signs a membership template another server made (`make_join`,
/// `make_leave`, `make_knock`) as this user's own: checks it is the user's
/// `membership` event in the room, sets our content (keeping a restricted
/// join's authoriser) and the time, then hashes and signs it.
fn sign_template(
    services: &Services,
    version: &RoomVersionId,
    template: &serde_json::value::RawValue,
    room_id: &RoomId,
    user: &UserId,
    membership: &str,
    mut content: Map<String, Value>,
) -> Result<(OwnedEventId, CanonicalJsonObject, ruma::room_version_rules::RoomVersionRules)> {
    let rules = version.rules().filter(|_| SUPPORTED_ROOM_VERSIONS.contains(version)).ok_or_else(|| {
        Error::custom(
            http::StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Room version {version} is not supported"),
        )
    })?;
    let mut event: Value = serde_json::from_str(template.get())
        .map_err(|e| Error::bad_json(format!("The {membership} template is not JSON: {e}")))?;
    if event["type"] != "m.room.member"
        || event["state_key"] != user.as_str()
        || event["sender"] != user.as_str()
        || event["room_id"] != room_id.as_str()
    {
        return Err(Error::bad_json(format!("The {membership} template is not this user's {membership}")));
    }
    if let Some(authoriser) = event["content"].get("join_authorised_via_users_server").cloned() {
        content.insert("join_authorised_via_users_server".to_owned(), authoriser);
    }
    content.insert("membership".to_owned(), json!(membership));
    let object = event.as_object_mut().ok_or_else(|| Error::bad_json("The template is no object"))?;
    object.insert("content".to_owned(), Value::Object(content));
    object.insert("origin_server_ts".to_owned(), json!(crate::util::now_ms()));
    for field in ["signatures", "hashes", "unsigned", "event_id"] {
        object.remove(field);
    }
    if !rules.event_format.require_event_id {
        object.remove("origin");
    }
    let (event_id, signed) = services.rooms.finish(event, &rules, version)?;
    Ok((event_id, signed, rules))
}

/// 400 `M_INCOMPATIBLE_ROOM_VERSION` naming the room's version.
fn incompatible(version: &RoomVersionId, message: &str) -> Error {
    use ruma::api::error::{ErrorKind, IncompatibleRoomVersionErrorData};
    let kind = ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(version.clone()));
    Error::new(http::StatusCode::BAD_REQUEST, kind, format!("{message} ({version})"))
}

/// `make_join`, `make_leave`, `make_knock` as the resident: the template
/// of `user`'s (of `origin`) `membership` event, built on the room as it
/// is; a restricted join names a local authoriser. `versions`: those the
/// asking server supports (joins and knocks).
pub fn member_template(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    membership: &str,
    versions: Option<&[RoomVersionId]>,
) -> Result<(RoomVersionId, CanonicalJsonObject)> {
    if user.server_name() != origin {
        return Err(Error::forbidden("The user is not on the asking server"));
    }
    let (room_short, record) =
        services.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !services.rooms.server_in_room(&services.config.server_name, room_short)? {
        return Err(Error::not_found("This server is not in the room"));
    }
    if !services.rooms.acl_allows(origin, room_short)? {
        return Err(Error::forbidden(format!("{origin} is denied by the room's server ACL")));
    }
    if versions.is_some_and(|versions| !versions.contains(&record.version)) {
        return Err(incompatible(
            &record.version,
            "The room's version is not one the asking server supports",
        ));
    }
    let mut content = json!({"membership": membership});
    if membership == "join"
        && let Some(authoriser) = services.rooms.restricted_join_authoriser(room_short, user)?
    {
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    let state = services.rooms.current_state(&record)?;
    let builder = PduBuilder::state("m.room.member", user.as_str(), content);
    let (event_id, mut event) = services.rooms.build(&record, &state, user, &builder)?;
    // Refused now rather than after the other server signed it.
    services.rooms.check_built(room_short, &record, &event_id, &event)?;
    for field in ["signatures", "hashes", "event_id"] {
        event.remove(field);
    }
    Ok((record.version, event))
}

/// `send_join`, `send_leave`, `send_knock` as the resident: checks the
/// event is `origin`'s user's own `membership` event, countersigns a
/// restricted join we authorised, takes it in and passes it on to the
/// room's other servers. Returns its short ID.
pub async fn take_member_event(
    services: &Arc<Services>,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    mut object: CanonicalJsonObject,
    membership: &str,
) -> Result<u64> {
    let (room_short, record) =
        services.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !services.rooms.acl_allows(origin, room_short)? {
        return Err(Error::forbidden(format!("{origin} is denied by the room's server ACL")));
    }
    let rules = record.rules()?;
    if &event_id_of(&object, &rules)? != event_id || ingest::room_of(&object).as_deref() != Some(room_id) {
        return Err(Error::bad_json("The event ID or room ID does not match the event"));
    }
    let pdu = crate::rooms::pdu::Pdu::from_canonical(event_id.clone(), &object)?;
    if pdu.kind != ruma::events::TimelineEventType::RoomMember
        || pdu.content_value()["membership"] != membership
        || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
    {
        return Err(Error::bad_json(format!("Not a {membership} event of its sender")));
    }
    if pdu.sender.server_name() != origin {
        return Err(Error::forbidden(format!("Not a {membership} of a user of the sending server")));
    }
    if membership == "join" {
        countersign_if_authoriser(services, &mut object, &rules)?;
    }
    let outcome = ingest::take_pdu(services, origin, room_id, object).await.map_err(Error::forbidden)?;
    if !matches!(outcome, Outcome::Accepted { .. } | Outcome::Duplicate) {
        return Err(Error::forbidden(format!("The {membership} is not allowed: {outcome:?}")));
    }
    let short = services.rooms.event_short(event_id)?.ok_or_else(|| Error::internal("event not stored"))?;
    // The other servers in the room hear of it from us.
    let ours = &services.config.server_name;
    let others: Vec<OwnedServerName> = services
        .rooms
        .servers_in_room(room_short)?
        .into_iter()
        .filter(|s| s != ours && s != origin)
        .collect();
    services.servers.outbox.queue(&others, Item::Pdu(short))?;
    Ok(short)
}

/// Adds this server's signature to a restricted join one of our users
/// authorises (the signature the auth rules ask of the authoriser's server).
fn countersign_if_authoriser(
    services: &Services,
    object: &mut CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<()> {
    let authoriser = match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get("join_authorised_via_users_server") {
            Some(CanonicalJsonValue::String(user)) => ruma::OwnedUserId::try_from(user.as_str()).ok(),
            _ => None,
        },
        _ => None,
    };
    let Some(authoriser) = authoriser else { return Ok(()) };
    if authoriser.server_name() != services.config.server_name {
        return Ok(());
    }
    countersign(services, object, rules)
}

/// Adds this server's signature to another server's event (signatures
/// are over the redacted event).
fn countersign(
    services: &Services,
    object: &mut CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<()> {
    let mut redacted =
        ruma::canonical_json::redact(object.clone(), &rules.redaction, None).map_err(Error::internal)?;
    services.keys.sign(services.config.server_name.as_str(), &mut redacted)?;
    let ours = match redacted.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => all.get(services.config.server_name.as_str()).cloned(),
        _ => None,
    }
    .ok_or_else(|| Error::internal("no signature made"))?;
    match object
        .entry("signatures".to_owned())
        .or_insert_with(|| CanonicalJsonValue::Object(Default::default()))
    {
        CanonicalJsonValue::Object(all) => {
            all.insert(services.config.server_name.to_string(), ours);
        }
        _ => return Err(Error::bad_json("`signatures` is not an object")),
    }
    Ok(())
}

/// State types sent with an invite (as full PDUs, spec 1.16).
const INVITE_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.topic",
    // (Not in the spec's list: lets the invitee's server admit a guest.)
    "m.room.guest_access",
];

/// Invites a user of another server: the invite is built here, checked,
/// signed by the invitee's server through `/invite` (v2, with the room's
/// stripped state), then appended here, whence it reaches the room's
/// other servers.
pub async fn invite_remote(
    services: &Arc<Services>,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    content: Map<String, Value>,
) -> Result<OwnedEventId> {
    let rooms = &services.rooms;
    rooms.check_not_blocked(room_id)?;
    let (room_short, record) = rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if rooms.membership(target, room_short)?.as_deref() == Some("join") {
        return Err(Error::forbidden(format!("{target} is already in the room.")));
    }
    let (event_id, object, stripped) = {
        let _guard = rooms.lock(room_id).await;
        let (_, record) = rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let state = rooms.current_state(&record)?;
        let builder = PduBuilder::state("m.room.member", target.as_str(), Value::Object(content));
        let (event_id, object) = rooms.build(&record, &state, sender, &builder)?;
        rooms.check_built(room_short, &record, &event_id, &object)?;
        let stripped = stripped_room_state(services, room_short, sender)?;
        (event_id, object, stripped)
    };
    let server = target.server_name();
    let rules = record.rules()?;
    let signed =
        send_invite(services, server, room_id, &event_id, &record.version, &rules, &object, stripped).await?;
    // Theirs must be ours with their signature added, nothing else changed.
    let strip = |o: &CanonicalJsonObject| {
        let mut o = o.clone();
        o.remove("signatures");
        o.remove("unsigned");
        o
    };
    if event_id_of(&signed, &rules)? != event_id || strip(&signed) != strip(&object) {
        return Err(Error::bad_json(format!("{server} changed the invite it signed")));
    }
    let _guard = rooms.lock(room_id).await;
    let (_, mut record) = rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    crate::util::heavy(|| {
        rooms.append(
            room_short,
            &mut record,
            event_id.clone(),
            signed,
            crate::rooms::pipeline::Origin::Local(None),
            crate::rooms::pipeline::StateBefore::FromPrevs,
        )
    })
    .map_err(|e| match e {
        crate::rooms::pipeline::AppendError::Refused(e) => e,
        other => Error::internal(format!("{other:?}")),
    })?;
    Ok(event_id)
}

/// Has `server` sign an invite: `/invite` v2, or v1 when it has no v2 and
/// the room's events are of the v1 format (whose invite carries no room
/// version), as Synapse does. Its signed copy, parsed.
#[allow(clippy::too_many_arguments)]
async fn send_invite(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    version: &RoomVersionId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    invite: &CanonicalJsonObject,
    stripped: Vec<ruma::api::federation::membership::RawStrippedState>,
) -> Result<CanonicalJsonObject> {
    let client = &services.servers.client;
    let raw = serde_json::value::to_raw_value(invite).map_err(Error::internal)?;
    let request = create_invite::Request::new(
        room_id.to_owned(),
        event_id.clone(),
        version.clone(),
        raw,
        stripped.clone(),
    );
    let signed = match client.send(server, request).await {
        Ok(answer) => answer.event,
        Err(failure) if failure.is_unknown_endpoint() => {
            if rules.event_id_format != ruma::room_version_rules::EventIdFormatVersion::V1 {
                return Err(Error::new(
                    http::StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                    format!("{server} does not support this room version"),
                ));
            }
            // The v1 body is the event, its room's stripped state under `unsigned`.
            let mut event = serde_json::to_value(invite).map_err(Error::internal)?;
            event["unsigned"] = json!({ "invite_room_state": stripped });
            let pdu = serde_json::value::to_raw_value(&event).map_err(Error::internal)?;
            let request =
                v1::invite::Request { room_id: room_id.to_owned(), event_id: event_id.clone(), pdu };
            let answer = client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
            #[derive(serde::Deserialize)]
            struct Signed {
                event: Box<serde_json::value::RawValue>,
            }
            v1::unwrap::<Signed>(&answer).map_err(Error::bad_json)?.event
        }
        Err(failure) => return Err(failure.to_client_error(server)),
    };
    ingest::parse_pdu(&signed).map_err(Error::bad_json)
}

/// `/invite` as the invitee's server: checks the invite (of a local user,
/// sent by a user of `origin`, signed by it), countersigns it, and keeps
/// it for the invitee when this server is not in the room (when it is, the
/// invite comes in with the room's events).
pub async fn take_invite(
    services: &Arc<Services>,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    version: &RoomVersionId,
    object: CanonicalJsonObject,
    invite_state: &[ruma::api::federation::membership::RawStrippedState],
) -> Result<CanonicalJsonObject> {
    if !SUPPORTED_ROOM_VERSIONS.contains(version) {
        return Err(incompatible(version, "This server does not support the room's version"));
    }
    services.rooms.check_not_blocked(room_id)?;
    let rules = version.rules().ok_or_else(|| Error::bad_json("Unknown room version"))?;
    if &event_id_of(&object, &rules)? != event_id || ingest::room_of(&object).as_deref() != Some(room_id) {
        return Err(Error::bad_json("The event ID or room ID does not match the event"));
    }
    let pdu = crate::rooms::pdu::Pdu::from_canonical(event_id.clone(), &object)?;
    let target = pdu
        .state_key
        .as_deref()
        .and_then(|key| ruma::OwnedUserId::try_from(key).ok())
        .ok_or_else(|| Error::bad_json("An invite names a user"))?;
    if pdu.kind != ruma::events::TimelineEventType::RoomMember
        || pdu.content_value()["membership"] != "invite"
    {
        return Err(Error::bad_json("Not an invite"));
    }
    if pdu.sender.server_name() != origin {
        return Err(Error::forbidden("The inviter is not on the sending server"));
    }
    // Someone the invitee ignores cannot invite them (the spec lets
    // servers drop such invites).
    if services.users.is_local(&target) && services.users.ignored_users(&target)?.contains(&pdu.sender) {
        return Err(Error::forbidden("The invitee does not accept invites from this user"));
    }
    if let Some(short) = services.rooms.room_short(room_id)?
        && !services.rooms.acl_allows(origin, short)?
    {
        return Err(Error::forbidden(format!("{origin} is denied by the room's server ACL")));
    }
    // An invite for a name nobody holds yet is taken, as Synapse takes it
    // (it waits for whoever registers the name); a deactivated account's
    // is not.
    if !services.users.is_local(&target) {
        return Err(Error::not_found("No such user here"));
    }
    if services.users.get(&target)?.is_some_and(|user| user.deactivated) {
        return Err(Error::forbidden("This account is deactivated"));
    }
    let keys = ingest::event_keys(services, &object, &rules).await?;
    match ruma::signatures::verify_event(&keys, &object, &rules) {
        Ok(ruma::signatures::Verified::All) => {}
        _ => return Err(Error::forbidden("The invite's signature or hash does not check")),
    }
    let mut signed = object;
    countersign(services, &mut signed, &rules)?;
    let in_room = match services.rooms.room_short(room_id)? {
        Some(short) => services.rooms.server_in_room(&services.config.server_name, short)?,
        None => false,
    };
    if !in_room {
        let stripped = invite_state.iter().filter_map(stripped_event).collect();
        services.rooms.store_remote_membership(
            &target,
            room_id,
            version.clone(),
            signed.clone(),
            stripped,
            false,
        )?;
    }
    Ok(signed)
}

/// A stripped state event (type, state key, sender, content) from either
/// form an invite's room state comes in.
fn stripped_event(state: &ruma::api::federation::membership::RawStrippedState) -> Option<Value> {
    #[allow(deprecated)]
    let json = match state {
        ruma::api::federation::membership::RawStrippedState::Pdu(raw) => raw.get(),
        ruma::api::federation::membership::RawStrippedState::Stripped(raw) => raw.json().get(),
        _ => return None,
    };
    let value: Value = serde_json::from_str(json).ok()?;
    Some(json!({
        "type": value.get("type")?, "state_key": value.get("state_key")?,
        "sender": value.get("sender")?, "content": value.get("content")?,
    }))
}

/// Rejects a local user's invite to a room this server is not in: a leave
/// through the inviting server (`make_leave`, `send_leave`); when that
/// server cannot be reached, the invite is still dropped here.
pub async fn reject_remote_invite(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
) -> Result<OwnedEventId> {
    let invite = services
        .rooms
        .remote_invite(user, room_id)?
        .ok_or_else(|| Error::not_found("No invite to this room"))?;
    let mut via: Vec<OwnedServerName> =
        invite.sender().map(|s| s.server_name().to_owned()).into_iter().collect();
    if let Some(server) = room_id.server_name() {
        via.push(server.to_owned());
    }
    let what = format!("rejecting the invite to {room_id}");
    let leave = through_first(services, &via, &what, |server| async move {
        leave_through(services, room_id, user, &server).await
    })
    .await
    .ok();
    // Without a server that took it, a leave the client can show.
    let leave = leave.unwrap_or_else(|| {
        json!({
            "type": "m.room.member", "state_key": user, "sender": user,
            "content": {"membership": "leave"}, "room_id": room_id,
            "event_id": format!("$rejected-{}", crate::util::random_string(16)),
            "origin_server_ts": crate::util::now_ms(),
        })
    });
    let event_id = leave["event_id"].as_str().and_then(|id| OwnedEventId::try_from(id).ok());
    services.rooms.reject_remote_invite(user, room_id, leave)?;
    event_id.ok_or_else(|| Error::internal("a leave without an event ID"))
}

/// `make_leave` + `send_leave` through `server`; the leave in the client format.
async fn leave_through(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
    server: &ServerName,
) -> Result<Value> {
    let client = &services.servers.client;
    let template = client
        .send(server, make_leave::Request::new(room_id.to_owned(), user.to_owned()))
        .await
        .map_err(|f| f.to_client_error(server))?;
    let version = template.room_version.unwrap_or(RoomVersionId::V1);
    let (event_id, leave, _) =
        sign_template(services, &version, &template.event, room_id, user, "leave", Map::new())?;
    let raw = serde_json::value::to_raw_value(&leave).map_err(Error::internal)?;
    match client
        .send(server, send_leave::Request::new(room_id.to_owned(), event_id.clone(), raw.clone()))
        .await
    {
        Ok(_) => {}
        Err(failure) if failure.is_unknown_endpoint() => {
            let request =
                v1::send_leave::Request { room_id: room_id.to_owned(), event_id: event_id.clone(), pdu: raw };
            client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
        }
        Err(failure) => return Err(failure.to_client_error(server)),
    }
    let mut client_event = serde_json::to_value(&leave).map_err(Error::internal)?;
    if let Some(object) = client_event.as_object_mut() {
        for field in ["signatures", "hashes", "auth_events", "prev_events", "depth"] {
            object.remove(field);
        }
        object.insert("event_id".to_owned(), json!(event_id));
    }
    Ok(client_event)
}

/// The room state a knocker or invitee is shown, as full PDUs (spec 1.16),
/// with the membership of `member` (the inviter; as Synapse).
pub fn stripped_room_state(
    services: &Services,
    room_short: u64,
    member: &UserId,
) -> Result<Vec<ruma::api::federation::membership::RawStrippedState>> {
    let record = services.rooms.room_by_short(room_short)?;
    let state = services.rooms.current_state(&record)?;
    let mut stripped = Vec::new();
    let keys = INVITE_STATE_TYPES.iter().map(|kind| (*kind, "")).chain([("m.room.member", member.as_str())]);
    for (kind, state_key) in keys {
        if let Some(pdu) = services.rooms.state_event(&state, kind, state_key)?
            && let Some(short) = services.rooms.event_short(&pdu.event_id)?
            && let Some(json) = services.rooms.pdu_json(short)?
        {
            let raw = serde_json::value::to_raw_value(&json).map_err(Error::internal)?;
            stripped.push(ruma::api::federation::membership::RawStrippedState::Pdu(raw));
        }
    }
    Ok(stripped)
}

/// Knocks on a room this server is not in, through the first of `via`
/// that helps; the knock is kept, with the room's stripped state, for the
/// knocker's `/sync` until an invite or a join settles it.
pub async fn knock_remote(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    content: Map<String, Value>,
) -> Result<OwnedEventId> {
    services.rooms.check_not_blocked(room_id)?;
    let what = format!("knocking on {room_id}");
    let content = &content;
    through_first(services, via, &what, |server| async move {
        let server = &server;
        let client = &services.servers.client;
        let mut request = make_knock::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = SUPPORTED_ROOM_VERSIONS.to_vec();
        let template = client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
        let version = template.room_version;
        let (event_id, knock, _) =
            sign_template(services, &version, &template.event, room_id, user, "knock", content.clone())?;
        let raw = serde_json::value::to_raw_value(&knock).map_err(Error::internal)?;
        let answer = client
            .send(server, send_knock::Request::new(room_id.to_owned(), event_id.clone(), raw))
            .await
            .map_err(|f| f.to_client_error(server))?;
        let stripped = answer.knock_room_state.iter().filter_map(stripped_event).collect();
        services.rooms.store_remote_membership(user, room_id, version, knock, stripped, true)?;
        Ok(event_id)
    })
    .await
}

/// A membership change a client asks for: an invite of another server's
/// user is signed by that server first; leaving a room this server only
/// has an invite to rejects the invite through the inviting server; the
/// rest is `Rooms::change_membership`.
pub async fn change_membership(
    services: &Arc<Services>,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    mut content: Map<String, Value>,
) -> Result<ruma::OwnedEventId> {
    let membership = content.get("membership").and_then(Value::as_str).unwrap_or_default().to_owned();
    if membership == "invite" && !services.users.is_local(target) {
        if services.users.is_guest(sender)? {
            return Err(Error::guest_forbidden());
        }
        if !services.config.federation.allows(target.server_name()) {
            return Err(Error::forbidden(format!("Federation with {} is not allowed", target.server_name())));
        }
        content.remove("join_authorised_via_users_server");
        return invite_remote(services, room_id, sender, target, content).await;
    }
    if membership == "leave" && sender == target {
        let known = match services.rooms.room_short(room_id)? {
            Some(short) => services.rooms.membership(sender, short)?.is_some(),
            None => false,
        };
        if !known && services.rooms.remote_invite(sender, room_id)?.is_some() {
            return reject_remote_invite(services, room_id, sender).await;
        }
    }
    services.rooms.change_membership(room_id, sender, target, content).await
}
