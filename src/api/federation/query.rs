//! Queries other servers make about this one's users and rooms:
//! `GET /_matrix/federation/v1/query/profile`, `/query/directory`.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::query::{
    get_profile_information::v1 as profile, get_room_information::v1 as directory,
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_profile).ruma(get_directory)
}

/// A local user's profile, or the one field asked for.
async fn get_profile(req: Ruma<profile::Request>) -> Result<profile::Response> {
    let user = &req.body.user_id;
    if !req.services.users.is_local(user) {
        return Err(Error::invalid_param("User is not hosted on this homeserver"));
    }
    let profile =
        req.services.users.profile(user)?.ok_or_else(|| Error::not_found("Profile was not found"))?;
    let mut response = profile::Response::new();
    for (field, value) in profile {
        if req.body.field.as_ref().is_none_or(|wanted| wanted.as_str() == field) {
            response.set(field, value);
        }
    }
    Ok(response)
}

/// A local alias: its room and the servers that can help join it.
async fn get_directory(req: Ruma<directory::Request>) -> Result<directory::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != req.services.config.server_name {
        return Err(Error::not_found("Room alias not found."));
    }
    let (room_id, servers) = crate::federation::query::resolve_alias(&req.services, alias).await?;
    Ok(directory::Response::new(room_id, servers))
}
