//! Random schedules across three servers (issue 16): partitions, heals,
//! slow, duplicating and reordering links, restarts, messages and state changes (power levels, join rules, bans,
//! unbans, kicks, invites, joins and leaves) by random members, drawn from
//! a seed. After the final heal every server holds the same DAG and the
//! same current state, and every event a server accepted passes the auth
//! rules against its auth events and against the state before it.
//!
//! `cargo test` runs a few cases; docs/FEDERATION.md says how to run
//! thousands (`HEARTH_PARTITION_CASES`, `HEARTH_PARTITION_SEED`,
//! `HEARTH_PARTITION_STEPS`). A failing case names its seed.

use std::collections::{BTreeMap, BTreeSet};

use hearth::rooms::{Rooms, Status};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use reqwest::StatusCode;
use ruma::{OwnedEventId, RoomId, state_res};
use serde_json::json;

use super::{join_via, links::Links, rooms::wait_for_event, wait_for_id};
use crate::common::{Session, TestServer, create_room, put_state, send};

/// Cases `cargo test` runs unless told otherwise.
const CASES: u64 = 4;
/// Steps in a case unless told otherwise.
const STEPS: usize = 40;
/// Seconds for the servers to converge after the final heal: generous,
/// for a debug build beside the other tests (a deadline, not a wait).
const DEADLINE: u64 = 180;
/// Power levels a random change sets.
const LEVELS: [i64; 4] = [0, 50, 75, 100];
/// Users 0, 2 and 4 (one per server, power 100 or the room's creator)
/// are never the target of a ban, kick, leave or demotion, so that every
/// server stays in the room and receives its whole DAG.
const ANCHORS: [usize; 3] = [0, 2, 4];
const TARGETS: [usize; 3] = [1, 3, 5];

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number")))
}

#[tokio::test]
async fn random_schedules_converge_and_keep_the_auth_rules() {
    let cases = setting("HEARTH_PARTITION_CASES", CASES);
    let steps = setting("HEARTH_PARTITION_STEPS", STEPS);
    let first = setting("HEARTH_PARTITION_SEED", 1u64);
    for seed in first..first + cases {
        // The case's schedule, once drawn: printed with the failure only,
        // so that a failing run's output stays short.
        let drawn = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Err(e) = tokio::spawn(one_case(seed, steps, drawn.clone())).await {
            let reason = e.try_into_panic().ok().and_then(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            });
            panic!(
                "seed {seed} failed: {}\n{}\nrerun it alone: HEARTH_PARTITION_SEED={seed} HEARTH_PARTITION_CASES=1 \
                 cargo test --test api random_schedules",
                reason.unwrap_or_else(|| "(no message)".into()),
                drawn.lock().unwrap()
            );
        }
    }
}

async fn one_case(seed: u64, steps: usize, drawn: std::sync::Arc<std::sync::Mutex<String>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let version = *["10", "11", "12"].choose(&mut rng).unwrap();
    let (mut fed, links) = Links::start(3).await;
    // User k lives on server k / 2.
    let mut users = Vec::new();
    for k in 0..6 {
        users.push(fed.servers[k / 2].register(&format!("u{k}")).await);
    }
    let room =
        create_room(&fed.servers[0], &users[0], json!({"preset": "public_chat", "room_version": version}))
            .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
    let (status, mut levels) = fed.servers[0].get(&path, Some(&users[0].token)).await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    for (k, level) in [(1, 50), (2, 100), (3, 75), (4, 100), (5, 50)] {
        levels["users"][&users[k].user_id] = json!(level);
    }
    put_state(&fed.servers[0], &users[0], &room, "m.room.power_levels", levels).await;
    for (k, user) in users.iter().enumerate().skip(1) {
        join_via(&fed.servers[k / 2], user, &room, "hs1.test").await;
    }
    // Every server has seen the last join: what the schedule makes descends from it.
    let mut last_join = None;
    for (i, k) in ANCHORS.iter().enumerate() {
        let event = wait_for_event(&fed.servers[i], &users[*k], &room, |e| {
            e["state_key"] == users[5].user_id.as_str()
        })
        .await;
        last_join = event["event_id"].as_str().map(OwnedEventId::try_from).map(Result::unwrap);
    }
    let last_join = last_join.unwrap();

    let mut schedule = Vec::new();
    let mut cut: Option<usize> = None;
    for step in 0..steps {
        let roll = rng.gen_range(0..100);
        let done = if roll < 10 {
            match cut.take() {
                Some(i) => {
                    links.heal();
                    format!("heal (hs{} back)", i + 1)
                }
                None => {
                    let i = rng.gen_range(0..3);
                    let others: Vec<usize> = (0..3).filter(|o| *o != i).collect();
                    links.partition(&[i], &others);
                    cut = Some(i);
                    format!("cut hs{} off", i + 1)
                }
            }
        } else if roll < 15 {
            let i = rng.gen_range(0..3);
            fed.servers[i].restart().await;
            format!("restart hs{}", i + 1)
        } else if roll < 22 {
            // One link misbehaving: events overtake each other or come twice.
            let (i, j) = (rng.gen_range(0..3), rng.gen_range(1..3));
            let j = (i + j) % 3;
            match rng.gen_range(0..3) {
                0 => {
                    let delay = *[10u64, 50, 150].choose(&mut rng).unwrap();
                    links.slow(&[i], &[j], std::time::Duration::from_millis(delay));
                    format!("slow hs{} <-> hs{} by {delay} ms", i + 1, j + 1)
                }
                1 => {
                    links.duplicate(&[i], &[j]);
                    format!("hs{} -> hs{} duplicates", i + 1, j + 1)
                }
                _ => {
                    let window = rng.gen_range(2..6);
                    links.reorder(&[i], &[j], window);
                    format!("hs{} -> hs{} reverses every {window} transactions", i + 1, j + 1)
                }
            }
        } else {
            let actor = rng.gen_range(0..6);
            let target = *TARGETS.choose(&mut rng).unwrap();
            let kind = if roll < 55 { 0 } else { rng.gen_range(1..9) };
            act(&fed.servers, &users, &room, actor, target, kind, step, &mut rng).await
        };
        schedule.push(format!("{step}: {done}"));
        *drawn.lock().unwrap() =
            format!("seed {seed}, room v{version}, schedule so far:\n{}", schedule.join("\n"));
    }
    links.heal();
    let context = format!("seed {seed}, room v{version}, schedule:\n{}", schedule.join("\n"));
    *drawn.lock().unwrap() = context.clone(); // shown when a wait below fails

    // Each server's anchor speaks; everyone hears all three; one more
    // message joins the branches.
    let mut finals = Vec::new();
    for (i, k) in ANCHORS.iter().enumerate() {
        finals.push(send_ok(&fed.servers[i], &users[*k], &room, &format!("final {i}"), &context).await);
    }
    for (i, k) in ANCHORS.iter().enumerate() {
        for id in &finals {
            wait_for_id(&fed.servers[i], &users[*k], &room, id, DEADLINE).await;
        }
    }
    let merge = send_ok(&fed.servers[0], &users[0], &room, "merged", &context).await;
    for (i, k) in ANCHORS.iter().enumerate() {
        wait_for_id(&fed.servers[i], &users[*k], &room, &merge, DEADLINE).await;
    }

    let room_id = RoomId::parse(&room).unwrap();
    let mut dags = Vec::new();
    for (i, s) in fed.servers.iter().enumerate() {
        let rooms = &s.server().services.rooms;
        let print = rooms.fingerprint(&room_id).unwrap().unwrap();
        let extremities: Vec<String> = print.extremities.iter().map(|(id, _)| id.to_string()).collect();
        let described: Vec<String> = print
            .extremities
            .iter()
            .map(|(id, _)| {
                let on: Vec<String> =
                    fed.servers.iter().map(|s| describe(&s.server().services.rooms, id)).collect();
                format!("{id}: {}", on.join(" | "))
            })
            .collect();
        assert_eq!(
            extremities,
            std::slice::from_ref(&merge),
            "hs{}: extremities {described:#?}; {context}",
            i + 1
        );
        dags.push((print.state_hash, dag(rooms, &room_id, &last_join, &context)));
    }
    // hs1 has the room from its creation: the state before each event is
    // the one the spec's algorithm gives.
    super::oracle::check_room(&fed.servers[0].server().services.rooms, &room_id)
        .unwrap_or_else(|e| panic!("hs1: {e}; {context}"));
    for (i, other) in dags.iter().enumerate().skip(1) {
        assert_eq!(dags[0].1, other.1, "hs1 and hs{} hold different DAGs; {context}", i + 1);
        assert_eq!(dags[0].0, other.0, "hs1 and hs{} have different states; {context}", i + 1);
    }
}

/// One random client action of `users[actor]` (or on `users[target]`):
/// kind 0 a message, 1 a power level, 2 the join rule, 3 a ban, 4 an
/// unban, 5 a kick, 6 an invite, 7 the target leaving, 8 the target
/// joining. The server may refuse (403, 404; 502 for an invite or join
/// that needs a server cut off) but never fail.
#[allow(clippy::too_many_arguments)]
async fn act(
    servers: &[TestServer],
    users: &[Session],
    room: &str,
    actor: usize,
    target: usize,
    kind: u32,
    step: usize,
    rng: &mut StdRng,
) -> String {
    let (s, who) = (&servers[actor / 2], &users[actor]);
    let user = &users[target].user_id;
    let (what, (status, body)) = match kind {
        0 => ("message".to_owned(), send(s, who, room, &format!("s{step}"), &format!("step {step}")).await),
        1 => {
            let level = *LEVELS.choose(rng).unwrap();
            let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
            let (status, mut levels) = s.get(&path, Some(&who.token)).await;
            if status != StatusCode::OK {
                (format!("power levels unread ({status})"), (status, levels))
            } else {
                levels["users"][user] = json!(level);
                (format!("sets {user} to {level}"), s.put(&path, Some(&who.token), levels).await)
            }
        }
        2 => {
            let rule = *["public", "invite"].choose(rng).unwrap();
            let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.join_rules/");
            (format!("join rule {rule}"), s.put(&path, Some(&who.token), json!({"join_rule": rule})).await)
        }
        3..=6 => {
            let action = ["ban", "unban", "kick", "invite"][kind as usize - 3];
            let path = format!("/_matrix/client/v3/rooms/{room}/{action}");
            (format!("{action} {user}"), s.post(&path, Some(&who.token), json!({"user_id": user})).await)
        }
        7 => {
            let (s, who) = (&servers[target / 2], &users[target]);
            let path = format!("/_matrix/client/v3/rooms/{room}/leave");
            ("leaves".to_owned(), s.post(&path, Some(&who.token), json!({})).await)
        }
        _ => {
            let (s, who) = (&servers[target / 2], &users[target]);
            let path = format!(
                "/_matrix/client/v3/join/{}?via=hs1.test&via=hs2.test&via=hs3.test",
                crate::common::urlencode(room)
            );
            ("joins".to_owned(), s.post(&path, Some(&who.token), json!({})).await)
        }
    };
    let actor_id = if kind >= 7 { user } else { &users[actor].user_id };
    // An invite or a join through another server meets the partitions.
    let remote = matches!(kind, 6 | 8) && status == StatusCode::BAD_GATEWAY;
    assert!(
        remote || matches!(status, StatusCode::OK | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "step {step}: {actor_id}: {what}: {status} {body}"
    );
    format!("{actor_id}: {what}: {}", status.as_u16())
}

async fn send_ok(s: &TestServer, who: &Session, room: &str, text: &str, context: &str) -> String {
    let (status, body) = send(s, who, room, text, text).await;
    assert_eq!(status, StatusCode::OK, "{body}; {context}");
    body["event_id"].as_str().unwrap().to_owned()
}

/// The room's DAG on one server from `since` on: every event reachable
/// from the forward extremities through `prev_events` down to `since`,
/// each with whether it was rejected.
/// Checks on the way that every event not rejected passes the auth rules
/// (ruma's, not the pipeline's) against its auth events and against the
/// state the server holds before it.
fn dag(
    rooms: &Rooms,
    room_id: &RoomId,
    since: &ruma::EventId,
    context: &str,
) -> BTreeMap<OwnedEventId, bool> {
    let (_, record) = rooms.room(room_id).unwrap().unwrap();
    let rules = record.rules().unwrap();
    // From v12 the create event is no auth event: the room ID names it.
    let create =
        rooms.current_state_event(rooms.room_short(room_id).unwrap().unwrap(), "m.room.create", "").unwrap();
    let mut seen = BTreeMap::new();
    let mut next: Vec<OwnedEventId> = record.forward_extremities.to_vec();
    let mut missing = BTreeSet::new();
    while let Some(id) = next.pop() {
        if seen.contains_key(&id) {
            continue;
        }
        let Some(short) = rooms.event_short(&id).unwrap() else {
            missing.insert(id);
            continue;
        };
        let meta = rooms.event_meta(short).unwrap().unwrap();
        if !meta.in_dag() {
            missing.insert(id);
            continue;
        }
        let pdu = rooms.pdu_by_short(short).unwrap().unwrap();
        let rejected = meta.status == Status::Rejected;
        if !rejected {
            let fetch = |id: &ruma::EventId| rooms.pdu(id).unwrap();
            state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, fetch)
                .unwrap_or_else(|e| panic!("{id} breaks the auth rules: {e}; {context}"));
            let auth: Vec<_> = pdu.auth_events.iter().map(|a| rooms.pdu(a).unwrap().unwrap()).collect();
            let by_auth = |kind: &ruma::events::StateEventType, key: &str| {
                let found = auth
                    .iter()
                    .find(|a| a.kind.to_string() == kind.to_string() && a.state_key.as_deref() == Some(key));
                found.cloned().or_else(|| {
                    (*kind == ruma::events::StateEventType::RoomCreate).then(|| create.clone()).flatten()
                })
            };
            state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, by_auth).unwrap_or_else(
                |e| panic!("{id} breaks the auth rules with its auth events: {e}; {context}"),
            );
            if let Some(before) = meta.state_before {
                let state = rooms.state.load(before).unwrap();
                let by_state = |kind: &ruma::events::StateEventType, key: &str| {
                    rooms.state_event(&state, &kind.to_string(), key).unwrap()
                };
                state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, by_state)
                    .unwrap_or_else(|e| {
                        panic!("{id} breaks the auth rules in the state before it: {e}; {context}")
                    });
            }
        }
        if id != since {
            next.extend(pdu.prev_events.iter().cloned());
        }
        seen.insert(id, rejected);
    }
    assert!(missing.is_empty(), "events missing from the DAG: {missing:?}; {context}");
    seen
}

/// An event as one server holds it: type, sender, status and prev events.
fn describe(rooms: &Rooms, id: &ruma::EventId) -> String {
    let Some(short) = rooms.event_short(id).unwrap() else { return "missing".into() };
    let meta = rooms.event_meta(short).unwrap().unwrap();
    let pdu = rooms.pdu_by_short(short).unwrap().unwrap();
    let children: Vec<String> = rooms
        .children_in_dag(id)
        .unwrap()
        .into_iter()
        .map(|c| {
            let pdu = rooms.pdu_by_short(c).unwrap().unwrap();
            let meta = rooms.event_meta(c).unwrap().unwrap();
            let grandchildren = rooms.children_in_dag(&pdu.event_id).unwrap().len();
            format!(
                "{} {} by {} {:?} ({grandchildren} children)",
                pdu.event_id, pdu.kind, pdu.sender, meta.status
            )
        })
        .collect();
    format!(
        "{} {} by {}, {:?}, prev {:?}, children {children:?}",
        pdu.kind,
        pdu.state_key.unwrap_or_default(),
        pdu.sender,
        meta.status,
        pdu.prev_events
    )
}
