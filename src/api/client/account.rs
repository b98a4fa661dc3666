//! Account registration and management: `register`, `register/available`,
//! `account/whoami`, `account/password`, `account/deactivate`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::{
    UserId,
    api::{
        client::{
            account::{
                ThirdPartyIdRemovalStatus, change_password, check_registration_token_validity, deactivate,
                get_3pids, get_username_availability,
                register::{self, RegistrationKind},
                whoami,
            },
            uiaa::{AuthData, AuthType},
        },
        error::ErrorKind,
    },
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter, ensure},
    services::Services,
    users::uiaa::Challenge,
};

/// Longest password accepted (as in Synapse).
pub const MAX_PASSWORD_LEN: usize = 512;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(register)
        .ruma(username_available)
        .ruma(registration_token_validity)
        .ruma_shaped(whoami, |body| ensure(body, "is_guest", || false.into()))
        .ruma(third_party_ids)
        .ruma(change_password)
        .ruma(deactivate)
}

fn registration_disabled() -> Error {
    Error::forbidden("Registration has been disabled")
}

/// Availability and token-validity checks have their own, looser bucket.
fn rate_limit_checks<T>(req: &Ruma<T>) -> Result<()> {
    req.services.limiters.registration_checks.check(&req.client_ip.to_string()).map_err(Error::limit_exceeded)
}

pub fn check_password_length(password: &str) -> Result<()> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid_param(format!("Password too long (max {MAX_PASSWORD_LEN})")));
    }
    Ok(())
}

/// Re-authentication of the requesting user by password (the UIA flow of
/// password changes, deactivation and device deletion).
pub async fn password_uia<T>(req: &Ruma<T>, user_id: &UserId, auth: Option<AuthData>) -> Result<()> {
    let flows = vec![vec![AuthType::Password]];
    check_uia(&req.services, flows, Some(user_id.to_owned()), req.operation(), auth).await
}

/// Runs user-interactive auth on a blocking thread (password checks hash).
async fn check_uia(
    services: &Arc<Services>,
    flows: Vec<Vec<AuthType>>,
    user_id: Option<ruma::OwnedUserId>,
    operation: crate::users::uiaa::Operation,
    auth: Option<AuthData>,
) -> Result<()> {
    let gate = services.clone();
    let services = services.clone();
    gate.users
        .password_work(move || {
            let challenge = Challenge {
                flows,
                user_id: user_id.as_deref(),
                registration_token: services.config.registration.token.as_deref(),
                operation,
            };
            services.uiaa.check(&services.users, &challenge, auth.as_ref())
        })
        .await?
}

async fn register(req: Ruma<register::v3::Request>) -> Result<register::v3::Response> {
    let services = &req.services;
    let body = &req.body;
    if body.kind == RegistrationKind::Guest {
        return register_guest(&req);
    }
    if body.login_type.is_some() {
        return Err(Error::forbidden("Application service registration is not available"));
    }
    if !services.config.registration.enabled {
        return Err(registration_disabled());
    }
    // The first request of a registration only fetches the flows; each one
    // that tries a stage (and may create an account) takes a token.
    let limiter = &services.limiters.registration;
    let ip = req.client_ip.to_string();
    if body.auth.is_some() { limiter.check(&ip) } else { limiter.peek(&ip) }
        .map_err(Error::limit_exceeded)?;

    // Check the username and password before UIA, so the client learns early.
    let upgrading_guest = match &body.guest_access_token {
        Some(token) => Some(guest_to_upgrade(services, body.username.as_deref(), token)?),
        None => None,
    };
    let user_id = match (&upgrading_guest, &body.username) {
        (Some(guest), _) => guest.clone(),
        (None, Some(name)) => services.users.user_id_for_new_localpart(&name.to_lowercase())?,
        (None, None) => loop {
            let candidate = crate::util::random_string(12).to_lowercase();
            let id = services.users.user_id_for_new_localpart(&candidate)?;
            if !services.users.exists(&id)? {
                break id;
            }
        },
    };
    if crate::admin::notices::notices_user(services).as_ref() == Some(&user_id) {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::Exclusive, "This user ID is reserved."));
    }
    if upgrading_guest.is_none() && services.users.exists(&user_id)? {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken."));
    }
    if let Some(password) = &body.password {
        check_password_length(password)?;
    }

    // A request without `auth` learns the flows first, whatever else it
    // lacks (clients ask with `{}`), as in Synapse.
    let stage = if services.config.registration.requires_token() {
        AuthType::RegistrationToken
    } else {
        AuthType::Dummy
    };
    check_uia(services, vec![vec![stage]], None, req.operation(), body.auth.clone()).await?;
    // Password login and re-authentication are the only ways back into an
    // account, so one without a password would be lost (Synapse refuses too).
    let Some(password) = &body.password else {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, "Missing params: password"));
    };

    let password_hash = services.users.hash_new_password(password.clone()).await?;
    match upgrading_guest {
        Some(_) => services.users.upgrade_guest(&user_id, password_hash)?,
        None => services.users.create(&user_id, Some(password_hash), false, None)?,
    }
    tracing::info!("registered {user_id}");
    let session = body.auth.as_ref().and_then(crate::users::uiaa::auth_session);
    if let Some(token) = session.and_then(|session| services.uiaa.take_registration_token(session)) {
        services.users.registration_tokens.complete(&token)?;
    }

    let mut response = register::v3::Response::new(user_id.clone());
    if !body.inhibit_login {
        let (device_id, token) = services.users.login_device(
            &user_id,
            body.device_id.clone(),
            body.initial_device_display_name.clone(),
            Some(req.client_ip),
        )?;
        response.access_token = Some(token);
        response.device_id = Some(device_id);
    }
    Ok(response)
}

/// `kind=guest`: a guest account and its first device, no questions asked
/// (no flows, no name, no password), when the server admits guests.
fn register_guest(req: &Ruma<register::v3::Request>) -> Result<register::v3::Response> {
    let services = &req.services;
    if !services.config.registration.guest_access {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest access is disabled",
        ));
    }
    services.limiters.registration.check(&req.client_ip.to_string()).map_err(Error::limit_exceeded)?;
    let user_id = services.users.create_guest()?;
    tracing::info!("registered guest {user_id}");
    let (device_id, token) = services.users.login_device(
        &user_id,
        None,
        req.body.initial_device_display_name.clone(),
        Some(req.client_ip),
    )?;
    let mut response = register::v3::Response::new(user_id);
    response.access_token = Some(token);
    response.device_id = Some(device_id);
    Ok(response)
}

/// The guest a full registration with `guest_access_token` turns into a
/// user: the token's owner, a guest, whose localpart is the username asked for.
fn guest_to_upgrade(services: &Services, username: Option<&str>, token: &str) -> Result<ruma::OwnedUserId> {
    let username = username.ok_or_else(|| {
        Error::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, "Upgrading a guest needs `username`")
    })?;
    let guest = services.users.find_token(token)?.map(|record| record.user_id);
    match guest {
        Some(guest) if guest.localpart() == username.to_lowercase() && services.users.is_guest(&guest)? => {
            Ok(guest)
        }
        _ => Err(Error::forbidden(
            "Cannot register taken user ID without valid guest credentials for that user.",
        )),
    }
}

async fn username_available(
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    if !req.services.config.registration.enabled {
        return Err(registration_disabled());
    }
    rate_limit_checks(&req)?;
    let user_id = req.services.users.user_id_for_new_localpart(&req.body.username.to_lowercase())?;
    if req.services.users.exists(&user_id)? {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken."));
    }
    Ok(get_username_availability::v3::Response::new(true))
}

async fn whoami(req: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(req.user().clone(), req.sender_is_guest);
    response.device_id = req.sender_device.clone();
    Ok(response)
}

/// The endpoints that take `AccessTokenOptional` but need a user here.
fn require_user<T>(req: &Ruma<T>) -> Result<ruma::OwnedUserId> {
    req.sender_user
        .clone()
        .ok_or_else(|| Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token"))
}

async fn change_password(req: Ruma<change_password::v3::Request>) -> Result<change_password::v3::Response> {
    let user_id = require_user(&req)?;
    let services = &req.services;
    check_password_length(&req.body.new_password)?;
    password_uia(&req, &user_id, req.body.auth.clone()).await?;
    let password_hash = services.users.hash_new_password(req.body.new_password.clone()).await?;
    services.users.set_password_hash(&user_id, Some(password_hash))?;
    if req.body.logout_devices {
        services.users.remove_all_devices(&user_id, req.sender_device.as_deref())?;
    }
    Ok(change_password::v3::Response::new())
}

async fn deactivate(req: Ruma<deactivate::v3::Request>) -> Result<deactivate::v3::Response> {
    let user_id = require_user(&req)?;
    let services = &req.services;
    password_uia(&req, &user_id, req.body.auth.clone()).await?;
    services.users.deactivate(&user_id, req.body.erase)?;
    tracing::info!("deactivated {user_id}");
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

async fn registration_token_validity(
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    let registration = &req.services.config.registration;
    if !registration.enabled {
        return Err(registration_disabled());
    }
    rate_limit_checks(&req)?;
    let token = &req.body.token;
    let valid = registration.token.as_deref().is_some_and(|t| t == token)
        || req.services.users.registration_tokens.is_valid(token)?;
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

/// Hearth binds no email addresses or phone numbers to accounts (yet), so
/// the list is always empty; the endpoints that would add one are not built.
async fn third_party_ids(_: Ruma<get_3pids::v3::Request>) -> Result<get_3pids::v3::Response> {
    Ok(get_3pids::v3::Response::new(Vec::new()))
}
