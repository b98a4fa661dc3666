//! The shared handle every request handler and command receives.

use std::sync::Arc;

use crate::{
    Result,
    config::Config,
    keys::ServerKeys,
    presence::Presence,
    ratelimit::Limiters,
    rooms::Rooms,
    storage::Db,
    stream::Stream,
    users::{Users, shared_secret::Nonces, uiaa::Uiaa},
};

pub struct Services {
    pub config: Config,
    pub db: Db,
    pub keys: Arc<ServerKeys>,
    pub stream: Arc<Stream>,
    pub presence: Arc<Presence>,
    pub users: Arc<Users>,
    pub rooms: Rooms,
    pub uiaa: Uiaa,
    pub limiters: Limiters,
    pub shared_secret_nonces: Nonces,
    pub outbound: crate::outbound::Outbound,
    pub servers: Arc<crate::servers::Servers>,
    pub media: crate::media::Media,
    /// The search index, unless `search.enabled` is off.
    pub search: Option<Arc<crate::search::Search>>,
    /// Admins' background jobs and their progress.
    pub jobs: Arc<crate::jobs::Jobs>,
    pub metrics: crate::metrics::Metrics,
    /// Serialises the admin side's make-once steps (the reports room).
    pub admin_lock: tokio::sync::Mutex<()>,
}

impl Services {
    /// Opens the database and builds every service on it.
    pub fn open(config: Config) -> Result<Arc<Self>> {
        let db = Db::open(&config.database.path, config.database.cache_mb, config.database.sync_writes)?;
        let keys = Arc::new(ServerKeys::load_or_generate(&db)?);
        let stream = Arc::new(Stream::open(db.clone(), Rooms::last_position(&db)?)?);
        let users = Arc::new(Users::new(db.clone(), config.server_name.clone(), stream.clone())?);
        let rooms =
            Rooms::open(db.clone(), config.server_name.clone(), keys.clone(), stream.clone(), users.clone())?;
        if config.experimental.ephemeral_messages {
            rooms.enable_ephemeral_messages();
        }
        let limiters = Limiters::new(&config.rate_limits);
        let presence = Arc::new(Presence::new(db.clone(), stream.clone(), config.presence.enabled));
        let outbound = crate::outbound::Outbound::new(&config.outbound)?;
        let servers = Arc::new(crate::servers::Servers::new(
            db.clone(),
            config.server_name.clone(),
            &config.federation,
            keys.clone(),
        )?);
        let media = crate::media::Media::open(
            db.clone(),
            config.server_name.clone(),
            &config.media,
            &config.outbound,
            config.database.path.join("media"),
        )?;
        let search = match config.search.enabled {
            true => {
                let path = config.search.path.clone().unwrap_or_else(|| config.database.path.join("search"));
                Some(Arc::new(crate::search::Search::open(&path, &config.search.language)?))
            }
            false => None,
        };
        let jobs = crate::jobs::Jobs::open(db.clone())?;
        Ok(Arc::new(Self {
            config,
            db,
            keys,
            stream,
            presence,
            users,
            uiaa: Uiaa::default(),
            limiters,
            shared_secret_nonces: Nonces::default(),
            outbound,
            servers,
            media,
            search,
            metrics: crate::metrics::Metrics::new(rooms.appended.clone()),
            rooms,
            jobs,
            admin_lock: Default::default(),
        }))
    }

    /// Services over a fresh database under `dir`, with the default
    /// configuration and a small cache (unit tests).
    #[cfg(test)]
    pub fn for_tests(dir: &std::path::Path) -> Arc<Self> {
        let mut config = Config::defaults();
        config.database.path = dir.join("db");
        config.database.cache_mb = 8;
        Self::open(config).expect("services over a fresh database")
    }
}
