//! Synapse's admin API for accounts: list, query, create or modify,
//! deactivate, suspend, lock, reset passwords, the admin flag, whois and
//! devices, rooms, login as a user, shadow-bans and rate-limit overrides.

use std::{cmp::Ordering, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use http::StatusCode;
use ruma::{OwnedDeviceId, UserId};
use serde_json::{Map, Value, json};

use super::{
    Admin, Body, Fields, OptionalBody, Params, bad_request, existing_user, local_user_id, paged,
    string_field, user_id,
};
use crate::{
    Error, Result,
    admin::accounts::{self, Account},
    api::ruma::Authed,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const V1: &str = "/_synapse/admin/v1";
    const V2: &str = "/_synapse/admin/v2";
    router
        .route(&format!("{V2}/users"), get(list_v2))
        .route("/_synapse/admin/v3/users", get(list_v3))
        .route(&format!("{V2}/users/{{user_id}}"), get(query).put(create_or_modify))
        .route(&format!("{V1}/deactivate/{{user_id}}"), post(deactivate))
        .route(&format!("{V1}/suspend/{{user_id}}"), put(suspend))
        .route(&format!("{V1}/reset_password/{{user_id}}"), post(reset_password))
        .route(&format!("{V1}/users/{{user_id}}/admin"), get(get_admin).put(set_admin))
        .route(&format!("{V1}/whois/{{user_id}}"), get(whois))
        .route(&format!("{V1}/users/{{user_id}}/login"), post(login_as))
        .route(&format!("{V2}/users/{{user_id}}/devices"), get(devices))
        .route(
            &format!("{V2}/users/{{user_id}}/devices/{{device_id}}"),
            get(device).put(rename_device).delete(delete_device),
        )
        .route(&format!("{V2}/users/{{user_id}}/delete_devices"), post(delete_devices))
        .route(&format!("{V1}/users/{{user_id}}/joined_rooms"), get(joined_rooms))
        .route(&format!("{V1}/users/{{user_id}}/memberships"), get(memberships))
        .route(&format!("{V1}/users/{{user_id}}/shadow_ban"), post(shadow_ban).delete(unshadow_ban))
        .route(
            &format!("{V1}/users/{{user_id}}/override_ratelimit"),
            get(get_ratelimit).post(set_ratelimit).delete(delete_ratelimit),
        )
        .route(&format!("{V1}/users/{{user_id}}/accountdata"), get(account_data))
        .route(&format!("{V1}/users/{{user_id}}/pushers"), get(pushers))
        .route(&format!("{V1}/username_available"), get(username_available))
}

const LOOK_UP_LOCAL: &str = "Can only look up local users";

/// An account as the lists show it (`creation_ts` in ms).
fn listed(account: &Account) -> Value {
    let record = &account.record;
    json!({
        "name": account.user_id,
        "user_type": record.user_type,
        "is_guest": record.guest,
        "admin": record.admin,
        "deactivated": record.deactivated,
        "shadow_banned": account.moderation.shadow_banned,
        "displayname": account.displayname,
        "avatar_url": account.avatar_url,
        "creation_ts": record.created_ts,
        "approved": true,
        "erased": account.erased,
        "last_seen_ts": account.last_seen_ts,
        "locked": account.moderation.locked,
        "suspended": account.moderation.suspended,
    })
}

/// An account as the query shows it (`creation_ts` in seconds, as Synapse).
fn detailed(account: &Account) -> Value {
    let record = &account.record;
    json!({
        "name": account.user_id,
        "admin": record.admin,
        "deactivated": record.deactivated,
        "locked": account.moderation.locked,
        "shadow_banned": account.moderation.shadow_banned,
        "suspended": account.moderation.suspended,
        "creation_ts": record.created_ts / 1000,
        "appservice_id": null,
        "consent_server_notice_sent": null,
        "consent_version": null,
        "consent_ts": null,
        "user_type": record.user_type,
        "is_guest": record.guest,
        "displayname": account.displayname,
        "avatar_url": account.avatar_url,
        "threepids": [],
        "external_ids": [],
        "erased": account.erased,
        "last_seen_ts": account.last_seen_ts,
    })
}

const ORDERS: &[&str] = &[
    "name",
    "displayname",
    "is_guest",
    "admin",
    "deactivated",
    "user_type",
    "avatar_url",
    "shadow_banned",
    "creation_ts",
    "last_seen_ts",
    "locked",
];

/// Orders two accounts by one of [`ORDERS`] (absent values first, as
/// SQLite has them).
fn compare(order_by: &str, a: &Account, b: &Account) -> Ordering {
    match order_by {
        "name" => a.user_id.cmp(&b.user_id),
        "displayname" => a.displayname.cmp(&b.displayname),
        "is_guest" => a.record.guest.cmp(&b.record.guest),
        "admin" => a.record.admin.cmp(&b.record.admin),
        "deactivated" => a.record.deactivated.cmp(&b.record.deactivated),
        "user_type" => a.record.user_type.cmp(&b.record.user_type),
        "avatar_url" => a.avatar_url.cmp(&b.avatar_url),
        "shadow_banned" => a.moderation.shadow_banned.cmp(&b.moderation.shadow_banned),
        "creation_ts" => a.record.created_ts.cmp(&b.record.created_ts),
        "last_seen_ts" => a.last_seen_ts.cmp(&b.last_seen_ts),
        "locked" => a.moderation.locked.cmp(&b.moderation.locked),
        _ => Ordering::Equal,
    }
}

/// `deactivated` means "include them too" in v2 and "only them" in v3.
#[derive(Clone, Copy)]
enum Version {
    V2,
    V3,
}

async fn list(services: Arc<Services>, params: Params, version: Version) -> Result<Json<Value>> {
    let (from, limit) = params.page()?;
    let order_by = params.choice("order_by", ORDERS, "name")?.to_owned();
    let backwards = params.backwards("f")?;
    let guests = params.bool("guests")?.unwrap_or(true);
    let admins = params.bool("admins")?;
    let deactivated = params.bool("deactivated")?;
    let locked = params.bool("locked")?.unwrap_or(false);
    let name = params.str("name").map(str::to_lowercase);
    let user_id = params.str("user_id").map(str::to_lowercase);
    let not_types: Vec<String> = params.all("not_user_type").into_iter().map(str::to_owned).collect();

    // Display names, profiles and last-seen times are read for every
    // account only when the filter or the order needs them; otherwise for
    // the page alone.
    let needs = match order_by.as_str() {
        "avatar_url" | "last_seen_ts" => accounts::Needs::Everything,
        "displayname" => accounts::Needs::Names,
        _ if name.is_some() => accounts::Needs::Names,
        _ => accounts::Needs::Records,
    };
    let accounts = crate::util::heavy(|| accounts::all(&services, needs))?;
    let mut found: Vec<Account> = accounts
        .into_iter()
        .filter(|a| {
            let record = &a.record;
            let matches_name = match (&name, &user_id) {
                (Some(name), _) => {
                    a.user_id.localpart().to_lowercase().contains(name.as_str())
                        || a.displayname.as_deref().is_some_and(|d| d.to_lowercase().contains(name.as_str()))
                }
                (None, Some(id)) => a.user_id.as_str().to_lowercase().contains(id.as_str()),
                (None, None) => true,
            };
            let matches_deactivated = match (version, deactivated) {
                (Version::V2, Some(true)) | (Version::V3, None) => true,
                (Version::V2, _) => !record.deactivated,
                (Version::V3, Some(wanted)) => record.deactivated == wanted,
            };
            let matches_type = match &record.user_type {
                None => !not_types.iter().any(String::is_empty),
                Some(kind) => !not_types.contains(kind),
            };
            matches_name
                && matches_deactivated
                && matches_type
                && (guests || !record.guest)
                && admins.is_none_or(|wanted| record.admin == wanted)
                && (locked || !a.moderation.locked)
        })
        .collect();
    found.sort_by(|a, b| {
        let order = compare(&order_by, a, b);
        let order = if backwards { order.reverse() } else { order };
        order.then_with(|| a.user_id.cmp(&b.user_id))
    });
    let total = found.len();
    let (mut page, next) = paged(found, from, limit);
    if needs != accounts::Needs::Everything {
        accounts::fill_details(&services, &mut page)?;
    }
    let mut body = json!({"users": page.iter().map(listed).collect::<Vec<_>>(), "total": total});
    if let Some(next) = next {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v2/users`
async fn list_v2(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Result<Json<Value>> {
    list(services, params, Version::V2).await
}

/// `GET /_synapse/admin/v3/users`
async fn list_v3(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Result<Json<Value>> {
    list(services, params, Version::V3).await
}

/// `GET /_synapse/admin/v2/users/{userId}`
async fn query(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = local_user_id(&services, &raw, LOOK_UP_LOCAL)?;
    let account = accounts::one(&services, &user)?.ok_or_else(|| Error::not_found("User not found"))?;
    Ok(Json(detailed(&account)))
}

/// What a create-or-modify asks for, checked before anything changes.
struct Changes<'a> {
    password: Option<&'a str>,
    logout_devices: bool,
    displayname: Option<&'a str>,
    avatar_url: Option<&'a str>,
    admin: Option<bool>,
    deactivated: Option<bool>,
    locked: Option<bool>,
    /// `Some(None)`: clear the type.
    user_type: Option<Option<String>>,
}

fn changes(body: &Map<String, Value>) -> Result<Changes<'_>> {
    let password = match body.get("password") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.len() <= crate::api::client::MAX_PASSWORD_LEN => Some(p.as_str()),
        Some(_) => return Err(bad_request("Invalid password")),
    };
    let not_bool = |name: &str| bad_request(format!("'{name}' parameter is not of type boolean"));
    let logout_devices = body.bool_field("logout_devices", || not_bool("logout_devices"))?.unwrap_or(true);
    let displayname = string_field(body, "displayname")?;
    if displayname.is_some_and(|d| d.chars().count() > 256) {
        return Err(bad_request("Displayname is too long (max 256)"));
    }
    let avatar_url = string_field(body, "avatar_url")?;
    if avatar_url.is_some_and(|a| a.len() > 1000) {
        return Err(bad_request("Avatar URL is too long (max 1000)"));
    }
    let admin = body.bool_field("admin", || Error::bad_json("Param 'admin' must be a boolean, if given"))?;
    let deactivated = body.bool_field("deactivated", || not_bool("deactivated"))?;
    let locked = body.bool_field("locked", || not_bool("locked"))?;
    if deactivated == Some(true) && locked == Some(true) {
        return Err(bad_request("An user can't be deactivated and locked"));
    }
    let user_type = match body.get("user_type") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(kind)) if matches!(kind.as_str(), "bot" | "support") => Some(Some(kind.clone())),
        Some(_) => return Err(bad_request("Invalid user type")),
    };
    for field in ["threepids", "external_ids"] {
        if body.get(field).and_then(Value::as_array).is_some_and(|list| !list.is_empty()) {
            return Err(bad_request(format!("Hearth keeps no {field} of accounts")));
        }
    }
    Ok(Changes { password, logout_devices, displayname, avatar_url, admin, deactivated, locked, user_type })
}

/// `PUT /_synapse/admin/v2/users/{userId}`: 201 and the account when made,
/// 200 and the account when changed.
async fn create_or_modify(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Response> {
    let user = local_user_id(&services, &raw, "This endpoint can only be used with local users")?;
    let changes = changes(&body)?;
    let users = &services.users;
    let created = !users.exists(&user)?;
    if created {
        let valid = users.user_id_for_new_localpart(user.localpart())?;
        if valid != user {
            return Err(Error::invalid_param("Invalid user ID"));
        }
        if crate::admin::notices::notices_user(&services).as_ref() == Some(&user) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Exclusive,
                "This user ID is reserved.",
            ));
        }
        let hash = match changes.password {
            Some(password) => Some(users.hash_new_password(password.to_owned()).await?),
            None => None,
        };
        let displayname = changes.displayname.filter(|d| !d.is_empty());
        users.create(&user, hash, changes.admin.unwrap_or(false), displayname)?;
        tracing::info!("{} created {user}", admin.user);
    } else {
        if changes.admin == Some(false) && user == admin.user {
            return Err(bad_request("You may not demote yourself."));
        }
        if let Some(password) = changes.password {
            let hash = users.hash_new_password(password.to_owned()).await?;
            users.set_password_hash(&user, Some(hash))?;
            if changes.logout_devices {
                users.remove_all_devices(&user, None)?;
            }
        }
        if let Some(displayname) = changes.displayname {
            let value = (!displayname.is_empty()).then(|| json!(displayname));
            users.set_profile_field(&user, "displayname", value)?;
            services.rooms.update_member_events(&user, "displayname").await?;
        }
    }
    if let Some(avatar_url) = changes.avatar_url
        && users.is_active(&user)?
    {
        let value = (!avatar_url.is_empty()).then(|| json!(avatar_url));
        users.set_profile_field(&user, "avatar_url", value)?;
        services.rooms.update_member_events(&user, "avatar_url").await?;
    }
    let mut record = users.get(&user)?.ok_or_else(|| Error::not_found("User not found"))?;
    if let Some(is_admin) = changes.admin {
        record.admin = is_admin;
    }
    if let Some(user_type) = changes.user_type {
        record.user_type = user_type;
    }
    users.put_record(&user, &record)?;
    if let Some(locked) = changes.locked {
        users.moderate(&user, |m| m.locked = locked)?;
    }
    match changes.deactivated {
        Some(true) if !record.deactivated => accounts::deactivate(&services, &user, false).await?,
        Some(false) if record.deactivated => {
            if changes.password.is_none() {
                return Err(bad_request("Must provide a password to re-activate an account."));
            }
            users.reactivate(&user)?;
            // Deactivation took the password: set it again.
            let hash = users.hash_new_password(changes.password.unwrap_or_default().to_owned()).await?;
            users.set_password_hash(&user, Some(hash))?;
        }
        _ => {}
    }
    let account = accounts::one(&services, &user)?.ok_or_else(|| Error::not_found("User not found"))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(detailed(&account))).into_response())
}

/// `POST /_synapse/admin/v1/deactivate/{userId}` with `{"erase": bool}`.
async fn deactivate(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    let erase = body
        .bool_field("erase", || Error::bad_json("Param 'erase' must be a boolean, if given"))?
        .unwrap_or(false);
    let user = existing_user(&services, &raw, "Can only deactivate local users", "User not found")?;
    accounts::deactivate(&services, &user, erase).await?;
    Ok(Json(json!({"id_server_unbind_result": "success"})))
}

/// `PUT /_synapse/admin/v1/suspend/{userId}` with `{"suspend": bool}`.
async fn suspend(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    body.required("suspend")?;
    let suspend = body.bool_field("suspend", || Error::bad_json("Param 'suspend' must be a boolean"))?;
    let user = existing_user(&services, &raw, "Can only suspend local users", "User not found")?;
    let suspend = suspend.unwrap_or_default();
    services.users.moderate(&user, |m| m.suspended = suspend)?;
    tracing::info!("{} {} {user}", admin.user, if suspend { "suspended" } else { "unsuspended" });
    Ok(Json(json!({ format!("user_{user}_suspended"): suspend })))
}

/// `POST /_synapse/admin/v1/reset_password/{userId}`
async fn reset_password(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let user = user_id(&raw)?;
    let password = match body.required("new_password")? {
        Value::String(p) if p.len() <= crate::api::client::MAX_PASSWORD_LEN => p.clone(),
        _ => return Err(bad_request("Invalid password")),
    };
    let not_bool = || bad_request("'logout_devices' parameter is not of type boolean");
    let logout = body.bool_field("logout_devices", not_bool)?.unwrap_or(true);
    if !services.users.is_local(&user) || !services.users.is_active(&user)? {
        return Err(Error::not_found("Unknown user"));
    }
    let hash = services.users.hash_new_password(password).await?;
    services.users.set_password_hash(&user, Some(hash))?;
    if logout {
        services.users.remove_all_devices(&user, None)?;
    }
    Ok(Json(json!({})))
}

const ONLY_LOCAL_ADMINS: &str = "Only local users can be admins of this homeserver";

/// `GET /_synapse/admin/v1/users/{userId}/admin`
async fn get_admin(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = local_user_id(&services, &raw, ONLY_LOCAL_ADMINS)?;
    Ok(Json(json!({"admin": services.users.is_admin(&user)?})))
}

/// `PUT /_synapse/admin/v1/users/{userId}/admin` with `{"admin": bool}`.
async fn set_admin(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let user = local_user_id(&services, &raw, ONLY_LOCAL_ADMINS)?;
    let value = body.required("admin")?;
    let make_admin = !matches!(value, Value::Bool(false) | Value::Null)
        && value.as_i64() != Some(0)
        && value.as_str() != Some("");
    if !make_admin && user == admin.user {
        return Err(bad_request("You may not demote yourself."));
    }
    let mut record = services.users.get(&user)?.ok_or_else(|| Error::not_found("User not found"))?;
    record.admin = make_admin;
    services.users.put_record(&user, &record)?;
    tracing::info!("{} made {user} {}", admin.user, if make_admin { "an admin" } else { "not an admin" });
    Ok(Json(json!({})))
}

/// `GET /_synapse/admin/v1/whois/{userId}`: server admins, and anyone
/// about themselves.
async fn whois(
    State(services): State<Arc<Services>>,
    auth: Authed,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = user_id(&raw)?;
    if user != auth.user {
        super::require_admin(&services, &auth.user)?;
    }
    if !services.users.is_local(&user) {
        return Err(bad_request("Can only whois a local user"));
    }
    Ok(Json(crate::api::client::admin::whois_body(&services, &user)?))
}

/// `POST /_synapse/admin/v1/users/{userId}/login`: a token to act as the
/// user (support), without a device.
async fn login_as(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    let valid_until_ms = match body.get("valid_until_ms") {
        None | Some(Value::Null) => None,
        Some(value) => {
            Some(value.as_u64().ok_or_else(|| bad_request("'valid_until_ms' parameter must be an int"))?)
        }
    };
    let user = existing_user(&services, &raw, "Only local users can be logged in as", "User not found")?;
    if user == admin.user {
        return Err(bad_request("Cannot use admin API to login as self"));
    }
    if !services.users.is_active(&user)? {
        return Err(bad_request("Cannot log in as a deactivated user"));
    }
    let token = services.users.puppet_token(&user, valid_until_ms)?;
    tracing::info!("{} logged in as {user}", admin.user);
    Ok(Json(json!({"access_token": token})))
}

const LOOK_UP_DEVICES: &str = "Can only lookup local users";

fn device_json(user: &UserId, device_id: &str, record: &crate::users::devices::DeviceRecord) -> Value {
    json!({
        "device_id": device_id,
        "display_name": record.display_name,
        "last_seen_ip": record.last_seen_ip,
        "last_seen_user_agent": record.last_seen_user_agent,
        "last_seen_ts": record.last_seen_ts,
        "user_id": user,
    })
}

/// `GET /_synapse/admin/v2/users/{userId}/devices`
async fn devices(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_DEVICES, "Unknown user")?;
    let devices: Vec<Value> = services
        .users
        .list_devices(&user)?
        .iter()
        .map(|(id, record)| device_json(&user, id.as_str(), record))
        .collect();
    Ok(Json(json!({"total": devices.len(), "devices": devices})))
}

/// `GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}`
async fn device(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((raw, device_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_DEVICES, "Unknown user")?;
    let device_id: OwnedDeviceId = device_id.into();
    let record =
        services.users.get_device(&user, &device_id)?.ok_or_else(|| Error::not_found("No device found"))?;
    Ok(Json(device_json(&user, device_id.as_str(), &record)))
}

/// `PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}` with `{"display_name"}`.
async fn rename_device(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((raw, device_id)): Path<(String, String)>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_DEVICES, "Unknown user")?;
    if let Some(name) = string_field(&body, "display_name")? {
        if name.chars().count() > 100 {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::TooLarge,
                "Device display name is too long (max 100)",
            ));
        }
        services.users.set_device_display_name(&user, &OwnedDeviceId::from(device_id), name.to_owned())?;
    }
    Ok(Json(json!({})))
}

/// `DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}`
async fn delete_device(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((raw, device_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_DEVICES, "Unknown user")?;
    services.users.remove_devices(&user, &[device_id.into()])?;
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v2/users/{userId}/delete_devices` with `{"devices": [...]}`.
async fn delete_devices(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_DEVICES, "Unknown user")?;
    let ids: Vec<OwnedDeviceId> = match body.required("devices")? {
        Value::Array(ids) => ids.iter().filter_map(Value::as_str).map(OwnedDeviceId::from).collect(),
        _ => return Err(Error::bad_json("devices must be a list of device IDs")),
    };
    services.users.remove_devices(&user, &ids)?;
    Ok(Json(json!({})))
}

/// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`
async fn joined_rooms(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = user_id(&raw)?;
    let rooms = services.rooms.rooms_with_membership(&user, "join")?;
    Ok(Json(json!({"total": rooms.len(), "joined_rooms": rooms})))
}

/// `GET /_synapse/admin/v1/users/{userId}/memberships`
async fn memberships(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = user_id(&raw)?;
    let mut all = Map::new();
    for (short, membership) in services.rooms.memberships(&user)? {
        all.insert(services.rooms.short.name(short)?, json!(membership));
    }
    Ok(Json(json!({"memberships": all})))
}

async fn set_shadow_ban(services: &Services, admin: &Admin, raw: &str, banned: bool) -> Result<Json<Value>> {
    let user = existing_user(services, raw, "Only local users can be shadow-banned", "User not found")?;
    services.users.moderate(&user, |m| m.shadow_banned = banned)?;
    tracing::info!(
        "{} {} {user}",
        admin.user,
        if banned { "shadow-banned" } else { "lifted the shadow-ban of" }
    );
    Ok(Json(json!({})))
}

/// `POST /_synapse/admin/v1/users/{userId}/shadow_ban`
async fn shadow_ban(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    set_shadow_ban(&services, &admin, &raw, true).await
}

/// `DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`
async fn unshadow_ban(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    set_shadow_ban(&services, &admin, &raw, false).await
}

const RATELIMIT_LOCAL: &str = "Only local users can be ratelimited";

/// `GET /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn get_ratelimit(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_LOCAL, "User not found")?;
    Ok(Json(match services.users.moderation(&user).ratelimit {
        Some((per_second, burst)) => json!({"messages_per_second": per_second, "burst_count": burst}),
        None => json!({}),
    }))
}

/// `POST /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn set_ratelimit(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(raw): Path<String>,
    OptionalBody(body): OptionalBody,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, RATELIMIT_LOCAL, "User not found")?;
    let field = |name: &str| -> Result<u64> {
        match body.get(name) {
            None => Ok(0),
            Some(value) => value
                .as_u64()
                .filter(|_| value.is_u64())
                .ok_or_else(|| Error::invalid_param(format!("{value} parameter must be a positive int"))),
        }
    };
    let (per_second, burst) = (field("messages_per_second")?, field("burst_count")?);
    services.users.moderate(&user, |m| m.ratelimit = Some((per_second, burst)))?;
    tracing::info!("{} set the message rate of {user} to {per_second}/s, burst {burst}", admin.user);
    Ok(Json(json!({"messages_per_second": per_second, "burst_count": burst})))
}

/// `DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit`
async fn delete_ratelimit(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, RATELIMIT_LOCAL, "User not found")?;
    services.users.moderate(&user, |m| m.ratelimit = None)?;
    Ok(Json(json!({})))
}

/// `GET /_synapse/admin/v1/users/{userId}/accountdata`
async fn account_data(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_LOCAL, "User not found")?;
    let (mut global, mut rooms) = (Map::new(), Map::new());
    for (room, kind, content) in services.users.account_data_since(&user, None, u64::MAX)? {
        let content: Value = serde_json::from_str(content.get()).map_err(Error::internal)?;
        match room {
            None => {
                global.insert(kind, content);
            }
            Some(room) => {
                let entry = rooms.entry(room.to_string()).or_insert_with(|| json!({}));
                entry[kind] = content;
            }
        }
    }
    Ok(Json(json!({"account_data": {"global": global, "rooms": rooms}})))
}

/// `GET /_synapse/admin/v1/users/{userId}/pushers`
async fn pushers(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = existing_user(&services, &raw, LOOK_UP_LOCAL, "User not found")?;
    let pushers: Vec<Value> = services
        .users
        .pushers(&user)?
        .into_iter()
        .map(|p| {
            json!({
                "app_display_name": p.app_display_name,
                "app_id": p.app_id,
                "data": p.data,
                "device_display_name": p.device_display_name,
                "kind": p.kind,
                "lang": p.lang,
                "profile_tag": p.profile_tag.unwrap_or_default(),
                "pushkey": p.pushkey,
                "pushkey_ts": p.pushkey_ts,
                "user_name": user,
            })
        })
        .collect();
    Ok(Json(json!({"total": pushers.len(), "pushers": pushers})))
}

/// `GET /_synapse/admin/v1/username_available?username=…`
async fn username_available(
    State(services): State<Arc<Services>>,
    _: Admin,
    params: Params,
) -> Result<Json<Value>> {
    let name = params
        .str("username")
        .ok_or_else(|| super::missing_param("Missing string query parameter username"))?;
    let user = services.users.user_id_for_new_localpart(&name.to_lowercase())?;
    if services.users.exists(&user)? {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::UserInUse,
            "User ID already taken.",
        ));
    }
    Ok(Json(json!({"available": true})))
}
