//! Fault injection between federating test servers: server i reaches
//! server j through its own TCP proxy on 127.0.0.1 (named by server i's
//! resolve overrides), which passes TLS through untouched. A test cuts a
//! link (open connections dropped, new ones refused), slows it (every
//! chunk of bytes held back for a while, each way) and restores it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    task::JoinSet,
};

use super::{TestFederation, server_name};

#[derive(Default)]
struct Link {
    /// The server the link leads to (known once the servers run).
    target: Option<SocketAddr>,
    cut: bool,
    /// How long each chunk of bytes is held back, each way.
    delay: Duration,
    /// The connections passing through, aborted when the link is cut.
    open: JoinSet<()>,
}

/// A link's proxy address, and the link.
type Proxied = (SocketAddr, Arc<Mutex<Link>>);

/// Every directed link between `n` servers.
pub struct Links {
    links: BTreeMap<(usize, usize), Proxied>,
    _proxies: JoinSet<()>,
}

impl Links {
    /// `n` servers federating through proxies.
    pub async fn start(n: usize) -> (TestFederation, Links) {
        Self::launch(n, &[]).await
    }

    /// [`Links::start`], the servers numbered in `processes` running as
    /// processes of their own ([`TestFederation::launch`]).
    pub async fn launch(n: usize, processes: &[usize]) -> (TestFederation, Links) {
        let mut links = BTreeMap::new();
        let mut proxies = JoinSet::new();
        for from in 0..n {
            for to in (0..n).filter(|to| *to != from) {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("bound");
                let link = Arc::new(Mutex::new(Link::default()));
                proxies.spawn(proxy(listener, link.clone()));
                links.insert((from, to), (addr, link));
            }
        }
        let through: BTreeMap<(usize, usize), SocketAddr> =
            links.iter().map(|(pair, (addr, _))| (*pair, *addr)).collect();
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
        for ((_, to), (_, link)) in &links {
            link.lock().expect("link").target = Some(fed.federation_addrs[*to]);
        }
        (fed, Links { links, _proxies: proxies })
    }

    /// Cuts the links both ways between every server of `a` and every one of `b`.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.set(a, b, true);
    }

    /// Holds back every chunk of bytes between each server of `a` and
    /// each of `b` for `delay`, each way (connections opened from now on).
    pub fn slow(&self, a: &[usize], b: &[usize], delay: Duration) {
        self.each(a, b, |link| link.delay = delay);
    }

    /// Restores every link: none cut, none slowed.
    pub fn heal(&self) {
        for (_, link) in self.links.values() {
            let mut link = link.lock().expect("link");
            link.cut = false;
            link.delay = Duration::ZERO;
        }
    }

    fn set(&self, a: &[usize], b: &[usize], cut: bool) {
        self.each(a, b, |link| {
            link.cut = cut;
            if cut {
                link.open.abort_all();
            }
        });
    }

    /// `change` applied to each link between a server of `a` and one of `b`, both ways.
    fn each(&self, a: &[usize], b: &[usize], change: impl Fn(&mut Link)) {
        for (&(from, to), (_, link)) in &self.links {
            if (a.contains(&from) && b.contains(&to)) || (b.contains(&from) && a.contains(&to)) {
                change(&mut link.lock().expect("link"));
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
