//! Push rules and notifications: `/pushrules/…` and `GET /notifications`.
//!
//! The push rule paths are read as Synapse reads them, segment by segment:
//! ruma's typed endpoints cannot say "400" for a malformed path, list one
//! kind at `…/global/<kind>/`, or take a room rule ID that is no room ID.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::any,
};
use bytes::Bytes;
use http::{Method, StatusCode};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedUserId, UInt,
    api::client::push::get_notifications,
    push::{
        Action, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
        NewSimplePushRule, PushCondition, RuleKind,
    },
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::ruma::{Authed, Ruma, RumaRouter},
    services::Services,
    users::push_rules::KINDS,
    util::raw,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let mut router = router.ruma_shaped(notifications, add_profile_tags);
    for prefix in ["/_matrix/client/v3", "/_matrix/client/r0"] {
        router = router
            .route(
                &format!("{prefix}/pushrules/"),
                any(|services, auth, method, query, body| {
                    push_rules(services, auth, method, Path(String::new()), query, body)
                }),
            )
            .route(&format!("{prefix}/pushrules/{{*path}}"), any(push_rules));
    }
    router
}

/// A path that names no push rule resource: 400, as Synapse answers.
fn bad_path() -> Error {
    Error::unrecognized(StatusCode::BAD_REQUEST)
}

fn not_found() -> Error {
    Error::not_found("Push rule not found")
}

async fn push_rules(
    State(services): State<Arc<Services>>,
    auth: Authed,
    method: Method,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>> {
    let segments: Vec<&str> = path.split('/').collect();
    let rules = services.users.push_rules(&auth.user)?;
    if method == Method::GET {
        return get(&rules.global()?, &segments).map(Json);
    }
    let target = Target::parse(&segments)?;
    let mut ruleset = rules.ruleset.clone();
    let mut unmatched = rules.unmatched_room.clone();
    match method {
        Method::PUT => {
            if target.rule_id.contains(['/', '\\']) {
                return Err(Error::invalid_param("rule_id may not contain slashes"));
            }
            let content: Value = crate::api::parse_json(&body)?;
            match target.attr {
                Some(attr) => set_attribute(&mut ruleset, &mut unmatched, &target, attr, content)?,
                None => {
                    let position =
                        (query.get("before").map(String::as_str), query.get("after").map(String::as_str));
                    add(&mut ruleset, &mut unmatched, &target, content, position)?;
                }
            }
        }
        Method::DELETE => {
            let kind = RuleKind::from(target.kind);
            if ruleset.remove(kind, target.rule_id).is_err() {
                let before = unmatched.len();
                unmatched.retain(|rule| !(target.kind == "room" && rule["rule_id"] == target.rule_id));
                if unmatched.len() == before {
                    return Err(not_found());
                }
            }
        }
        _ => return Err(Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED)),
    }
    services.users.set_push_rules(&auth.user, ruleset, unmatched)?;
    Ok(Json(json!({})))
}

/// `GET /pushrules/…`: the whole set, a scope, a kind's list, a rule or
/// one of its attributes.
fn get(global: &Value, segments: &[&str]) -> Result<Value> {
    match segments {
        [""] => Ok(json!({ "global": global })),
        ["global", ""] => Ok(global.clone()),
        ["global", kind, rest @ ..] => {
            let list = global.get(*kind).and_then(Value::as_array).ok_or_else(bad_path)?;
            match rest {
                [] => Err(bad_path()),
                [""] => Ok(Value::Array(list.clone())),
                [rule_id, attribute @ ..] => {
                    let rule = list.iter().find(|rule| rule["rule_id"] == *rule_id).ok_or_else(not_found)?;
                    match attribute {
                        [] => Ok(rule.clone()),
                        [attribute, ..] => {
                            let value = rule.get(*attribute).ok_or_else(bad_path)?;
                            Ok(json!({ *attribute: value }))
                        }
                    }
                }
            }
        }
        // `…/global` without its trailing slash, or an unknown scope.
        _ => Err(bad_path()),
    }
}

/// The rule a `PUT` or `DELETE` addresses.
struct Target<'a> {
    kind: &'a str,
    rule_id: &'a str,
    attr: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn parse(segments: &[&'a str]) -> Result<Self> {
        match segments {
            ["global", kind, rule_id, rest @ ..] if KINDS.contains(kind) && !rule_id.is_empty() => {
                let attr = rest.first().copied().filter(|attr| !attr.is_empty());
                Ok(Self { kind, rule_id, attr })
            }
            _ => Err(bad_path()),
        }
    }
}

/// `PUT …/enabled` or `…/actions`.
fn set_attribute(
    ruleset: &mut ruma::push::Ruleset,
    unmatched: &mut [Value],
    target: &Target<'_>,
    attr: &str,
    content: Value,
) -> Result<()> {
    let kind = RuleKind::from(target.kind);
    let unmatched_rule =
        unmatched.iter_mut().find(|rule| target.kind == "room" && rule["rule_id"] == target.rule_id);
    match attr {
        "enabled" => {
            let enabled = content
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| Error::invalid_param("`enabled` must be a boolean"))?;
            match unmatched_rule {
                Some(rule) => rule["enabled"] = Value::Bool(enabled),
                None => ruleset.set_enabled(kind, target.rule_id, enabled).map_err(|_| not_found())?,
            }
        }
        "actions" => {
            let actions = actions(&content)?;
            match unmatched_rule {
                Some(rule) => rule["actions"] = serde_json::to_value(actions).map_err(Error::internal)?,
                None => ruleset.set_actions(kind, target.rule_id, actions).map_err(|_| not_found())?,
            }
        }
        _ => return Err(bad_path()),
    }
    Ok(())
}

/// A rule's actions: the spec's, the legacy `dont_notify` and `coalesce`
/// (no-ops Synapse still takes), and tweaks; nothing else.
fn actions(content: &Value) -> Result<Vec<Action>> {
    let actions = content.get("actions").ok_or_else(|| Error::invalid_param("No actions found"))?;
    let known = |action: &Value| match action {
        Value::String(name) => ["notify", "dont_notify", "coalesce"].contains(&name.as_str()),
        Value::Object(tweak) => tweak.contains_key("set_tweak"),
        _ => false,
    };
    if !actions.as_array().is_some_and(|list| list.iter().all(known)) {
        return Err(Error::invalid_param("Unrecognised action"));
    }
    serde_json::from_value(actions.clone()).map_err(|e| Error::invalid_param(format!("Invalid actions: {e}")))
}

/// `PUT …/<kind>/<rule_id>`: a new rule (or a new version of one), placed
/// before or after another or else first among the user's rules of its kind.
fn add(
    ruleset: &mut ruma::push::Ruleset,
    unmatched: &mut Vec<Value>,
    target: &Target<'_>,
    content: Value,
    (before, after): (Option<&str>, Option<&str>),
) -> Result<()> {
    if target.rule_id.starts_with('.') {
        return Err(Error::invalid_param("Rule IDs starting with '.' are reserved for the server"));
    }
    let rule_id = target.rule_id.to_owned();
    let conditions = || -> Result<Vec<PushCondition>> {
        let conditions =
            content.get("conditions").ok_or_else(|| Error::invalid_param("Missing 'conditions'"))?;
        serde_json::from_value(conditions.clone())
            .map_err(|e| Error::invalid_param(format!("Invalid conditions: {e}")))
    };
    let rule = match target.kind {
        "override" => {
            NewPushRule::Override(NewConditionalPushRule::new(rule_id, conditions()?, actions(&content)?))
        }
        "underride" => {
            NewPushRule::Underride(NewConditionalPushRule::new(rule_id, conditions()?, actions(&content)?))
        }
        "content" => {
            let pattern = content
                .get("pattern")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid_param("Content rule missing 'pattern'"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id, pattern.to_owned(), actions(&content)?))
        }
        "sender" => {
            let sender = OwnedUserId::try_from(rule_id)
                .map_err(|e| Error::invalid_param(format!("Invalid sender rule ID: {e}")))?;
            NewPushRule::Sender(NewSimplePushRule::new(sender, actions(&content)?))
        }
        _ => match OwnedRoomId::try_from(rule_id.as_str()) {
            Ok(room) => NewPushRule::Room(NewSimplePushRule::new(room, actions(&content)?)),
            Err(_) => return add_unmatched(unmatched, rule_id, actions(&content)?, (before, after)),
        },
    };
    // With both, `before` wins (the spec).
    let after = if before.is_some() { None } else { after };
    ruleset.insert(rule, after, before).map_err(|e| match e {
        InsertPushRuleError::UnknownRuleId => Error::new(
            StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::Unknown,
            "before/after rule not found",
        ),
        e => Error::invalid_param(e.to_string()),
    })
}

/// A room rule whose ID is no room ID, among the others of its kind.
fn add_unmatched(
    unmatched: &mut Vec<Value>,
    rule_id: String,
    actions: Vec<Action>,
    (before, after): (Option<&str>, Option<&str>),
) -> Result<()> {
    let rule = json!({ "rule_id": rule_id, "actions": actions, "default": false, "enabled": true });
    unmatched.retain(|existing| existing["rule_id"] != rule["rule_id"]);
    let position_of = |id: &str| {
        unmatched.iter().position(|existing| existing["rule_id"] == id).ok_or_else(|| {
            Error::new(
                StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "before/after rule not found",
            )
        })
    };
    let index = match (before, after) {
        (Some(before), _) => position_of(before)?,
        (None, Some(after)) => position_of(after)? + 1,
        (None, None) => 0,
    };
    unmatched.insert(index, rule);
    Ok(())
}

/// `profile_tag` is always there in Synapse's notifications, null when unset.
fn add_profile_tags(value: &mut Value) {
    if let Some(list) = value.get_mut("notifications").and_then(Value::as_array_mut) {
        for notification in list {
            crate::api::ruma::ensure(notification, "profile_tag", || Value::Null);
        }
    }
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
        // A purged room's notifications are going: skip them.
        if rooms.is_purging(room_short) || rooms.pdu_json(notification.event)?.is_none() {
            continue;
        }
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
