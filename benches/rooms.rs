//! Rooms benchmarks (release build): `cargo bench --bench rooms`.
//!
//! - events appended per second, one room and 100 rooms, directly through
//!   the pipeline and over HTTP (one client per room, in-process server);
//! - disk bytes per stored message event;
//! - "state at event" in a room with 10,000 members (cold and warm cache);
//! - state resolution of two conflicting branches in that room;
//! - state resolution alone, of forks with 10 to 10,000 conflicted state
//!   events (renames, and bans against kicks), rooms v11 and v12.
//!
//! `cargo bench --bench rooms -- --http URL SHARED_SECRET` runs only the
//! HTTP sending benchmark against any homeserver that offers Synapse's
//! shared-secret registration (used to measure Synapse the same way).

use std::{
    path::Path,
    time::{Duration, Instant},
};

#[path = "http_client.rs"]
mod http_client;

use hearth::{
    config::Config,
    rooms::{
        Rooms,
        builder::PduBuilder,
        create::{CreateRoom, Preset},
        pipeline::{Origin, Outcome, StateBefore},
        short_ids::{Kind, state_key_name},
    },
    services::Services,
};
use http_client::{create_http_room, register, send_http};
use ruma::{OwnedUserId, RoomVersionId};
use serde_json::json;

const ONE_ROOM_DIRECT: usize = 3000;
const MANY_ROOMS: usize = 100;
const PER_ROOM_DIRECT: usize = 30;
const ONE_ROOM_HTTP: usize = 1000;
const PER_ROOM_HTTP: usize = 10;
const MEMBERS: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--http") {
        let (url, secret) = (args[i + 1].clone(), args[i + 2].clone());
        runtime.block_on(http_bench(&url, &secret, "external server"));
        return;
    }
    // `cargo bench --bench rooms -- state` runs the benchmarks whose name
    // contains "state" (direct, disk, state, http).
    let only = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    runtime.block_on(async {
        if wanted("direct") {
            direct_bench().await;
        }
        if wanted("disk") {
            disk_bench().await;
        }
        if wanted("state") {
            state_bench().await;
        }
        if wanted("conflicts") {
            conflicts_bench().await;
        }
        if wanted("http") {
            let dir = tempfile::tempdir().unwrap();
            let server = hearth::server::start(config(dir.path(), true)).await.unwrap();
            http_bench(&format!("http://{}", server.addrs[0]), "bench-secret", "hearth (in-process)").await;
            server.stop().await.unwrap();
        }
    });
}

fn config(dir: &Path, http: bool) -> Config {
    let mut config = Config::defaults();
    config.database.path = dir.join("db");
    config.listeners[0].port = 0;
    if http {
        config.registration.shared_secret = Some("bench-secret".into());
    }
    for rate in config.rate_limits.each_mut() {
        rate.per_second = 1e9;
        rate.burst_count = u32::MAX;
    }
    config
}

fn new_room() -> CreateRoom {
    CreateRoom::new(RoomVersionId::V12, Preset::PublicChat)
}

fn message(i: usize) -> PduBuilder {
    PduBuilder::message(
        "m.room.message",
        json!({"msgtype": "m.text", "body": format!("benchmark message number {i}")}),
    )
}

fn report(what: &str, events: usize, elapsed: Duration) {
    println!(
        "{what}: {events} events in {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
}

async fn direct_bench() {
    let dir = tempfile::tempdir().unwrap();
    let services = Services::open(config(dir.path(), false)).unwrap();
    let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();

    let room = services.rooms.create_room(&alice, new_room()).await.unwrap();
    let started = Instant::now();
    for i in 0..ONE_ROOM_DIRECT {
        services.rooms.send(&room, &alice, message(i), None).await.unwrap();
    }
    report("pipeline, 1 room, sequential", ONE_ROOM_DIRECT, started.elapsed());

    let mut rooms = Vec::new();
    for _ in 0..MANY_ROOMS {
        rooms.push(services.rooms.create_room(&alice, new_room()).await.unwrap());
    }
    let started = Instant::now();
    let tasks: Vec<_> = rooms
        .into_iter()
        .map(|room| {
            let (services, alice) = (services.clone(), alice.clone());
            tokio::spawn(async move {
                for i in 0..PER_ROOM_DIRECT {
                    services.rooms.send(&room, &alice, message(i), None).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    report("pipeline, 100 rooms, one task per room", MANY_ROOMS * PER_ROOM_DIRECT, started.elapsed());
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() { dir_size(&e.path()) } else { meta.len() }
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn disk_bench() {
    let dir = tempfile::tempdir().unwrap();
    let services = Services::open(config(dir.path(), false)).unwrap();
    let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
    let room = services.rooms.create_room(&alice, new_room()).await.unwrap();
    services.db.flush().unwrap();
    let before = dir_size(dir.path());
    const N: usize = 20_000;
    for i in 0..N {
        services.rooms.send(&room, &alice, message(i), None).await.unwrap();
    }
    services.db.flush().unwrap();
    let after = dir_size(dir.path());
    println!(
        "disk: {N} message events ({} bytes of body text each) take {} bytes after flush = {} bytes per event (WAL included)",
        format!("benchmark message number {}", N / 2).len(),
        after - before,
        (after - before) / N as u64
    );
}

async fn state_bench() {
    let dir = tempfile::tempdir().unwrap();
    let services = Services::open(config(dir.path(), false)).unwrap();
    let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
    let room = services.rooms.create_room(&alice, new_room()).await.unwrap();
    let started = Instant::now();
    let mut joins = Vec::new();
    for i in 0..MEMBERS {
        let user: OwnedUserId = format!("@member{i}:localhost").try_into().unwrap();
        let join = PduBuilder::state("m.room.member", user.as_str(), json!({"membership": "join"}));
        joins.push(services.rooms.send(&room, &user, join, None).await.unwrap());
        if i % 10 == 0 {
            services.rooms.send(&room, &user, message(i), None).await.unwrap();
        }
    }
    report(
        "pipeline, 10,000 joins (+1,000 messages) into one room",
        MEMBERS + MEMBERS / 10,
        started.elapsed(),
    );
    services.db.flush().unwrap();
    println!("disk: the 10,000-member room's database is {} bytes", dir_size(dir.path()));

    // State at event: the full state after an event, by its snapshot.
    let rooms = &services.rooms;
    let samples: Vec<_> = joins.iter().step_by(97).collect();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for event_id in &samples {
        let short = rooms.event_short(event_id).unwrap().unwrap();
        let meta = rooms.event_meta(short).unwrap().unwrap();
        rooms.state.clear_cache();
        let t = Instant::now();
        let state = rooms.state.load(meta.state_after.unwrap()).unwrap();
        cold.push(t.elapsed());
        let t = Instant::now();
        let again = rooms.state.load(meta.state_after.unwrap()).unwrap();
        warm.push(t.elapsed());
        assert_eq!(state.len(), again.len());
    }
    cold.sort();
    warm.sort();
    let median = |v: &Vec<Duration>| v[v.len() / 2];
    println!(
        "state at event, 10,000-member room ({} samples): cold median {:.2} ms (max {:.2} ms), cached median {:.1} µs",
        samples.len(),
        median(&cold).as_secs_f64() * 1e3,
        cold.last().unwrap().as_secs_f64() * 1e3,
        median(&warm).as_secs_f64() * 1e6
    );
    // One state event at event X, by keyed reads (what the auth rules do).
    let short = rooms.event_short(&joins[MEMBERS / 2]).unwrap().unwrap();
    let meta = rooms.event_meta(short).unwrap().unwrap();
    let state = rooms.state.load(meta.state_after.unwrap()).unwrap();
    let t = Instant::now();
    const LOOKUPS: usize = 10_000;
    for i in 0..LOOKUPS {
        let user = format!("@member{}:localhost", i % MEMBERS);
        rooms.state_event(&state, "m.room.member", &user).unwrap();
    }
    println!(
        "one member event at an event: {:.1} µs per look-up",
        t.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64
    );
    fork_bench(rooms, &room, &alice, false).await;
    fork_bench(rooms, &room, &alice, true).await;
}

/// State resolution where two branches conflict (as federation causes):
/// two topics built on the same extremity, the second append resolves the
/// current state over both, then a local event merges the branches.
/// `all_cold`: every cache emptied before each append (edges, names and
/// states); else only the state cache, as a running server has the rest.
async fn fork_bench(rooms: &Rooms, room: &ruma::RoomId, alice: &ruma::UserId, all_cold: bool) {
    const FORKS: usize = 20;
    let mut resolve = Vec::new();
    let mut under_lock = Vec::new();
    let mut merge = Vec::new();
    for i in 0..FORKS {
        let (short, record) = rooms.room(room).unwrap().unwrap();
        let state = rooms.current_state(&record).unwrap();
        let branches: Vec<_> = (0..2)
            .map(|b| {
                let topic = PduBuilder::state("m.room.topic", "", json!({"topic": format!("fork {i}.{b}")}));
                rooms.build(&record, &state, alice, &topic).unwrap()
            })
            .collect();
        // As a federation transaction would: prepared without the room's
        // lock, written under it.
        let mut timed = Vec::new();
        for (event_id, object) in branches {
            if all_cold {
                rooms.clear_caches();
            } else {
                rooms.state.clear_cache();
            }
            let t = Instant::now();
            let record = rooms.room(room).unwrap().unwrap().1;
            let origin = Origin::Remote(Default::default());
            let prepared = rooms.prepare(short, &record, event_id, object, origin, StateBefore::FromPrevs);
            let prepared = prepared.unwrap().expect("a new event");
            let guard = rooms.lock(room).await;
            let locked = Instant::now();
            let mut record = rooms.room(room).unwrap().unwrap().1;
            let outcome = rooms.commit_prepared(short, &mut record, prepared).unwrap();
            drop(guard);
            timed.push((t.elapsed(), locked.elapsed()));
            assert!(matches!(outcome, Outcome::Accepted { .. }));
        }
        resolve.push(timed[1].0);
        under_lock.push(timed[1].1);
        rooms.state.clear_cache();
        let t = Instant::now();
        rooms.send(room, alice, message(i), None).await.unwrap();
        merge.push(t.elapsed());
    }
    resolve.sort();
    under_lock.sort();
    merge.sort();
    let ms = |v: &Vec<Duration>| v[v.len() / 2].as_secs_f64() * 1e3;
    println!(
        "state resolution, 10,000-member room, {FORKS} forks ({}): appending the conflicting branch {:.1} ms ({:.1} ms of it under the room's lock), merging both branches {:.1} ms (medians)",
        if all_cold { "all caches cold" } else { "state cache cold" },
        ms(&resolve),
        ms(&under_lock),
        ms(&merge)
    );
}

/// State resolution alone, as a server resolves a fork when a partition
/// heals: from one event, two branches each change the same `n / 2` state
/// keys (`n` conflicted state events). Either each member renames itself
/// on both branches (ordinary state: mainline ordering), or the admin
/// bans each member on one branch and kicks them on the other (power
/// events: the reverse topological power ordering and an auth check
/// each). The branches are stored as outliers with their states built
/// alongside, so setting them up costs no resolution; then
/// `Rooms::resolve_gap` resolves the two states, caches cold, then again.
async fn conflicts_bench() {
    for version in [RoomVersionId::V11, RoomVersionId::V12] {
        for kind in ["renames", "bans v kicks"] {
            for n in [10, 100, 1_000, 10_000] {
                let dir = tempfile::tempdir().unwrap();
                let services = Services::open(config(dir.path(), false)).unwrap();
                let rooms = &services.rooms;
                let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
                let room =
                    rooms.create_room(&alice, CreateRoom::new(version.clone(), Preset::PublicChat)).await;
                let room = room.unwrap();
                let members: Vec<OwnedUserId> =
                    (0..n / 2).map(|i| format!("@member{i}:localhost").try_into().unwrap()).collect();
                for user in &members {
                    let join =
                        PduBuilder::state("m.room.member", user.as_str(), json!({"membership": "join"}));
                    rooms.send(&room, user, join, None).await.unwrap();
                }
                let (short, record) = rooms.room(&room).unwrap().unwrap();
                let base = rooms.current_state(&record).unwrap();
                let fork = record.forward_extremities.clone();
                let mut states = Vec::new();
                let t = Instant::now();
                for branch in 0..2 {
                    let mut state = (*base).clone();
                    let mut record = record.clone();
                    record.forward_extremities = fork.clone();
                    for user in &members {
                        let (sender, content) = match (kind, branch) {
                            ("renames", _) => (
                                user,
                                json!({"membership": "join", "displayname": format!("{user} {branch}")}),
                            ),
                            (_, 0) => (&alice, json!({"membership": "ban"})),
                            _ => (&alice, json!({"membership": "leave"})),
                        };
                        let change = PduBuilder::state("m.room.member", user.as_str(), content);
                        let (event_id, object) = rooms.build(&record, &state, sender, &change).unwrap();
                        let outcome = rooms.append_outlier(
                            short,
                            &record,
                            event_id.clone(),
                            object,
                            Default::default(),
                        );
                        assert!(matches!(outcome, Ok(Outcome::Outlier)), "{outcome:?}");
                        let key = state_key_name("m.room.member", user.as_str());
                        let key = rooms.short.get(Kind::StateKey, &key).unwrap().expect("the member's key");
                        state.insert(key, rooms.event_short(&event_id).unwrap().unwrap());
                        record.forward_extremities = vec![event_id];
                    }
                    states.push(std::sync::Arc::new(state));
                }
                let built = t.elapsed();
                rooms.clear_caches();
                let t = Instant::now();
                let resolved = rooms.resolve_gap(&record, states.clone()).unwrap();
                let cold = t.elapsed();
                let t = Instant::now();
                let again = rooms.resolve_gap(&record, states).unwrap();
                let warm = t.elapsed();
                assert_eq!(resolved, again);
                println!(
                    "state resolution, room v{version}, {kind}, {n} conflicted state events: {:.1} ms cold, \
                     {:.1} ms warm (building the branches: {:.1} s)",
                    cold.as_secs_f64() * 1e3,
                    warm.as_secs_f64() * 1e3,
                    built.as_secs_f64()
                );
            }
        }
    }
}

async fn http_bench(url: &str, secret: &str, label: &str) {
    let client = reqwest::Client::new();
    let run = format!("b{}", std::process::id());
    let token = register(&client, url, secret, &format!("{run}solo")).await;
    let room = create_http_room(&client, url, &token).await;
    let started = Instant::now();
    for i in 0..ONE_ROOM_HTTP {
        send_http(&client, url, &token, &room, &format!("{run}-{i}"), i).await;
    }
    report(&format!("HTTP send, {label}, 1 room, 1 client"), ONE_ROOM_HTTP, started.elapsed());

    let mut clients = Vec::new();
    for r in 0..MANY_ROOMS {
        let token = register(&client, url, secret, &format!("{run}u{r}")).await;
        let room = create_http_room(&client, url, &token).await;
        clients.push((token, room));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(token, room)| {
            let (client, url, run) = (client.clone(), url.to_owned(), run.clone());
            tokio::spawn(async move {
                for i in 0..PER_ROOM_HTTP {
                    send_http(&client, &url, &token, &room, &format!("{run}-m{i}"), i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    report(
        &format!("HTTP send, {label}, 100 rooms, 1 client each"),
        MANY_ROOMS * PER_ROOM_HTTP,
        started.elapsed(),
    );
}
