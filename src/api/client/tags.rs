//! Room tags: `GET /user/{userId}/rooms/{roomId}/tags`, `PUT/DELETE …/tags/{tag}`,
//! kept as the room's `m.tag` account data.

use std::sync::Arc;

use axum::Router;
use ruma::{
    RoomId, UserId,
    api::client::tag::{create_tag, delete_tag, get_tags},
    events::tag::Tags,
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

/// The spec's limit on a tag's name.
const MAX_TAG_BYTES: usize = 255;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get).ruma(put).ruma(delete)
}

fn current<T>(req: &Ruma<T>, user_id: &UserId, room_id: &RoomId) -> Result<serde_json::Map<String, Value>> {
    if req.user() != user_id {
        return Err(Error::forbidden("Cannot access tags of other users."));
    }
    let stored = req.services.users.account_data(user_id, Some(room_id), "m.tag")?;
    let value: Value =
        stored.map(|raw| serde_json::from_str(raw.get()).unwrap_or_default()).unwrap_or_default();
    Ok(value["tags"].as_object().cloned().unwrap_or_default())
}

fn store<T>(req: &Ruma<T>, room_id: &RoomId, tags: serde_json::Map<String, Value>) -> Result<()> {
    let content = serde_json::value::to_raw_value(&json!({"tags": tags})).map_err(Error::internal)?;
    req.services.users.set_account_data(req.user(), Some(room_id), "m.tag", &content)
}

async fn get(req: Ruma<get_tags::v3::Request>) -> Result<get_tags::v3::Response> {
    let tags = current(&req, &req.body.user_id, &req.body.room_id)?;
    let tags: Tags = serde_json::from_value(Value::Object(tags)).unwrap_or_default();
    Ok(get_tags::v3::Response::new(tags))
}

async fn put(req: Ruma<create_tag::v3::Request>) -> Result<create_tag::v3::Response> {
    let body = &req.body;
    let mut tags = current(&req, &body.user_id, &body.room_id)?;
    if body.tag.len() > MAX_TAG_BYTES {
        return Err(Error::invalid_param("Tag names are at most 255 bytes"));
    }
    let rooms = &req.services.rooms;
    let short =
        rooms.room_short(&body.room_id)?.ok_or_else(|| Error::forbidden("You are not in this room."))?;
    if rooms.membership(req.user(), short)?.is_none() {
        return Err(Error::forbidden("You are not in this room."));
    }
    tags.insert(body.tag.clone(), serde_json::to_value(&body.tag_info).map_err(Error::internal)?);
    store(&req, &body.room_id, tags)?;
    Ok(create_tag::v3::Response::new())
}

async fn delete(req: Ruma<delete_tag::v3::Request>) -> Result<delete_tag::v3::Response> {
    let body = &req.body;
    let mut tags = current(&req, &body.user_id, &body.room_id)?;
    if tags.remove(&body.tag).is_some() {
        store(&req, &body.room_id, tags)?;
    }
    Ok(delete_tag::v3::Response::new())
}
