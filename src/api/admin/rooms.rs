//! Synapse's admin API for rooms: list (order, search, paging), details,
//! members, state, block, delete (shut down and purge; v2 as a job with
//! its status), make a user room admin, join a user, scheduled tasks, the
//! server version; a room's forward extremities, and Hearth's
//! `GET /_hearth/admin/v1/rooms/{roomId}/fingerprint` (the extremities and
//! a hash of the current state, to compare servers).

use std::sync::Arc;

use std::cmp::Ordering;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{delete, get, post},
};
use ruma::{OwnedRoomId, RoomId};
use serde_json::{Value, json};

use super::{Admin, Body, Fields, OptionalBody, Params, bad_request, local_user_id};
use crate::{
    Error, Result,
    admin::rooms::{Shutdown, ShutdownResult},
    api::ruma::{Ruma, RumaRouter},
    jobs::Job,
    rooms::{inspect::Fingerprint, stats::RoomStats},
    services::Services,
};

mod endpoints {
    use ruma::{
        OwnedRoomId,
        api::{auth_scheme::AccessToken, request},
        metadata,
    };

    pub use crate::api::ruma::JsonResponse as Response;

    pub mod extremities {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            path: "/_synapse/admin/v1/rooms/{room_id}/forward_extremities",
        }

        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub room_id: OwnedRoomId,
        }
    }

    pub mod fingerprint {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            path: "/_hearth/admin/v1/rooms/{room_id}/fingerprint",
        }

        #[request]
        pub struct Request {
            #[ruma_api(path)]
            pub room_id: OwnedRoomId,
        }
    }
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const V1: &str = "/_synapse/admin/v1";
    const V2: &str = "/_synapse/admin/v2";
    router
        .ruma(extremities)
        .ruma(fingerprint)
        .route(&format!("{V1}/rooms"), get(list))
        .route(&format!("{V1}/rooms/{{room_id}}"), get(details).delete(delete_v1))
        .route(&format!("{V1}/rooms/{{room_id}}/members"), get(members))
        .route(&format!("{V1}/rooms/{{room_id}}/state"), get(state))
        .route(&format!("{V1}/rooms/{{room_id}}/block"), get(get_block).put(set_block))
        .route(&format!("{V1}/rooms/{{room_id}}/make_room_admin"), post(make_room_admin))
        .route(&format!("{V1}/join/{{room_id}}"), post(join))
        .route(&format!("{V2}/rooms/{{room_id}}"), delete(delete_v2))
        .route(&format!("{V2}/rooms/{{room_id}}/delete_status"), get(delete_status_by_room))
        .route(&format!("{V2}/rooms/delete_status/{{delete_id}}"), get(delete_status))
        .route(&format!("{V1}/scheduled_tasks"), get(scheduled_tasks))
        .route(&format!("{V1}/purge_history/{{room_id}}"), post(purge_history))
        .route(&format!("{V1}/purge_history/{{room_id}}/{{event_id}}"), post(purge_history_to_event))
        .route(&format!("{V1}/purge_history_status/{{purge_id}}"), get(purge_history_status))
        .route("/_hearth/admin/v1/retention/run", post(run_retention))
        .route(&format!("{V1}/server_version"), get(server_version))
}

/// The room's fingerprint, for a server admin only.
fn fingerprint_for<T>(req: &Ruma<T>, room_id: &ruma::RoomId) -> Result<Fingerprint> {
    super::require_admin(&req.services, req.user())?;
    req.services.rooms.fingerprint(room_id)?.ok_or_else(|| Error::not_found("Room not found"))
}

async fn extremities(req: Ruma<endpoints::extremities::Request>) -> Result<endpoints::Response> {
    let found = fingerprint_for(&req, &req.body.room_id)?;
    let results: Vec<_> = found
        .extremities
        .iter()
        .map(|(event_id, depth)| json!({"event_id": event_id, "depth": depth}))
        .collect();
    crate::api::ruma::json_reply(&json!({"count": results.len(), "results": results}))
}

async fn fingerprint(req: Ruma<endpoints::fingerprint::Request>) -> Result<endpoints::Response> {
    let found = fingerprint_for(&req, &req.body.room_id)?;
    let extremities: Vec<_> = found.extremities.iter().map(|(event_id, _)| event_id).collect();
    crate::api::ruma::json_reply(&json!({
        "room_id": req.body.room_id,
        "forward_extremities": extremities,
        "state_hash": found.state_hash,
        "state_events": found.state_events,
    }))
}

/// A room ID from the path (Synapse's 400 when it is not one).
fn room_id(raw: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(raw).map_err(|_| bad_request(format!("{raw} is not a legal room ID")))
}

/// The room, or 404.
pub(super) fn known_room(services: &Services, raw: &str) -> Result<(u64, OwnedRoomId)> {
    let room_id = room_id(raw)?;
    let (short, _) = services.rooms.room(&room_id)?.ok_or_else(crate::rooms::stats::room_not_found)?;
    Ok((short, room_id))
}

/// A room as the list shows it.
fn listed(stats: &RoomStats, public: bool) -> Value {
    json!({
        "room_id": stats.room_id,
        "name": stats.name,
        "canonical_alias": stats.canonical_alias,
        "joined_members": stats.joined_members,
        "joined_local_members": stats.joined_local_members,
        "version": stats.version,
        "creator": stats.creator,
        "encryption": stats.encryption,
        "federatable": stats.federatable,
        "public": public,
        "join_rules": stats.join_rules,
        "guest_access": stats.guest_access,
        "history_visibility": stats.history_visibility,
        "state_events": stats.state_events,
        "room_type": stats.room_type,
    })
}

const ORDERS: &[&str] = &[
    "alphabetical",
    "size",
    "name",
    "canonical_alias",
    "joined_members",
    "joined_local_members",
    "version",
    "creator",
    "encryption",
    "federatable",
    "public",
    "join_rules",
    "guest_access",
    "history_visibility",
    "state_events",
];

/// Orders two rooms by one of [`ORDERS`] in its natural direction (counts
/// and versions largest first, as Synapse).
fn compare(order_by: &str, a: &(Arc<RoomStats>, bool), b: &(Arc<RoomStats>, bool)) -> Ordering {
    let (x, y) = (&a.0, &b.0);
    match order_by {
        "size" | "joined_members" => y.joined_members.cmp(&x.joined_members),
        "joined_local_members" => y.joined_local_members.cmp(&x.joined_local_members),
        "version" => y.version.cmp(&x.version),
        "state_events" => y.state_events.cmp(&x.state_events),
        "canonical_alias" => x.canonical_alias.cmp(&y.canonical_alias),
        "creator" => x.creator.cmp(&y.creator),
        "encryption" => x.encryption.cmp(&y.encryption),
        "federatable" => x.federatable.cmp(&y.federatable),
        "public" => a.1.cmp(&b.1),
        "join_rules" => x.join_rules.cmp(&y.join_rules),
        "guest_access" => x.guest_access.cmp(&y.guest_access),
        "history_visibility" => x.history_visibility.cmp(&y.history_visibility),
        _ => x.name.cmp(&y.name),
    }
}

/// `GET /_synapse/admin/v1/rooms`
async fn list(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Result<Json<Value>> {
    let (from, limit) = params.page()?;
    let order_by = params.choice("order_by", ORDERS, "name")?.to_owned();
    let backwards = params.backwards("f")?;
    let raw_search = params.str("search_term");
    let search = raw_search.map(str::to_lowercase);
    if search.as_deref() == Some("") {
        return Err(Error::invalid_param("search_term cannot be an empty string"));
    }
    let public_rooms = params.bool("public_rooms")?;
    let empty_rooms = params.bool("empty_rooms")?;
    let rooms = &services.rooms;
    let mut found = crate::util::heavy(|| -> Result<Vec<(Arc<RoomStats>, bool)>> {
        let published = rooms.published_room_ids()?;
        let mut found = Vec::new();
        for (short, record) in rooms.all_rooms()? {
            let stats = rooms.stats(short, &record)?;
            let public = published.contains(&stats.room_id);
            let matches = search.as_deref().is_none_or(|term| {
                stats.name.as_deref().is_some_and(|n| n.to_lowercase().contains(term))
                    || stats.canonical_alias.as_deref().is_some_and(|a| a.to_lowercase().contains(term))
            }) || raw_search.is_some_and(|id| stats.room_id.as_str() == id);
            if matches
                && public_rooms.is_none_or(|wanted| public == wanted)
                && empty_rooms.is_none_or(|wanted| (stats.joined_members == 0) == wanted)
            {
                found.push((stats, public));
            }
        }
        Ok(found)
    })?;
    found.sort_by(|a, b| {
        let order = compare(&order_by, a, b).then_with(|| a.0.room_id.cmp(&b.0.room_id));
        if backwards { order.reverse() } else { order }
    });
    let total = found.len();
    let page: Vec<Value> =
        found.iter().skip(from).take(limit).map(|(s, public)| listed(s, *public)).collect();
    let mut body = json!({"rooms": page, "offset": from, "total_rooms": total});
    if from.saturating_add(limit) < total {
        body["next_batch"] = json!(from + limit);
    }
    if from > 0 {
        body["prev_batch"] = json!(from.saturating_sub(limit));
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}`
async fn details(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (short, room_id) = known_room(&services, &raw)?;
    let rooms = &services.rooms;
    let stats = rooms.stats_of(&room_id)?.ok_or_else(crate::rooms::stats::room_not_found)?;
    let mut body = listed(&stats, rooms.is_published(&room_id)?);
    let local = rooms.local_joined(short)?;
    let mut devices = 0;
    let mut forgotten = true;
    for user in &local {
        devices += services.users.list_devices(user)?.len();
    }
    for (user, _) in rooms.members(short)? {
        if services.users.is_local(&user) && !rooms.is_forgotten(&user, short)? {
            forgotten = false;
        }
    }
    body["avatar"] = json!(stats.avatar);
    body["topic"] = json!(stats.topic);
    body["joined_local_devices"] = json!(devices);
    body["forgotten"] = json!(forgotten);
    body["tombstoned"] = json!(stats.tombstone.is_some());
    body["replacement_room"] = json!(stats.tombstone);
    body["blocked"] = json!(rooms.blocked(&room_id)?.is_some());
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/members`
async fn members(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (short, _) = known_room(&services, &raw)?;
    let members: Vec<String> = services
        .rooms
        .members(short)?
        .into_iter()
        .filter(|(_, m)| m == "join")
        .map(|(user, _)| user.to_string())
        .collect();
    Ok(Json(json!({"total": members.len(), "members": members})))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/state[?type=…]`
async fn state(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    params: Params,
) -> Result<Json<Value>> {
    let (_, room_id) = known_room(&services, &raw)?;
    let rooms = &services.rooms;
    let (_, record) = rooms.room(&room_id)?.ok_or_else(crate::rooms::stats::room_not_found)?;
    let kind = params.str("type");
    let mut events = Vec::new();
    for (_, event_short) in rooms.current_state(&record)?.iter() {
        let Some(pdu) = rooms.pdu_by_short(*event_short)? else { continue };
        if kind.is_none_or(|kind| pdu.kind.to_string() == kind) {
            events.push(rooms.client_event(*event_short, None, &admin.user)?);
        }
    }
    Ok(Json(json!({"state": events})))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/block`
async fn get_block(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    Ok(Json(match services.rooms.blocked(&room_id)? {
        Some(block) => json!({"block": true, "user_id": block.user_id}),
        None => json!({"block": false}),
    }))
}

/// `PUT /_synapse/admin/v1/rooms/{roomId}/block` with `{"block": bool}`.
async fn set_block(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    body.required("block")?;
    let block =
        body.bool_field("block", || Error::bad_json("Param 'block' must be a boolean."))?.unwrap_or_default();
    services.rooms.set_blocked(&room_id, block.then_some(&*admin.user))?;
    tracing::info!("{} {} {room_id}", admin.user, if block { "blocked" } else { "unblocked" });
    Ok(Json(json!({"block": block})))
}

/// The delete body (Synapse's fields and errors).
fn shutdown_request(services: &Services, body: &serde_json::Map<String, Value>) -> Result<Shutdown> {
    let mut request = Shutdown::default();
    let not_bool = |name: &str| Error::bad_json(format!("Param '{name}' must be a boolean, if given"));
    if let Some(user) = body.get("new_room_user_id").and_then(Value::as_str) {
        let user = super::user_id(user)?;
        if !services.users.is_local(&user) {
            return Err(bad_request(format!("User must be our own: {user}")));
        }
        request.new_room_user_id = Some(user);
    }
    if let Some(name) = body.get("room_name").and_then(Value::as_str) {
        request.room_name = name.to_owned();
    }
    if let Some(message) = body.get("message").and_then(Value::as_str) {
        request.message = message.to_owned();
    }
    request.block = body.bool_field("block", || not_bool("block"))?.unwrap_or(false);
    request.purge = body.bool_field("purge", || not_bool("purge"))?.unwrap_or(true);
    request.force_purge = body.bool_field("force_purge", || not_bool("force_purge"))?.unwrap_or(false);
    Ok(request)
}

/// Shuts the room down, then purges it if asked.
async fn shut_down_and_purge(
    services: &Arc<Services>,
    room_id: &RoomId,
    admin: &ruma::UserId,
    request: &Shutdown,
    progress: Option<&crate::jobs::Progress>,
) -> Result<ShutdownResult> {
    let result = crate::admin::rooms::shut_down(services, room_id, admin, request).await?;
    if let Some(progress) = progress {
        progress.result(json!({"shutdown_room": result.to_json()}));
    }
    if request.purge {
        crate::admin::rooms::purge(services, room_id, request.force_purge, progress).await?;
    }
    Ok(result)
}

/// `DELETE /_synapse/admin/v1/rooms/{roomId}`: the whole shutdown before
/// answering.
async fn delete_v1(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    let request = shutdown_request(&services, &body)?;
    let result = shut_down_and_purge(&services, &room_id, &admin.user, &request, None).await?;
    Ok(Json(result.to_json()))
}

const DELETE_ACTION: &str = "shutdown_and_purge_room";

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: a job; its ID.
async fn delete_v2(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    let request = shutdown_request(&services, &body)?;
    if !services.jobs.running(DELETE_ACTION, room_id.as_str())?.is_empty() {
        return Err(bad_request(format!("Purge already in progress for {room_id}")));
    }
    let worker = services.clone();
    let job_room = room_id.clone();
    let id = services.jobs.start(DELETE_ACTION, room_id.as_str(), move |progress| async move {
        let result = shut_down_and_purge(&worker, &job_room, &admin.user, &request, Some(&progress)).await?;
        Ok(json!({"shutdown_room": result.to_json()}))
    })?;
    Ok(Json(json!({"delete_id": id})))
}

/// A delete job as Synapse's status endpoints show it.
fn delete_status_json(job: &Job) -> Value {
    json!({
        "delete_id": job.id,
        "room_id": job.resource_id,
        "status": job.status.as_str(),
        "shutdown_room": job.result.as_ref().map(|r| r["shutdown_room"].clone()),
        "error": job.error,
    })
}

/// `GET /_synapse/admin/v2/rooms/{roomId}/delete_status`
async fn delete_status_by_room(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room_id = room_id(&raw)?;
    let results: Vec<Value> = services
        .jobs
        .all()?
        .iter()
        .filter(|j| j.action == DELETE_ACTION && j.resource_id == room_id.as_str())
        .map(delete_status_json)
        .collect();
    if results.is_empty() {
        return Err(Error::not_found(format!("No delete task for room_id '{room_id}' found")));
    }
    Ok(Json(json!({"results": results})))
}

/// `GET /_synapse/admin/v2/rooms/delete_status/{deleteId}`
async fn delete_status(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    match services.jobs.get(&id)? {
        Some(job) if job.action == DELETE_ACTION => Ok(Json(delete_status_json(&job))),
        _ => Err(Error::not_found(format!("delete id '{id}' not found"))),
    }
}

/// A room ID or a local alias from the path.
async fn room_or_alias(services: &Services, raw: &str) -> Result<OwnedRoomId> {
    if let Ok(room_id) = OwnedRoomId::try_from(raw) {
        return Ok(room_id);
    }
    let alias = ruma::OwnedRoomAliasId::try_from(raw)
        .map_err(|_| bad_request(format!("{raw} was not legal room ID or room alias")))?;
    match services.rooms.alias(&alias)? {
        Some(record) => Ok(record.room_id),
        None => Err(bad_request(format!("Unknown room ID or room alias {raw}"))),
    }
}

/// `POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin`
async fn make_room_admin(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    let room_id = room_or_alias(&services, &raw).await?;
    let user = match body.get("user_id").and_then(Value::as_str) {
        Some(user) => local_user_id(&services, user, "Only local users can be room admins")?,
        None => admin.user.clone(),
    };
    crate::admin::rooms::make_room_admin(&services, &room_id, &user).await?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/join/{roomIdOrAlias}` with `{"user_id"}`: the
/// user joins (invited first by the admin where the room is not public).
async fn join(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let user = match body.required("user_id")? {
        Value::String(user) => super::existing_user(
            &services,
            user,
            "This endpoint can only be used with local users",
            "User not found",
        )?,
        _ => return Err(Error::bad_json("user_id must be a string")),
    };
    let room_id = room_or_alias(&services, &raw).await?;
    let rooms = &services.rooms;
    let short = rooms.room_short(&room_id)?.ok_or_else(|| {
        Error::not_found("Can't join remote room because no servers that are in the room have been provided.")
    })?;
    let join_rule = rooms.current_state_field(short, "m.room.join_rules", "", "join_rule")?;
    let member = |content: Value| content.as_object().cloned().unwrap_or_default();
    if join_rule.as_deref() != Some("public") && rooms.membership(&user, short)?.as_deref() != Some("invite")
    {
        crate::federation::membership::change_membership(
            &services,
            &room_id,
            &admin.user,
            &user,
            member(json!({"membership": "invite"})),
        )
        .await?;
    }
    rooms.change_membership(&room_id, &user, &user, member(json!({"membership": "join"}))).await?;
    Ok(Json(json!({"room_id": room_id})))
}

/// `GET /_synapse/admin/v1/scheduled_tasks`
async fn scheduled_tasks(
    State(services): State<Arc<Services>>,
    _: Admin,
    params: Params,
) -> Result<Json<Value>> {
    let action = params.str("action_name");
    let resource = params.str("resource_id");
    let status = match params.str("job_status").or(params.str("status")) {
        Some(name) => Some(crate::jobs::Status::parse(name).ok_or_else(|| {
            Error::invalid_param(
                "Query parameter 'job_status' must be one of scheduled, active, complete, cancelled, failed",
            )
        })?),
        None => None,
    };
    let before = params.int("max_timestamp")?;
    let tasks: Vec<Value> = services
        .jobs
        .all()?
        .iter()
        .filter(|j| {
            action.is_none_or(|a| j.action == a)
                && resource.is_none_or(|r| j.resource_id == r)
                && status.is_none_or(|s| j.status == s)
                && before.is_none_or(|b| j.timestamp_ms < b)
        })
        .map(Value::from)
        .collect();
    Ok(Json(json!({"scheduled_tasks": tasks})))
}

/// `GET /_synapse/admin/v1/server_version` (no authentication, as Synapse).
async fn server_version() -> Json<Value> {
    Json(json!({"server_version": format!("Hearth {}", env!("CARGO_PKG_VERSION"))}))
}

/// Purges a room's history before an event (path or body) or a time.
async fn purge_history_before(
    services: &Arc<Services>,
    raw: &str,
    event: Option<String>,
    body: &serde_json::Map<String, Value>,
) -> Result<Json<Value>> {
    let (_, room_id) = known_room(services, raw)?;
    let delete_local = body
        .bool_field("delete_local_events", || Error::bad_json("delete_local_events must be a boolean"))?
        .unwrap_or(false);
    let event = event.or_else(|| body.get("purge_up_to_event_id").and_then(Value::as_str).map(str::to_owned));
    let before = match (event, body.get("purge_up_to_ts")) {
        (Some(event), _) => {
            let event_id = ruma::OwnedEventId::try_from(event.as_str())
                .map_err(|_| Error::not_found(format!("Could not find event {event}")))?;
            let pdu = services
                .rooms
                .pdu(&event_id)?
                .ok_or_else(|| Error::not_found(format!("Could not find event {event}")))?;
            if pdu.room_id.as_deref().is_some_and(|r| r != room_id) {
                return Err(bad_request("Event is for wrong room."));
            }
            u64::from(pdu.origin_server_ts.get())
        }
        (None, Some(ts)) => ts.as_u64().ok_or_else(|| Error::bad_json("purge_up_to_ts must be an int"))?,
        (None, None) => return Err(Error::bad_json("must specify purge_up_to_event_id or purge_up_to_ts")),
    };
    let id = crate::admin::retention::start_history_purge(services, &room_id, before, delete_local)?;
    Ok(Json(json!({"purge_id": id})))
}

/// `POST /_synapse/admin/v1/purge_history/{roomId}`
async fn purge_history(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    purge_history_before(&services, &raw, None, &body).await
}

/// `POST /_synapse/admin/v1/purge_history/{roomId}/{eventId}`
async fn purge_history_to_event(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((raw, event)): Path<(String, String)>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    purge_history_before(&services, &raw, Some(event), &body).await
}

/// `GET /_synapse/admin/v1/purge_history_status/{purgeId}`
async fn purge_history_status(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    match services.jobs.get(&id)? {
        Some(job) if job.action == crate::admin::retention::PURGE_HISTORY => {
            let status = match job.status {
                crate::jobs::Status::Scheduled | crate::jobs::Status::Active => "active",
                other => other.as_str(),
            };
            let mut body = json!({"status": status});
            if let Some(error) = &job.error {
                body["error"] = json!(error);
            }
            Ok(Json(body))
        }
        _ => Err(Error::not_found(format!("purge id '{id}' not found"))),
    }
}

/// `POST /_hearth/admin/v1/retention/run`: a retention pass now; its job
/// (`{"job_id"}`, or the running one's).
async fn run_retention(State(services): State<Arc<Services>>, _: Admin) -> Result<Json<Value>> {
    let id = match crate::admin::retention::start_pass(&services)? {
        Some(id) => id,
        None => services
            .jobs
            .running(crate::admin::retention::RETENTION, "")?
            .first()
            .map(|job| job.id.clone())
            .unwrap_or_default(),
    };
    Ok(Json(json!({"job_id": id})))
}
