//! The one adapter between axum and ruma: routes each ruma endpoint at all
//! its paths, reads the body within the size limit, authenticates the
//! access token as the endpoint's metadata demands, parses the typed
//! request, and serialises the typed response.

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::{FromRequest, RawPathParams, Request},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::BytesMut;
use http::{Method, StatusCode, header};
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponseExt,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
            NoAuthentication, extract_bearer_or_query_token,
        },
        error::{DeserializationError, ErrorKind, FromHttpRequestError},
        federation::authentication::ServerSignatures,
        path_builder::PathBuilder,
    },
};

use crate::{Error, Result, services::Services};

/// Whether an endpoint needs an access token, or another server's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRequirement {
    None,
    Optional,
    Required,
    /// An X-Matrix signature (federation).
    Server,
}

/// Maps ruma's authentication schemes to what Hearth checks.
pub trait AuthRequirement {
    const TOKEN: TokenRequirement;
}

impl AuthRequirement for NoAuthentication {
    const TOKEN: TokenRequirement = TokenRequirement::None;
}
impl AuthRequirement for NoAccessToken {
    const TOKEN: TokenRequirement = TokenRequirement::None;
}
impl AuthRequirement for AccessToken {
    const TOKEN: TokenRequirement = TokenRequirement::Required;
}
impl AuthRequirement for AccessTokenOptional {
    const TOKEN: TokenRequirement = TokenRequirement::Optional;
}
// Hearth has no application services yet: an appservice token is a user token.
impl AuthRequirement for AppserviceToken {
    const TOKEN: TokenRequirement = TokenRequirement::Required;
}
impl AuthRequirement for AppserviceTokenOptional {
    const TOKEN: TokenRequirement = TokenRequirement::None;
}
impl AuthRequirement for ServerSignatures {
    const TOKEN: TokenRequirement = TokenRequirement::Server;
}

/// A parsed, authenticated request for endpoint `T`.
pub struct Ruma<T> {
    pub body: T,
    pub services: Arc<Services>,
    /// The authenticated user, when a valid access token came with the request.
    pub sender_user: Option<OwnedUserId>,
    pub sender_device: Option<OwnedDeviceId>,
    /// The authenticated user is a guest (see [`GuestPolicy`]).
    pub sender_is_guest: bool,
    /// The server whose X-Matrix signature came with a federation request.
    pub origin: Option<ruma::OwnedServerName>,
    pub client_ip: std::net::IpAddr,
    /// The request's method and path, for binding UIA sessions to operations.
    pub method: http::Method,
    pub path: String,
    /// The body as it came, for the fields ruma's types drop (a join's own
    /// content keys).
    pub raw_body: bytes::Bytes,
}

impl<T> Ruma<T> {
    /// The authenticated user of an endpoint that requires a token.
    pub fn user(&self) -> &OwnedUserId {
        self.sender_user.as_ref().expect("endpoint requires authentication")
    }

    /// The origin of a federation request.
    pub fn origin(&self) -> &ruma::ServerName {
        self.origin.as_deref().expect("federation endpoint requires a signature")
    }

    pub fn device(&self) -> &OwnedDeviceId {
        self.sender_device.as_ref().expect("endpoint requires authentication")
    }

    pub fn operation(&self) -> crate::users::uiaa::Operation {
        crate::users::uiaa::Operation { method: self.method.clone(), path: self.path.clone() }
    }
}

impl<T: Endpoint> FromRequest<Arc<Services>> for Ruma<T> {
    type Rejection = Error;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let client_ip = super::client_ip(&parts);
        let path_args: Vec<String> = {
            use axum::extract::FromRequestParts;
            let params = RawPathParams::from_request_parts(&mut parts, &())
                .await
                .map_err(|_| Error::invalid_param("Invalid path parameters"))?;
            params.iter().map(|(_, v)| v.to_owned()).collect()
        };

        // Authenticate first, as Synapse does: a bad token is a 401 whatever the body.
        let requirement = <T::Authentication as AuthRequirement>::TOKEN;
        let (sender_user, sender_device, sender_is_guest) =
            match authenticate(&mut parts, services, requirement, client_ip)? {
                Some(Authenticated { user, device, guest }) => (Some(user), Some(device), guest),
                None => (None, None, false),
            };
        if sender_is_guest && requirement == TokenRequirement::Required {
            let policy = parts.extensions.get::<GuestPolicy>();
            if !policy.is_some_and(|policy| (policy.0)(std::any::TypeId::of::<T>())) {
                return Err(Error::guest_forbidden());
            }
        }

        let limit = services.config.limits.max_request_size;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(Error::too_large());
        }
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| Error::too_large())?;
        super::check_utf8(&bytes)?;
        let origin = match requirement {
            TokenRequirement::Server => {
                Some(crate::servers::auth::verify_request(&services.servers, &parts, &bytes).await?)
            }
            _ => None,
        };

        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        let mut args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // Routes registered by `ruma_state_key` leave out an empty state key.
        while args.len() < T::PATH_BUILDER._path_parameters().len() {
            args.push("");
        }
        // Clients send no body at all where every field is optional (nio's
        // join, for one): read it as `{}`, as Synapse does; where `{}` is not
        // enough, the missing body is still "not JSON".
        let empty_json = bytes.is_empty() && matches!(parts.method, Method::POST | Method::PUT);
        let legacy_auth = legacy_password_auth(&bytes);
        let body = match (&legacy_auth, empty_json) {
            (Some(rewritten), _) => &rewritten[..],
            (None, true) => &b"{}"[..],
            (None, false) => &bytes[..],
        };
        // Some of ruma's deserialisers index maps and panic on a missing
        // key (`/login` with no `type`): that is bad JSON, not a crash.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            T::try_from_http_request(http::Request::from_parts(parts, body), &args)
        }))
        .map_err(|_| match empty_json {
            true => Error::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, "Content not JSON"),
            false => Error::bad_json("Malformed request body"),
        })?;
        let body = parsed.map_err(|e| {
            if empty_json {
                Error::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, "Content not JSON")
            } else {
                request_error(e)
            }
        })?;
        Ok(Self {
            body,
            services: services.clone(),
            sender_user,
            sender_device,
            sender_is_guest,
            origin,
            client_ip,
            method,
            path,
            raw_body: bytes,
        })
    }
}

/// Which endpoints guests may call: given an endpoint's request type, whether
/// a guest's token is accepted there. A router installs it as an extension
/// on its routes; where none is installed, guests may call only the
/// endpoints whose token is optional.
#[derive(Clone, Copy)]
pub struct GuestPolicy(pub fn(std::any::TypeId) -> bool);

/// Who an access token belongs to.
struct Authenticated {
    user: OwnedUserId,
    device: OwnedDeviceId,
    guest: bool,
}

/// The user and device of the request's access token, as `requirement`
/// demands: 401 for a missing required token or an unknown one.
fn authenticate(
    parts: &mut http::request::Parts,
    services: &Services,
    requirement: TokenRequirement,
    client_ip: std::net::IpAddr,
) -> Result<Option<Authenticated>> {
    if matches!(requirement, TokenRequirement::None | TokenRequirement::Server) {
        return Ok(None);
    }
    // ruma reads the token from a request: lend it the headers and URI.
    let mut request = http::Request::new(());
    std::mem::swap(request.headers_mut(), &mut parts.headers);
    std::mem::swap(request.uri_mut(), &mut parts.uri);
    let token = extract_bearer_or_query_token(&request);
    std::mem::swap(request.headers_mut(), &mut parts.headers);
    std::mem::swap(request.uri_mut(), &mut parts.uri);
    let token = token.map_err(|_| {
        Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Invalid access token header")
    })?;
    match token {
        None if requirement == TokenRequirement::Required => {
            Err(Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token"))
        }
        None => Ok(None),
        Some(token) => {
            let record = services.users.find_token(&token)?.ok_or_else(Error::unknown_token)?;
            if services.users.is_locked(&record.user_id) {
                return Err(Error::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorKind::UserLocked,
                    "User account has been locked",
                ));
            }
            // Visible ASCII (`to_str`), so cutting at any byte is safe.
            let user_agent = parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|agent| agent.to_str().ok())
                .map(|agent| &agent[..agent.len().min(512)]);
            services.users.touch_device(&record.user_id, &record.device_id, client_ip, user_agent)?;
            let guest = services.users.is_guest(&record.user_id)?;
            Ok(Some(Authenticated { user: record.user_id, device: record.device_id, guest }))
        }
    }
}

/// The authenticated user and device of a handler that is not a ruma
/// endpoint (paths ruma cannot describe); guests are refused.
pub struct Authed {
    pub user: OwnedUserId,
    pub device: OwnedDeviceId,
}

impl axum::extract::FromRequestParts<Arc<Services>> for Authed {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, services: &Arc<Services>) -> Result<Self> {
        let client_ip = super::client_ip(parts);
        let Authenticated { user, device, guest } =
            authenticate(parts, services, TokenRequirement::Required, client_ip)?
                .expect("a required token is there or refused");
        if guest {
            return Err(Error::guest_forbidden());
        }
        Ok(Self { user, device })
    }
}

/// The authenticated user of a handler that is not a ruma endpoint,
/// guests included (downloads, as in Synapse).
pub struct Viewer {
    pub user: OwnedUserId,
}

impl axum::extract::FromRequestParts<Arc<Services>> for Viewer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut http::request::Parts, services: &Arc<Services>) -> Result<Self> {
        let client_ip = super::client_ip(parts);
        let Authenticated { user, .. } =
            authenticate(parts, services, TokenRequirement::Required, client_ip)?
                .expect("a required token is there or refused");
        Ok(Self { user })
    }
}

/// Maps ruma's parse failures to the spec's error codes.
fn request_error(e: FromHttpRequestError) -> Error {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => super::json_error(e),
        FromHttpRequestError::Deserialization(DeserializationError::Utf8(e)) => {
            Error::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, format!("Content not UTF-8: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            let message = e.to_string();
            if message.contains("missing field") {
                Error::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
            } else {
                Error::invalid_param(message)
            }
        }
        FromHttpRequestError::Deserialization(e) => Error::invalid_param(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED),
        _ => Error::bad_json(e.to_string()),
    }
}

/// A user-interactive auth password stage in the old form, `user` instead
/// of `identifier` (still sent by older clients and SyTest, and accepted by
/// Synapse), rewritten to the current one; `None` for any other body.
fn legacy_password_auth(bytes: &[u8]) -> Option<Vec<u8>> {
    let needle: &[u8] = b"\"auth\"";
    if !bytes.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let mut body: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let auth = body.get_mut("auth")?.as_object_mut()?;
    if auth.contains_key("identifier") || auth.get("type")? != "m.login.password" {
        return None;
    }
    let user = auth.remove("user")?;
    auth.insert("identifier".to_owned(), serde_json::json!({"type": "m.id.user", "user": user}));
    serde_json::to_vec(&body).ok()
}

/// A typed ruma response, serialised as the endpoint defines.
pub struct RumaResponse<R>(pub R);

impl<R: ruma::api::OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|b| axum::body::Body::from(b.freeze())),
            Err(e) => Error::internal(format!("cannot serialise response: {e}")).into_response(),
        }
    }
}

/// A typed ruma response whose JSON body is then brought into the shape
/// clients expect of Synapse: ruma leaves out empty lists and defaults that
/// many clients index without checking.
pub struct ShapedResponse<R>(pub R, pub fn(&mut serde_json::Value));

/// A typed ruma response as the JSON body it sends, and its status and headers.
pub fn response_json<R: ruma::api::OutgoingResponse>(
    response: R,
) -> Result<(http::response::Parts, serde_json::Value)> {
    let (parts, body) = response
        .try_into_http_response::<BytesMut>()
        .map_err(|e| Error::internal(format!("cannot serialise response: {e}")))?
        .into_parts();
    Ok((parts, serde_json::from_slice(&body).map_err(Error::internal)?))
}

impl<R: ruma::api::OutgoingResponse> IntoResponse for ShapedResponse<R> {
    fn into_response(self) -> Response {
        let shaped = || -> Result<Response> {
            let (parts, mut value) = response_json(self.0)?;
            (self.1)(&mut value);
            let body = serde_json::to_vec(&value).map_err(Error::internal)?;
            Ok(Response::from_parts(parts, axum::body::Body::from(body)))
        };
        shaped().unwrap_or_else(IntoResponse::into_response)
    }
}

/// Inserts `key: default` into `value` (an object) where it is missing.
pub fn ensure(value: &mut serde_json::Value, key: &str, default: impl FnOnce() -> serde_json::Value) {
    if let Some(object) = value.as_object_mut() {
        object.entry(key).or_insert_with(default);
    }
}

/// Inserts `key: {"events": []}`, or the missing `events` of an existing one.
pub fn ensure_events(value: &mut serde_json::Value, key: &str) {
    ensure(value, key, || serde_json::json!({}));
    ensure(&mut value[key], "events", || serde_json::json!([]));
}

/// A ruma endpoint Hearth can serve.
pub trait Endpoint:
    IncomingRequest<Authentication: AuthRequirement, OutgoingResponse: Send + 'static> + Send + 'static
{
}

impl<T> Endpoint for T where
    T: IncomingRequest<Authentication: AuthRequirement, OutgoingResponse: Send + 'static> + Send + 'static
{
}

/// An async handler of endpoint `T`.
pub trait Handler<T: Endpoint>: Fn(Ruma<T>) -> Self::Future + Clone + Send + Sync + 'static {
    type Future: Future<Output = Result<T::OutgoingResponse>> + Send + 'static;
}

impl<T: Endpoint, H, F> Handler<T> for H
where
    H: Fn(Ruma<T>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
{
    type Future = F;
}

/// Registers ruma endpoints on a router at every path their metadata lists.
pub trait RumaRouter {
    fn ruma<T: Endpoint>(self, handler: impl Handler<T>) -> Self;

    /// Like [`RumaRouter::ruma`], for the state endpoints whose paths end in
    /// `/{state_key}`: also at the path without it and with a bare trailing
    /// slash, which is how clients address the empty state key.
    fn ruma_state_key<T: Endpoint>(self, handler: impl Handler<T>) -> Self;

    /// Like [`RumaRouter::ruma`], with the response body passed through
    /// `shape` (see [`ShapedResponse`]).
    fn ruma_shaped<T: Endpoint>(self, handler: impl Handler<T>, shape: fn(&mut serde_json::Value)) -> Self;

    /// Like [`RumaRouter::ruma`], for a handler that may answer with a body
    /// the typed response cannot express (Synapse's `{}` for an unset field).
    fn ruma_untyped<T, H, F>(self, handler: H) -> Self
    where
        T: Endpoint,
        H: Fn(Ruma<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response>> + Send + 'static;
}

impl RumaRouter for Router<Arc<Services>> {
    fn ruma<T: Endpoint>(mut self, handler: impl Handler<T>) -> Self {
        for path in T::PATH_BUILDER.all_paths() {
            self = add_route(self, path, handler.clone());
        }
        self
    }

    fn ruma_state_key<T: Endpoint>(mut self, handler: impl Handler<T>) -> Self {
        for path in T::PATH_BUILDER.all_paths() {
            self = add_route(self, path, handler.clone());
            if let Some(base) = path.strip_suffix("/{state_key}") {
                self = add_route(self, base, handler.clone());
                self = add_route(self, &format!("{base}/"), handler.clone());
            }
        }
        self
    }

    fn ruma_shaped<T: Endpoint>(
        mut self,
        handler: impl Handler<T>,
        shape: fn(&mut serde_json::Value),
    ) -> Self {
        let filter = MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
        for path in T::PATH_BUILDER.all_paths() {
            let handler = handler.clone();
            self = self.route(
                path,
                on(filter, move |req: Ruma<T>| async move {
                    handler(req).await.map(|response| ShapedResponse(response, shape))
                }),
            );
        }
        self
    }

    fn ruma_untyped<T, H, F>(mut self, handler: H) -> Self
    where
        T: Endpoint,
        H: Fn(Ruma<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<Response>> + Send + 'static,
    {
        let filter = MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
        for path in T::PATH_BUILDER.all_paths() {
            let handler = handler.clone();
            self = self.route(path, on(filter, move |req: Ruma<T>| handler(req)));
        }
        self
    }
}

fn add_route<T: Endpoint>(
    router: Router<Arc<Services>>,
    path: &str,
    handler: impl Handler<T>,
) -> Router<Arc<Services>> {
    let filter = MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
    router.route(path, on(filter, move |req: Ruma<T>| async move { handler(req).await.map(RumaResponse) }))
}

/// An answer whose JSON body the handler built: for the endpoints declared
/// beside their handlers (ruma lacks them, or their answers are free-form).
mod json_body {
    use ruma::api::response;
    use serde_json::value::RawValue;

    #[response]
    pub struct Response {
        #[ruma_api(body)]
        pub body: Box<RawValue>,
    }
}

pub use json_body::Response as JsonResponse;

/// `body` as a [`JsonResponse`].
pub fn json_reply(body: &serde_json::Value) -> Result<JsonResponse> {
    Ok(JsonResponse { body: serde_json::value::to_raw_value(body).map_err(Error::internal)? })
}
