//! OpenID: `POST /user/{userId}/openid/request_token`.

use std::sync::Arc;

use axum::Router;
use ruma::{api::client::account::request_openid_token, authentication::TokenType};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
    users::openid::LIFETIME,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(request_token)
}

async fn request_token(
    req: Ruma<request_openid_token::v3::Request>,
) -> Result<request_openid_token::v3::Response> {
    if &req.body.user_id != req.user() {
        return Err(Error::forbidden("Cannot request tokens for other users."));
    }
    let token = req.services.users.issue_openid_token(req.user());
    Ok(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        req.services.rooms.server_name().to_owned(),
        LIFETIME,
    ))
}
