//! Login and logout: `GET/POST /login`, `/logout`, `/logout/all`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::api::{
    client::{
        session::{
            get_login_types::{
                self,
                v3::{LoginType, PasswordLoginType},
            },
            login::{
                self,
                v3::{DiscoveryInfo, HomeserverInfo, LoginInfo},
            },
            logout, logout_all,
        },
        uiaa::UserIdentifier,
    },
    error::ErrorKind,
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(login_types).ruma(login).ruma(logout).ruma(logout_all)
}

async fn login_types(_: Ruma<get_login_types::v3::Request>) -> Result<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![LoginType::Password(PasswordLoginType::new())]))
}

fn invalid_login() -> Error {
    Error::forbidden("Invalid username or password")
}

async fn login(req: Ruma<login::v3::Request>) -> Result<login::v3::Response> {
    let services = req.services.clone();
    services.limiters.login.check(&req.client_ip.to_string()).map_err(Error::limit_exceeded)?;

    let LoginInfo::Password(info) = &req.body.login_info else {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unknown login type"));
    };
    #[allow(deprecated)]
    let name = match (&info.identifier, &info.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => return Err(invalid_login()),
        (None, None) => return Err(Error::bad_json("Missing identifier")),
    };
    let user_id = services.users.resolve_login_name(&name).ok_or_else(invalid_login)?;

    let failures = &services.limiters.login_failures;
    failures.peek(user_id.as_str()).map_err(Error::limit_exceeded)?;
    let password = info.password.clone();
    let checked = {
        let (services, user_id) = (services.clone(), user_id.clone());
        let gate = services.clone();
        gate.users.password_work(move || services.users.check_password(&user_id, &password)).await??
    };
    if !checked {
        if services.users.get(&user_id)?.is_some_and(|u| u.deactivated) {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        failures.check(user_id.as_str()).map_err(Error::limit_exceeded)?;
        return Err(invalid_login());
    }
    if services.users.is_locked(&user_id) {
        return Err(Error::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UserLocked,
            "User account has been locked",
        ));
    }

    let (device_id, token) = services.users.login_device(
        &user_id,
        req.body.device_id.clone(),
        req.body.initial_device_display_name.clone(),
        Some(req.client_ip),
    )?;
    tracing::info!("{user_id} logged in on device {device_id}");
    let mut response = login::v3::Response::new(user_id, token, device_id);
    #[allow(deprecated)]
    {
        response.home_server = Some(services.config.server_name.clone());
    }
    response.well_known =
        services.config.well_known.client.clone().map(|url| DiscoveryInfo::new(HomeserverInfo::new(url)));
    Ok(response)
}

async fn logout(req: Ruma<logout::v3::Request>) -> Result<logout::v3::Response> {
    req.services.users.logout(req.user(), req.device())?;
    Ok(logout::v3::Response::new())
}

async fn logout_all(req: Ruma<logout_all::v3::Request>) -> Result<logout_all::v3::Response> {
    req.services.users.remove_all_devices(req.user(), None)?;
    Ok(logout_all::v3::Response::new())
}
