//! Synapse's admin API for media (`/_synapse/admin/v1/...`), the shapes
//! its tools (synadm, Synapse-admin) speak: quarantine and protection,
//! media info, a user's media listed and deleted, local media deleted by
//! ID or by age, other servers' media purged, each user's media usage.
//! Server admins only.

use std::{collections::HashSet, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use http::StatusCode;
use ruma::{OwnedUserId, ServerName};
use serde_json::{Value, json};

use super::{Admin, Params, existing_user, paged};
use crate::{
    Error, Result,
    media::{MediaRecord, manage::Item},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const V1: &str = "/_synapse/admin/v1";
    router
        .route(&format!("{V1}/media/quarantine/{{server}}/{{media_id}}"), post(quarantine))
        .route(&format!("{V1}/media/unquarantine/{{server}}/{{media_id}}"), post(unquarantine))
        .route(&format!("{V1}/user/{{user_id}}/media/quarantine"), post(quarantine_user))
        .route(&format!("{V1}/media/protect/{{media_id}}"), post(protect))
        .route(&format!("{V1}/media/unprotect/{{media_id}}"), post(unprotect))
        .route(&format!("{V1}/media/{{server}}/{{media_id}}"), get(info).delete(delete_one))
        .route(&format!("{V1}/users/{{user_id}}/media"), get(list_user).delete(delete_user))
        .route(&format!("{V1}/media/delete"), post(delete_old))
        .route(&format!("{V1}/purge_media_cache"), post(purge_cache))
        .route(&format!("{V1}/statistics/users/media"), get(user_statistics))
        .route(&format!("{V1}/room/{{room_id}}/media"), get(room_media))
        .route(&format!("{V1}/room/{{room_id}}/media/quarantine"), post(quarantine_room))
}

fn server(name: &str) -> Result<&ServerName> {
    <&ServerName>::try_from(name).map_err(|_| Error::invalid_param("Not a server name"))
}

fn local_only(services: &Services, name: &str) -> Result<()> {
    match server(name).is_ok_and(|s| services.media.is_local(s)) {
        true => Ok(()),
        false => Err(Error::custom(StatusCode::BAD_REQUEST, "M_UNKNOWN", "Can only delete local media")),
    }
}

/// A timestamp in ms that is not from 1970 (a `before_ts` in seconds).
fn before_ts(params: &Params) -> Result<u64> {
    let before = params.int("before_ts")?.ok_or_else(|| {
        Error::custom(
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
            "Missing required integer query parameter before_ts",
        )
    })?;
    if before < 30_000_000_000 {
        return Err(Error::invalid_param(
            "Query parameter before_ts you provided is from the year 1970. Double check that you are providing a timestamp in milliseconds.",
        ));
    }
    Ok(before)
}

/// What every deletion answers (Synapse's shape).
fn deleted_reply(deleted: Vec<String>) -> Json<Value> {
    let total = deleted.len();
    Json(json!({ "deleted_media": deleted, "total": total }))
}

/// `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`
async fn quarantine(
    State(services): State<Arc<Services>>,
    auth: Admin,
    Path((name, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let changed = services.media.set_quarantine(server(&name)?, &media_id, Some(auth.user.as_str()))?;
    tracing::info!("media: {} quarantined mxc://{name}/{media_id} ({changed} items)", auth.user);
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}`
async fn unquarantine(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((name, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    services.media.set_quarantine(server(&name)?, &media_id, None)?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/user/{userId}/media/quarantine`
async fn quarantine_user(
    State(services): State<Arc<Services>>,
    auth: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user = OwnedUserId::try_from(user_id).map_err(|_| Error::invalid_param("Not a user ID"))?;
    let changed = services.media.quarantine_user_media(&user, auth.user.as_str())?;
    tracing::info!("media: {} quarantined the media of {user} ({changed} items)", auth.user);
    Ok(Json(json!({ "num_quarantined": changed })))
}

fn set_protected(services: &Services, media_id: &str, protected: bool) -> Result<Json<Value>> {
    if !services.media.set_protected(media_id, protected)? {
        return Err(Error::custom(
            StatusCode::NOT_FOUND,
            "M_UNKNOWN",
            "No row found (local_media_repository)",
        ));
    }
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/media/protect/{mediaId}`
async fn protect(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(media_id): Path<String>,
) -> Result<Json<Value>> {
    set_protected(&services, &media_id, true)
}

/// `POST /_synapse/admin/v1/media/unprotect/{mediaId}`
async fn unprotect(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(media_id): Path<String>,
) -> Result<Json<Value>> {
    set_protected(&services, &media_id, false)
}

/// An item as Synapse's admin API describes local media.
fn described(media_id: &str, record: &MediaRecord) -> Value {
    let content = record.content.as_ref();
    json!({
        "media_id": media_id,
        "media_type": content.map(|c| c.content_type.as_str()),
        "media_length": content.map(|c| c.size),
        "upload_name": content.and_then(|c| c.upload_name.as_deref()),
        "created_ts": record.created_ts,
        "url_cache": record.url_cache,
        "last_access_ts": Value::Null,
        "quarantined_by": record.quarantined_by,
        "safe_from_quarantine": record.protected,
        "user_id": record.user_id,
        "authenticated": record.authenticated,
        "sha256": content.map(|c| c.sha256.as_str()),
    })
}

/// `GET /_synapse/admin/v1/media/{serverName}/{mediaId}`
async fn info(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((name, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let server = server(&name)?;
    let record =
        services.media.record(server, &media_id)?.ok_or_else(|| Error::not_found("Unknown media"))?;
    let mut info = described(&media_id, &record);
    let local = services.media.is_local(server);
    info["media_origin"] = if local { Value::Null } else { json!(server) };
    Ok(Json(json!({ "media_info": info })))
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`
async fn delete_one(
    State(services): State<Arc<Services>>,
    auth: Admin,
    Path((name, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    local_only(&services, &name)?;
    if services.media.record(services.media.server_name(), &media_id)?.is_none() {
        return Err(Error::not_found("Unknown media"));
    }
    let deleted = services.media.delete_local(&[media_id]).await?;
    tracing::info!("media: {} deleted {deleted:?}", auth.user);
    Ok(deleted_reply(deleted))
}

/// One page of a user's media, in the order asked for (newest first by
/// default), and how many there are in all.
fn page(services: &Services, user_id: &str, params: &Params) -> Result<(Vec<Item>, usize, usize)> {
    let user = existing_user(services, user_id, "Can only look up local users", "Unknown user")?;
    let (from, limit) = params.page()?;
    let (order_by, dir) = (params.str("order_by").map(str::to_owned), params.str("dir").map(str::to_owned));
    let mut items = services.media.user_media(&user)?;
    if order_by.is_some() || dir.is_some() {
        let order_by = order_by.unwrap_or_else(|| "created_ts".into());
        let sort_key = |i: &Item| -> (String, u64) {
            let content = i.record.content.as_ref();
            match order_by.as_str() {
                "media_id" => (i.media_id.clone(), 0),
                "upload_name" => (content.and_then(|c| c.upload_name.clone()).unwrap_or_default(), 0),
                "media_type" => (content.map(|c| c.content_type.clone()).unwrap_or_default(), 0),
                "media_length" => (String::new(), content.map_or(0, |c| c.size)),
                "quarantined_by" => {
                    (i.record.quarantined_by.as_ref().map(|u| u.to_string()).unwrap_or_default(), 0)
                }
                "safe_from_quarantine" => (String::new(), u64::from(i.record.protected)),
                _ => (String::new(), i.record.created_ts),
            }
        };
        let known = ["media_id", "upload_name", "created_ts", "last_access_ts", "media_length", "media_type"]
            .into_iter()
            .chain(["quarantined_by", "safe_from_quarantine"]);
        if !known.into_iter().any(|k| k == order_by) {
            return Err(Error::invalid_param("Query parameter 'order_by' must be one of the columns"));
        }
        items.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)).then(a.media_id.cmp(&b.media_id)));
        match dir.as_deref() {
            None | Some("f") => {}
            Some("b") => items.reverse(),
            Some(_) => return Err(Error::invalid_param("Query parameter 'dir' must be one of ['b', 'f']")),
        }
    }
    let total = items.len();
    let page: Vec<Item> = items.into_iter().skip(from).take(limit).collect();
    Ok((page, total, from))
}

/// `GET /_synapse/admin/v1/users/{userId}/media`
async fn list_user(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(user_id): Path<String>,
    params: Params,
) -> Result<Json<Value>> {
    let (page, total, from) = page(&services, &user_id, &params)?;
    let media: Vec<Value> = page.iter().map(|i| described(&i.media_id, &i.record)).collect();
    let mut body = json!({ "media": media, "total": total });
    if from + media.len() < total {
        body["next_token"] = json!(from + media.len());
    }
    Ok(Json(body))
}

/// `DELETE /_synapse/admin/v1/users/{userId}/media`: one page of it.
async fn delete_user(
    State(services): State<Arc<Services>>,
    auth: Admin,
    Path(user_id): Path<String>,
    params: Params,
) -> Result<Json<Value>> {
    let (page, _, _) = page(&services, &user_id, &params)?;
    let ids: Vec<String> = page.into_iter().map(|i| i.media_id).collect();
    let deleted = services.media.delete_local(&ids).await?;
    tracing::info!("media: {} deleted {} items of {user_id}", auth.user, deleted.len());
    Ok(deleted_reply(deleted))
}

/// `POST /_synapse/admin/v1/media/delete?before_ts=…&size_gt=…&keep_profiles=…`
async fn delete_old(
    State(services): State<Arc<Services>>,
    auth: Admin,
    params: Params,
) -> Result<Json<Value>> {
    let before = before_ts(&params)?;
    let size_gt = params.int("size_gt")?.unwrap_or(0);
    let keep_profiles = match params.str("keep_profiles") {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(Error::invalid_param("Query parameter keep_profiles must be true or false")),
    };
    let keep: HashSet<String> = match keep_profiles {
        true => services.users.avatar_urls()?,
        false => HashSet::new(),
    };
    let ids = services.media.old_local_media(before, size_gt, &keep)?;
    let deleted = services.media.delete_local(&ids).await?;
    tracing::info!("media: {} deleted {} items older than {before}", auth.user, deleted.len());
    Ok(deleted_reply(deleted))
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=…`
async fn purge_cache(
    State(services): State<Arc<Services>>,
    auth: Admin,
    params: Params,
) -> Result<Json<Value>> {
    let deleted = services.media.purge_remote(before_ts(&params)?).await?;
    tracing::info!("media: {} purged {deleted} items of other servers", auth.user);
    Ok(Json(json!({ "deleted": deleted })))
}

/// `GET /_synapse/admin/v1/statistics/users/media`: how many local media
/// items, and bytes, each user uploaded (`from_ts`, `until_ts`,
/// `search_term` on the ID or display name, `order_by`, `dir`, paging).
async fn user_statistics(
    State(services): State<Arc<Services>>,
    _: Admin,
    params: Params,
) -> Result<Json<Value>> {
    let (from, limit) = params.page()?;
    let since = params.int("from_ts")?.unwrap_or(0);
    let until = params.int("until_ts")?;
    if until.is_some_and(|until| until <= since) {
        return Err(Error::invalid_param("Query parameter until_ts must be greater than from_ts."));
    }
    let search = params.str("search_term");
    if search == Some("") {
        return Err(Error::invalid_param("Query parameter search_term cannot be an empty string."));
    }
    let order =
        params.choice("order_by", &["user_id", "displayname", "media_length", "media_count"], "user_id")?;
    let mut per_user: std::collections::BTreeMap<OwnedUserId, (u64, u64)> = Default::default();
    for item in services.media.items()? {
        let record = &item.record;
        if !services.media.is_local(&item.server)
            || record.created_ts < since
            || until.is_some_and(|until| record.created_ts >= until)
        {
            continue;
        }
        let Some(user) = &record.user_id else { continue };
        let entry = per_user.entry(user.clone()).or_default();
        entry.0 += 1;
        entry.1 += record.content.as_ref().map_or(0, |c| c.size);
    }
    let mut users: Vec<(OwnedUserId, Option<String>, u64, u64)> = Vec::new();
    for (user, (count, length)) in per_user {
        let profile = services.users.profile(&user)?;
        let name = profile.and_then(|p| p.get("displayname").and_then(Value::as_str).map(str::to_owned));
        let matches = |text: &str| search.is_none_or(|s| text.to_lowercase().contains(&s.to_lowercase()));
        if matches(user.as_str()) || name.as_deref().is_some_and(matches) {
            users.push((user, name, count, length));
        }
    }
    match order {
        "displayname" => users.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0))),
        "media_length" => users.sort_by(|a, b| a.3.cmp(&b.3).then(a.0.cmp(&b.0))),
        "media_count" => users.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0))),
        _ => {}
    }
    if params.backwards("f")? {
        users.reverse();
    }
    let total = users.len();
    let (page, next) = paged(users, from, limit);
    let listed: Vec<Value> = page
        .into_iter()
        .map(|(user_id, displayname, media_count, media_length)| {
            json!({"user_id": user_id, "displayname": displayname, "media_count": media_count, "media_length": media_length})
        })
        .collect();
    let mut body = json!({"users": listed, "total": total});
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    Ok(Json(body))
}

/// The `mxc://` URLs a room's events name (messages and the current
/// state), split into this server's and other servers'.
fn media_in_room(services: &Services, raw: &str) -> Result<(Vec<String>, Vec<String>)> {
    let (room, room_id) = super::rooms::known_room(services, raw)?;
    let rooms = &services.rooms;
    let (_, record) = rooms.room(&room_id)?.ok_or_else(crate::rooms::stats::room_not_found)?;
    let mut urls = std::collections::BTreeSet::new();
    for (_, short) in rooms.messages_between(room, 0, u64::MAX, usize::MAX)? {
        if let Some(pdu) = rooms.pdu_by_short(short)? {
            urls.extend(crate::media::mxc_urls(&pdu.content_value()));
        }
    }
    for (_, short) in rooms.current_state(&record)?.iter() {
        if let Some(pdu) = rooms.pdu_by_short(*short)? {
            let content = pdu.content_value();
            urls.extend(crate::media::mxc_urls(&content));
            urls.extend(
                content["avatar_url"].as_str().filter(|u| u.starts_with("mxc://")).map(str::to_owned),
            );
        }
    }
    let local = format!("mxc://{}/", services.config.server_name);
    Ok(urls.into_iter().partition(|url| url.starts_with(&local)))
}

/// `GET /_synapse/admin/v1/room/{roomId}/media`
async fn room_media(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (local, remote) = media_in_room(&services, &raw)?;
    Ok(Json(json!({"local": local, "remote": remote})))
}

/// `POST /_synapse/admin/v1/room/{roomId}/media/quarantine`: every item
/// the room names (protected ones stay).
async fn quarantine_room(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let (local, remote) = media_in_room(&services, &raw)?;
    let mut count = 0;
    for url in local.iter().chain(&remote) {
        let Some((server, media_id)) = url["mxc://".len()..].split_once('/') else { continue };
        let Ok(server) = <&ServerName>::try_from(server) else { continue };
        count += services.media.set_quarantine(server, media_id, Some(admin.user.as_str()))?;
    }
    tracing::info!("media: {} quarantined {count} items of room {raw}", admin.user);
    Ok(Json(json!({"num_quarantined": count})))
}
