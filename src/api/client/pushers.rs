//! Pushers: `GET /pushers` and `POST /pushers/set` (delivery is
//! `crate::pushers`).

use std::sync::Arc;

use axum::{
    Json, Router,
    response::{IntoResponse, Response},
};
use ruma::api::client::push::{PusherKind, get_pushers, set_pusher};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
    users::pushers::PusherRecord,
    util,
};

/// The spec's limits on a pusher's identifiers.
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;
/// The Push Gateway API's one path, which Synapse insists on too.
const GATEWAY_PATH: &str = "/_matrix/push/v1/notify";

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_untyped(list).ruma(set)
}

/// The pushers as they were set (`data` included, as clients expect back).
async fn list(req: Ruma<get_pushers::v3::Request>) -> Result<Response> {
    let pushers: Vec<Value> = req
        .services
        .users
        .pushers(req.user())?
        .into_iter()
        .map(|p| {
            json!({
                "pushkey": p.pushkey,
                "kind": p.kind,
                "app_id": p.app_id,
                "app_display_name": p.app_display_name,
                "device_display_name": p.device_display_name,
                "profile_tag": p.profile_tag,
                "lang": p.lang,
                "data": p.data,
            })
        })
        .collect();
    Ok(Json(json!({ "pushers": pushers })).into_response())
}

async fn set(req: Ruma<set_pusher::v3::Request>) -> Result<set_pusher::v3::Response> {
    let services = &req.services;
    let user = req.user();
    let post = match &req.body.action {
        set_pusher::v3::PusherAction::Delete(ids) => {
            services.users.remove_pusher(user, &ids.app_id, &ids.pushkey)?;
            return Ok(set_pusher::v3::Response::new());
        }
        set_pusher::v3::PusherAction::Post(post) => post,
        _ => return Err(Error::invalid_param("Unknown pusher action")),
    };
    let pusher = &post.pusher;
    match &pusher.kind {
        PusherKind::Http(http) => check_gateway_url(&http.url)?,
        PusherKind::Email(_) => {
            return Err(Error::invalid_param(
                "Email pushers need an email server, which Hearth does not have",
            ));
        }
        _ => return Err(Error::invalid_param("Unknown pusher kind")),
    }
    let (app_id, pushkey) = (&pusher.ids.app_id, &pusher.ids.pushkey);
    if pushkey.len() > MAX_PUSHKEY_BYTES || app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::invalid_param("pushkey or app_id too long"));
    }
    // `data` as the client sent it: the gateway gets its extra keys.
    let raw: Value = serde_json::from_slice(&req.raw_body).map_err(|e| Error::bad_json(e.to_string()))?;
    let existing =
        services.users.pushers(user)?.into_iter().find(|p| &p.app_id == app_id && &p.pushkey == pushkey);
    let record = PusherRecord {
        app_id: app_id.clone(),
        pushkey: pushkey.clone(),
        kind: "http".into(),
        app_display_name: pusher.app_display_name.clone(),
        device_display_name: pusher.device_display_name.clone(),
        profile_tag: pusher.profile_tag.clone(),
        lang: pusher.lang.clone(),
        data: raw["data"].clone(),
        pushkey_ts: util::now_ms() / 1000,
        device_id: Some(req.device().to_string()),
        // A new pusher gets what happens from now on; a changed one goes on.
        pushed_upto: existing.as_ref().map_or_else(|| services.stream.visible(), |p| p.pushed_upto),
        last_badge: None,
        failing_since: None,
        retry_at: 0,
        backoff_ms: 0,
    };
    services.users.set_pusher(user, &record, !post.append)?;
    Ok(set_pusher::v3::Response::new())
}

fn check_gateway_url(url: &str) -> Result<()> {
    let parsed =
        url::Url::parse(url).map_err(|_| Error::invalid_param("data.url must be an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid_param("data.url must be an http or https URL"));
    }
    if parsed.path() != GATEWAY_PATH {
        return Err(Error::invalid_param(format!("data.url must have the path {GATEWAY_PATH}")));
    }
    Ok(())
}
