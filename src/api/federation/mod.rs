//! Server-Server API handlers: what other homeservers call (`routes`, the
//! "federation" resource), the signing keys and the notary (`key_routes`,
//! the "keys" resource), and what third parties call on any homeserver, on
//! client listeners too (`public_routes`: the OpenID userinfo check,
//! identity servers' `3pid/onbind`).

mod keys;
mod openid;
mod query;
mod third_party;
mod version;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = version::routes(router);
    query::routes(router)
}

pub fn key_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    keys::routes(router)
}

pub fn public_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = openid::routes(router);
    third_party::routes(router)
}
