//! Sync filters: `POST /user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::filter::{FilterDefinition, create_filter, get_filter};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(create).ruma(get)
}

async fn create(req: Ruma<create_filter::v3::Request>) -> Result<create_filter::v3::Response> {
    if req.user() != &req.body.user_id {
        return Err(Error::forbidden("Cannot create filters for other users"));
    }
    let json = serde_json::to_value(&req.body.filter).map_err(Error::internal)?;
    let id = req.services.users.create_filter(req.user(), &json)?;
    Ok(create_filter::v3::Response::new(id))
}

async fn get(req: Ruma<get_filter::v3::Request>) -> Result<get_filter::v3::Response> {
    if req.user() != &req.body.user_id {
        return Err(Error::forbidden("Cannot get filters for other users"));
    }
    let json = req
        .services
        .users
        .filter(req.user(), &req.body.filter_id)?
        .ok_or_else(|| Error::not_found("No such filter"))?;
    let filter: FilterDefinition = serde_json::from_value(json).map_err(Error::internal)?;
    Ok(get_filter::v3::Response::new(filter))
}
