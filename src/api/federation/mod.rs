//! Server-Server API handlers: what other homeservers call (`routes`, the
//! "federation" resource), the signing keys and the notary (`key_routes`,
//! the "keys" resource), and what third parties call on any homeserver, on
//! client listeners too (`public_routes`: the OpenID userinfo check,
//! identity servers' `3pid/onbind`).

mod directory;
mod events;
mod keys;
mod membership;
mod openid;
mod query;
mod third_party;
mod transactions;
mod user;
mod version;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = version::routes(router);
    let router = events::routes(router);
    let router = transactions::routes(router);
    let router = membership::routes(router);
    let router = user::routes(router);
    let router = directory::routes(router);
    query::routes(router)
}

/// 403 `M_FORBIDDEN` when the room's server ACL denies `server`.
pub fn check_acl(services: &Services, server: &ruma::ServerName, room_short: u64) -> crate::Result<()> {
    if !services.rooms.acl_allows(server, room_short)? {
        return Err(crate::Error::forbidden(format!("{server} is denied by the room's server ACL")));
    }
    Ok(())
}

pub fn key_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    keys::routes(router)
}

pub fn public_routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = openid::routes(router);
    third_party::routes(router)
}
