//! Voice over IP: `GET /voip/turnServer`, TURN credentials for calls.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    response::{IntoResponse, Response},
};
use hmac::{Hmac, Mac};
use ruma::{
    api::client::voip::get_turn_server_info,
    serde::{Base64, base64::Standard},
};
use sha1::Sha1;

use crate::{
    Result,
    api::ruma::{Ruma, RumaResponse, RumaRouter},
    services::Services,
    util,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_untyped(turn_server)
}

/// Credentials in the form TURN servers check against the shared secret:
/// the user name is `<expiry in Unix seconds>:<user ID>`, the password the
/// base64 HMAC-SHA1 of the user name under the secret. Without a TURN
/// server configured the answer is `{}`, as Synapse's.
async fn turn_server(req: Ruma<get_turn_server_info::v3::Request>) -> Result<Response> {
    let turn = &req.services.config.turn;
    let Some(secret) = turn.shared_secret.as_deref().filter(|_| !turn.uris.is_empty()) else {
        return Ok(Json(serde_json::json!({})).into_response());
    };
    if req.sender_is_guest && !turn.allow_guests {
        return Err(crate::Error::guest_forbidden());
    }
    let expiry = util::now_ms() / 1000 + turn.user_lifetime_secs;
    let username = format!("{expiry}:{}", req.user());
    let password = turn_password(secret, &username);
    let response = get_turn_server_info::v3::Response::new(
        username,
        password,
        turn.uris.clone(),
        Duration::from_secs(turn.user_lifetime_secs),
    );
    Ok(RumaResponse(response).into_response())
}

/// Base64 with padding: TURN servers compare the text as they compute it.
fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let mut encoded = Base64::<Standard, Vec<u8>>::new(mac.finalize().into_bytes().to_vec()).encode();
    while !encoded.len().is_multiple_of(4) {
        encoded.push('=');
    }
    encoded
}

#[cfg(test)]
mod tests {
    /// A value computed with coturn's documented formula (Python:
    /// `base64.b64encode(hmac.new(b"secret", b"1700000000:@a:b", "sha1").digest())`).
    #[test]
    fn password_as_turn_servers_compute_it() {
        assert_eq!(super::turn_password("secret", "1700000000:@a:b"), "rdgio/2X2TM/Vu35wCFc+1QTCic=");
    }
}
