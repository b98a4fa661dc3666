//! Admin endpoints: Synapse-compatible ones that tools and test suites rely
//! on, and Hearth's own (`/_hearth/admin/*`).

mod media;
mod register;
mod rooms;
mod search;

use std::sync::Arc;

use axum::Router;

use crate::{Error, Result, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    search::routes(media::routes(rooms::routes(register::routes(router))))
}

/// Refuses (403) whoever is not a server admin.
fn require_admin(services: &Services, user: &ruma::UserId) -> Result<()> {
    match services.users.is_admin(user)? {
        true => Ok(()),
        false => Err(Error::forbidden("You are not a server admin")),
    }
}
