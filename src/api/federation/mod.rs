//! Server-Server API handlers. Until Hearth federates, only what third
//! parties call on any homeserver: the OpenID userinfo check and identity
//! servers' `3pid/onbind`.

mod openid;
mod third_party;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = openid::routes(router);
    third_party::routes(router)
}
