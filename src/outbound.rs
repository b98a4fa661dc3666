//! The HTTP client for requests to other services than homeservers (push
//! gateways, identity servers): bounded in time, no redirects, extra CA certificates from the
//! configuration, and, unless allowed, no connections to the server's own
//! networks (the URLs come from clients).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

use crate::{Error, Result, config};

/// Longest wait for any one request.
const TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Outbound {
    client: reqwest::Client,
    allow_private: bool,
}

/// Why a request got no answer to read.
#[derive(Debug)]
pub enum Failure {
    /// The address may not be used (a private one, or no address at all).
    Refused(String),
    /// No connection, a timeout, or an answer that is not JSON.
    Transport(String),
    /// An answer with a status other than 2xx.
    Status(u16),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(why) => write!(f, "refused: {why}"),
            Failure::Transport(why) => write!(f, "{why}"),
            Failure::Status(status) => write!(f, "HTTP status {status}"),
        }
    }
}

impl Outbound {
    pub fn new(config: &config::Outbound) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // A connection per request: these services are called now and
            // then, and some HTTP servers (SyTest's) mishandle a reused one.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.extra_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::internal(format!("outbound.extra_ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::internal(format!("outbound.extra_ca_file {}: {e}", path.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        if !config.allow_private_addresses {
            builder = builder.dns_resolver(PublicOnly);
        }
        if config.danger_accept_invalid_certs {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| Error::internal(format!("outbound HTTP client: {e}")))?;
        Ok(Self { client, allow_private: config.allow_private_addresses })
    }

    /// POSTs JSON and reads a JSON answer.
    pub async fn post_json(&self, url: &url::Url, body: &Value) -> Result<Value, Failure> {
        self.request(reqwest::Method::POST, url, None, Some(body)).await
    }

    /// A request (JSON body, bearer token, each when given) and its JSON answer.
    pub async fn request(
        &self,
        method: reqwest::Method,
        url: &url::Url,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        // The resolver sees names only: an address in the URL is checked here.
        if !self.allow_private
            && let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host()
            && let Some(ip) = url.host_str().and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            && !is_public(ip)
        {
            return Err(Failure::Refused(format!("{ip} is not a public address")));
        }
        let mut request = self.client.request(method, url.clone());
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Failure::Transport(crate::util::error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::Status(status.as_u16()));
        }
        response.json().await.map_err(|e| Failure::Transport(crate::util::error_chain(&e)))
    }
}

/// Whether an address is on the public internet (not loopback, private,
/// shared, link-local, unique-local, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// DNS resolution that keeps public addresses only.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if found.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Failure, Outbound, is_public};
    use crate::config;

    /// By default nothing on the server's own networks is reached, by
    /// address or by name; allowed, the request goes out.
    #[tokio::test]
    async fn private_destinations_need_permission() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let strict = Outbound::new(&config::Outbound {
            allow_private_addresses: false,
            extra_ca_file: None,
            danger_accept_invalid_certs: false,
        })
        .unwrap();
        for host in ["127.0.0.1", "localhost", "[::1]"] {
            let url = url::Url::parse(&format!("http://{host}:{port}/x")).unwrap();
            let result = strict.post_json(&url, &serde_json::json!({})).await;
            let refused = match &result {
                Err(Failure::Refused(_)) => host != "localhost",
                // A name: the resolver finds no address it may use.
                Err(Failure::Transport(why)) => host == "localhost" && why.contains("no public address"),
                _ => false,
            };
            assert!(refused, "{host}: {result:?}");
        }
        let open = Outbound::new(&config::Outbound {
            allow_private_addresses: true,
            extra_ca_file: None,
            danger_accept_invalid_certs: false,
        })
        .unwrap();
        drop(listener);
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        // Allowed: it connects (and finds nothing listening any more).
        assert!(matches!(open.post_json(&url, &serde_json::json!({})).await, Err(Failure::Transport(_))));
    }

    #[test]
    fn private_networks_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2001:4860:4860::8888"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
