//! Test harness: real Hearth servers on ephemeral 127.0.0.1 ports with
//! temporary databases, driven over HTTP.

use hearth::{config::Config, server::RunningServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub struct TestServer {
    pub base: String,
    pub config: Config,
    pub http: reqwest::Client,
    server: Option<RunningServer>,
    /// Whether the server runs as its own `hearth serve` process
    /// ([`TestServer::spawn_on`]), which a test can `kill -9`, and that
    /// process while it runs.
    own_process: bool,
    process: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

/// A user logged in on one device.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

/// Points each of `config`'s listeners at the port of its socket.
fn use_ports(config: &mut Config, sockets: &[tokio::net::TcpListener]) {
    for (listener, socket) in config.listeners.iter_mut().zip(sockets) {
        listener.port = socket.local_addr().expect("bound").port();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failing test shows the end of a server process's log.
        if self.own_process && std::thread::panicking() {
            let log = self.process_log();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("hearth::request")).collect();
            eprintln!("--- the last lines of {}'s log (requests left out):", self.config.server_name);
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestServer {
    /// Registration open (dummy stage), generous rate limits.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Self::test_config(dir.path());
        adjust(&mut config);
        let server = hearth::server::start(config.clone()).await.expect("server starts");
        Self {
            base: format!("http://{}", server.addrs[0]),
            config,
            http: reqwest::Client::new(),
            server: Some(server),
            own_process: false,
            process: None,
            _dir: dir,
        }
    }

    /// A server on sockets the caller bound (one per listener of `config`,
    /// the first a plain client listener), with its database in `dir`. A
    /// restart binds the same ports again.
    pub async fn start_on(
        mut config: Config,
        sockets: Vec<tokio::net::TcpListener>,
        dir: tempfile::TempDir,
    ) -> Self {
        use_ports(&mut config, &sockets);
        let server = hearth::server::start_on(config.clone(), sockets).await.expect("server starts");
        Self {
            base: format!("http://{}", server.addrs[0]),
            config,
            http: reqwest::Client::new(),
            server: Some(server),
            own_process: false,
            process: None,
            _dir: dir,
        }
    }

    /// Like [`TestServer::start_on`], as a `hearth serve` process of its
    /// own (configuration written to `dir`, output to `dir/hearth.log`).
    /// The sockets are released for the process to bind the same ports.
    /// Only HTTP reaches it: [`TestServer::server`] panics.
    pub async fn spawn_on(
        mut config: Config,
        sockets: Vec<tokio::net::TcpListener>,
        dir: tempfile::TempDir,
    ) -> Self {
        use_ports(&mut config, &sockets);
        drop(sockets);
        let toml = toml::to_string(&config).expect("configuration as TOML");
        std::fs::write(dir.path().join("hearth.toml"), toml).expect("write configuration");
        let base = format!("http://127.0.0.1:{}", config.listeners[0].port);
        let mut s = Self {
            base,
            config,
            http: reqwest::Client::new(),
            server: None,
            own_process: true,
            process: None,
            _dir: dir,
        };
        s.spawn().await;
        s
    }

    /// Starts the process of a [`TestServer::spawn_on`] server and waits
    /// until its client API answers (30 s at most).
    async fn spawn(&mut self) {
        let dir = self._dir.path();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("hearth.log")).expect("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["--config", dir.join("hearth.toml").to_str().unwrap(), "serve"])
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("hearth starts");
        self.process = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let versions = format!("{}/_matrix/client/versions", self.base);
        while !self.http.get(&versions).send().await.is_ok_and(|r| r.status().is_success()) {
            let exited = self.process.as_mut().unwrap().try_wait().expect("process state");
            assert!(exited.is_none(), "hearth exited: {exited:?}; see {}", dir.join("hearth.log").display());
            assert!(std::time::Instant::now() < deadline, "hearth did not answer within 30 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await; // the next poll
        }
    }

    /// What the process of a [`TestServer::spawn_on`] server has logged.
    pub fn process_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("hearth.log")).unwrap_or_default()
    }

    /// `kill -9`: the process of a [`TestServer::spawn_on`] server ends
    /// at once, nothing flushed; [`TestServer::start_again`] restarts it.
    pub fn kill_9(&mut self) {
        let mut child = self.process.take().expect("a server process");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// The configuration every test server starts from: a database in
    /// `dir`, open registration, rate limits out of the way.
    pub fn test_config(dir: &std::path::Path) -> Config {
        let mut config = Config::defaults();
        config.database.path = dir.join("db");
        config.database.cache_mb = 8;
        config.listeners[0].port = 0;
        config.registration.enabled = true;
        for rate in config.rate_limits.each_mut() {
            rate.per_second = 1000.0;
            rate.burst_count = 1000;
        }
        config
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running in this process")
    }

    /// Stops the server (flushing and closing the database) and starts it
    /// again on the same database.
    pub async fn restart(&mut self) {
        self.server.take().expect("server running").stop().await.expect("clean stop");
        self.http = reqwest::Client::new(); // no connection to the old server kept for reuse
        let server = hearth::server::start(self.config.clone()).await.expect("server restarts");
        self.base = format!("http://{}", server.addrs[0]);
        self.server = Some(server);
    }

    /// Stops the server, keeping its database for [`TestServer::start_again`].
    pub async fn stop_for_now(&mut self) {
        self.server.take().expect("server running").stop().await.expect("clean stop");
    }

    /// Starts a server stopped with [`TestServer::stop_for_now`] or
    /// [`TestServer::kill_9`] on its database and ports.
    pub async fn start_again(&mut self) {
        self.http = reqwest::Client::new(); // no connection to the old server kept for reuse
        if self.own_process {
            return self.spawn().await;
        }
        let server = hearth::server::start(self.config.clone()).await.expect("server restarts");
        self.base = format!("http://{}", server.addrs[0]);
        self.server = Some(server);
    }

    pub async fn stop(mut self) {
        self.server.take().expect("server running").stop().await.expect("clean stop");
    }

    /// Sends a request; returns the status and the JSON body (Null if none).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body read");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Registers through the dummy UIA stage.
    pub async fn register(&self, username: &str) -> Session {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": username, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {username}: {body}");
        session(&body)
    }

    pub async fn login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
        )
        .await
    }

    pub async fn whoami(&self, token: &str) -> StatusCode {
        self.get("/_matrix/client/v3/account/whoami", Some(token)).await.0
    }
}

pub fn session(body: &Value) -> Session {
    Session {
        user_id: body["user_id"].as_str().expect("user_id").to_owned(),
        token: body["access_token"].as_str().expect("access_token").to_owned(),
        device_id: body["device_id"].as_str().expect("device_id").to_owned(),
    }
}

/// The password stage of UIA for `user_id`.
pub fn password_auth(user_id: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    });
    if let Some(s) = session {
        auth["session"] = json!(s);
    }
    auth
}

/// Asserts a Matrix error response.
#[track_caller]
pub fn assert_error(resp: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(resp.0, status, "body: {}", resp.1);
    assert_eq!(resp.1["errcode"], errcode, "body: {}", resp.1);
    assert!(resp.1["error"].is_string(), "error message missing: {}", resp.1);
}

/// Creates a room and returns its ID.
pub async fn create_room(s: &TestServer, who: &Session, body: Value) -> String {
    let (status, resp) = s.post("/_matrix/client/v3/createRoom", Some(&who.token), body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["room_id"].as_str().unwrap().to_owned()
}

/// Sends an `m.text` message.
pub async fn send(s: &TestServer, who: &Session, room: &str, txn: &str, body: &str) -> (StatusCode, Value) {
    s.put(
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(&who.token),
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

/// Percent-encodes everything but ASCII letters and digits.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Joins a room, asserting success.
pub async fn join(s: &TestServer, who: &Session, room: &str) {
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/join/{room}"), Some(&who.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A successful `/sync` with the given query string.
pub async fn sync(s: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = s.get(&format!("/_matrix/client/v3/sync?{query}"), Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["next_batch"].is_string(), "{body}");
    body
}

/// Sets a room state event (empty state key); it must succeed. Its event ID.
pub async fn put_state(s: &TestServer, who: &Session, room: &str, kind: &str, content: Value) -> String {
    let (status, body) =
        s.put(&format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"), Some(&who.token), content).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}
