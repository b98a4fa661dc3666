//! Federation tests: several Hearth servers on 127.0.0.1, each with a
//! client listener (plain HTTP) and a federation listener (HTTPS with a
//! certificate from a CA the test makes), finding each other through
//! `federation.resolve_overrides`.

mod devices;
mod edus;
mod forged;
mod keys;
mod links;
mod media;
mod oracle;
mod partitions;
mod property;
mod rooms;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use hearth::config::{Listener, Resource, Tls};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::TestServer;

pub struct TestFederation {
    pub servers: Vec<TestServer>,
    /// Each server's federation (HTTPS) address.
    pub federation_addrs: Vec<SocketAddr>,
    pub ca_file: PathBuf,
    certs: tempfile::TempDir,
}

/// A test CA and a certificate for each name.
struct Certificates {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Certificates {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Hearth test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("CA key");
        Self { ca: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate") }
    }

    /// A certificate for `name` and its key, in PEM.
    fn issue(&self, name: &str) -> (String, String) {
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

impl TestFederation {
    /// `n` servers named hs1.test, hs2.test, …
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_, _| {}).await
    }

    /// Like [`TestFederation::start`], with `adjust(i, config)` applied to server i's configuration.
    pub async fn start_with(n: usize, adjust: impl Fn(usize, &mut hearth::config::Config)) -> Self {
        Self::launch(n, &[], adjust).await
    }

    /// Like [`TestFederation::start_with`], the servers numbered in
    /// `processes` each run as a `hearth serve` process of its own
    /// ([`TestServer::spawn_on`]: reached over HTTP only, can be killed).
    pub async fn launch(
        n: usize,
        processes: &[usize],
        adjust: impl Fn(usize, &mut hearth::config::Config),
    ) -> Self {
        // HEARTH_TEST_LOG=hearth=debug shows the in-process servers' logs.
        if let Ok(filter) = std::env::var("HEARTH_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let certs_dir = tempfile::tempdir().expect("temp dir");
        let certificates = Certificates::new();
        let ca_file = certs_dir.path().join("ca.pem");
        std::fs::write(&ca_file, certificates.ca.pem()).expect("write CA");
        let mut sockets = Vec::new();
        for _ in 0..n {
            let client = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let federation = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            sockets.push((client, federation));
        }
        let federation_addrs: Vec<SocketAddr> =
            sockets.iter().map(|(_, federation)| federation.local_addr().expect("bound")).collect();
        let overrides: BTreeMap<_, _> =
            (0..n).map(|i| (server_name(i).try_into().expect("server name"), federation_addrs[i])).collect();
        let mut servers = Vec::new();
        for (i, (client, federation)) in sockets.into_iter().enumerate() {
            let name = server_name(i);
            let (cert, key) = certificates.issue(&name);
            let (cert_path, key_path) = certificate_files(certs_dir.path(), &name);
            std::fs::write(&cert_path, cert).expect("write certificate");
            std::fs::write(&key_path, key).expect("write key");
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = TestServer::test_config(dir.path());
            config.server_name = name.as_str().try_into().expect("server name");
            config.listeners = vec![
                Listener {
                    address: "127.0.0.1".parse().unwrap(),
                    port: 0,
                    x_forwarded: false,
                    resources: vec![Resource::Client, Resource::Media],
                    tls: None,
                },
                Listener {
                    address: "127.0.0.1".parse().unwrap(),
                    port: 0,
                    x_forwarded: false,
                    resources: vec![Resource::Federation, Resource::Keys],
                    tls: Some(Tls { certificate: cert_path, key: key_path }),
                },
            ];
            config.federation.ca_file = Some(ca_file.clone());
            config.federation.ip_range_blacklist = vec![];
            config.federation.resolve_overrides = overrides.clone();
            adjust(i, &mut config);
            let sockets = vec![client, federation];
            servers.push(if processes.contains(&i) {
                TestServer::spawn_on(config, sockets, dir).await
            } else {
                TestServer::start_on(config, sockets, dir).await
            });
        }
        Self { servers, federation_addrs, ca_file, certs: certs_dir }
    }

    /// An HTTPS client that trusts the test CA and finds every server by name.
    pub fn https(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_file).expect("CA file");
        let mut builder = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).expect("CA"))
            .pool_max_idle_per_host(0);
        for (i, addr) in self.federation_addrs.iter().enumerate() {
            builder = builder.resolve(&server_name(i), *addr);
        }
        builder.build().expect("client")
    }

    /// Server `i`'s certificate and key files (from the test CA).
    pub fn certificate(&self, i: usize) -> (PathBuf, PathBuf) {
        certificate_files(self.certs.path(), &server_name(i))
    }

    /// The base URL of server `i`'s federation listener.
    pub fn federation_url(&self, i: usize) -> String {
        format!("https://{}:{}", server_name(i), self.federation_addrs[i].port())
    }
}

/// Where the certificate and key for `name` are written.
fn certificate_files(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")))
}

pub fn server_name(i: usize) -> String {
    format!("hs{}.test", i + 1)
}

/// An X-Matrix header for `method uri` with `body`, signed as `origin`.
pub fn x_matrix(
    method: &str,
    uri: &str,
    body: Option<&Value>,
    origin: &str,
    destination: &str,
    key: &ruma::signatures::Ed25519KeyPair,
) -> String {
    use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    let request = http::Request::builder().method(method).uri(uri).body(bytes).unwrap();
    let input = XMatrixSigningInput::new(origin.try_into().unwrap(), destination.try_into().unwrap(), key);
    XMatrix::sign_http_request(&request, input).unwrap().to_string()
}

impl TestFederation {
    /// Sends a transaction of `pdus` from server `from` to server `to`,
    /// signed with `from`'s key, as `from` would.
    pub async fn send_transaction(
        &self,
        from: usize,
        to: usize,
        txn: &str,
        pdus: Vec<Value>,
    ) -> (StatusCode, Value) {
        let uri = format!("/_matrix/federation/v1/send/{txn}");
        let body = serde_json::json!({
            "origin": server_name(from),
            "origin_server_ts": hearth::util::now_ms(),
            "pdus": pdus,
        });
        let key = &self.servers[from].server().services.keys.keypair;
        let authorization = x_matrix("PUT", &uri, Some(&body), &server_name(from), &server_name(to), key);
        let response = self
            .https()
            .put(format!("{}{uri}", self.federation_url(to)))
            .header("authorization", authorization)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        read(response).await
    }
}

impl TestFederation {
    /// `GET uri` of server `to`, signed as server `from`.
    pub async fn get_as(&self, from: usize, to: usize, uri: &str) -> (StatusCode, Value) {
        let key = &self.servers[from].server().services.keys.keypair;
        let authorization = x_matrix("GET", uri, None, &server_name(from), &server_name(to), key);
        let request = self.https().get(format!("{}{uri}", self.federation_url(to)));
        read(request.header("authorization", authorization).send().await.expect("request sent")).await
    }
}

/// Syncs `who` from `since` (an initial sync without) until `wanted`
/// finds what it waits for in a response, or fails after 30 s. Each sync
/// is a long poll: this waits on the server, not on a timer.
pub async fn wait_sync<T>(
    s: &crate::common::TestServer,
    who: &crate::common::Session,
    since: Option<String>,
    what: &str,
    wanted: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut since = since;
    loop {
        let query = since.as_ref().map_or("timeout=0".to_owned(), |t| format!("timeout=2000&since={t}"));
        let (status, body) = s.get(&format!("/_matrix/client/v3/sync?{query}"), Some(&who.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(found) = wanted(&body) {
            return found;
        }
        since = body["next_batch"].as_str().map(str::to_owned);
        assert!(std::time::Instant::now() < deadline, "{} never got {what}", who.user_id);
    }
}

/// Waits until `who` on `s` can fetch event `id` of `room` (polled; the
/// event may be anywhere in the timeline), or fails after `seconds`.
pub async fn wait_for_id(
    s: &crate::common::TestServer,
    who: &crate::common::Session,
    room: &str,
    id: &str,
    seconds: u64,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{id}");
    while s.get(&path, Some(&who.token)).await.0 != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "{} has not got {id} in {seconds} s", who.user_id);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await; // the next poll
    }
}

/// `who` on `s` invites `user` to `room`; the invite must succeed.
pub async fn invite(s: &crate::common::TestServer, who: &crate::common::Session, room: &str, user: &str) {
    let path = format!("/_matrix/client/v3/rooms/{room}/invite");
    let (status, body) = s.post(&path, Some(&who.token), serde_json::json!({"user_id": user})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `who` on `s` joins `room` through `via`; the join must succeed.
pub async fn join_via(s: &crate::common::TestServer, who: &crate::common::Session, room: &str, via: &str) {
    let path = format!("/_matrix/client/v3/join/{}?via={via}", crate::common::urlencode(room));
    let (status, body) = s.post(&path, Some(&who.token), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{} joining {room} via {via}: {body}", who.user_id);
}

/// A sync token for `who` as of now.
pub async fn now_token(s: &crate::common::TestServer, who: &crate::common::Session) -> Option<String> {
    let (status, body) = s.get("/_matrix/client/v3/sync?timeout=0", Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["next_batch"].as_str().map(str::to_owned)
}

/// Reads a response's status and JSON body (Null when there is none).
pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}
