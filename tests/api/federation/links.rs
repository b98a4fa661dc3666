//! Fault injection between federating test servers. Server i reaches
//! server j through a link of two hops on 127.0.0.1, named by server i's
//! resolve overrides:
//!
//! - a TCP proxy, which passes bytes through untouched unless the link is
//!   cut (open connections dropped, new ones refused) or slowed (every
//!   chunk of bytes held back for a while, each way);
//! - a relay, which ends TLS with server j's certificate (from the test
//!   CA) and passes each request on to server j, unless the link
//!   duplicates (each request delivered twice at once, the first answer
//!   returned) or reorders (each transaction answered at once for server
//!   j and held; the held ones delivered newest first).
//!
//! A test sets these per link and restores them all with [`Links::heal`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use reqwest::StatusCode;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::Notify,
    task::JoinSet,
};

use super::{TestFederation, server_name};

#[derive(Default)]
struct Link {
    /// The link's relay (known once the servers run).
    target: Option<SocketAddr>,
    cut: bool,
    /// How long each chunk of bytes is held back, each way.
    delay: Duration,
    /// The connections passing through, aborted when the link is cut.
    open: JoinSet<()>,
}

/// A link's proxy address, the link, and its relay.
type Proxied = (SocketAddr, Arc<Mutex<Link>>, Arc<Relay>);

/// Every directed link between `n` servers.
pub struct Links {
    links: BTreeMap<(usize, usize), Proxied>,
    _tasks: JoinSet<()>,
}

impl Links {
    /// `n` servers federating through links.
    pub async fn start(n: usize) -> (TestFederation, Links) {
        Self::launch(n, &[]).await
    }

    /// [`Links::start`], the servers numbered in `processes` running as
    /// processes of their own ([`TestFederation::launch`]).
    pub async fn launch(n: usize, processes: &[usize]) -> (TestFederation, Links) {
        let mut proxies = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for from in 0..n {
            for to in (0..n).filter(|to| *to != from) {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("bound");
                let link = Arc::new(Mutex::new(Link::default()));
                tasks.spawn(proxy(listener, link.clone()));
                proxies.insert((from, to), (addr, link));
            }
        }
        let through: BTreeMap<(usize, usize), SocketAddr> =
            proxies.iter().map(|(pair, (addr, _))| (*pair, *addr)).collect();
        let fed = TestFederation::launch(n, processes, |i, config| {
            for to in (0..n).filter(|to| *to != i) {
                config
                    .federation
                    .resolve_overrides
                    .insert(server_name(to).try_into().expect("server name"), through[&(i, to)]);
            }
            // A link back up is tried again soon.
            config.federation.destination_min_retry_interval_ms = 50;
            config.federation.destination_max_retry_interval_ms = 200;
        })
        .await;
        let mut links = BTreeMap::new();
        for ((from, to), (addr, link)) in proxies {
            let relay = Arc::new(Relay {
                client: fed.https(),
                base: fed.federation_url(to),
                state: Mutex::default(),
                held_more: Notify::new(),
            });
            let (certificate, key) = fed.certificate(to);
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(certificate, key)
                .await
                .expect("relay certificate");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            link.lock().expect("link").target = Some(listener.local_addr().expect("bound"));
            let listener = listener.into_std().expect("listener");
            let server = axum_server::from_tcp_rustls(listener, tls).expect("relay");
            let app = axum::Router::new().fallback(pass).with_state(relay.clone());
            tasks.spawn(async move {
                let _ = server.serve(app.into_make_service()).await;
            });
            links.insert((from, to), (addr, link, relay));
        }
        (fed, Links { links, _tasks: tasks })
    }

    /// Cuts the links both ways between every server of `a` and every one of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts the links from each server of `from` to each of `to` (one way:
    /// what the servers of `to` send still arrives).
    pub fn cut(&self, from: &[usize], to: &[usize]) {
        self.each(from, to, |link, _| {
            link.cut = true;
            link.open.abort_all();
        });
    }

    /// Holds back every chunk of bytes between each server of `a` and
    /// each of `b` for `delay`, each way (connections opened from now on).
    pub fn slow(&self, a: &[usize], b: &[usize], delay: Duration) {
        self.each(a, b, |link, _| link.delay = delay);
        self.each(b, a, |link, _| link.delay = delay);
    }

    /// Delivers each request from a server of `from` to one of `to` twice, at once.
    pub fn duplicate(&self, from: &[usize], to: &[usize]) {
        self.each(from, to, |_, relay| relay.state.lock().expect("relay").duplicate = true);
    }

    /// Holds the transactions from each server of `from` to each of `to`
    /// (answering them at once for the receiver) until `window` are held,
    /// then delivers those newest first. [`Links::release`] and
    /// [`Links::heal`] deliver what is held before that.
    pub fn reorder(&self, from: &[usize], to: &[usize], window: usize) {
        self.each(from, to, |_, relay| relay.state.lock().expect("relay").window = window);
    }

    /// Waits until the link from server `from` to server `to` holds
    /// transactions of `pdus` PDUs in all, or fails after 30 s.
    pub async fn wait_held(&self, from: usize, to: usize, pdus: usize) {
        let relay = &self.links[&(from, to)].2;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let more = relay.held_more.notified();
            let held: usize = relay.state.lock().expect("relay").held.iter().map(|t| t.pdus).sum();
            if held >= pdus {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                tokio::time::timeout(left, more).await.is_ok(),
                "hs{} -> hs{} holds {held} PDUs, not {pdus}",
                from + 1,
                to + 1
            );
        }
    }

    /// Delivers every held transaction, newest first, and returns once
    /// each has been answered.
    pub async fn release(&self) {
        for (_, _, relay) in self.links.values() {
            let held = std::mem::take(&mut relay.state.lock().expect("relay").held);
            relay.deliver_held(held).await;
        }
    }

    /// Restores every link: none cut, slowed, duplicating or reordering;
    /// what was held is delivered (newest first) from now on.
    pub fn heal(&self) {
        for (_, link, relay) in self.links.values() {
            let mut link = link.lock().expect("link");
            link.cut = false;
            link.delay = Duration::ZERO;
            let held = std::mem::take(&mut *relay.state.lock().expect("relay"));
            let relay = relay.clone();
            tokio::spawn(async move { relay.deliver_held(held.held).await });
        }
    }

    /// `change` applied to each link from a server of `from` to one of `to`.
    fn each(&self, from: &[usize], to: &[usize], change: impl Fn(&mut Link, &Relay)) {
        for (&(i, j), (_, link, relay)) in &self.links {
            if from.contains(&i) && to.contains(&j) {
                change(&mut link.lock().expect("link"), relay);
            }
        }
    }
}

async fn proxy(listener: TcpListener, link: Arc<Mutex<Link>>) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let mut state = link.lock().expect("link");
        let Some(target) = state.target.filter(|_| !state.cut) else {
            continue; // dropped: the connection is refused
        };
        let delay = state.delay;
        state.open.spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
            if delay.is_zero() {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            } else {
                let (from_in, to_in) = inbound.split();
                let (from_out, to_out) = outbound.split();
                tokio::join!(slowly(from_in, to_out, delay), slowly(from_out, to_in, delay));
            }
        });
        // Finished connections are collected as new ones come.
        while state.open.try_join_next().is_some() {}
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn slowly(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, delay: Duration) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buffer).await {
        tokio::time::sleep(delay).await; // the link's latency, not a wait for anything
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// The TLS-terminating hop of a link.
struct Relay {
    /// Trusts the test CA; finds the receiver by name, straight.
    client: reqwest::Client,
    /// The receiver's federation URL.
    base: String,
    state: Mutex<Relaying>,
    /// Woken whenever a transaction is held.
    held_more: Notify,
}

#[derive(Default)]
struct Relaying {
    duplicate: bool,
    /// How many transactions are held before they are delivered; 0: none.
    window: usize,
    held: Vec<Passed>,
}

/// A request as it came, to be passed on unchanged (its X-Matrix
/// signature covers method, URI and body).
#[derive(Clone)]
struct Passed {
    method: http::Method,
    uri: String,
    headers: http::HeaderMap,
    body: Bytes,
    /// How many PDUs it carries (a transaction's).
    pdus: usize,
    duplicate: bool,
}

/// Passes one request on (twice if the link duplicates), or holds it.
async fn pass(State(relay): State<Arc<Relay>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut headers = parts.headers;
    for hop in [http::header::HOST, http::header::CONTENT_LENGTH, http::header::CONNECTION] {
        headers.remove(hop);
    }
    let is_transaction = parts.method == http::Method::PUT && uri.starts_with("/_matrix/federation/v1/send/");
    let pdus = if is_transaction {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|b| b["pdus"].as_array().map(Vec::len))
            .unwrap_or(0)
    } else {
        0
    };
    let request = {
        let mut state = relay.state.lock().expect("relay");
        let request = Passed { method: parts.method, uri, headers, body, pdus, duplicate: state.duplicate };
        if is_transaction && state.window > 0 {
            state.held.push(request);
            if state.held.len() >= state.window {
                let held = std::mem::take(&mut state.held);
                let relay = relay.clone();
                tokio::spawn(async move { relay.deliver_held(held).await });
            }
            relay.held_more.notify_waiters();
            // Answered for the receiver: nothing in it refused.
            return axum::Json(serde_json::json!({"pdus": {}})).into_response();
        }
        request
    };
    match relay.deliver(&request).await {
        Ok(response) => {
            let status = response.status();
            let mut answer = Response::builder().status(status.as_u16());
            if let Some(kind) = response.headers().get(http::header::CONTENT_TYPE) {
                answer = answer.header(http::header::CONTENT_TYPE, kind);
            }
            let body = response.bytes().await.unwrap_or_default();
            answer.body(Body::from(body)).expect("response")
        }
        // The receiver is down: the sender sees a failure, as it would.
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

impl Relay {
    /// `request` delivered (twice at once if it was to be duplicated); the first answer.
    async fn deliver(&self, request: &Passed) -> reqwest::Result<reqwest::Response> {
        let once = || {
            self.client
                .request(request.method.clone(), format!("{}{}", self.base, request.uri))
                .headers(request.headers.clone())
                .body(request.body.clone())
                .send()
        };
        if request.duplicate {
            let (first, _) = tokio::join!(once(), once());
            first
        } else {
            once().await
        }
    }

    /// Held transactions delivered newest first, each tried until the
    /// receiver answers it (it may be restarting) or for 30 s.
    async fn deliver_held(&self, mut held: Vec<Passed>) {
        while let Some(request) = held.pop() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match self.deliver(&request).await {
                    Ok(response) if !response.status().is_server_error() => break,
                    _ if Instant::now() > deadline => break, // lost, as on a network
                    // A network device's retry interval, not a wait for anything.
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
}
