//! Where another server's federation API is: the spec's resolution order
//! (server-server API, "Resolving server names"): an IP literal, an explicit
//! port, `/.well-known/matrix/server` delegation, SRV records
//! (`_matrix-fed._tcp`, then the deprecated `_matrix._tcp`), then port 8448;
//! with the Host header and TLS name each step calls for. The operator's
//! `federation.resolve_overrides` come before all of it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use hickory_resolver::{TokioResolver, proto::rr::RData};
use ruma::{OwnedServerName, ServerName};

/// Where to send a server's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The name (or IP literal) in the URL: the TLS certificate must be valid for it.
    pub host: String,
    pub port: u16,
    /// The Host header.
    pub host_header: String,
    /// The addresses to connect to; empty: look `host` up.
    pub addrs: Vec<IpAddr>,
}

impl Destination {
    pub fn base_url(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{}", self.port),
            _ => format!("https://{}:{}", self.host, self.port),
        }
    }
}

/// Default federation port.
const DEFAULT_PORT: u16 = 8448;
/// How long a well-known answer counts without caching headers, and its bounds.
const WELL_KNOWN_DEFAULT: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MIN: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX: Duration = Duration::from_secs(48 * 3600);
/// How long a missing or invalid well-known is remembered.
const WELL_KNOWN_FAILURE: Duration = Duration::from_secs(3600);
/// Largest well-known body read.
const WELL_KNOWN_MAX_SIZE: usize = 50 * 1024;
/// Servers whose well-known answers are remembered at once.
const WELL_KNOWN_CACHE_ENTRIES: usize = 10_000;

pub struct Discovery {
    overrides: BTreeMap<OwnedServerName, SocketAddr>,
    dns: Option<TokioResolver>,
    /// Server name → its delegation (`None`: none) and when that expires.
    well_known: Mutex<HashMap<OwnedServerName, (Option<String>, Instant)>>,
}

impl Discovery {
    pub fn new(overrides: BTreeMap<OwnedServerName, SocketAddr>) -> Self {
        let dns = match TokioResolver::builder_tokio().and_then(|builder| builder.build()) {
            Ok(resolver) => Some(resolver),
            Err(e) => {
                tracing::warn!("no DNS resolver (federation can reach only overridden names): {e}");
                None
            }
        };
        Self { overrides, dns, well_known: Mutex::new(HashMap::new()) }
    }

    /// Where `server`'s federation API is; `http` fetches well-known documents.
    pub async fn resolve(&self, server: &ServerName, http: &reqwest::Client) -> Result<Destination, String> {
        if let Some(addr) = self.overrides.get(server) {
            return Ok(Destination {
                host: bare_host(server.host()).to_owned(),
                port: addr.port(),
                host_header: server.to_string(),
                addrs: vec![addr.ip()],
            });
        }
        // 1, 2: an IP literal or an explicit port is used as it is.
        if let Some(destination) = literal(server.as_str()) {
            return Ok(destination);
        }
        let host = server.host();
        // 3: delegation.
        if let Some(delegated) = self.well_known(server, http).await {
            if let Some(destination) = literal(&delegated) {
                return Ok(destination);
            }
            return self.by_srv(&delegated).await;
        }
        // 4-6: SRV records of the name itself, then port 8448.
        self.by_srv(host).await
    }

    /// SRV records of `host` (`_matrix-fed._tcp`, then `_matrix._tcp`), else
    /// `host`:8448; the Host header and TLS name stay `host` either way.
    async fn by_srv(&self, host: &str) -> Result<Destination, String> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some((target, port)) = self.srv(&format!("{service}.{host}.")).await {
                let addrs = self.lookup(&target).await?;
                return Ok(Destination { host: host.to_owned(), port, host_header: host.to_owned(), addrs });
            }
        }
        Ok(Destination {
            host: host.to_owned(),
            port: DEFAULT_PORT,
            host_header: host.to_owned(),
            addrs: vec![],
        })
    }

    /// The lowest-priority, highest-weight target of an SRV name.
    async fn srv(&self, name: &str) -> Option<(String, u16)> {
        let lookup =
            self.dns.as_ref()?.lookup(name, hickory_resolver::proto::rr::RecordType::SRV).await.ok()?;
        lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)))
            .map(|srv| (srv.target.to_ascii().trim_end_matches('.').to_owned(), srv.port))
    }

    /// The addresses of a host name.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let dns = self.dns.as_ref().ok_or_else(|| format!("cannot look {host} up: no DNS resolver"))?;
        let found = dns.lookup_ip(host).await.map_err(|e| format!("cannot look {host} up: {e}"))?;
        Ok(found.iter().collect())
    }

    /// The `m.server` of `server`'s well-known document, cached.
    async fn well_known(&self, server: &ServerName, http: &reqwest::Client) -> Option<String> {
        let now = Instant::now();
        if let Some((delegated, expires)) = self.well_known.lock().expect("well-known cache").get(server)
            && *expires > now
        {
            return delegated.clone();
        }
        let (delegated, valid_for) = match fetch_well_known(server.host(), http).await {
            Ok(found) => found,
            Err(why) => {
                tracing::debug!("no well-known delegation for {server}: {why}");
                (None, WELL_KNOWN_FAILURE)
            }
        };
        let mut cache = self.well_known.lock().expect("well-known cache");
        if cache.len() >= WELL_KNOWN_CACHE_ENTRIES {
            cache.retain(|_, (_, expires)| *expires > now);
            if cache.len() >= WELL_KNOWN_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(server.to_owned(), (delegated.clone(), now + valid_for));
        delegated
    }
}

/// An IP literal (port or 8448) or a name with an explicit port: no
/// further lookup of SRV or well-known.
fn literal(name: &str) -> Option<Destination> {
    let server = <&ServerName>::try_from(name).ok()?;
    let host = bare_host(server.host());
    match (host.parse::<IpAddr>(), server.port()) {
        (Ok(ip), port) => Some(Destination {
            host: host.to_owned(),
            port: port.unwrap_or(DEFAULT_PORT),
            host_header: name.to_owned(),
            addrs: vec![ip],
        }),
        (Err(_), Some(port)) => {
            Some(Destination { host: host.to_owned(), port, host_header: name.to_owned(), addrs: vec![] })
        }
        (Err(_), None) => None,
    }
}

/// A host without the brackets of an IPv6 literal.
fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Fetches `https://host/.well-known/matrix/server`: the delegated name
/// and how long to keep it.
async fn fetch_well_known(host: &str, http: &reqwest::Client) -> Result<(Option<String>, Duration), String> {
    let url = format!("https://{host}/.well-known/matrix/server");
    let mut response =
        http.get(&url).timeout(Duration::from_secs(10)).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let valid_for = cache_period(response.headers());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > WELL_KNOWN_MAX_SIZE {
            return Err("the document is too large".into());
        }
    }
    let document: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
    let delegated = document
        .get("m.server")
        .and_then(|v| v.as_str())
        .filter(|name| <&ServerName>::try_from(*name).is_ok())
        .ok_or("no valid m.server")?;
    Ok((Some(delegated.to_owned()), valid_for))
}

/// How long a well-known answer may be kept: its Cache-Control max-age
/// (or nothing for no-store/no-cache), bounded.
fn cache_period(headers: &http::HeaderMap) -> Duration {
    let Some(control) = headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) else {
        return WELL_KNOWN_DEFAULT;
    };
    let mut period = WELL_KNOWN_DEFAULT;
    for directive in control.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache") {
            return WELL_KNOWN_MIN;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=").and_then(|s| s.parse::<u64>().ok()) {
            period = Duration::from_secs(seconds);
        }
    }
    period.clamp(WELL_KNOWN_MIN, WELL_KNOWN_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_explicit_ports_need_no_lookup() {
        let ip = literal("1.2.3.4").unwrap();
        assert_eq!((ip.host.as_str(), ip.port, ip.host_header.as_str()), ("1.2.3.4", 8448, "1.2.3.4"));
        let v6 = literal("[::1]:9000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.host_header.as_str()), ("::1", 9000, "[::1]:9000"));
        assert_eq!(v6.base_url(), "https://[::1]:9000");
        let named = literal("example.org:1234").unwrap();
        assert_eq!(named.addrs, Vec::<IpAddr>::new());
        assert_eq!((named.host.as_str(), named.host_header.as_str()), ("example.org", "example.org:1234"));
        assert!(literal("example.org").is_none());
    }

    #[test]
    fn well_known_cache_follows_cache_control() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(cache_period(&headers), WELL_KNOWN_DEFAULT);
        headers.insert(http::header::CACHE_CONTROL, "public, max-age=7200".parse().unwrap());
        assert_eq!(cache_period(&headers), Duration::from_secs(7200));
        headers.insert(http::header::CACHE_CONTROL, "max-age=10".parse().unwrap());
        assert_eq!(cache_period(&headers), WELL_KNOWN_MIN);
        headers.insert(http::header::CACHE_CONTROL, "max-age=99999999".parse().unwrap());
        assert_eq!(cache_period(&headers), WELL_KNOWN_MAX);
    }

    #[tokio::test]
    async fn overrides_come_first() {
        let name: OwnedServerName = "hs1.test".try_into().unwrap();
        let addr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let discovery = Discovery::new(BTreeMap::from([(name.clone(), addr)]));
        let found = discovery.resolve(&name, &reqwest::Client::new()).await.unwrap();
        assert_eq!(
            found,
            Destination {
                host: "hs1.test".into(),
                port: 4433,
                host_header: "hs1.test".into(),
                addrs: vec![addr.ip()]
            }
        );
    }
}
