//! The published room directory for other servers:
//! `GET` and `POST /_matrix/federation/v1/publicRooms`.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::directory::{
    get_public_rooms::v1 as get, get_public_rooms_filtered::v1 as filtered,
};

use crate::{
    Result,
    api::{
        client::directory::directory_page,
        ruma::{Ruma, RumaRouter},
    },
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(public_rooms).ruma(public_rooms_filtered)
}

async fn public_rooms(req: Ruma<get::Request>) -> Result<get::Response> {
    let page = directory_page(&req.services, req.body.limit, req.body.since.as_deref(), None, &[])?;
    let mut response = get::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = ruma::UInt::new(page.total);
    Ok(response)
}

async fn public_rooms_filtered(req: Ruma<filtered::Request>) -> Result<filtered::Response> {
    let body = &req.body;
    let search = body.filter.generic_search_term.as_deref();
    let page =
        directory_page(&req.services, body.limit, body.since.as_deref(), search, &body.filter.room_types)?;
    let mut response = filtered::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = ruma::UInt::new(page.total);
    Ok(response)
}
