//! The HTTP client that fetches pages and images for previews, safe
//! against server-side request forgery: no address in
//! `url_preview.ip_range_blacklist` (unless whitelisted) is ever
//! connected to. A host name is refused when any address it resolves to
//! is blocked (checked by the resolver, on the addresses connected to,
//! for every connection, redirects included); an address written in the
//! URL is checked before the request and on every redirect. IPv4 ranges
//! also cover their IPv4-mapped, IPv4-compatible and 6to4 IPv6 forms.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::StatusCode;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{
    Error, Result,
    config::{Outbound, UrlPreviewConfig},
};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// For the answer's headers, then for its body (Synapse's).
const HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which addresses may be connected to.
struct Rules {
    blacklist: Vec<IpNet>,
    whitelist: Vec<IpNet>,
    overrides: BTreeMap<String, IpAddr>,
}

impl Rules {
    /// Blocked: unspecified, or in the blacklist and not the whitelist
    /// (each in any of its forms).
    fn blocked(&self, ip: IpAddr) -> bool {
        ip.is_unspecified() || (within(&self.blacklist, ip) && !within(&self.whitelist, ip))
    }
}

/// Whether `ip`, or the IPv4 address an IPv6 one carries (mapped,
/// compatible or 6to4), is in one of `nets`.
fn within(nets: &[IpNet], ip: IpAddr) -> bool {
    let carried = match ip {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                Some(v4)
            } else if s[..6].iter().all(|x| *x == 0) {
                Some(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32))
            } else if s[0] == 0x2002 {
                Some(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32))
            } else {
                None
            }
        }
    };
    nets.iter().any(|net| net.contains(&ip) || carried.is_some_and(|v4| net.contains(&IpAddr::V4(v4))))
}

/// A name refused by the resolver (an address of it is blocked, or it has
/// none).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NameRefused(String);

/// An address in a URL (a redirect's) that is blocked.
#[derive(Debug, thiserror::Error)]
#[error("{0} is blocked")]
struct AddressRefused(IpAddr);

/// Resolution that refuses a name any of whose addresses is blocked.
struct Screened(Arc<Rules>);

impl Resolve for Screened {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = match rules.overrides.get(&host) {
                Some(ip) => vec![SocketAddr::new(*ip, 0)],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            if found.is_empty() {
                return Err(Box::new(NameRefused(format!("{host} has no address"))) as _);
            }
            if let Some(blocked) = found.iter().find(|a| rules.blocked(a.ip())) {
                return Err(Box::new(NameRefused(format!(
                    "{host} resolves to {}, which is blocked",
                    blocked.ip()
                ))) as _);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// An address written in `url`, when it is one.
fn address_in(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// What a fetch brought back.
pub struct Fetched {
    /// Where the answer came from, after redirects.
    pub url: url::Url,
    /// `Content-Type`, when the answer had one.
    pub content_type: Option<String>,
    /// The file name `Content-Disposition` gives.
    pub file_name: Option<String>,
    pub body: Bytes,
}

pub struct Spider {
    client: reqwest::Client,
    rules: Arc<Rules>,
    max_size: u64,
}

impl Spider {
    pub fn new(config: &UrlPreviewConfig, outbound: &Outbound) -> Result<Self> {
        let rules = Arc::new(Rules {
            blacklist: config.ip_range_blacklist.clone(),
            whitelist: config.ip_range_whitelist.clone(),
            overrides: config.resolve_overrides.clone(),
        });
        let redirect_rules = rules.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            if !matches!(attempt.url().scheme(), "http" | "https") {
                let scheme = attempt.url().scheme().to_owned();
                return attempt.error(format!("a redirect to a {scheme}: URL"));
            }
            match address_in(attempt.url()) {
                Some(ip) if redirect_rules.blocked(ip) => attempt.error(AddressRefused(ip)),
                _ => attempt.follow(),
            }
        });
        let mut headers = http::HeaderMap::new();
        for language in &config.accept_language {
            if let Ok(value) = http::HeaderValue::from_str(language) {
                headers.append(http::header::ACCEPT_LANGUAGE, value);
            }
        }
        let mut builder = reqwest::Client::builder()
            .dns_resolver(Screened(rules.clone()))
            .redirect(redirects)
            // The resolver is the guard: no proxy resolving names for us.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .default_headers(headers)
            // Some sites give their OpenGraph tags to bots only.
            .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION"), " (bot; URL previews)"));
        if let Some(path) = &outbound.extra_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| Error::internal(format!("outbound.extra_ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::internal(format!("outbound.extra_ca_file {}: {e}", path.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        if outbound.danger_accept_invalid_certs {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| Error::internal(format!("URL preview HTTP client: {e}")))?;
        Ok(Self { client, rules, max_size: config.max_spider_size })
    }

    /// GETs `url` (http or https), following redirects, when its type is
    /// one of `allowed` (`type/subtype` or `type/*`; an answer without a
    /// type is taken), at most `max_spider_size` bytes. Errors as
    /// Synapse's: a blocked address in the URL 403, a name resolving to a
    /// blocked address 502, an error status or a refused type 502, too
    /// large or too slow 502 `M_TOO_LARGE`, no answer in time 504.
    pub async fn get(&self, url: &url::Url, allowed: &[&str]) -> Result<Fetched> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_param("Only http and https URLs can be previewed"));
        }
        if let Some(ip) = address_in(url)
            && self.rules.blocked(ip)
        {
            return Err(ip_blocked());
        }
        let response = match tokio::time::timeout(HEADERS_TIMEOUT, self.client.get(url.clone()).send()).await
        {
            Err(_) => return Err(gateway_timeout("Timeout waiting for response from remote server")),
            Ok(Err(e)) => return Err(failure(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(bad_gateway("M_UNKNOWN", format!("Got error {}", status.as_u16())));
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = header(http::header::CONTENT_TYPE);
        let file_name =
            header(http::header::CONTENT_DISPOSITION).as_deref().and_then(super::super::fetch::file_name);
        if let Some(content_type) = &content_type
            && !super::super::type_matches(content_type, allowed.iter().copied())
        {
            return Err(bad_gateway(
                "M_UNKNOWN",
                format!("Requested file's content type not allowed for this operation: {content_type}"),
            ));
        }
        if response.content_length().is_some_and(|length| length > self.max_size) {
            return Err(too_large(self.max_size));
        }
        let final_url = response.url().clone();
        let max = self.max_size;
        let read = async move {
            let mut body = BytesMut::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    bad_gateway(
                        "M_UNKNOWN",
                        format!("Failed to download remote body: {}", crate::util::error_chain(&e)),
                    )
                })?;
                if (body.len() + chunk.len()) as u64 > max {
                    return Err(too_large(max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        };
        let body = tokio::time::timeout(BODY_TIMEOUT, read).await.map_err(|_| {
            bad_gateway("M_TOO_LARGE", "Requested file took too long to download".to_owned())
        })??;
        Ok(Fetched { url: final_url, content_type, file_name, body })
    }
}

/// A failed request, as Synapse answers it.
fn failure(error: &reqwest::Error) -> Error {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<AddressRefused>().is_some() {
            return ip_blocked();
        }
        if let Some(refused) = cause.downcast_ref::<NameRefused>() {
            tracing::info!("URL preview refused: {refused}");
            return bad_gateway(
                "M_UNKNOWN",
                "DNS resolution failure during URL preview generation".to_owned(),
            );
        }
        source = cause.source();
    }
    if error.is_connect() && error.is_timeout() {
        return gateway_timeout("Timeout connecting to remote server");
    }
    Error::custom(
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        format!("Failed to download content: {}", crate::util::error_chain(error)),
    )
}

fn ip_blocked() -> Error {
    Error::custom(StatusCode::FORBIDDEN, "M_UNKNOWN", "IP address blocked")
}

fn bad_gateway(errcode: &'static str, message: String) -> Error {
    Error::custom(StatusCode::BAD_GATEWAY, errcode, message)
}

fn gateway_timeout(message: &'static str) -> Error {
    Error::custom(StatusCode::GATEWAY_TIMEOUT, "M_UNKNOWN", message)
}

fn too_large(max: u64) -> Error {
    bad_gateway("M_TOO_LARGE", format!("Requested file is too large > {max} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(black: &[&str], white: &[&str]) -> Rules {
        Rules {
            blacklist: black.iter().map(|n| n.parse().unwrap()).collect(),
            whitelist: white.iter().map(|n| n.parse().unwrap()).collect(),
            overrides: BTreeMap::new(),
        }
    }

    #[test]
    fn ipv4_ranges_cover_their_ipv6_forms() {
        let rules = rules(&["127.0.0.0/8", "10.0.0.0/8", "::1/128"], &["10.1.0.0/16"]);
        for ip in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "::1",
            "0.0.0.0",
            "::",
            "10.2.3.4",
        ] {
            assert!(rules.blocked(ip.parse().unwrap()), "{ip}");
        }
        for ip in
            ["8.8.8.8", "::ffff:8.8.8.8", "2002:808:808::", "10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1"]
        {
            assert!(!rules.blocked(ip.parse().unwrap()), "{ip}");
        }
    }
}
