//! `GET/POST /_synapse/admin/v1/register`: shared-secret registration.

use std::sync::Arc;

use axum::{Json, Router, body::Bytes, extract::State, routing::get};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::client::check_password_length,
    services::Services,
    users::shared_secret::{Signed, verify_mac},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

fn secret(services: &Services) -> Result<&str> {
    services.config.registration.shared_secret.as_deref().ok_or_else(|| {
        Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Shared secret registration is not enabled")
    })
}

async fn nonce(State(services): State<Arc<Services>>) -> Result<Json<Value>> {
    secret(&services)?;
    Ok(Json(json!({ "nonce": services.shared_secret_nonces.issue() })))
}

#[derive(Deserialize)]
struct Body {
    nonce: String,
    username: String,
    password: String,
    mac: String,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    user_type: Option<String>,
}

async fn register(State(services): State<Arc<Services>>, req: axum::extract::Request) -> Result<Json<Value>> {
    let (parts, body) = req.into_parts();
    let client_ip = crate::api::client_ip(&parts);
    let limit = services.config.limits.max_request_size;
    let body: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| Error::too_large())?;
    let secret = secret(&services)?.to_owned();
    let body: Body = crate::api::parse_json(&body)?;
    if !services.shared_secret_nonces.consume(&body.nonce) {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "unrecognised nonce"));
    }
    let fields = Signed {
        nonce: &body.nonce,
        username: &body.username,
        password: &body.password,
        admin: body.admin,
        user_type: body.user_type.as_deref(),
    };
    if !verify_mac(&secret, &fields, &body.mac) {
        return Err(Error::forbidden("HMAC incorrect"));
    }
    check_password_length(&body.password)?;
    // The MAC covers the name as sent; the account gets it lower-cased (as in Synapse).
    let user_id = services.users.user_id_for_new_localpart(&body.username.to_lowercase())?;
    let password = body.password.clone();
    let password_hash = services.users.hash_new_password(password).await?;
    services.users.create(&user_id, Some(password_hash), body.admin, body.displayname.as_deref())?;
    let (device_id, token) = services.users.login_device(&user_id, None, None, Some(client_ip))?;
    tracing::info!("registered {user_id} with the shared secret (admin: {})", body.admin);
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": token,
        "home_server": services.config.server_name,
        "device_id": device_id,
    })))
}
