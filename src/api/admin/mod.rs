//! Admin endpoints: Synapse's admin API (`/_synapse/admin/*`, the contract
//! its tools speak: same paths, fields, paging and errors) and Hearth's own
//! (`/_hearth/admin/*`). Server admins only, unless an endpoint says so.

mod media;
mod notices;
mod overview;
mod register;
mod reports;
mod room_events;
mod rooms;
mod search;
mod tokens;
mod users;

use std::sync::Arc;

use axum::{Router, extract::FromRequestParts};
use http::StatusCode;
use ruma::{OwnedDeviceId, OwnedUserId};
use serde_json::{Map, Value};

pub use super::body::{Body, OptionalBody, string_field};
use crate::{Error, Result, api::ruma::Authed, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = search::routes(media::routes(rooms::routes(register::routes(router))));
    let router = notices::routes(tokens::routes(reports::routes(users::routes(router))));
    overview::routes(room_events::routes(router))
}

/// Refuses (403) whoever is not a server admin.
fn require_admin(services: &Services, user: &ruma::UserId) -> Result<()> {
    match services.users.is_admin(user)? {
        true => Ok(()),
        false => Err(Error::forbidden("You are not a server admin")),
    }
}

/// A request from a server admin: 401 without a valid token, 403 for
/// anyone else (checked before anything about the request, as Synapse).
pub struct Admin {
    pub user: OwnedUserId,
    pub device: OwnedDeviceId,
}

impl FromRequestParts<Arc<Services>> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, services: &Arc<Services>) -> Result<Self> {
        let Authed { user, device } = Authed::from_request_parts(parts, services).await?;
        require_admin(services, &user)?;
        Ok(Self { user, device })
    }
}

/// 400 `M_UNKNOWN`, Synapse's plain error.
fn bad_request(message: impl Into<String>) -> Error {
    Error::custom(StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
}

fn missing_param(message: impl Into<String>) -> Error {
    Error::custom(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
}

/// The query string, read with Synapse's rules and errors: unknown
/// parameters are ignored.
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Self(url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()))
    }
}

impl Params {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// A non-negative integer.
    pub fn int(&self, name: &str) -> Result<Option<u64>> {
        let Some(value) = self.str(name) else { return Ok(None) };
        match value.parse::<i64>() {
            Ok(n) if n < 0 => {
                Err(Error::invalid_param(format!("Query parameter {name} must be a positive integer.")))
            }
            Ok(n) => Ok(Some(n as u64)),
            Err(_) => Err(Error::invalid_param(format!("Query parameter {name} must be an integer"))),
        }
    }

    pub fn int_or(&self, name: &str, default: u64) -> Result<u64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn required_int(&self, name: &str) -> Result<u64> {
        self.int(name)?
            .ok_or_else(|| missing_param(format!("Missing required integer query parameter {name}")))
    }

    /// `true` or `false`, exactly.
    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        match self.str(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(Error::invalid_param(format!(
                "Boolean query parameter '{name}' must be one of ['true', 'false']"
            ))),
        }
    }

    /// One of `allowed`, or `default` when absent.
    pub fn choice<'a>(&'a self, name: &str, allowed: &[&str], default: &'a str) -> Result<&'a str> {
        match self.str(name) {
            None => Ok(default),
            Some(value) if allowed.contains(&value) => Ok(value),
            Some(_) => {
                Err(Error::invalid_param(format!("Query parameter '{name}' must be one of {allowed:?}")))
            }
        }
    }

    /// `dir`: whether it is `b` (backwards), `default` when absent.
    pub fn backwards(&self, default: &str) -> Result<bool> {
        Ok(self.choice("dir", &["b", "f"], default)? == "b")
    }

    /// `from` and `limit` (default 100) of an offset-paged list.
    pub fn page(&self) -> Result<(usize, usize)> {
        Ok((self.int_or("from", 0)? as usize, self.int_or("limit", 100)? as usize))
    }
}

/// One page of `items` from `from`, and the `next_token` Synapse gives
/// (present while more follow).
pub fn paged<T>(items: Vec<T>, from: usize, limit: usize) -> (Vec<T>, Option<usize>) {
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(from).take(limit).collect();
    let next = (from.saturating_add(limit) < total).then(|| from + page.len());
    (page, next)
}

/// Reading fields of a body with Synapse's checks.
pub trait Fields {
    fn object(&self) -> &Map<String, Value>;

    /// A boolean field; `error` when it is there and not one.
    fn bool_field(&self, name: &str, error: impl FnOnce() -> Error) -> Result<Option<bool>> {
        match self.object().get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(error()),
        }
    }

    /// A field that must be there.
    fn required(&self, name: &str) -> Result<&Value> {
        self.object().get(name).ok_or_else(|| missing_param(format!("Missing params: ['{name}']")))
    }
}

impl Fields for Map<String, Value> {
    fn object(&self) -> &Map<String, Value> {
        self
    }
}

/// A user ID from a path or body, with Synapse's errors.
fn user_id(raw: &str) -> Result<OwnedUserId> {
    if !raw.starts_with('@') {
        return Err(Error::invalid_param("Expected UserID string to start with '@'"));
    }
    OwnedUserId::try_from(raw)
        .map_err(|_| Error::invalid_param("Expected UserID of the form '@localname:domain'"))
}

/// A user of this server (else 400 `M_UNKNOWN` with `remote`, Synapse's
/// message of the endpoint).
fn local_user_id(services: &Services, raw: &str, remote: &str) -> Result<OwnedUserId> {
    let user = user_id(raw)?;
    match services.users.is_local(&user) {
        true => Ok(user),
        false => Err(bad_request(remote)),
    }
}

/// A local user who exists (404 `not_found` otherwise).
fn existing_user(services: &Services, raw: &str, remote: &str, not_found: &str) -> Result<OwnedUserId> {
    let user = local_user_id(services, raw, remote)?;
    match services.users.exists(&user)? {
        true => Ok(user),
        false => Err(Error::not_found(not_found)),
    }
}
