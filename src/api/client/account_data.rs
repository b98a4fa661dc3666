//! Client config: `GET/PUT /user/{userId}/account_data/{type}` and
//! `GET/PUT /user/{userId}/rooms/{roomId}/account_data/{type}`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::{
    RoomId, UserId,
    api::{
        client::config::{
            get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
        },
        error::ErrorKind,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

/// Types the server maintains itself; clients get 405 when they PUT them.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_global).ruma(set_global).ruma(get_room).ruma(set_room)
}

fn check_own<T>(req: &Ruma<T>, user_id: &UserId) -> Result<()> {
    if req.user() != user_id {
        return Err(Error::forbidden("Cannot access account data for other users."));
    }
    Ok(())
}

fn read<T>(
    req: &Ruma<T>,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    event_type: &str,
) -> Result<Box<RawValue>> {
    check_own(req, user_id)?;
    req.services
        .users
        .account_data(user_id, room_id, event_type)?
        .ok_or_else(|| Error::not_found("Account data not found"))
}

fn write<T>(
    req: &Ruma<T>,
    user_id: &UserId,
    room_id: Option<&RoomId>,
    event_type: &str,
    content: &RawValue,
) -> Result<()> {
    check_own(req, user_id)?;
    if SERVER_MANAGED.contains(&event_type) {
        return Err(Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadJson,
            format!("Cannot set {event_type} through this API."),
        ));
    }
    if !content.get().trim_start().starts_with('{') {
        return Err(Error::bad_json("Content must be a JSON object."));
    }
    req.services.users.set_account_data(user_id, room_id, event_type, content)
}

async fn get_global(
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    let data = read(&req, &req.body.user_id, None, &req.body.event_type.to_string())?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(data)))
}

async fn set_global(
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    write(&req, &req.body.user_id, None, &req.body.event_type.to_string(), req.body.data.json())?;
    Ok(set_global_account_data::v3::Response::new())
}

async fn get_room(
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    let body = &req.body;
    let data = read(&req, &body.user_id, Some(&body.room_id), &body.event_type.to_string())?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(data)))
}

async fn set_room(
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    let body = &req.body;
    write(&req, &body.user_id, Some(&body.room_id), &body.event_type.to_string(), body.data.json())?;
    Ok(set_room_account_data::v3::Response::new())
}
