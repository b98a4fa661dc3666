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
    _dir: tempfile::TempDir,
}

/// A user logged in on one device.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
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
        for (listener, socket) in config.listeners.iter_mut().zip(&sockets) {
            listener.port = socket.local_addr().expect("bound").port();
        }
        let server = hearth::server::start_on(config.clone(), sockets).await.expect("server starts");
        Self {
            base: format!("http://{}", server.addrs[0]),
            config,
            http: reqwest::Client::new(),
            server: Some(server),
            _dir: dir,
        }
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
        self.server.as_ref().expect("server running")
    }

    /// Stops the server (flushing and closing the database) and starts it
    /// again on the same database.
    pub async fn restart(&mut self) {
        self.server.take().expect("server running").stop().await.expect("clean stop");
        let server = hearth::server::start(self.config.clone()).await.expect("server restarts");
        self.base = format!("http://{}", server.addrs[0]);
        self.server = Some(server);
    }

    /// Stops the server, keeping its database for [`TestServer::start_again`].
    pub async fn stop_for_now(&mut self) {
        self.server.take().expect("server running").stop().await.expect("clean stop");
    }

    /// Starts a server stopped with [`TestServer::stop_for_now`] on its database and ports.
    pub async fn start_again(&mut self) {
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

/// Sets a room state event (empty state key); it must succeed.
pub async fn put_state(s: &TestServer, who: &Session, room: &str, kind: &str, content: Value) {
    let (status, body) =
        s.put(&format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"), Some(&who.token), content).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
