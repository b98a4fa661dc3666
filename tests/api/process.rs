//! The `hearth` binary as a user runs it: config errors, admin CLI, serve,
//! SIGTERM and kill -9.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

fn hearth(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).current_dir(dir).args(args).env_remove("RUST_LOG").output().expect("hearth runs")
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("hearth-test.toml");
    let db = dir.join("db");
    std::fs::write(
        &path,
        format!("[[listeners]]\naddress = \"127.0.0.1\"\nport = 0\n[database]\npath = \"{}\"\ncache_mb = 8\n{extra}", db.display()),
    )
    .unwrap();
    path
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("colour = \"red\"\n", "colour"),
        ("[registration]\nenabled = \"sometimes\"\n", "enabled"),
        ("[limits]\nmax_request_size = 10\n", "limits.max_request_size"),
    ];
    for (extra, key) in cases {
        let config = write_config(dir.path(), extra);
        let out = hearth(dir.path(), &["--config", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains(key), "{extra}: {stderr}");
        assert!(stderr.contains("hearth-test.toml"), "{extra}: {stderr}");
    }
    // Environment variables are checked the same way.
    let config = write_config(dir.path(), "");
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .env("HEARTH_DATABASE__CACHE_MB", "plenty")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("cache_mb"));
}

#[test]
fn help_explains_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = hearth(dir.path(), &["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["serve", "user", "--config"] {
        assert!(text.contains(word), "{text}");
    }
    let out = hearth(dir.path(), &["user", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["create", "reset-password", "deactivate"] {
        assert!(text.contains(word), "{text}");
    }
}

/// A `hearth serve` process whose log lines are collected.
struct Served {
    child: Child,
    base: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(dir: &Path, config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut served = Self { child, base: String::new(), lines, seen: Vec::new() };
        let line = served.wait_for_line("listening on http://");
        let url = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap();
        served.base = url.to_owned();
        served
    }

    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line with {needle:?}; saw: {:#?}", self.seen);
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "hearth did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A POST that must answer 200; its JSON body.
async fn post_ok(url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = reqwest::Client::new().post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "POST {url}");
    response.json().await.unwrap()
}

async fn login(base: &str, user: &str, password: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn admin_cli_then_serve_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let cfg = config.to_str().unwrap();

    let out =
        hearth(dir.path(), &["--config", cfg, "user", "create", "root", "--password", "pw1", "--admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("@root:localhost"));
    let out = hearth(dir.path(), &["--config", cfg, "user", "create", "root"]);
    assert!(!out.status.success(), "duplicate user must fail");
    let out = hearth(dir.path(), &["--config", cfg, "user", "create", "temp"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("password: "), "generated password printed");
    assert!(
        hearth(dir.path(), &["--config", cfg, "user", "reset-password", "root", "--password", "pw2"])
            .status
            .success()
    );
    assert!(hearth(dir.path(), &["--config", cfg, "user", "deactivate", "@temp:localhost"]).status.success());

    let mut served = Served::start(dir.path(), &config);
    let base = served.base.clone();
    assert_eq!(login(&base, "root", "pw1").await, StatusCode::FORBIDDEN);
    assert_eq!(login(&base, "root", "pw2").await, StatusCode::OK);
    assert_eq!(login(&base, "temp", "anything").await, StatusCode::FORBIDDEN);
    // A room to inspect once the server is stopped.
    let body = post_ok(&format!("{base}/_matrix/client/v3/login"), None, json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "pw2"})).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let created = post_ok(&format!("{base}/_matrix/client/v3/createRoom"), Some(&token), json!({})).await;
    let room_id = created["room_id"].as_str().unwrap().to_owned();
    // One log line per request, without the query string.
    served.wait_for_line("POST /_matrix/client/v3/login 200");
    // While it runs, the admin CLI refuses to touch the database.
    let out = hearth(dir.path(), &["--config", cfg, "user", "create", "late"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    served.signal("-TERM");
    let status = served.wait_exit();
    assert!(status.success(), "{status:?}");
    served.wait_for_line("database flushed");

    // The room's extremities and state hash, from the stopped server's database.
    let out = hearth(dir.path(), &["--config", cfg, "room", "fingerprint", &room_id]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("state hash ") && printed.contains("forward extremities (1):"), "{printed}");
    let out = hearth(dir.path(), &["--config", cfg, "room", "fingerprint", "!nowhere:localhost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no room"));
}

#[tokio::test]
async fn first_start_explains_how_to_create_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut served = Served::start(dir.path(), &config);
    let line = served.wait_for_line("No users yet");
    assert!(
        line.contains("hearth") && line.contains("user create") && line.contains("registration.enabled"),
        "{line}"
    );
    // The command names the config file the server was started with.
    assert!(line.contains(&format!("--config {} user create", config.display())), "{line}");
}

#[tokio::test]
async fn acknowledged_registrations_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[registration]\nenabled = true\n[rate_limits.registration]\nper_second = 100\nburst_count = 100\n\
         [rate_limits.login]\nper_second = 100\nburst_count = 100\n",
    );
    let mut served = Served::start(dir.path(), &config);
    let client = reqwest::Client::new();
    for i in 0..5 {
        let resp = client
            .post(format!("{}/_matrix/client/v3/register", served.base))
            .json(
                &json!({"username": format!("user{i}"), "password": "pw", "auth": {"type": "m.login.dummy"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    served.signal("-KILL");
    served.wait_exit();
    drop(served);

    let served = Served::start(dir.path(), &config);
    for i in 0..5 {
        assert_eq!(login(&served.base, &format!("user{i}"), "pw").await, StatusCode::OK, "user{i} lost");
    }
}

/// Kibibytes of a `/proc/<pid>/status` field (`VmRSS`, `VmHWM`).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_burst_of_registrations_hashes_a_core_at_a_time_and_gives_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[registration]\nenabled = true\n[rate_limits.registration]\nper_second = 1000\nburst_count = 1000\n",
    );
    let served = Served::start(dir.path(), &config);
    let pid = served.child.id();
    let client = reqwest::Client::new();
    let register = |name: String| {
        let request = client
            .post(format!("{}/_matrix/client/v3/register", served.base))
            .json(&json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}));
        async move { request.send().await.unwrap().status() }
    };
    // One registration first, so the baseline includes a hash's own costs.
    assert_eq!(register("warmup".into()).await, StatusCode::OK);
    let baseline = memory_kib(pid, "VmRSS");
    let burst = (0..50).map(|i| register(format!("burst{i}")));
    for status in futures_util::future::join_all(burst).await {
        assert_eq!(status, StatusCode::OK);
    }
    // Each argon2id hash takes ~19 MiB: one per core may run at once (all 50
    // at once took the server from 24 MB to 690 MB).
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let peak = memory_kib(pid, "VmHWM");
    let bound = baseline + cores * 24 * 1024 + 64 * 1024;
    assert!(peak < bound, "peak {peak} KiB, baseline {baseline} KiB, bound {bound} KiB");
    // ... and the hashes' memory goes back to the system afterwards.
    let after = memory_kib(pid, "VmRSS");
    assert!(after < baseline + 48 * 1024, "{after} KiB after the burst, {baseline} KiB before");
}

/// `hearth search reindex` builds the index again from a stopped server's
/// database (here after the index directory was lost); `hearth database
/// compact` rewrites the database's files and loses nothing.
#[tokio::test]
async fn search_reindex_and_database_compact_on_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let cfg = config.to_str().unwrap();
    let out = hearth(dir.path(), &["--config", cfg, "user", "create", "root", "--password", "pw", "--admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut served = Served::start(dir.path(), &config);
    let base = served.base.clone();
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "pw"});
    let token =
        post_ok(&format!("{base}/_matrix/client/v3/login"), None, login.clone()).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    let room =
        post_ok(&format!("{base}/_matrix/client/v3/createRoom"), Some(&token), json!({})).await["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let sent = reqwest::Client::new()
        .put(format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"))
        .bearer_auth(&token)
        .json(&json!({"msgtype": "m.text", "body": "quince marmalade"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    let event_id = sent.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    served.signal("-TERM");
    assert!(served.wait_exit().success());
    drop(served);

    std::fs::remove_dir_all(dir.path().join("db").join("search")).unwrap();
    let out = hearth(dir.path(), &["--config", cfg, "search", "reindex"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("the search index holds 1 documents"), "{printed}");
    let out = hearth(dir.path(), &["--config", cfg, "database", "compact"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("compacted "));

    let served = Served::start(dir.path(), &config);
    let token =
        post_ok(&format!("{}/_matrix/client/v3/login", served.base), None, login).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
    let found = post_ok(
        &format!("{}/_matrix/client/v3/search", served.base),
        Some(&token),
        json!({"search_categories": {"room_events": {"search_term": "marmalade"}}}),
    )
    .await;
    assert_eq!(
        found["search_categories"]["room_events"]["results"][0]["result"]["event_id"],
        event_id.as_str()
    );
    let event = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v3/rooms/{room}/event/{event_id}", served.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(event.status(), StatusCode::OK);
    assert_eq!(event.json::<Value>().await.unwrap()["content"]["body"], "quince marmalade");
}
