//! HTTPS to other homeservers: discovery, the address blacklist, extra CA
//! certificates, bounded answers, and X-Matrix signatures on every request.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponseExt, OutgoingRequest, OutgoingRequestExt, auth_scheme::AuthScheme,
        federation::authentication::XMatrixSigningInput, path_builder::SinglePath,
    },
};

use super::discovery::{Destination, Discovery};
use crate::{Error, Result, config, keys::ServerKeys};

/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an ordinary request (Synapse's default).
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read for an ordinary request.
pub const MAX_RESPONSE: usize = 20 * 1024 * 1024;

/// Why a request to another server got no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// The configuration forbids talking to it.
    Denied,
    /// No address, no connection, a timeout, a TLS failure.
    Unreachable(String),
    /// It answered with an error.
    Remote { status: u16, body: Bytes },
    /// The request could not be made, or the answer was too large.
    BadResponse(String),
    /// It answered 2xx with a body that is not the expected answer.
    Unreadable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Denied => write!(f, "federation with this server is not allowed"),
            Failure::Unreachable(why) => write!(f, "unreachable: {why}"),
            Failure::Remote { status, body } => {
                write!(f, "HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]))
            }
            Failure::BadResponse(why) | Failure::Unreadable(why) => write!(f, "bad response: {why}"),
        }
    }
}

impl Failure {
    /// Whether the other server does not serve the endpoint asked (Synapse's
    /// test before falling back to an older version of it): 404 or 405
    /// without a Matrix error or with `M_UNRECOGNIZED`, or 400 with it.
    pub fn is_unknown_endpoint(&self) -> bool {
        let Failure::Remote { status, body } = self else { return false };
        let errcode = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["errcode"].as_str().map(str::to_owned));
        let unrecognized = errcode.as_deref() == Some("M_UNRECOGNIZED");
        match status {
            404 | 405 => errcode.is_none() || unrecognized,
            400 => unrecognized,
            _ => false,
        }
    }

    /// The error a client sees when its request needed another server.
    pub fn to_client_error(&self, server: &ServerName) -> Error {
        match self {
            Failure::Denied => Error::forbidden(format!("Federation with {server} is not allowed")),
            Failure::Remote { status, body } => {
                // Pass the other server's Matrix error on, as Synapse does.
                // (The whole body: some codes carry fields, such as
                // M_INCOMPATIBLE_ROOM_VERSION's room_version.)
                let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
                let kind = parsed
                    .as_ref()
                    .and_then(|v| serde_json::from_value::<ruma::api::error::ErrorKind>(v.clone()).ok())
                    .unwrap_or(ruma::api::error::ErrorKind::Unknown);
                let message = parsed.as_ref().and_then(|v| v["error"].as_str()).unwrap_or("Remote error");
                let status = http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::BAD_GATEWAY);
                Error::new(status, kind, message)
            }
            Failure::Unreachable(why) | Failure::BadResponse(why) | Failure::Unreadable(why) => Error::new(
                http::StatusCode::BAD_GATEWAY,
                ruma::api::error::ErrorKind::Unknown,
                format!("Failed to talk to {server}: {why}"),
            ),
        }
    }
}

/// Host name → addresses discovery chose for it, consulted by the resolver.
type Pins = Arc<Mutex<HashMap<String, Vec<IpAddr>>>>;

pub struct Client {
    /// For federation requests: no redirects.
    api: reqwest::Client,
    /// For well-known documents: redirects followed.
    well_known: reqwest::Client,
    discovery: Discovery,
    pins: Pins,
    blacklist: Arc<Vec<IpNet>>,
    server_name: OwnedServerName,
    signing: Arc<ServerKeys>,
    config: config::Federation,
}

impl Client {
    pub fn new(
        server_name: OwnedServerName,
        config: &config::Federation,
        signing: Arc<ServerKeys>,
    ) -> Result<Self> {
        let discovery = Discovery::new(config.resolve_overrides.clone());
        let pins: Pins = Arc::default();
        let blacklist = Arc::new(config.ip_range_blacklist.clone());
        let certs = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| Error::internal(format!("federation.ca_file {}: {e}", path.display())))?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| Error::internal(format!("federation.ca_file {}: {e}", path.display())))?
            }
            None => Vec::new(),
        };
        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(redirects)
                .dns_resolver(Arc::new(PinnedResolver { pins: pins.clone(), blacklist: blacklist.clone() }))
                .tls_certs_merge(certs.clone())
                .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Error::internal(format!("federation HTTP client: {e}")))
        };
        Ok(Self {
            api: build(reqwest::redirect::Policy::none())?,
            well_known: build(reqwest::redirect::Policy::limited(5))?,
            discovery,
            pins,
            blacklist,
            server_name,
            signing,
            config: config.clone(),
        })
    }

    /// Sends `request` to `destination`, signed, and parses the answer.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse, Failure>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: for<'a> AuthScheme<Input<'a> = XMatrixSigningInput<'a>>,
    {
        self.send_with(destination, request, TIMEOUT, MAX_RESPONSE).await
    }

    /// [`Client::send`] with its own time and size limits (joins of big rooms).
    pub async fn send_with<R>(
        &self,
        destination: &ServerName,
        request: R,
        timeout: Duration,
        max_response: usize,
    ) -> Result<R::IncomingResponse, Failure>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: for<'a> AuthScheme<Input<'a> = XMatrixSigningInput<'a>>,
    {
        let target = self.destination(destination).await?;
        let input =
            XMatrixSigningInput::new(self.server_name.clone(), destination.to_owned(), &self.signing.keypair);
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url(), input, ())
            .map_err(|e| Failure::BadResponse(format!("cannot build the request: {e}")))?;
        self.exchange::<R>(&target, http_request, timeout, max_response).await
    }

    /// Sends an unsigned request (the key endpoints) to `destination`.
    pub async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, Failure>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: for<'a> AuthScheme<Input<'a> = ()>,
    {
        let target = self.destination(destination).await?;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url(), (), ())
            .map_err(|e| Failure::BadResponse(format!("cannot build the request: {e}")))?;
        self.exchange::<R>(&target, http_request, TIMEOUT, MAX_RESPONSE).await
    }

    /// An unsigned `GET` of a URL another server gave (the `Location` of
    /// its media answer, a CDN's say), read as a stream: http or https,
    /// never to a blacklisted address (written in the URL or resolved), no
    /// redirects; a non-2xx answer is a [`Failure`].
    pub async fn get_url_streamed(
        &self,
        url: &url::Url,
        timeout: Duration,
    ) -> Result<reqwest::Response, Failure> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::BadResponse(format!("{url} is not an http(s) URL")));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| blacklisted(&self.blacklist, *ip)) {
            return Err(Failure::Unreachable(format!("{ip} is a blacklisted address")));
        }
        let response = self
            .api
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Failure::Unreachable(crate::util::error_chain(&e)))?;
        match response.status() {
            status if status.is_success() => Ok(response),
            status => Err(Failure::Remote { status: status.as_u16(), body: Vec::new().into() }),
        }
    }

    /// A signed `GET` of `path_and_query` on `destination` whose answer is
    /// read as a stream (media files): a non-2xx answer is a [`Failure`].
    pub async fn get_streamed(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, Failure> {
        use ruma::api::federation::authentication::XMatrix;
        let target = self.destination(destination).await?;
        let uri = format!("{}{path_and_query}", target.base_url());
        let unsigned = http::Request::get(&uri)
            .body(Vec::<u8>::new())
            .map_err(|e| Failure::BadResponse(format!("cannot build the request: {e}")))?;
        let input =
            XMatrixSigningInput::new(self.server_name.clone(), destination.to_owned(), &self.signing.keypair);
        let signature = XMatrix::sign_http_request(&unsigned, input)
            .map_err(|e| Failure::BadResponse(format!("cannot sign the request: {e}")))?;
        let response = self
            .api
            .get(uri)
            .header(http::header::AUTHORIZATION, signature.to_string())
            .header(http::header::HOST, &target.host_header)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Failure::Unreachable(crate::util::error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| Failure::Unreachable(crate::util::error_chain(&e)))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_RESPONSE {
                break;
            }
        }
        Err(Failure::Remote { status: status.as_u16(), body: bytes.into() })
    }

    async fn destination(&self, server: &ServerName) -> Result<Destination, Failure> {
        if !self.config.allows(server) || server == self.server_name {
            return Err(Failure::Denied);
        }
        let target = self.discovery.resolve(server, &self.well_known).await.map_err(Failure::Unreachable)?;
        if !target.addrs.is_empty() {
            if let Some(bad) = target.addrs.iter().find(|ip| blacklisted(&self.blacklist, **ip)) {
                return Err(Failure::Unreachable(format!(
                    "{server} resolves to {bad}, a blacklisted address"
                )));
            }
            if target.host.parse::<IpAddr>().is_err() {
                self.pins.lock().expect("pins").insert(target.host.clone(), target.addrs.clone());
            }
        }
        Ok(target)
    }

    async fn exchange<R: OutgoingRequest>(
        &self,
        target: &Destination,
        request: http::Request<Vec<u8>>,
        timeout: Duration,
        max_response: usize,
    ) -> Result<R::IncomingResponse, Failure> {
        let (parts, body) = request.into_parts();
        let mut builder = self
            .api
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .header(http::header::HOST, &target.host_header)
            .timeout(timeout);
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let mut response =
            builder.send().await.map_err(|e| Failure::Unreachable(crate::util::error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| Failure::Unreachable(crate::util::error_chain(&e)))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > max_response {
                return Err(Failure::BadResponse(format!("the answer is larger than {max_response} bytes")));
            }
        }
        if !status.is_success() {
            return Err(Failure::Remote { status: status.as_u16(), body: bytes.into() });
        }
        let mut http_response = http::Response::new(&bytes[..]);
        *http_response.status_mut() = status;
        *http_response.headers_mut() = headers;
        R::IncomingResponse::try_from_http_response(http_response)
            .map_err(|e| Failure::Unreadable(e.to_string()))
    }
}

fn blacklisted(blacklist: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    blacklist.iter().any(|net| net.contains(&ip))
}

/// Resolves names to the addresses discovery pinned for them, else by DNS;
/// never to a blacklisted address.
struct PinnedResolver {
    pins: Pins,
    blacklist: Arc<Vec<IpNet>>,
}

impl Resolve for PinnedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let pinned = self.pins.lock().expect("pins").get(&host).cloned();
        let blacklist = self.blacklist.clone();
        Box::pin(async move {
            let found: Vec<IpAddr> = match pinned {
                Some(addrs) => addrs,
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect(),
            };
            let allowed: Vec<SocketAddr> = found
                .iter()
                .filter(|ip| !blacklisted(&blacklist, **ip))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} has no address outside federation.ip_range_blacklist").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Failure, blacklisted};

    #[test]
    fn another_servers_error_reaches_the_client_with_its_fields() {
        let body =
            br#"{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "y u no upgrade", "room_version": "x"}"#;
        let failure = Failure::Remote { status: 400, body: bytes::Bytes::from_static(body) };
        let error = failure.to_client_error(ruma::server_name!("other.test"));
        let crate::Error::Matrix { status, kind, message } = error else { panic!("{error:?}") };
        assert_eq!(status, 400);
        assert_eq!(message, "y u no upgrade");
        assert!(
            matches!(&kind, ruma::api::error::ErrorKind::IncompatibleRoomVersion(data) if data.room_version.as_str() == "x"),
            "{kind:?}"
        );
    }

    #[test]
    fn an_unknown_endpoint_is_told_from_an_error() {
        let answer =
            |status, body: &'static [u8]| Failure::Remote { status, body: bytes::Bytes::from_static(body) };
        assert!(answer(404, b"").is_unknown_endpoint());
        assert!(answer(405, b"").is_unknown_endpoint());
        assert!(answer(404, br#"{"errcode": "M_UNRECOGNIZED"}"#).is_unknown_endpoint());
        assert!(answer(400, br#"{"errcode": "M_UNRECOGNIZED"}"#).is_unknown_endpoint());
        // A served endpoint's own errors are not a reason to fall back.
        assert!(!answer(404, br#"{"errcode": "M_NOT_FOUND"}"#).is_unknown_endpoint());
        assert!(!answer(403, br#"{"errcode": "M_FORBIDDEN"}"#).is_unknown_endpoint());
        assert!(!answer(400, br#"{"errcode": "M_BAD_JSON"}"#).is_unknown_endpoint());
        assert!(!Failure::Unreachable("down".into()).is_unknown_endpoint());
    }

    #[test]
    fn blacklist_covers_mapped_addresses() {
        let list = vec!["127.0.0.0/8".parse().unwrap(), "fc00::/7".parse().unwrap()];
        assert!(blacklisted(&list, "127.0.0.1".parse().unwrap()));
        assert!(blacklisted(&list, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(blacklisted(&list, "fd00::1".parse().unwrap()));
        assert!(!blacklisted(&list, "1.1.1.1".parse().unwrap()));
    }
}
