//! Fault injection between federating test servers: server i reaches
//! server j through its own TCP proxy on 127.0.0.1 (named by server i's
//! resolve overrides), which passes TLS through untouched. A test cuts a
//! link (open connections dropped, new ones refused) and restores it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{net::TcpListener, task::JoinSet};

use super::{TestFederation, server_name};

#[derive(Default)]
struct Link {
    /// The server the link leads to (known once the servers run).
    target: Option<SocketAddr>,
    cut: bool,
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
        Self::start_with(n, |_, _| {}).await
    }

    /// [`Links::start`] with `adjust(i, config)` applied too.
    pub async fn start_with(
        n: usize,
        adjust: impl Fn(usize, &mut hearth::config::Config),
    ) -> (TestFederation, Links) {
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
        let fed = TestFederation::start_with(n, |i, config| {
            for to in (0..n).filter(|to| *to != i) {
                config
                    .federation
                    .resolve_overrides
                    .insert(server_name(to).try_into().expect("server name"), through[&(i, to)]);
            }
            // A link back up is tried again soon.
            config.federation.destination_min_retry_interval_ms = 50;
            config.federation.destination_max_retry_interval_ms = 200;
            adjust(i, config);
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

    /// Restores every link.
    pub fn heal(&self) {
        for (_, link) in self.links.values() {
            link.lock().expect("link").cut = false;
        }
    }

    fn set(&self, a: &[usize], b: &[usize], cut: bool) {
        for (&(from, to), (_, link)) in &self.links {
            if (a.contains(&from) && b.contains(&to)) || (b.contains(&from) && a.contains(&to)) {
                let mut link = link.lock().expect("link");
                link.cut = cut;
                if cut {
                    link.open.abort_all();
                }
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
        state.open.spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        // Finished connections are collected as new ones come.
        while state.open.try_join_next().is_some() {}
    }
}
