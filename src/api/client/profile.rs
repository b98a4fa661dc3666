//! Profiles: `GET /profile/{userId}` and `GET/PUT/DELETE
//! /profile/{userId}/{keyName}` (which covers `displayname` and `avatar_url`).

use std::sync::Arc;

use axum::{
    Router,
    response::{IntoResponse, Response},
};
use ruma::{
    UserId,
    api::client::profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
    profile::{ProfileFieldName, ProfileFieldValue},
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaResponse, RumaRouter},
    services::Services,
};

/// Longest display name (as in Synapse).
const MAX_DISPLAYNAME_LEN: usize = 256;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_all).ruma_untyped(get_field).ruma(set_field).ruma(delete_field)
}

/// A local user's profile, or a remote one asked of the user's server.
async fn profile_of(services: &Services, user_id: &UserId) -> Result<crate::users::profile::Profile> {
    if !services.users.is_local(user_id) {
        let request =
            ruma::api::federation::query::get_profile_information::v1::Request::new(user_id.to_owned());
        let server = user_id.server_name();
        let response = services
            .servers
            .client
            .send(server, request)
            .await
            .map_err(|failure| failure.to_client_error(server))?;
        return Ok(response.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    }
    services.users.profile(user_id)?.ok_or_else(|| Error::not_found("Profile was not found"))
}

async fn get_all(req: Ruma<get_profile::v3::Request>) -> Result<get_profile::v3::Response> {
    let profile = profile_of(&req.services, &req.body.user_id).await?;
    Ok(get_profile::v3::Response::from_iter(profile))
}

/// An unset display name or avatar is `{}` (Synapse; clients read a
/// missing key as "none"); any other unset field is not found.
async fn get_field(req: Ruma<get_profile_field::v3::Request>) -> Result<Response> {
    let profile = profile_of(&req.services, &req.body.user_id).await?;
    let field = req.body.field.as_str();
    let Some(value) = profile.get(field).cloned() else {
        if matches!(field, "displayname" | "avatar_url") {
            return Ok(axum::Json(serde_json::json!({})).into_response());
        }
        return Err(Error::not_found("The requested profile key does not exist."));
    };
    let value = ProfileFieldValue::new(field, value).map_err(Error::internal)?;
    Ok(RumaResponse(get_profile_field::v3::Response::new(value)).into_response())
}

/// One changes one's own profile; a guest, only its display name.
fn check_own<T>(req: &Ruma<T>, user_id: &UserId, field: &str) -> Result<()> {
    if req.sender_is_guest && field != "displayname" {
        return Err(Error::guest_forbidden());
    }
    if req.user() != user_id {
        return Err(Error::forbidden("Cannot change another user's profile"));
    }
    Ok(())
}

async fn set_field(req: Ruma<set_profile_field::v3::Request>) -> Result<set_profile_field::v3::Response> {
    let value = &req.body.value;
    check_own(&req, &req.body.user_id, value.field_name().as_str())?;
    req.services.users.check_not_suspended(req.user())?;
    if let ProfileFieldValue::DisplayName(name) = value
        && name.chars().count() > MAX_DISPLAYNAME_LEN
    {
        return Err(Error::invalid_param(format!("Displayname is too long (max {MAX_DISPLAYNAME_LEN})")));
    }
    let field = value.field_name();
    req.services.users.set_profile_field(req.user(), field.as_str(), Some(value.value().into_owned()))?;
    req.services.rooms.update_member_events(req.user(), field.as_str()).await?;
    Ok(set_profile_field::v3::Response::new())
}

async fn delete_field(
    req: Ruma<delete_profile_field::v3::Request>,
) -> Result<delete_profile_field::v3::Response> {
    let field: &ProfileFieldName = &req.body.field;
    check_own(&req, &req.body.user_id, field.as_str())?;
    req.services.users.check_not_suspended(req.user())?;
    req.services.users.set_profile_field(req.user(), field.as_str(), None)?;
    req.services.rooms.update_member_events(req.user(), field.as_str()).await?;
    Ok(delete_profile_field::v3::Response::new())
}
