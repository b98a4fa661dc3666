//! Client-Server API handlers, one file per spec module.

mod account;
mod account_data;
mod backup;
mod devices;
mod directory;
mod discovery;
mod filter;
mod keys;
mod legacy;
mod membership;
mod presence;
mod profile;
mod push;
mod receipts;
mod redact;
mod relations;
mod report;
mod room;
mod session;
mod state;
mod sync;
mod tags;
mod to_device;
mod typing;
mod user_directory;

use std::sync::Arc;

use axum::Router;

use crate::services::Services;

pub use account::check_password_length;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = discovery::routes(router);
    let router = legacy::routes(router);
    let router = account::routes(router);
    let router = session::routes(router);
    let router = devices::routes(router);
    let router = profile::routes(router);
    let router = account_data::routes(router);
    let router = filter::routes(router);
    let router = room::routes(router);
    let router = state::routes(router);
    let router = redact::routes(router);
    let router = directory::routes(router);
    let router = report::routes(router);
    let router = sync::routes(router);
    let router = receipts::routes(router);
    let router = typing::routes(router);
    let router = presence::routes(router);
    let router = push::routes(router);
    let router = relations::routes(router);
    let router = tags::routes(router);
    let router = user_directory::routes(router);
    let router = keys::routes(router);
    let router = to_device::routes(router);
    let router = backup::routes(router);
    membership::routes(router)
}
