//! `GET /_matrix/federation/v1/version`: which server software this is.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::discovery::get_server_version::v1 as version;

use crate::{
    Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_version)
}

async fn get_version(_: Ruma<version::Request>) -> Result<version::Response> {
    let mut server = version::Server::new();
    server.name = Some("Hearth".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = version::Response::new();
    response.server = Some(server);
    Ok(response)
}
