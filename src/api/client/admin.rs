//! Server administration in the client API: `GET /admin/whois/{userId}`.

use std::sync::Arc;

use axum::{
    Json, Router,
    response::{IntoResponse, Response},
};
use ruma::api::client::admin::get_user_info;
use serde_json::{Map, Value, json};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_untyped(whois)
}

/// A user's devices with where and with what each was last seen: for
/// server admins, and for users about themselves (as Synapse). Every
/// connection key is sent, null when unknown (clients and SyTest index them).
async fn whois(req: Ruma<get_user_info::v3::Request>) -> Result<Response> {
    let services = &req.services;
    let target = &req.body.user_id;
    let is_admin = services.users.get(req.user())?.is_some_and(|record| record.admin);
    if target != req.user() && !is_admin {
        return Err(Error::forbidden("You are not a server admin"));
    }
    if !services.users.is_local(target) || !services.users.exists(target)? {
        return Err(Error::not_found("User not found"));
    }
    Ok(Json(whois_body(services, target)?).into_response())
}

/// What whois answers of a local user: each device with where and with
/// what it was last seen.
pub(crate) fn whois_body(services: &Services, target: &ruma::UserId) -> Result<Value> {
    let mut devices = Map::new();
    for (device_id, record) in services.users.list_devices(target)? {
        let connection = json!({
            "ip": record.last_seen_ip,
            "last_seen": record.last_seen_ts,
            "user_agent": record.last_seen_user_agent,
        });
        devices.insert(device_id.to_string(), json!({"sessions": [{"connections": [connection]}]}));
    }
    Ok(json!({"user_id": target, "devices": Value::Object(devices)}))
}
