//! Harness for the end-to-end encryption scenarios: real `hearth`
//! processes (started, killed with SIGKILL and restarted by the tests) and
//! real clients built on matrix-sdk, the SDK behind Element X.
//!
//! The binary is `$E2EE_SERVER_BINARY`, or else `hearth` next to this
//! test's `deps/` directory (the shared cargo target directory `make test`
//! uses). Not a `HEARTH_…` variable: the server reads those as its config.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    deserialized_responses::{TimelineEvent, TimelineEventKind},
    encryption::{BackupDownloadStrategy, EncryptionSettings},
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, RoomId,
        api::client::{account::register, uiaa},
    },
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// How long any one wait in a scenario may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);
pub const PASSWORD: &str = "correct horse battery staple";

/// One Hearth server with its own database.
pub struct Hearth {
    child: Child,
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    /// Configuration beyond the single-server default (federation).
    extra: Extra,
}

/// Configuration a federated server adds: its name (top level) and its
/// federation listener and settings (tables).
#[derive(Clone, Default)]
struct Extra {
    top: String,
    tables: String,
}

fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("E2EE_SERVER_BINARY") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let debug_dir = exe.parent().and_then(|deps| deps.parent()).context("test binary has no parent")?;
    let path = debug_dir.join("hearth");
    if !path.is_file() {
        bail!(
            "{} not found: build it first (`cargo build --bin hearth`) or set E2EE_SERVER_BINARY",
            path.display()
        );
    }
    Ok(path)
}

impl Hearth {
    /// Starts a server on a free port with a fresh database.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let extra = Extra::default();
        let (child, url, port) = spawn(dir.path(), 0, &extra).await?;
        Ok(Self { child, url, port, dir, extra })
    }

    /// `n` servers named hs1.test, hs2.test, … that federate over HTTPS on
    /// 127.0.0.1, with certificates from a CA made here and each other's
    /// addresses in `federation.resolve_overrides`.
    pub async fn federation(n: usize) -> Result<Vec<Self>> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
        // Ports known before any server starts (each names the others').
        let mut ports = Vec::new();
        for _ in 0..n {
            let client = std::net::TcpListener::bind("127.0.0.1:0")?;
            let federation = std::net::TcpListener::bind("127.0.0.1:0")?;
            ports.push((client.local_addr()?.port(), federation.local_addr()?.port()));
        }
        let overrides: Vec<String> =
            (0..n).map(|i| format!("\"hs{}.test\" = \"127.0.0.1:{}\"", i + 1, ports[i].1)).collect();
        let mut servers = Vec::new();
        for (i, (client_port, federation_port)) in ports.into_iter().enumerate() {
            let dir = tempfile::tempdir()?;
            let name = format!("hs{}.test", i + 1);
            let key = rcgen::KeyPair::generate()?;
            let cert = rcgen::CertificateParams::new(vec![name.clone()])?.signed_by(&key, &ca)?;
            let (ca_path, cert_path, key_path) =
                (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&ca_path, ca.pem())?;
            std::fs::write(&cert_path, cert.pem())?;
            std::fs::write(&key_path, key.serialize_pem())?;
            let extra = Extra {
                top: format!("server_name = \"{name}\"\n"),
                tables: format!(
                    "[[listeners]]\naddress = \"127.0.0.1\"\nport = {federation_port}\nresources = [\"federation\", \"keys\"]\n\
                     tls = {{ certificate = \"{}\", key = \"{}\" }}\n\
                     [federation]\nca_file = \"{}\"\nip_range_blacklist = []\n\
                     destination_min_retry_interval_ms = 100\ndestination_max_retry_interval_ms = 500\n\
                     resolve_overrides = {{ {} }}\n",
                    cert_path.display(),
                    key_path.display(),
                    ca_path.display(),
                    overrides.join(", ")
                ),
            };
            let (child, url, port) = spawn(dir.path(), client_port, &extra).await?;
            servers.push(Self { child, url, port, dir, extra });
        }
        Ok(servers)
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and starts it
    /// again on the same port and database.
    pub async fn kill_and_restart(&mut self) -> Result<()> {
        self.child.kill().await?;
        let (child, url, _) = spawn(self.dir.path(), self.port, &self.extra).await?;
        self.child = child;
        self.url = url;
        Ok(())
    }
}

impl Drop for Hearth {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn spawn(dir: &std::path::Path, port: u16, extra: &Extra) -> Result<(Child, String, u16)> {
    let config = dir.join("hearth.toml");
    let unlimited = "per_second = 10000.0\nburst_count = 10000\n";
    let mut text = format!(
        "{}log = \"warn,hearth=info\"\n[[listeners]]\naddress = \"127.0.0.1\"\nport = {port}\n\
         [database]\npath = \"{}\"\ncache_mb = 8\n[registration]\nenabled = true\n{}",
        extra.top,
        dir.join("db").display(),
        extra.tables
    );
    for limit in [
        "login",
        "login_failures",
        "registration",
        "registration_checks",
        "message",
        "room_creation",
        "membership",
        "typing",
        "to_device",
        "receipts",
    ] {
        text.push_str(&format!("[rate_limits.{limit}]\n{unlimited}"));
    }
    std::fs::write(&config, text)?;
    let mut child = Command::new(binary()?)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let url = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(at) = line.find("listening on http://") {
                let url =
                    line[at + "listening on ".len()..].split_whitespace().next().unwrap_or("").to_owned();
                return Ok::<_, anyhow::Error>(url);
            }
        }
        bail!("hearth exited before listening")
    })
    .await
    .context("hearth did not report its address in time")??;
    // Keep draining its output so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let port =
        url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).context("no port")?;
    Ok((child, url, port))
}

async fn client(hearth: &Hearth) -> Result<Client> {
    client_with(hearth, matrix_sdk::sliding_sync::VersionBuilder::Native).await
}

/// A client of `hearth`; `sliding` says how it finds sliding sync.
async fn client_with(hearth: &Hearth, sliding: matrix_sdk::sliding_sync::VersionBuilder) -> Result<Client> {
    // The SDK's own logs, when RUST_LOG asks for them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Ok(Client::builder()
        .homeserver_url(&hearth.url)
        // The login response's well-known points at the configured public
        // address (127.0.0.1:8008 by default), not this test's port.
        .respect_login_well_known(false)
        .sliding_sync_version_builder(sliding)
        .with_encryption_settings(EncryptionSettings {
            auto_enable_cross_signing: false,
            backup_download_strategy: BackupDownloadStrategy::Manual,
            auto_enable_backups: false,
        })
        .build()
        .await?)
}

/// Registers `name` and returns a client logged in on its first device,
/// with its device keys uploaded.
pub async fn register(hearth: &Hearth, name: &str) -> Result<Client> {
    let client = client(hearth).await?;
    let mut request = register::v3::Request::new();
    request.username = Some(name.to_owned());
    request.password = Some(PASSWORD.to_owned());
    request.initial_device_display_name = Some(format!("{name}'s first device"));
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client.matrix_auth().register(request).await?;
    client.sync_once(SyncSettings::default()).await?;
    Ok(client)
}

/// Logs an existing user in on a new device that syncs with sliding sync
/// (as Element X: the version found in `/versions`), without syncing yet.
pub async fn login_sliding(hearth: &Hearth, name: &str, device_name: &str) -> Result<Client> {
    let client = client_with(hearth, matrix_sdk::sliding_sync::VersionBuilder::DiscoverNative).await?;
    log_in(&client, name, device_name).await?;
    Ok(client)
}

/// Logs `client` in as `name` on a new device called `device_name`.
async fn log_in(client: &Client, name: &str, device_name: &str) -> Result<()> {
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .initial_device_display_name(device_name)
        .send()
        .await?;
    Ok(())
}

/// Waits until `done` says yes (asked every 100 ms: the clients sync on
/// their own meanwhile), failing after [`DEADLINE`].
pub async fn until<F, Fut>(what: &str, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if done().await? {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out waiting for {what}");
        }
        tick.tick().await;
    }
}

/// Logs an existing user in on a new device.
pub async fn login(hearth: &Hearth, name: &str, device_name: &str) -> Result<Client> {
    let client = client(hearth).await?;
    log_in(&client, name, device_name).await?;
    client.sync_once(SyncSettings::default()).await?;
    Ok(client)
}

/// Syncs `client` until `done` says yes, failing after [`DEADLINE`]. Each
/// sync is a long poll, so this waits on the server, not on a timer.
pub async fn sync_until<F, Fut>(client: &Client, what: &str, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if done().await? {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!("timed out waiting for {what}");
        }
        client.sync_once(SyncSettings::default().timeout(Duration::from_secs(2))).await?;
    }
}

/// Waits until `client` is in `room_id` (joined), accepting an invite.
pub async fn join(client: &Client, room_id: &RoomId) -> Result<Room> {
    sync_until(client, "the invite", || async { Ok(client.get_room(room_id).is_some()) }).await?;
    let room = client.join_room_by_id(room_id).await?;
    client.sync_once(SyncSettings::default()).await?;
    Ok(room)
}

/// A room's text messages as `client` reads them from `/messages`, oldest
/// first: `Some(body)` when decrypted (or plain), `None` when it could not
/// be decrypted.
pub async fn texts(room: &Room) -> Result<Vec<Option<String>>> {
    let mut options = MessagesOptions::backward();
    options.limit = 100u32.into();
    let messages = room.messages(options).await?;
    let mut out = Vec::new();
    for event in messages.chunk.iter().rev() {
        let json: serde_json::Value = serde_json::from_str(event.raw().json().get())?;
        match (&event.kind, json["type"].as_str()) {
            (TimelineEventKind::UnableToDecrypt { .. }, _) => out.push(None),
            (_, Some("m.room.message")) => out.push(json["content"]["body"].as_str().map(str::to_owned)),
            _ => {}
        }
    }
    Ok(out)
}

/// The Megolm session an encrypted event was sent with.
pub fn session_id(event: &TimelineEvent) -> Option<String> {
    match &event.kind {
        TimelineEventKind::Decrypted(decrypted) => decrypted.encryption_info.session_id().map(str::to_owned),
        TimelineEventKind::UnableToDecrypt { event, .. } => {
            let json: serde_json::Value = serde_json::from_str(event.json().get()).ok()?;
            json["content"]["session_id"].as_str().map(str::to_owned)
        }
        TimelineEventKind::PlainText { .. } => None,
    }
}

pub fn room_id(room: &Room) -> OwnedRoomId {
    room.room_id().to_owned()
}

/// Sends a plain-text message (encrypted when the room is).
pub async fn send(room: &Room, text: &str) -> Result<matrix_sdk::ruma::OwnedEventId> {
    use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
    Ok(room.send(RoomMessageEventContent::text_plain(text)).await?.response.event_id)
}

/// Syncs until `room` shows exactly `expected` as decrypted texts.
pub async fn sees(client: &Client, room: &Room, expected: &[&str]) -> Result<()> {
    let want: Vec<Option<String>> = expected.iter().map(|t| Some((*t).to_owned())).collect();
    let last = std::sync::Mutex::new(Vec::new());
    let result = sync_until(client, "the decrypted messages", || async {
        let seen = texts(room).await?;
        let done = seen == want;
        *last.lock().unwrap() = seen;
        Ok(done)
    })
    .await;
    let last = last.into_inner().unwrap();
    result.with_context(|| format!("{} sees {last:?}, expected {want:?}", client.user_id().unwrap()))
}
