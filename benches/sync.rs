//! Sync benchmarks over HTTP (release build): `cargo bench --bench sync`.
//!
//! - latency from a `send` returning to the other clients' long-poll
//!   `/sync` returning, with 1, 100 and 1,000 clients syncing at once
//!   (p50, p99 over every client and message);
//! - initial sync of a user in 100 rooms of E events each;
//! - an incremental sync with nothing new for a user in 1,000 rooms;
//! - (`--only sliding`) the same latency over simplified sliding sync
//!   (MSC4186): each client long-polls its own connection, a list of its
//!   first 20 rooms with `timeline_limit` 1, as Element X does;
//! - (in-process only, `--only backfill`) the latency above for 100
//!   clients while 10,000 historical events are appended to their room
//!   (backfill), against the same without.
//!
//! Without arguments it starts Hearth in-process. `-- --http URL SECRET`
//! measures any homeserver with Synapse's shared-secret registration;
//! `--clients 1,100`, `--events 100` and `--rooms 1000` change the sizes,
//! `--only latency,initial,empty` picks parts.
//!
//! Every timed sync carries its own no-op filter (an event type that never
//! occurs), so a server's response cache (Synapse keeps identical requests'
//! answers for a while) cannot answer it without doing the work.

#[path = "http_client.rs"]
mod http_client;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use http_client::{create_http_room, create_room, register, send_http};
use serde_json::{Value, json};

struct Sizes {
    /// Which parts to run: latency, initial, empty (all by default).
    only: Vec<String>,
    clients: Vec<usize>,
    initial_rooms: usize,
    events: usize,
    rooms: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let sizes = Sizes {
        only: arg("--only").map_or_else(
            || vec!["latency".into(), "initial".into(), "empty".into()],
            |o| o.split(',').map(str::to_owned).collect(),
        ),
        clients: arg("--clients")
            .map_or(vec![1, 100, 1000], |c| c.split(',').map(|n| n.parse().unwrap()).collect()),
        initial_rooms: 100,
        events: arg("--events").map_or(1000, |e| e.parse().unwrap()),
        rooms: arg("--rooms").map_or(1000, |r| r.parse().unwrap()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        if let Some(i) = args.iter().position(|a| a == "--http") {
            run(&args[i + 1], &args[i + 2], &sizes).await;
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = hearth::config::Config::defaults();
        config.database.path = dir.path().join("db");
        config.listeners[0].port = 0;
        config.registration.shared_secret = Some("bench-secret".into());
        for rate in config.rate_limits.each_mut() {
            rate.per_second = 1e9;
            rate.burst_count = 1_000_000_000;
        }
        let server = hearth::server::start(config).await.unwrap();
        let url = format!("http://{}", server.addrs[0]);
        run(&url, "bench-secret", &sizes).await;
        if sizes.only.iter().any(|o| o == "backfill") {
            backfill_latency(&server, &url, "bench-secret").await;
        }
        server.stop().await.unwrap();
    });
}

async fn run(url: &str, secret: &str, sizes: &Sizes) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(2000).build().unwrap();
    let run = format!("s{}", std::process::id());
    let wanted = |part: &str| sizes.only.iter().any(|o| o == part);
    if wanted("latency") {
        for &n in &sizes.clients {
            latency(&client, url, secret, &format!("{run}c{n}"), n, Protocol::V3, |_| None).await;
        }
    }
    if wanted("sliding") {
        for &n in &sizes.clients {
            latency(&client, url, secret, &format!("{run}s{n}"), n, Protocol::Sliding, |_| None).await;
        }
    }
    if wanted("initial") {
        initial_sync(&client, url, secret, &run, sizes.initial_rooms, sizes.events).await;
    }
    if wanted("empty") {
        empty_sync(&client, url, secret, &run, sizes.rooms).await;
    }
}

async fn get_json(client: &reqwest::Client, url: String, token: &str) -> Value {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn sync(client: &reqwest::Client, url: &str, token: &str, query: &str) -> Value {
    get_json(client, format!("{url}/_matrix/client/v3/sync?{query}"), token).await
}

async fn join(client: &reqwest::Client, url: &str, token: &str, room: &str) {
    let resp = client
        .post(format!("{url}/_matrix/client/v3/join/{room}"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "join failed: {}", resp.text().await.unwrap_or_default());
}

/// Registers `n` users, twenty at a time.
async fn register_many(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let mut tokens = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let names: Vec<String> = chunk.iter().map(|i| format!("{prefix}u{i}")).collect();
        tokens.extend(join_all(names.iter().map(|name| register(client, url, secret, name))).await);
    }
    tokens
}

/// An inline filter that changes nothing but makes the request unique.
fn unique_filter(i: usize) -> String {
    let filter = format!(r#"{{"room":{{"timeline":{{"not_types":["org.hearth.bench.{i}"]}}}}}}"#);
    format!("filter={}", filter.bytes().map(|b| format!("%{b:02X}")).collect::<String>())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// How a client syncs.
#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    /// `/v3/sync` (timeline limit 1).
    V3,
    /// Simplified sliding sync: a list of the first 20 rooms, timeline 1.
    Sliding,
}

const SLIDING_PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const ONE_EVENT: &str = "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D";

impl Protocol {
    /// One sync (a long poll for `timeout` ms from `since`, if given): its
    /// next token and the timeline it brought of `room`.
    async fn sync(
        self,
        client: &reqwest::Client,
        url: &str,
        token: &str,
        since: Option<&str>,
        timeout: u64,
        room: &str,
    ) -> (String, Value) {
        match self {
            Protocol::V3 => {
                let since = since.map(|s| format!("since={s}&")).unwrap_or_default();
                let response =
                    sync(client, url, token, &format!("{since}timeout={timeout}&{ONE_EVENT}")).await;
                let events = response["rooms"]["join"][room]["timeline"]["events"].clone();
                (response["next_batch"].as_str().unwrap().to_owned(), events)
            }
            Protocol::Sliding => {
                let pos = since.map(|s| format!("&pos={s}")).unwrap_or_default();
                let body = json!({"conn_id": "bench", "lists": {"all": {"ranges": [[0, 19]], "timeline_limit": 1,
                    "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]]}}});
                let resp = client
                    .post(format!("{url}{SLIDING_PATH}?timeout={timeout}{pos}"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let response: Value = resp.json().await.unwrap();
                assert!(status.is_success(), "{status}: {response}");
                (response["pos"].as_str().unwrap().to_owned(), response["rooms"][room]["timeline"].clone())
            }
        }
    }
}

/// One sender, `n` receivers in one room, long-polling; each message's
/// arrival is timed at every receiver. `background` may start work in the
/// room (given its ID) that runs during the rounds and reports at the end.
async fn latency(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    prefix: &str,
    n: usize,
    protocol: Protocol,
    background: impl FnOnce(&str) -> Option<tokio::task::JoinHandle<String>>,
) {
    let sender = register(client, url, secret, &format!("{prefix}sender")).await;
    let room = create_room(client, url, &sender, json!({"preset": "public_chat"})).await;
    let receivers = register_many(client, url, secret, prefix, n).await;
    for chunk in receivers.chunks(20) {
        join_all(chunk.iter().map(|t| join(client, url, t, &room))).await;
    }
    let mut since: Vec<String> = Vec::with_capacity(n);
    for chunk in receivers.chunks(50) {
        let batch = join_all(chunk.iter().map(|t| protocol.sync(client, url, t, None, 0, &room))).await;
        since.extend(batch.into_iter().map(|(next, _)| next));
    }
    let rounds = if n >= 1000 { 10 } else { 30 };
    let mut samples = Vec::with_capacity(rounds * n);
    let background = background(&room);
    for round in 0..rounds {
        let body = format!("round {round}");
        let polls: Vec<_> = receivers
            .iter()
            .zip(&since)
            .map(|(token, since)| {
                let (client, url, token, since, room, body) = (
                    client.clone(),
                    url.to_owned(),
                    token.clone(),
                    since.clone(),
                    room.clone(),
                    body.clone(),
                );
                tokio::spawn(async move {
                    let mut since = since;
                    loop {
                        let (next, events) =
                            protocol.sync(&client, &url, &token, Some(&since), 30_000, &room).await;
                        let arrived = Instant::now();
                        since = next;
                        if events.as_array().is_some_and(|e| e.iter().any(|e| e["content"]["body"] == body)) {
                            return (arrived, since);
                        }
                    }
                })
            })
            .collect();
        // Let the polls reach the server before sending (a poll that comes
        // late returns at once and would only flatter the figure).
        tokio::time::sleep(Duration::from_millis(200 + n as u64)).await;
        send_http_body(client, url, &sender, &room, &format!("{prefix}-{round}"), &body).await;
        let sent = Instant::now();
        for (i, poll) in join_all(polls).await.into_iter().enumerate() {
            let (arrived, next) = poll.unwrap();
            samples.push(arrived.saturating_duration_since(sent));
            since[i] = next;
        }
    }
    samples.sort();
    let during = match background {
        Some(work) => format!(", during {}", work.await.unwrap()),
        None => String::new(),
    };
    let how = match protocol {
        Protocol::V3 => "/sync",
        Protocol::Sliding => "sliding sync",
    };
    println!(
        "send → long-poll {how}, {n} syncing client(s), {} samples: p50 {:.1} ms, p99 {:.1} ms{during}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
}

/// The latency of 100 clients without, then with, 10,000 historical events
/// appended to their room meanwhile (as backfill would), in-process.
async fn backfill_latency(server: &hearth::server::RunningServer, url: &str, secret: &str) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(2000).build().unwrap();
    let run = format!("b{}", std::process::id());
    latency(&client, url, secret, &format!("{run}quiet"), 100, Protocol::V3, |_| None).await;
    let services = server.services.clone();
    latency(&client, url, secret, &format!("{run}busy"), 100, Protocol::V3, |room| {
        let room = ruma::OwnedRoomId::try_from(room).unwrap();
        Some(tokio::spawn(append_history(services, room, 10_000)))
    })
    .await;
}

/// Appends `n` historical events (a chain from a gap, by the room's
/// creator) through the pipeline, as backfill does; reports the rate.
async fn append_history(
    services: std::sync::Arc<hearth::services::Services>,
    room: ruma::OwnedRoomId,
    n: usize,
) -> String {
    use hearth::rooms::pipeline::{Origin, Outcome, StateBefore};
    let rooms = &services.rooms;
    let (short, record) = rooms.room(&room).unwrap().unwrap();
    let rules = record.rules().unwrap();
    let create = rooms.current_state_event(short, "m.room.create", "").unwrap().unwrap();
    let member = rooms.current_state_event(short, "m.room.member", create.sender.as_str()).unwrap().unwrap();
    let levels = rooms.current_state_event(short, "m.room.power_levels", "").unwrap().unwrap();
    let state = (*rooms.current_state(&record).unwrap()).clone();
    let mut prev = ruma::OwnedEventId::try_from("$a-gap-in-the-history-the-backfill-starts-at").unwrap();
    let started = Instant::now();
    for i in 0..n {
        let event = json!({
            "room_id": room, "sender": create.sender, "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": format!("old {i}")},
            "origin_server_ts": 1_000_000 + i, "prev_events": [prev],
            "auth_events": [member.event_id, levels.event_id], "depth": i + 1,
        });
        let (event_id, object) = rooms.finish(event, &rules, &record.version).unwrap();
        let _guard = rooms.lock(&room).await;
        let (short, mut record) = rooms.room(&room).unwrap().unwrap();
        let before = if i == 0 { StateBefore::Given(state.clone()) } else { StateBefore::FromPrevs };
        let outcome = hearth::util::heavy(|| {
            rooms.append(
                short,
                &mut record,
                event_id.clone(),
                object,
                Origin::History(Default::default()),
                before,
            )
        })
        .unwrap();
        assert_eq!(outcome, Outcome::History);
        prev = event_id;
    }
    let elapsed = started.elapsed().as_secs_f64();
    format!("{n} historical events appended in {elapsed:.1} s ({:.0} events/s)", n as f64 / elapsed)
}

async fn send_http_body(client: &reqwest::Client, url: &str, token: &str, room: &str, txn: &str, body: &str) {
    let resp = client
        .put(format!("{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"))
        .bearer_auth(token)
        .json(&json!({"msgtype": "m.text", "body": body}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "send failed: {}", resp.text().await.unwrap_or_default());
}

/// A user in `rooms` rooms of `events` messages each: time of a full
/// initial sync (default filter: the last 10 events per room).
async fn initial_sync(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    run: &str,
    rooms: usize,
    events: usize,
) {
    let token = register(client, url, secret, &format!("{run}initial")).await;
    let mut ids = Vec::with_capacity(rooms);
    for chunk in (0..rooms).collect::<Vec<_>>().chunks(10) {
        ids.extend(join_all(chunk.iter().map(|_| create_http_room(client, url, &token))).await);
    }
    let started = Instant::now();
    let fills = ids.iter().enumerate().map(|(r, room)| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            for i in 0..events {
                send_http(&client, url, &token, room, &format!("{run}i{r}-{i}"), i).await;
            }
        }
    });
    join_all(fills).await;
    println!("(filled {rooms} rooms × {events} events in {:.1} s)", started.elapsed().as_secs_f64());
    let mut times = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let body = sync(client, url, &token, &unique_filter(i)).await;
        times.push(t.elapsed());
        assert_eq!(body["rooms"]["join"].as_object().map(|j| j.len()), Some(rooms));
    }
    times.sort();
    println!(
        "initial sync, {rooms} rooms × {events} events: median {:.1} ms (min {:.1}, max {:.1}) over 5",
        percentile(&times, 0.5),
        percentile(&times, 0.0),
        percentile(&times, 1.0)
    );
}

/// A user in `rooms` rooms with nothing new: the cost of each incremental
/// sync (timeout 0).
async fn empty_sync(client: &reqwest::Client, url: &str, secret: &str, run: &str, rooms: usize) {
    let token = register(client, url, secret, &format!("{run}many")).await;
    for chunk in (0..rooms).collect::<Vec<_>>().chunks(10) {
        join_all(chunk.iter().map(|_| create_http_room(client, url, &token))).await;
    }
    let mut since = sync(client, url, &token, "").await["next_batch"].as_str().unwrap().to_owned();
    let mut times = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let body = sync(client, url, &token, &format!("since={since}&timeout=0&{}", unique_filter(i))).await;
        times.push(t.elapsed());
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    times.sort();
    println!(
        "incremental sync with nothing new, user in {rooms} rooms: p50 {:.2} ms, p99 {:.2} ms over 200",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}
