//! Joining rooms across servers. As the joiner: `make_join` for a
//! template, our own signature on it, `send_join` (v2), and the room
//! installed from the answer (auth chain and state as outliers, then the
//! join). As the resident: the template for another server's user, and its
//! signed join taken in, countersigned for a restricted join, and passed
//! on to the room's other servers.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, RoomVersionId,
    ServerName, UserId,
    api::federation::membership::{create_join_event::v2 as send_join, prepare_join_event::v1 as make_join},
    signatures::PublicKeyMap,
};
use serde_json::{Map, Value, json};

use super::ingest;
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

/// Joins `user` (local) to a room this server is not in, through the
/// first of `via` that helps. `content` is the join's content.
pub async fn join_remote(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    content: Map<String, Value>,
) -> Result<OwnedEventId> {
    let ours = &services.config.server_name;
    let mut last = Error::not_found("No server in the room could be asked to help with the join");
    let mut tried = Vec::new();
    for server in via {
        if server == ours || tried.contains(&server) {
            continue;
        }
        tried.push(server);
        match join_through(services, room_id, user, server, content.clone()).await {
            Ok(event_id) => return Ok(event_id),
            Err(e) => {
                tracing::info!("joining {room_id} through {server}: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

async fn join_through(
    services: &Arc<Services>,
    room_id: &RoomId,
    user: &UserId,
    server: &ServerName,
    mut content: Map<String, Value>,
) -> Result<OwnedEventId> {
    let client = &services.servers.client;
    let mut request = make_join::Request::new(room_id.to_owned(), user.to_owned());
    request.ver = SUPPORTED_ROOM_VERSIONS.to_vec();
    let template = client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
    let version = template.room_version.unwrap_or(RoomVersionId::V1);
    let rules = version.rules().filter(|_| SUPPORTED_ROOM_VERSIONS.contains(&version)).ok_or_else(|| {
        Error::custom(
            http::StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("Room version {version} is not supported"),
        )
    })?;
    let mut event: Value = serde_json::from_str(template.event.get())
        .map_err(|e| Error::bad_json(format!("make_join answer: {e}")))?;
    if event["type"] != "m.room.member"
        || event["state_key"] != user.as_str()
        || event["sender"] != user.as_str()
        || event["room_id"] != room_id.as_str()
    {
        return Err(Error::bad_json("make_join answered with another event than this user's join"));
    }
    // Our content, keeping the resident's authoriser of a restricted join.
    if let Some(authoriser) = event["content"].get("join_authorised_via_users_server").cloned() {
        content.insert("join_authorised_via_users_server".to_owned(), authoriser);
    }
    content.insert("membership".to_owned(), json!("join"));
    let object = event.as_object_mut().ok_or_else(|| Error::bad_json("make_join answered no object"))?;
    object.insert("content".to_owned(), Value::Object(content));
    object.insert("origin_server_ts".to_owned(), json!(crate::util::now_ms()));
    for field in ["signatures", "hashes", "unsigned", "event_id"] {
        object.remove(field);
    }
    if !rules.event_format.require_event_id {
        object.remove("origin");
    }
    let (event_id, join) = services.rooms.finish(event, &rules, &version)?;

    let raw = serde_json::value::to_raw_value(&join).map_err(Error::internal)?;
    let request = send_join::Request::new(room_id.to_owned(), event_id.clone(), raw);
    let answer = client
        .send_with(server, request, SEND_JOIN_TIMEOUT, SEND_JOIN_MAX)
        .await
        .map_err(|f| f.to_client_error(server))?
        .room_state;
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
        Outcome::Accepted { .. } | Outcome::Duplicate => Ok(event_id),
        other => Err(Error::forbidden(format!("The join was not accepted: {other:?}"))),
    }
}

/// `make_join` as the resident: a join template for `user` (of `origin`),
/// built on the room as it is, naming a local authoriser for a restricted
/// join.
pub fn join_template(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
    versions: &[RoomVersionId],
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
    if !versions.contains(&record.version) {
        return Err(Error::custom(
            http::StatusCode::BAD_REQUEST,
            "M_INCOMPATIBLE_ROOM_VERSION",
            format!("The room's version {} is not one the joining server supports", record.version),
        ));
    }
    let mut content = json!({"membership": "join"});
    if let Some(authoriser) = services.rooms.restricted_join_authoriser(room_short, user)? {
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    let state = services.rooms.current_state(&record)?;
    let (_, mut event) = services.rooms.build(
        &record,
        &state,
        user,
        &PduBuilder::state("m.room.member", user.as_str(), content),
    )?;
    for field in ["signatures", "hashes", "event_id"] {
        event.remove(field);
    }
    Ok((record.version, event))
}

/// `send_join` as the resident: checks the join is `origin`'s user's own,
/// countersigns a restricted join we authorised, takes it in, and passes it
/// on to the room's other servers. Returns the event as now signed and the
/// state and auth chain before it (short IDs).
pub async fn take_join(
    services: &Arc<Services>,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    mut object: CanonicalJsonObject,
) -> Result<(CanonicalJsonObject, Vec<u64>, Vec<u64>)> {
    let (room_short, record) =
        services.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if !services.rooms.acl_allows(origin, room_short)? {
        return Err(Error::forbidden(format!("{origin} is denied by the room's server ACL")));
    }
    let rules = record.rules()?;
    if &event_id_of(&object, &rules)? != event_id || ingest::room_of(&object).as_deref() != Some(room_id) {
        return Err(Error::bad_json("The event ID or room ID does not match the event"));
    }
    let field = |name: &str| match object.get(name) {
        Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let membership = match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
            Some(CanonicalJsonValue::String(m)) => Some(m.clone()),
            _ => None,
        },
        _ => None,
    };
    let sender = field("sender").and_then(|s| ruma::OwnedUserId::try_from(s).ok());
    if field("type").as_deref() != Some("m.room.member")
        || membership.as_deref() != Some("join")
        || sender.is_none()
        || field("state_key") != sender.as_ref().map(ToString::to_string)
        || sender.as_ref().is_some_and(|s| s.server_name() != origin)
    {
        return Err(Error::bad_json("Not a join of a user of the sending server"));
    }
    countersign_if_authoriser(services, &mut object, &rules)?;
    let outcome =
        ingest::take_pdu(services, origin, room_id, object.clone()).await.map_err(Error::forbidden)?;
    match outcome {
        Outcome::Accepted { .. } | Outcome::Duplicate => {}
        other => return Err(Error::forbidden(format!("The join is not allowed: {other:?}"))),
    }
    let short = services.rooms.event_short(event_id)?.ok_or_else(|| Error::internal("join not stored"))?;
    let stored = services.rooms.pdu_json(short)?.ok_or_else(|| Error::internal("join not stored"))?;
    // The other servers in the room hear of the join from us.
    let ours = &services.config.server_name;
    let others: Vec<OwnedServerName> = services
        .rooms
        .servers_in_room(room_short)?
        .into_iter()
        .filter(|s| s != ours && s != origin)
        .collect();
    services.servers.outbox.queue(&others, Item::Pdu(short))?;
    let (state, chain) =
        services.rooms.state_and_auth_before(short)?.ok_or_else(|| Error::internal("join without state"))?;
    Ok((stored, state, chain))
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
    // Event signatures are over the redacted event.
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
