//! Synapse-compatible admin endpoints that tools and test suites rely on.

mod register;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    register::routes(router)
}
