//! Admin endpoints: Synapse-compatible ones that tools and test suites rely
//! on, and Hearth's own (`/_hearth/admin/*`).

mod media;
mod register;
mod rooms;
mod search;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    search::routes(media::routes(rooms::routes(register::routes(router))))
}
