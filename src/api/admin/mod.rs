//! Admin endpoints: Synapse-compatible ones that tools and test suites rely
//! on, and Hearth's own (`/_hearth/admin/*`).

mod register;
mod rooms;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    rooms::routes(register::routes(router))
}
