//! Server-Server API handlers. Until Hearth federates, only what third
//! parties call on any homeserver: the OpenID userinfo check.

mod openid;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    openid::routes(router)
}
