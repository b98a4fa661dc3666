//! Running the server: listeners, the start-up banner, graceful shutdown.

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    Error, Result,
    config::{Config, Listener},
    services::Services,
};

/// A server started by [`start`]; [`RunningServer::stop`] shuts it down.
pub struct RunningServer {
    /// The addresses actually bound (port 0 in the config becomes a real port).
    pub addrs: Vec<SocketAddr>,
    pub services: Arc<Services>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    /// Background work (the presence sweep, push delivery), stopped before the database closes.
    workers: Vec<JoinHandle<()>>,
}

/// Opens the database, binds every listener and starts serving.
pub async fn start(config: Config) -> Result<RunningServer> {
    let mut sockets = Vec::new();
    for listener in &config.listeners {
        sockets.push(TcpListener::bind((listener.address, listener.port)).await.map_err(|e| {
            Error::internal(format!("cannot listen on {}:{}: {e}", listener.address, listener.port))
        })?);
    }
    start_on(config, sockets).await
}

/// Like [`start`], on sockets already bound, one per configured listener
/// (tests that must know every server's port before any starts).
pub async fn start_on(mut config: Config, sockets: Vec<TcpListener>) -> Result<RunningServer> {
    let mut bound = Vec::new();
    let mut addrs = Vec::new();
    for (listener, socket) in config.listeners.iter().zip(sockets) {
        // Read the certificate now: a bad path stops start-up with its name.
        let tls = match &listener.tls {
            Some(tls) => Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.certificate, &tls.key)
                    .await
                    .map_err(|e| {
                        Error::internal(format!(
                            "listener {}:{}: TLS certificate {} or key {}: {e}",
                            listener.address,
                            listener.port,
                            tls.certificate.display(),
                            tls.key.display()
                        ))
                    })?,
            ),
            None => None,
        };
        addrs.push(socket.local_addr().map_err(Error::internal)?);
        bound.push((socket, tls, listener.clone()));
    }
    // Clients are sent to the first client listener unless the operator
    // says otherwise; a wildcard address names no host a client could use.
    if config.well_known.client.is_none()
        && let Some((addr, (_, tls, _))) = addrs
            .iter()
            .zip(&bound)
            .find(|(_, (_, _, listener))| listener.resources.contains(&crate::config::Resource::Client))
            .filter(|(addr, _)| !addr.ip().is_unspecified())
    {
        let scheme = if tls.is_some() { "https" } else { "http" };
        config.well_known.client = Some(format!("{scheme}://{addr}"));
    }
    let services = Services::open(config)?;
    if let Some(s3) = &services.media.s3 {
        // A bucket that cannot be used stops the server now, not each upload later.
        s3.check().await?;
    }
    let (shutdown, watcher) = watch::channel(false);
    let mut tasks = Vec::new();
    for (socket, tls, listener) in bound {
        tasks.push(serve(socket, tls, &listener, services.clone(), watcher.clone())?);
    }
    let mut workers = vec![
        tokio::spawn(services.presence.clone().sweep()),
        tokio::spawn(crate::pushers::run(services.clone())),
        tokio::spawn(crate::federation::sender::run(services.clone())),
        tokio::spawn(crate::federation::ingest::forget_old_answers(services.clone())),
    ];
    if services.media.previewer.is_some() {
        workers.push(tokio::spawn(forget_expired_previews(services.clone())));
    }
    crate::admin::rooms::resume_purges(&services)?;
    workers.push(tokio::spawn(crate::admin::retention::run(services.clone())));
    if let Some(search) = services.search.clone() {
        let services = services.clone();
        workers
            .push(tokio::spawn(async move { crate::search::indexer::follow(search, &services.rooms).await }));
    }
    if services.config.experimental.ephemeral_messages {
        let services = services.clone();
        workers.push(tokio::spawn(async move { services.rooms.expire_messages().await }));
    }
    workers.push(tokio::spawn(expire_sliding_connections(services.clone())));
    Ok(RunningServer { addrs, services, shutdown, tasks, workers })
}

/// Sliding sync connections unused for this long are forgotten (as
/// Synapse): the client starts over on `M_UNKNOWN_POS`.
const SLIDING_CONNECTION_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;

/// Forgets idle sliding sync connections at start-up and every hour.
async fn expire_sliding_connections(services: Arc<Services>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        let before = crate::util::now_ms().saturating_sub(SLIDING_CONNECTION_LIFETIME_MS);
        match services.users.sliding.expire(before) {
            Ok(0) => {}
            Ok(gone) => tracing::info!("sliding sync: forgot {gone} idle connections"),
            Err(e) => tracing::warn!("sliding sync: cannot forget idle connections: {e}"),
        }
    }
}

/// Drops expired URL previews every ten minutes, until the server stops.
async fn forget_expired_previews(services: Arc<Services>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        if let Some(previewer) = &services.media.previewer
            && let Err(e) = previewer.forget_expired(crate::util::now_ms())
        {
            tracing::warn!("media: cannot drop expired URL previews: {e}");
        }
    }
}

/// Serves one listener's resources until `stop` turns true, then lets
/// in-flight requests finish.
fn serve(
    socket: TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    listener: &Listener,
    services: Arc<Services>,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<std::io::Result<()>>> {
    let service = crate::api::router(services, &listener.resources)
        .layer(axum::Extension(crate::api::ListenerInfo { x_forwarded: listener.x_forwarded }))
        .into_make_service_with_connect_info::<SocketAddr>();
    let Some(tls) = tls else {
        return Ok(tokio::spawn(async move {
            axum::serve(socket, service)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await
        }));
    };
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(socket.into_std().map_err(Error::internal)?, tls)
        .map_err(Error::internal)?
        .handle(handle.clone());
    Ok(tokio::spawn(async move {
        tokio::spawn(async move {
            let _ = stop.wait_for(|stop| *stop).await;
            handle.graceful_shutdown(None);
        });
        server.serve(service).await
    }))
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish, then
    /// flushes the database. The database is closed when this returns.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.await.map_err(Error::internal)?.map_err(Error::internal)?;
        }
        for worker in self.workers {
            worker.abort();
            let _ = worker.await;
        }
        self.services.db.flush()?;
        Ok(())
    }
}

/// Runs until SIGINT or SIGTERM (`hearth` / `hearth serve`).
pub async fn run(config: Config, config_file: Option<&str>) -> Result<()> {
    let server = start(config).await?;
    banner(&server, config_file)?;
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.stop().await?;
    tracing::info!("stopped; database flushed");
    Ok(())
}

fn banner(server: &RunningServer, config_file: Option<&str>) -> Result<()> {
    let config = &server.services.config;
    for (addr, listener) in server.addrs.iter().zip(&config.listeners) {
        let scheme = if listener.tls.is_some() { "https" } else { "http" };
        let resources: Vec<String> =
            listener.resources.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
        tracing::info!(
            "Hearth listening on {scheme}://{addr} ({}; server name {})",
            resources.join(", "),
            config.server_name
        );
    }
    tracing::info!(
        "config: {}; database: {}; signing key {}",
        config_file.unwrap_or("built-in defaults (example.toml)"),
        config.database.path.display(),
        server.services.keys.key_id
    );
    let registration = &config.registration;
    if registration.enabled {
        match registration.token {
            Some(_) => tracing::info!("registration is open to holders of the registration token"),
            None => tracing::info!("registration is open to anyone who can reach this server"),
        }
    } else if !server.services.users.any()? {
        let config_arg = match config_file {
            Some(path) => format!("--config {path} "),
            None => String::new(),
        };
        tracing::info!(
            "No users yet, and registration is disabled. Create the first one (with the server stopped) with: \
             hearth {config_arg}user create <name> --admin \
             -- or set `registration.enabled = true` (with `registration.token` to require a token) \
             or `registration.shared_secret` in the config."
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
