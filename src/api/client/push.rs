//! Push rules and notifications: `/pushrules/…` and `GET /notifications`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt,
    api::client::push::{
        delete_pushrule, get_notifications, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
        set_pushrule_enabled,
    },
    push::{InsertPushRuleError, RemovePushRuleError, Ruleset},
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
    util::raw,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(all)
        .ruma(global)
        .ruma(get_rule)
        .ruma(set_rule)
        .ruma(delete_rule)
        .ruma(get_enabled)
        .ruma(set_enabled)
        .ruma(get_actions)
        .ruma(set_actions)
        .ruma(notifications)
}

fn ruleset<T>(req: &Ruma<T>) -> Result<Ruleset> {
    Ok(req.services.users.push_rules(req.user())?.ruleset.clone())
}

fn save<T>(req: &Ruma<T>, ruleset: Ruleset) -> Result<()> {
    req.services.users.set_push_rules(req.user(), ruleset)
}

fn not_found() -> Error {
    Error::not_found("Push rule not found")
}

async fn all(req: Ruma<get_pushrules_all::v3::Request>) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(ruleset(&req)?))
}

async fn global(
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(ruleset(&req)?))
}

async fn get_rule(req: Ruma<get_pushrule::v3::Request>) -> Result<get_pushrule::v3::Response> {
    let ruleset = ruleset(&req)?;
    let rule = ruleset.get(req.body.kind.clone(), &req.body.rule_id).ok_or_else(not_found)?;
    Ok(get_pushrule::v3::Response::new(rule.to_owned().into()))
}

async fn set_rule(req: Ruma<set_pushrule::v3::Request>) -> Result<set_pushrule::v3::Response> {
    let body = &req.body;
    let mut ruleset = ruleset(&req)?;
    // With both, `before` wins (the spec).
    let after = if body.before.is_some() { None } else { body.after.as_deref() };
    ruleset.insert(body.rule.clone(), after, body.before.as_deref()).map_err(|e| match e {
        InsertPushRuleError::UnknownRuleId => Error::new(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "before/after rule not found",
        ),
        e => Error::invalid_param(e.to_string()),
    })?;
    save(&req, ruleset)?;
    Ok(set_pushrule::v3::Response::new())
}

async fn delete_rule(req: Ruma<delete_pushrule::v3::Request>) -> Result<delete_pushrule::v3::Response> {
    let mut ruleset = ruleset(&req)?;
    ruleset.remove(req.body.kind.clone(), &req.body.rule_id).map_err(|e| match e {
        RemovePushRuleError::ServerDefault => Error::not_found("Server-default rules cannot be deleted"),
        _ => not_found(),
    })?;
    save(&req, ruleset)?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn get_enabled(
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let ruleset = ruleset(&req)?;
    let rule = ruleset.get(req.body.kind.clone(), &req.body.rule_id).ok_or_else(not_found)?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

async fn set_enabled(
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let mut ruleset = ruleset(&req)?;
    ruleset
        .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
        .map_err(|_| not_found())?;
    save(&req, ruleset)?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn get_actions(
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let ruleset = ruleset(&req)?;
    let rule = ruleset.get(req.body.kind.clone(), &req.body.rule_id).ok_or_else(not_found)?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions().to_vec()))
}

async fn set_actions(
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let mut ruleset = ruleset(&req)?;
    let actions = req.body.actions.clone();
    ruleset.set_actions(req.body.kind.clone(), &req.body.rule_id, actions).map_err(|_| not_found())?;
    save(&req, ruleset)?;
    Ok(set_pushrule_actions::v3::Response::new())
}

async fn notifications(req: Ruma<get_notifications::v3::Request>) -> Result<get_notifications::v3::Response> {
    let body = &req.body;
    let rooms = &req.services.rooms;
    let from = body
        .from
        .as_deref()
        .map(|f| f.parse::<u64>().map_err(|_| Error::invalid_param("Invalid from token")))
        .transpose()?;
    let limit = body.limit.map_or(50, |l| u64::from(l).clamp(1, 500) as usize);
    let only_highlight = body.only.as_deref() == Some("highlight");
    let (found, next) = rooms.notifications(req.user(), from, limit, only_highlight)?;
    let mut out = Vec::with_capacity(found.len());
    for crate::rooms::notifications::Listed { room_short, notification, read } in found {
        let room_id = OwnedRoomId::try_from(rooms.short.name(room_short)?).map_err(Error::internal)?;
        let mut event = rooms.client_event(notification.event, req.sender_device.as_deref(), req.user())?;
        if let Some(object) = event.as_object_mut() {
            object.remove("room_id");
        }
        let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(notification.ts).unwrap_or_default());
        out.push(get_notifications::v3::Notification::new(
            notification.actions,
            raw(event)?,
            read,
            room_id,
            ts,
        ));
    }
    let mut response = get_notifications::v3::Response::new(out);
    response.next_token = next.map(|n| n.to_string());
    Ok(response)
}
