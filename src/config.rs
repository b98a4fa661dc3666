//! Configuration: the defaults embedded from `example.toml`, then a TOML file,
//! then `HEARTH_*` environment variables (`__` between nested keys).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use ruma::OwnedServerName;
use serde::{Deserialize, Serialize};

/// The reference configuration, which doubles as the built-in defaults.
pub const EXAMPLE_TOML: &str = include_str!("../example.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server_name: OwnedServerName,
    pub log: String,
    pub listeners: Vec<Listener>,
    pub database: Database,
    pub registration: Registration,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub well_known: WellKnown,
    pub presence: PresenceConfig,
    pub outbound: Outbound,
    pub federation: Federation,
    pub turn: Turn,
    pub media: MediaConfig,
    pub search: SearchConfig,
    pub server_notices: ServerNotices,
    pub moderation: Moderation,
    pub retention: Retention,
    pub console: Console,
    #[serde(default)]
    pub experimental: Experimental,
}

/// Message retention and expiry (`[retention]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Prune messages past their room's `m.room.retention` `max_lifetime`
    /// (or the default below).
    pub enabled: bool,
    /// The `max_lifetime` of rooms without `m.room.retention`; none: kept.
    #[serde(default, with = "humantime_serde")]
    pub default_max_lifetime: Option<std::time::Duration>,
    /// Bounds a room's own `max_lifetime` is held within.
    #[serde(default, with = "humantime_serde")]
    pub allowed_lifetime_min: Option<std::time::Duration>,
    #[serde(default, with = "humantime_serde")]
    pub allowed_lifetime_max: Option<std::time::Duration>,
    /// How often the pass runs.
    #[serde(with = "humantime_serde")]
    pub interval: std::time::Duration,
    /// Rooms with no event for this long are shut down and purged; none: never.
    #[serde(default, with = "humantime_serde")]
    pub inactive_rooms_after: Option<std::time::Duration>,
    /// Notifications older than this are deleted (whatever `enabled` says).
    #[serde(with = "humantime_serde")]
    pub notification_lifetime: std::time::Duration,
}

/// The built-in web console (`[console]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Serve it at `/_hearth/console/` on the client listeners.
    pub enabled: bool,
}

/// Moderation (`[moderation]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Moderation {
    /// Each report is announced to the server's admins in a room the
    /// notices user keeps (needs `server_notices`).
    pub notify_admins: bool,
    pub reports_room_name: String,
}

/// Server notices (`[server_notices]`): messages from the server's admins
/// to one user, in a room the user cannot leave unread.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerNotices {
    /// The notices' sender (never a registered account); unset: off.
    #[serde(default)]
    pub system_mxid_localpart: Option<String>,
    #[serde(default)]
    pub system_mxid_display_name: Option<String>,
    #[serde(default)]
    pub system_mxid_avatar_url: Option<String>,
    pub room_name: String,
    #[serde(default)]
    pub room_topic: Option<String>,
    /// Join the user to the notices room at once (else they are invited).
    pub auto_join: bool,
}

/// The stemmers `search.language` may name (tantivy's), and `none`.
pub const SEARCH_LANGUAGES: &[&str] = &[
    "arabic",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
    "none",
];

/// Server-side search (`[search]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    pub enabled: bool,
    /// Where the index is kept; `search` inside the database directory when unset.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The stemmer's language (`english`, `french`, …), or `none`.
    pub language: String,
}

/// Features of proposals not yet in the spec, off by default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Experimental {
    /// MSC2228: messages whose content names a time in
    /// `org.matrix.self_destruct_after` are pruned then (Synapse's
    /// `enable_ephemeral_messages`).
    #[serde(default)]
    pub ephemeral_messages: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: IpAddr,
    pub port: u16,
    /// Take the client's address from X-Forwarded-For (behind a reverse proxy).
    #[serde(default)]
    pub x_forwarded: bool,
    /// What the listener serves.
    #[serde(default = "Resource::all")]
    pub resources: Vec<Resource>,
    /// HTTPS with this certificate; plain HTTP without.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// A part of the HTTP API a listener may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// The Client-Server API, the admin API, `/.well-known/matrix/*`.
    Client,
    /// `/_matrix/federation/*`.
    Federation,
    /// `/_matrix/key/*`.
    Keys,
    /// `/_matrix/media/*`.
    Media,
    /// `/metrics` (Prometheus). Not among the defaults: name it on a
    /// listener only your monitoring reaches.
    Metrics,
}

impl Resource {
    pub fn all() -> Vec<Resource> {
        vec![Resource::Client, Resource::Federation, Resource::Keys, Resource::Media]
    }
}

/// A PEM certificate chain and its PEM private key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub path: PathBuf,
    pub cache_mb: usize,
    /// A write is acknowledged once it is on disk (survives a power cut).
    pub sync_writes: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub enabled: bool,
    #[serde(default)]
    pub token: Option<String>,
    /// Registering needs a registration token: `token`, or one a server
    /// admin made (`/_synapse/admin/v1/registration_tokens`).
    #[serde(default)]
    pub requires_token: bool,
    #[serde(default)]
    pub shared_secret: Option<String>,
    /// `POST /register?kind=guest` makes guest accounts.
    #[serde(default)]
    pub guest_access: bool,
}

impl Registration {
    /// Whether registering takes the `m.login.registration_token` stage.
    pub fn requires_token(&self) -> bool {
        self.requires_token || self.token.is_some()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_request_size: usize,
    pub max_one_time_keys: usize,
    pub max_to_device_message_size: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst_count: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub login: Rate,
    pub login_failures: Rate,
    pub registration: Rate,
    pub registration_checks: Rate,
    pub message: Rate,
    pub room_creation: Rate,
    pub membership: Rate,
    pub typing: Rate,
    pub to_device: Rate,
    pub receipts: Rate,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WellKnown {
    #[serde(default)]
    pub client: Option<String>,
    /// `m.server` of `/.well-known/matrix/server` (delegation).
    #[serde(default)]
    pub server: Option<String>,
}

/// Talking to other homeservers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    pub enabled: bool,
    /// Only these servers when not empty.
    pub allowed_servers: Vec<OwnedServerName>,
    pub denied_servers: Vec<OwnedServerName>,
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// Addresses never connected to.
    pub ip_range_blacklist: Vec<ipnet::IpNet>,
    /// Extra CA certificates (PEM) for other servers' certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Server name → the address to connect to, skipping discovery.
    pub resolve_overrides: std::collections::BTreeMap<OwnedServerName, std::net::SocketAddr>,
    /// The first wait before retrying a failing server, doubled up to the max.
    pub destination_min_retry_interval_ms: u64,
    pub destination_max_retry_interval_ms: u64,
}

/// A notary, with its keys when the operator pins them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyServer {
    pub server_name: OwnedServerName,
    #[serde(default)]
    pub verify_keys: std::collections::BTreeMap<String, String>,
}

impl Federation {
    /// Whether this server federates with `server` at all.
    pub fn allows(&self, server: &ruma::ServerName) -> bool {
        self.enabled
            && !self.denied_servers.iter().any(|denied| denied == server)
            && (self.allowed_servers.is_empty()
                || self.allowed_servers.iter().any(|allowed| allowed == server))
    }
}

/// The content repository (`[media]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Where files are kept; `media` inside the database directory when unset.
    #[serde(default)]
    pub path: Option<PathBuf>,
    pub max_upload_size: u64,
    pub max_pending_uploads: usize,
    pub unused_expiration_secs: u64,
    pub enable_authenticated_media: bool,
    /// The thumbnails offered; a request gets the best fit.
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Images with more pixels are not thumbnailed (decompression bombs).
    pub max_image_pixels: u64,
    /// The content types uploads may have (`type/subtype` or `type/*`); empty: any.
    pub allowed_content_types: Vec<String>,
    /// Most bytes one user's uploads may take in all; unset: no limit.
    #[serde(default)]
    pub user_quota_bytes: Option<u64>,
    /// clamd: `unix:/run/clamav/clamd.ctl` or `tcp:host:port`; unset: no scanning.
    #[serde(default)]
    pub scanner: Option<String>,
    /// Whether files are taken unscanned when clamd does not answer.
    pub scanner_fail_open: bool,
    pub url_preview: UrlPreviewConfig,
    /// An S3-compatible object store the files are also kept in; unset:
    /// the local store only.
    #[serde(default)]
    pub s3: Option<S3Config>,
}

/// `[media.s3]`: where every stored file also goes, so the local copies
/// may be removed (`hearth media offload`) and are fetched back when asked for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// The service's URL; unset: AWS (`https://s3.<region>.amazonaws.com`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Buckets in the path (`endpoint/bucket/key`) rather than the host
    /// name; unset: in the path when `endpoint` is set.
    #[serde(default)]
    pub path_style: Option<bool>,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Put before every object's key (`prefix` + `ab/cd/<sha256>`).
    #[serde(default)]
    pub prefix: String,
    /// Whether other servers' media kept here goes to the bucket too.
    #[serde(default = "yes")]
    pub store_remote: bool,
}

fn yes() -> bool {
    true
}

/// URL previews (`[media.url_preview]`): pages fetched for clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UrlPreviewConfig {
    pub enabled: bool,
    /// Addresses never connected to, checked on every address a name
    /// resolves to and on every redirect.
    pub ip_range_blacklist: Vec<ipnet::IpNet>,
    /// Exceptions to the blacklist.
    pub ip_range_whitelist: Vec<ipnet::IpNet>,
    /// URLs never fetched: each entry maps URL parts (`scheme`, `netloc`,
    /// `hostname`, `port`, `path`, `query`, `fragment`, `username`,
    /// `password`) to a glob, or a regular expression when it starts with
    /// `^`; a URL matching every part of an entry is refused.
    pub url_blacklist: Vec<std::collections::BTreeMap<String, String>>,
    /// Largest page or image downloaded, in bytes.
    pub max_spider_size: u64,
    /// Sent as `Accept-Language`.
    pub accept_language: Vec<String>,
    /// Host name → the address it resolves to, skipping DNS (the address
    /// is still checked against the blacklist).
    #[serde(default)]
    pub resolve_overrides: std::collections::BTreeMap<String, std::net::IpAddr>,
}

/// The parts of a URL `media.url_preview.url_blacklist` entries may name.
pub const URL_PARTS: [&str; 9] =
    ["scheme", "netloc", "hostname", "port", "path", "query", "fragment", "username", "password"];

/// How a thumbnail fits its size: the whole image within it, or the
/// size's aspect cut from the image's middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Scale,
    Crop,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Scale => "scale",
            ThumbnailMethod::Crop => "crop",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    pub enabled: bool,
}

/// TURN servers for calls: credentials from a secret shared with the TURN
/// server (coturn's `use-auth-secret`, the "TURN REST API").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub uris: Vec<String>,
    #[serde(default)]
    pub shared_secret: Option<String>,
    pub user_lifetime_secs: u64,
    pub allow_guests: bool,
}

/// Requests Hearth makes to other services than homeservers (push gateways).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Also connect to loopback, private and link-local addresses.
    pub allow_private_addresses: bool,
    /// A PEM file of extra CA certificates to trust beside the system's.
    #[serde(default)]
    pub extra_ca_file: Option<std::path::PathBuf>,
    /// Accept any TLS certificate (test suites only).
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
}

impl RateLimits {
    /// Every limit with its key name.
    pub fn named(&self) -> [(&'static str, Rate); 10] {
        [
            ("login", self.login),
            ("login_failures", self.login_failures),
            ("registration", self.registration),
            ("registration_checks", self.registration_checks),
            ("message", self.message),
            ("room_creation", self.room_creation),
            ("membership", self.membership),
            ("typing", self.typing),
            ("to_device", self.to_device),
            ("receipts", self.receipts),
        ]
    }

    /// Every limit, to change them all (tests and benchmarks lift them).
    pub fn each_mut(&mut self) -> [&mut Rate; 10] {
        [
            &mut self.login,
            &mut self.login_failures,
            &mut self.registration,
            &mut self.registration_checks,
            &mut self.message,
            &mut self.room_creation,
            &mut self.membership,
            &mut self.typing,
            &mut self.to_device,
            &mut self.receipts,
        ]
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The defaults alone (the content of `example.toml`).
    pub fn defaults() -> Self {
        Self::from_figment(Self::base()).expect("example.toml is a valid configuration")
    }

    fn base() -> Figment {
        Figment::from(Toml::string(EXAMPLE_TOML))
    }

    /// Loads the configuration as `hearth` does: defaults, then `file` (or
    /// `./hearth.toml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Self::base();
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError(format!("{} is not a readable file", path.display())));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("hearth.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("hearth.toml"));
            }
            None => {}
        }
        Self::from_figment(figment.merge(Env::prefixed("HEARTH_").split("__")))
    }

    /// Extracts and validates a configuration from any figment (tests use
    /// this to layer overrides).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|errors| {
            ConfigError(errors.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("invalid value for key `{key}`: {why}")));
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return bad("log", "not a valid log filter");
        }
        if self.listeners.is_empty() {
            return bad("listeners", "at least one listener is needed");
        }
        if self.limits.max_request_size < 1024 {
            return bad("limits.max_request_size", "must be at least 1024 bytes");
        }
        for (name, rate) in self.rate_limits.named() {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst_count == 0 {
                return bad(
                    &format!("rate_limits.{name}"),
                    "per_second must be a positive number and burst_count at least 1",
                );
            }
        }
        let federation = &self.federation;
        if federation.destination_min_retry_interval_ms == 0
            || federation.destination_max_retry_interval_ms < federation.destination_min_retry_interval_ms
        {
            return bad(
                "federation.destination_max_retry_interval_ms",
                "the retry intervals must be positive, the max at least the min",
            );
        }
        if self.turn.user_lifetime_secs == 0 {
            return bad("turn.user_lifetime_secs", "must be at least 1");
        }
        if self.registration.token.as_deref().is_some_and(str::is_empty) {
            return bad("registration.token", "must not be empty");
        }
        if self.registration.shared_secret.as_deref().is_some_and(str::is_empty) {
            return bad("registration.shared_secret", "must not be empty");
        }
        if let Some(server) = &self.well_known.server
            && <&ruma::ServerName>::try_from(server.as_str()).is_err()
        {
            return bad(
                "well_known.server",
                "must be a host name with an optional port, as in matrix.example.org:443",
            );
        }
        if !SEARCH_LANGUAGES.contains(&self.search.language.as_str()) {
            return bad("search.language", &format!("one of {}", SEARCH_LANGUAGES.join(", ")));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.resources.is_empty() {
                return bad(&format!("listeners[{i}].resources"), "a listener must serve something");
            }
        }
        for server in &self.federation.trusted_key_servers {
            for (key_id, key) in &server.verify_keys {
                if ruma::ServerSigningKeyId::parse(key_id.as_str()).is_err()
                    || ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(key).is_err()
                {
                    return bad(
                        "federation.trusted_key_servers",
                        &format!(
                            "verify_keys of {}: \"{key_id}\" = \"{key}\" is not a key ID and an unpadded base64 key",
                            server.server_name
                        ),
                    );
                }
            }
        }
        if let Some(url) = &self.well_known.client
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("well_known.client", "must be an http:// or https:// URL");
        }
        if let Some(s3) = &self.media.s3 {
            if s3.bucket.is_empty() || s3.region.is_empty() {
                return bad("media.s3", "bucket and region must not be empty");
            }
            if let Some(endpoint) = &s3.endpoint
                && !url::Url::parse(endpoint)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            {
                return bad("media.s3.endpoint", "must be an http:// or https:// URL");
            }
        }
        for entry in &self.media.url_preview.url_blacklist {
            for (part, pattern) in entry {
                if !URL_PARTS.contains(&part.as_str()) {
                    return bad(
                        "media.url_preview.url_blacklist",
                        &format!("{part:?} is not one of {}", URL_PARTS.join(", ")),
                    );
                }
                let valid = match pattern.starts_with('^') {
                    true => regex::Regex::new(pattern).is_ok(),
                    false => glob::Pattern::new(pattern).is_ok(),
                };
                if !valid {
                    return bad(
                        "media.url_preview.url_blacklist",
                        &format!("{pattern:?} is not a valid pattern"),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    #[test]
    fn example_toml_is_the_default() {
        let c = Config::defaults();
        assert_eq!(c.server_name.as_str(), "localhost");
        assert_eq!(c.listeners[0].port, 8008);
        assert_eq!(c.database.path, PathBuf::from("./data"));
        assert!(!c.registration.enabled);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::from_figment(Config::base().merge(Toml::string("colour = 1"))).unwrap_err();
        assert!(err.0.contains("colour"), "{err}");
        let err =
            Config::from_figment(Config::base().merge(Toml::string("[database]\nsize = 1"))).unwrap_err();
        assert!(err.0.contains("size"), "{err}");
        let err = Config::from_figment(
            Config::base().merge(Serialized::default("server_name", "no spaces allowed")),
        )
        .unwrap_err();
        assert!(err.0.contains("server_name"), "{err}");
        let err =
            Config::from_figment(Config::base().merge(Serialized::default("log", "info,[["))).unwrap_err();
        assert!(err.0.contains("`log`"), "{err}");
    }
}
