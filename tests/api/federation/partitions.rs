//! Rooms across a network partition (issue 16): servers cut off from each
//! other keep going on both sides, and agree once the network heals.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    TestFederation, join_via,
    links::Links,
    rooms::{timeline_ids, wait_for_event},
    wait_for_id,
};
use crate::common::{Session, TestServer, create_room, put_state, send};

/// Messages each side sends in each room while cut off.
const PER_SIDE: usize = 100;

/// {A, B} | {C} in a room of each of versions 10, 11 and 12 (v12: state
/// resolution v2.1): both sides talk on; once healed, every server holds
/// every message once, the next message leaves one forward extremity, and
/// the current state hashes the same everywhere.
#[tokio::test]
async fn partitioned_rooms_converge_once_healed() {
    let (fed, links) = Links::start(3).await;
    let (a, b, c) = (&fed.servers[0], &fed.servers[1], &fed.servers[2]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    let mut rooms = Vec::new();
    for version in ["10", "11", "12"] {
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        join_via(b, &bob, &room, "hs1.test").await;
        join_via(c, &carol, &room, "hs1.test").await;
        for (s, who) in [(a, &alice), (b, &bob)] {
            wait_for_event(s, who, &room, |e| e["state_key"] == carol.user_id.as_str()).await;
        }
        rooms.push(room);
    }

    links.partition(&[0, 1], &[2]);
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); rooms.len()];
    for i in 0..PER_SIDE {
        for (r, room) in rooms.iter().enumerate() {
            for (s, who, side) in [(a, &alice, "ab"), (c, &carol, "c")] {
                let txn = format!("{side}{r}-{i}");
                let (status, body) = send(s, who, room, &txn, &format!("{side} {i}")).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                sent[r].push(body["event_id"].as_str().unwrap().to_owned());
            }
        }
    }
    // While cut off, C has none of A's messages.
    let last_ab = |r: usize| sent[r][sent[r].len() - 2].clone();
    assert!(!timeline_ids(c, &carol, &rooms[0]).await.contains(&last_ab(0)));

    links.heal();
    for (r, room) in rooms.iter().enumerate() {
        let (last_ab, last_c) = (last_ab(r), sent[r].last().unwrap().clone());
        wait_for_event(c, &carol, room, |e| e["event_id"] == last_ab.as_str()).await;
        for (s, who) in [(a, &alice), (b, &bob)] {
            wait_for_event(s, who, room, |e| e["event_id"] == last_c.as_str()).await;
        }
        // The next message joins the two branches, on every server.
        let (status, body) = send(b, &bob, room, &format!("after{r}"), "after the partition").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let after = body["event_id"].as_str().unwrap().to_owned();
        let room_id = ruma::RoomId::parse(room).unwrap();
        let mut hashes = Vec::new();
        for (s, who) in [(a, &alice), (b, &bob), (c, &carol)] {
            wait_for_event(s, who, room, |e| e["event_id"] == after.as_str()).await;
            let print = s.server().services.rooms.fingerprint(&room_id).unwrap().unwrap();
            let extremities: Vec<String> = print.extremities.iter().map(|(id, _)| id.to_string()).collect();
            assert_eq!(
                extremities,
                std::slice::from_ref(&after),
                "one extremity once the branches are joined"
            );
            hashes.push(print.state_hash);
            let timeline = timeline_ids(s, who, room).await;
            for id in sent[r].iter().chain([&after]) {
                assert_eq!(timeline.iter().filter(|t| *t == id).count(), 1, "{id} on {}", who.user_id);
            }
        }
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "the same state everywhere in {room}: {hashes:?}");
    }
}

/// Scenario 5: what A sends C arrives newest first and twice: the link
/// from A to C holds A's transactions (answering them for C) and, once
/// released, delivers each twice at once, newest first. First C can
/// fetch what precedes the newest (`/get_missing_events`) and has every
/// event once the link is released. Then C can fetch nothing (its own
/// links cut): it refuses what it cannot place, and the same events come
/// again, oldest first, in transactions of three straight from the test
/// (signed as A). C ends with the same events, once each, and the same
/// state as the rest.
#[tokio::test]
async fn events_out_of_order_and_twice_give_the_same_room() {
    let (fed, links) = Links::start(3).await;
    let (a, b, c) = (&fed.servers[0], &fed.servers[1], &fed.servers[2]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    for version in ["10", "11", "12"] {
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        join_via(b, &bob, &room, "hs1.test").await;
        join_via(c, &carol, &room, "hs1.test").await;
        wait_for_event(a, &alice, &room, |e| e["state_key"] == carol.user_id.as_str()).await;
        let mut missed = Vec::new();
        for c_fetches in [true, false] {
            let before = timeline_ids(a, &alice, &room).await.len();
            if !c_fetches {
                links.cut(&[2], &[0, 1]);
            }
            links.reorder(&[0], &[2], usize::MAX);
            links.duplicate(&[0], &[2]);
            for i in 0..6 {
                let txn = format!("m{version}-{c_fetches}-{i}");
                let (status, body) = send(a, &alice, &room, &txn, &format!("message {i}")).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                if i == 2 {
                    let topic = format!("while C was away ({c_fetches})");
                    put_state(a, &alice, &room, "m.room.topic", json!({"topic": topic})).await;
                }
            }
            let sent: Vec<String> = timeline_ids(a, &alice, &room).await.split_off(before);
            links.wait_held(0, 2, sent.len()).await;
            links.release().await;
            if c_fetches {
                for id in &sent {
                    wait_for_id(c, &carol, &room, id, 30).await;
                }
            } else {
                let rooms = &a.server().services.rooms;
                let pdu = |id: &String| {
                    let short = rooms.event_short(&ruma::EventId::parse(id).unwrap()).unwrap().unwrap();
                    serde_json::to_value(rooms.pdu_json(short).unwrap().unwrap()).unwrap()
                };
                for (t, batch) in sent.chunks(3).enumerate() {
                    let txn = format!("again{version}-{t}");
                    let (status, body) =
                        fed.send_transaction(0, 2, &txn, batch.iter().map(pdu).collect()).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            }
            missed.extend(sent);
        }
        links.heal();

        let (status, body) = send(b, &bob, &room, &format!("after{version}"), "after").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let after = body["event_id"].as_str().unwrap().to_owned();
        let room_id = ruma::RoomId::parse(&room).unwrap();
        let mut hashes = Vec::new();
        for (s, who) in [(a, &alice), (b, &bob), (c, &carol)] {
            wait_for_event(s, who, &room, |e| e["event_id"] == after.as_str()).await;
            let print = s.server().services.rooms.fingerprint(&room_id).unwrap().unwrap();
            assert_eq!(print.extremities.len(), 1, "v{version} on {}", who.user_id);
            hashes.push(print.state_hash);
            let timeline = timeline_ids(s, who, &room).await;
            for id in missed.iter().chain([&after]) {
                assert_eq!(
                    timeline.iter().filter(|t| *t == id).count(),
                    1,
                    "v{version}: {id} on {}",
                    who.user_id
                );
            }
        }
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "v{version}: {hashes:?}");
    }
}

/// Who takes part in the moderation scenarios: the room's owner (its
/// creator, power 100; in v12 a creator's power is above any number) and
/// xavier on B, alice and walt (who only watches) on A, and on C chris
/// (power 100) and carol. alice and carol start at 50, the ban level.
struct Cast {
    fed: TestFederation,
    links: Links,
    owner: Session,
    xavier: Session,
    alice: Session,
    walt: Session,
    carol: Session,
    chris: Session,
}

/// Which side of the partition acts first, by the clock: the spec breaks
/// ties between equally powerful senders by `origin_server_ts`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum First {
    A,
    C,
}

/// A room of one scenario run and what its run produced.
struct Run {
    version: &'static str,
    first: First,
    room: String,
    /// Event IDs by name ("ownerPL", "alice's join", …).
    ids: BTreeMap<&'static str, String>,
}

impl Run {
    fn id(&self, name: &str) -> &str {
        self.ids.get(name).unwrap_or_else(|| panic!("no event {name}"))
    }

    /// Whether the spec resolves in favour of side C (chris) here: when A
    /// acted first (equal power: the later event applies last) and in v12
    /// whatever the order (the owner's change, from a creator, is ordered
    /// first).
    fn c_wins(&self) -> bool {
        self.first == First::A || self.version == "12"
    }
}

impl Cast {
    async fn start() -> Self {
        let (fed, links) = Links::start(3).await;
        let (a, b, c) = (&fed.servers[0], &fed.servers[1], &fed.servers[2]);
        let (owner, xavier) = (b.register("owner").await, b.register("xavier").await);
        let (alice, walt) = (a.register("alice").await, a.register("walt").await);
        let (carol, chris) = (c.register("carol").await, c.register("chris").await);
        Self { fed, links, owner, xavier, alice, walt, carol, chris }
    }

    fn a(&self) -> &TestServer {
        &self.fed.servers[0]
    }
    fn b(&self) -> &TestServer {
        &self.fed.servers[1]
    }
    fn c(&self) -> &TestServer {
        &self.fed.servers[2]
    }

    /// The owner's room of `version` with everyone in it, every server
    /// having seen every join.
    async fn room(&self, version: &'static str, first: First) -> Run {
        let room =
            create_room(self.b(), &self.owner, json!({"preset": "public_chat", "room_version": version}))
                .await;
        set_levels(self.b(), &self.owner, &room, |levels| {
            levels["users"][&self.chris.user_id] = json!(100);
            levels["users"][&self.alice.user_id] = json!(50);
            levels["users"][&self.carol.user_id] = json!(50);
        })
        .await;
        let mut ids = BTreeMap::new();
        for (s, who, name) in [
            (self.a(), &self.alice, "alice's join"),
            (self.a(), &self.walt, "walt's join"),
            (self.b(), &self.xavier, "xavier's join"),
            (self.c(), &self.carol, "carol's join"),
            (self.c(), &self.chris, "chris's join"),
        ] {
            join_via(s, who, &room, "hs2.test").await;
            ids.insert(name, state_ids(s, who, &room).await[&member_key(who)].clone());
        }
        let last = ids["chris's join"].clone();
        for (s, who) in [(self.a(), &self.walt), (self.b(), &self.owner)] {
            wait_for_event(s, who, &room, |e| e["event_id"] == last.as_str()).await;
        }
        Run { version, first, room, ids }
    }

    /// Every room of a scenario: each version, each side first.
    async fn rooms(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        for version in ["10", "11", "12"] {
            for first in [First::A, First::C] {
                runs.push(self.room(version, first).await);
            }
        }
        runs
    }

    /// Cuts C off, has each run's sides act in its order (`side(run, A or
    /// C)`) and a user on each side speak last, heals, and once every
    /// server holds both sides' last messages has B send one more that
    /// joins the branches. That one is the only event to resolve the two
    /// sides' states: an event made on A or C after the heal could join
    /// its side with part of the other (a DAG of its own, which may
    /// resolve otherwise).
    async fn partitioned(
        &self,
        runs: &mut [Run],
        side: impl AsyncFn(&Cast, &str, First) -> Vec<(&'static str, String)>,
    ) {
        self.links.partition(&[0, 1], &[2]);
        let mut tips = Vec::new();
        for run in runs.iter_mut() {
            let order = match run.first {
                First::A => [First::A, First::C],
                First::C => [First::C, First::A],
            };
            for acting in order {
                let done = side(self, &run.room, acting).await;
                run.ids.extend(done);
                next_millisecond().await;
            }
            let from_a = send_id(self.a(), &self.walt, &run.room, "A's last").await;
            let from_c = send_id(self.c(), &self.chris, &run.room, "C's last").await;
            tips.push([from_a, from_c]);
        }
        self.links.heal();
        for (run, tips) in runs.iter().zip(&tips) {
            let room = &run.room;
            for id in tips {
                for (s, who) in self.watchers() {
                    wait_for_event(s, who, room, |e| e["event_id"] == id.as_str()).await;
                }
            }
            let last = send_id(self.b(), &self.owner, room, "healed").await;
            for (s, who) in self.watchers() {
                wait_for_event(s, who, room, |e| e["event_id"] == last.as_str()).await;
            }
        }
    }

    /// A user on each server who stays in the room.
    fn watchers(&self) -> [(&TestServer, &Session); 3] {
        [(self.a(), &self.walt), (self.b(), &self.owner), (self.c(), &self.chris)]
    }

    /// The room's current state on every server, which must be the same;
    /// state key → event ID.
    async fn agreed_state(&self, run: &Run) -> BTreeMap<(String, String), String> {
        let mut states = Vec::new();
        for (s, who) in self.watchers() {
            states.push(state_ids(s, who, &run.room).await);
        }
        let context = format!("v{} {:?} first", run.version, run.first);
        assert_eq!(states[0], states[1], "{context}: A and B disagree");
        assert_eq!(states[1], states[2], "{context}: B and C disagree");
        // The operator's view agrees too.
        let room_id = ruma::RoomId::parse(&run.room).unwrap();
        let hashes: Vec<_> = self
            .fed
            .servers
            .iter()
            .map(|s| s.server().services.rooms.fingerprint(&room_id).unwrap().unwrap().state_hash)
            .collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{context}: {hashes:?}");
        // And the state before every event, on the owner's server (which
        // has the whole DAG), is what the spec's algorithm gives.
        super::oracle::check_room(&self.b().server().services.rooms, &room_id)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        states.swap_remove(0)
    }
}

/// Scenario 2: during {A, B} | {C}, the owner raises alice to 75 and she
/// bans carol and xavier; chris raises carol to 75 and she bans alice,
/// bans xavier and unbans him. Both sides' actions are valid where they
/// were made. What state resolution v2 (v2.1 in rooms v12) prescribes,
/// worked out from the spec before running it, with its reverse
/// topological power ordering: Kahn's algorithm over the auth DAG of the
/// conflicted power events, taking among the events whose auth events are
/// placed the one whose sender has the most power, then the earliest.
/// - The power-level changes come first (their senders have 100); the
///   later applies last and stands. In v12 the owner, a creator, outranks
///   chris: the owner's change comes first whatever the clock, and
///   chris's stands.
/// - alice's join (her power 50) is placed, so her ban of xavier (75) is
///   placed before carol's join (50) and so before all of carol's bans:
///   it passes (50 or 75 is enough against xavier's 0), and carol's ban
///   and unban of xavier come after it. xavier ends unbanned everywhere.
/// - The bans of each other go by timestamp, each checked against the
///   levels that stand: only the admin at 75 can ban the one at 50.
/// So where chris's levels stand (A acted first, or v12): alice banned by
/// carol, carol joined. Where the owner's stand (C first, v10 and v11):
/// carol banned by alice, alice joined. `oracle::check_room` recomputes
/// every state with ruma's resolution as well. Every server agrees, and
/// refuses the banned admin.
#[tokio::test]
async fn conflicting_bans_across_a_partition_resolve_as_the_spec_says() {
    let cast = Cast::start().await;
    let mut runs = cast.rooms().await;
    cast.partitioned(&mut runs, async |cast, room, side| match side {
        First::A => {
            let raised = raise(cast.b(), &cast.owner, room, &cast.alice).await;
            // alice bans with the power the owner gave her, once A has it.
            wait_for_id(cast.a(), &cast.alice, room, &raised, 30).await;
            vec![
                ("ownerPL", raised),
                ("alice bans carol", moderate(cast.a(), &cast.alice, room, &cast.carol, "ban").await),
                ("alice bans xavier", moderate(cast.a(), &cast.alice, room, &cast.xavier, "ban").await),
            ]
        }
        First::C => vec![
            ("chrisPL", raise(cast.c(), &cast.chris, room, &cast.carol).await),
            ("carol bans alice", moderate(cast.c(), &cast.carol, room, &cast.alice, "ban").await),
            ("carol bans xavier", moderate(cast.c(), &cast.carol, room, &cast.xavier, "ban").await),
            ("carol unbans xavier", moderate(cast.c(), &cast.carol, room, &cast.xavier, "unban").await),
        ],
    })
    .await;

    for run in &runs {
        let state = cast.agreed_state(run).await;
        let at = |who: &Session| state[&member_key(who)].as_str();
        let levels = state[&("m.room.power_levels".to_owned(), String::new())].as_str();
        let context = format!("v{} {:?} first", run.version, run.first);
        assert_eq!(at(&cast.xavier), run.id("carol unbans xavier"), "{context}");
        let (banned, server, kept) = if run.c_wins() {
            assert_eq!(levels, run.id("chrisPL"), "{context}");
            assert_eq!(at(&cast.alice), run.id("carol bans alice"), "{context}");
            assert_eq!(at(&cast.carol), run.id("carol's join"), "{context}");
            (&cast.alice, 0, &cast.carol)
        } else {
            assert_eq!(levels, run.id("ownerPL"), "{context}");
            assert_eq!(at(&cast.carol), run.id("alice bans carol"), "{context}");
            assert_eq!(at(&cast.alice), run.id("alice's join"), "{context}");
            (&cast.carol, 2, &cast.alice)
        };
        // The banned admin's server refuses her, and what it would send
        // for her anyway every other server refuses.
        let s = &cast.fed.servers[server];
        let (status, body) =
            send(s, banned, &run.room, &format!("banned{}", run.version), "still here?").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{context}: {body}");
        let (id, pdu) =
            super::forged::build(s, &run.room, &banned.user_id, super::forged::message("still here"));
        for (to, (s, watcher)) in cast.watchers().into_iter().enumerate().filter(|(to, _)| *to != server) {
            let txn = format!("banned{}{:?}{to}", run.version, run.first);
            let (status, body) = cast.fed.send_transaction(server, to, &txn, vec![json!(pdu)]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            // Handled (as Synapse does, a rejection is no error of the
            // transaction), and never shown.
            assert!(body["pdus"][&id].is_object(), "{context}: {body}");
            let path = format!("/_matrix/client/v3/rooms/{}/event/{id}", run.room);
            let (status, body) = s.get(&path, Some(&watcher.token)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{context}: server {to} shows {id}: {body}");
        }
        // The other admin still moderates.
        let s = &cast.fed.servers[2 - server];
        send_id(s, kept, &run.room, "still moderating").await;
    }
}

/// Scenario 3: during {A, B} | {C}, the owner makes the room invite-only
/// and raises alice to 75 and the state default to 60; chris makes it
/// knock-only and raises carol to 75. Join rules and power levels are
/// both power events, ordered as in scenario 2: chris's pair stands where
/// A acted first or in v12, the owner's pair otherwise. Every server
/// agrees, and applies the join rule that stands.
#[tokio::test]
async fn concurrent_power_and_join_rule_changes_resolve_the_same_everywhere() {
    let cast = Cast::start().await;
    let mut runs = cast.rooms().await;
    cast.partitioned(&mut runs, async |cast, room, side| match side {
        First::A => vec![
            ("ownerJR", join_rule(cast.b(), &cast.owner, room, "invite").await),
            (
                "ownerPL",
                set_levels(cast.b(), &cast.owner, room, |levels| {
                    levels["users"][&cast.alice.user_id] = json!(75);
                    levels["state_default"] = json!(60);
                })
                .await,
            ),
        ],
        First::C => vec![
            ("chrisJR", join_rule(cast.c(), &cast.chris, room, "knock").await),
            ("chrisPL", raise(cast.c(), &cast.chris, room, &cast.carol).await),
        ],
    })
    .await;

    let newcomer = cast.a().register("newcomer").await;
    for run in &runs {
        let state = cast.agreed_state(run).await;
        let context = format!("v{} {:?} first", run.version, run.first);
        let key = |kind: &str| (kind.to_owned(), String::new());
        let (rule, levels) = if run.c_wins() { ("chrisJR", "chrisPL") } else { ("ownerJR", "ownerPL") };
        assert_eq!(state[&key("m.room.join_rules")], run.id(rule), "{context}");
        assert_eq!(state[&key("m.room.power_levels")], run.id(levels), "{context}");
        // Invite-only or knock-only: nobody joins uninvited.
        let path = format!("/_matrix/client/v3/join/{}?via=hs2.test", crate::common::urlencode(&run.room));
        let (status, body) = cast.a().post(&path, Some(&newcomer.token), json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{context}: {body}");
    }
}

/// `room`'s current state as `who` on `s` reads it: (type, state key) → event ID.
async fn state_ids(s: &TestServer, who: &Session, room: &str) -> BTreeMap<(String, String), String> {
    let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/state"), Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned());
            (key, e["event_id"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn member_key(who: &Session) -> (String, String) {
    ("m.room.member".to_owned(), who.user_id.clone())
}

/// Changes the room's power levels as `who`; the new event's ID.
async fn set_levels(s: &TestServer, who: &Session, room: &str, change: impl FnOnce(&mut Value)) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
    let (status, mut levels) = s.get(&path, Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    change(&mut levels);
    put_state(s, who, room, "m.room.power_levels", levels).await
}

/// `who` raises `user` to 75.
async fn raise(s: &TestServer, who: &Session, room: &str, user: &Session) -> String {
    set_levels(s, who, room, |levels| levels["users"][&user.user_id] = json!(75)).await
}

async fn join_rule(s: &TestServer, who: &Session, room: &str, rule: &str) -> String {
    put_state(s, who, room, "m.room.join_rules", json!({"join_rule": rule})).await
}

/// `who` bans (`action` "ban"), unbans ("unban") or kicks ("kick")
/// `user`; the membership event's ID.
async fn moderate(s: &TestServer, who: &Session, room: &str, user: &Session, action: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{room}/{action}");
    let (status, body) = s.post(&path, Some(&who.token), json!({"user_id": user.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{action} of {}: {body}", user.user_id);
    state_ids(s, who, room).await[&member_key(user)].clone()
}

/// Sends a message that must be accepted; its event ID.
async fn send_id(s: &TestServer, who: &Session, room: &str, text: &str) -> String {
    let txn = format!("{text}-{}", hearth::util::now_ms());
    let (status, body) = send(s, who, room, &txn, text).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

/// Returns once the clock shows a later millisecond than when called, so
/// that what is sent next carries a later `origin_server_ts`.
async fn next_millisecond() {
    let now = hearth::util::now_ms();
    while hearth::util::now_ms() <= now {
        tokio::task::yield_now().await;
    }
}

/// Events made in each room while C is down (scenario 4).
const WHILE_DOWN: usize = 1000;

/// Scenario 4: C, a process of its own, is killed (`kill -9`) as soon as
/// carol's last message is acknowledged, and stays down while A and B make
/// 1,000 events in each room, one in ten a state change (topic, name,
/// power levels, erin and frank joining and leaving, dan of C kicked). C
/// comes back, is killed again while it catches up, and comes back once
/// more. It ends with the state A and B have, and nobody lost what the
/// DAG did not take away: carol keeps her join and her power level, no
/// resolution on C ever dropped a membership or the power levels (C's log
/// says so if one does), her acknowledged message survived both kills and
/// reached A and B, and C's history holds every message of the gap once.
#[tokio::test]
async fn a_server_down_through_a_thousand_events_catches_up_without_a_state_reset() {
    let (mut fed, _links) = Links::launch(3, &[2]).await;
    let [a, b, _] = [0, 1, 2].map(|i| &fed.servers[i]);
    let (owner, erin) = (a.register("owner").await, a.register("erin").await);
    let (bob, frank) = (b.register("bob").await, b.register("frank").await);
    let (carol, dan) = (fed.servers[2].register("carol").await, fed.servers[2].register("dan").await);
    let mut rooms = Vec::new();
    for version in ["10", "11", "12"] {
        let room = create_room(a, &owner, json!({"preset": "public_chat", "room_version": version})).await;
        set_levels(a, &owner, &room, |levels| {
            levels["users"][&bob.user_id] = json!(50);
            levels["users"][&carol.user_id] = json!(50);
        })
        .await;
        join_via(b, &bob, &room, "hs1.test").await;
        for who in [&carol, &dan] {
            join_via(&fed.servers[2], who, &room, "hs1.test").await;
        }
        wait_for_event(a, &owner, &room, |e| e["state_key"] == dan.user_id.as_str()).await;
        let carols_join = state_ids(a, &owner, &room).await[&member_key(&carol)].clone();
        let last_words = send_id(&fed.servers[2], &carol, &room, "before the crash").await;
        rooms.push((room, carols_join, last_words));
    }
    fed.servers[2].kill_9();

    // The three rooms at once.
    let [a, b, _] = [0, 1, 2].map(|i| &fed.servers[i]);
    let (owner, erin, bob, frank, dan) = (&owner, &erin, &bob, &frank, &dan);
    let made = futures_util::future::join_all(rooms.iter().map(|(room, _, _)| async move {
        let (mut made, mut kick) = (Vec::new(), String::new());
        let (mut erin_in, mut frank_in) = (false, false);
        for i in 0..WHILE_DOWN {
            let id = match (i % 10, i / 10 % 5) {
                _ if i == WHILE_DOWN / 2 => {
                    kick = moderate(a, owner, room, dan, "kick").await;
                    kick.clone()
                }
                (0, 0) => {
                    put_state(a, owner, room, "m.room.topic", json!({"topic": format!("topic {i}")})).await
                }
                (0, 1) => {
                    let level = if i / 50 % 2 == 0 { 60 } else { 50 };
                    set_levels(a, owner, room, |levels| levels["users"][&bob.user_id] = json!(level)).await
                }
                (0, 2) => {
                    erin_in = !erin_in;
                    membership(a, erin, room, erin_in, owner).await
                }
                (0, 3) => {
                    frank_in = !frank_in;
                    membership(b, frank, room, frank_in, bob).await
                }
                (0, _) => put_state(b, bob, room, "m.room.name", json!({"name": format!("name {i}")})).await,
                _ if i % 2 == 0 => send_id(a, owner, room, &format!("A {i}")).await,
                _ => send_id(b, bob, room, &format!("B {i}")).await,
            };
            made.push(id);
        }
        (made, kick)
    }))
    .await;

    // Back, and killed again once it has taken in some of what it missed.
    fed.servers[2].start_again().await;
    let missed = &made[0].0;
    wait_for_event(&fed.servers[2], &carol, &rooms[0].0, |e| {
        e["event_id"].as_str().is_some_and(|id| missed.iter().any(|m| m == id))
    })
    .await;
    fed.servers[2].kill_9();
    fed.servers[2].start_again().await;

    let [a, b, c] = [0, 1, 2].map(|i| &fed.servers[i]);
    for (r, (room, carols_join, last_words)) in rooms.iter().enumerate() {
        let back = send_id(a, owner, room, "welcome back").await;
        // Catching up on 3,000 events takes a debug build a while, longer
        // with the rest of the tests running beside it.
        wait_for_id(c, &carol, room, &back, 600).await;
        let mut states = Vec::new();
        for (s, who) in [(a, owner), (b, bob), (c, &carol)] {
            states.push(state_ids(s, who, room).await);
            // carol's message, acknowledged just before the kill, is everywhere.
            let (status, body) =
                s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{last_words}"), Some(&who.token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        assert_eq!(states[0], states[1], "room {r}: A and B disagree");
        assert_eq!(states[0], states[2], "room {r}: C disagrees with A");
        assert_eq!(&states[2][&member_key(&carol)], carols_join, "room {r}: carol's join");
        assert_eq!(states[2][&member_key(dan)], made[r].1, "room {r}: dan's kick");
        let (status, levels) = c
            .get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"), Some(&carol.token))
            .await;
        assert_eq!(status, StatusCode::OK, "{levels}");
        assert_eq!(levels["users"][&carol.user_id], 50, "room {r}: carol's level");
        // No resolution on C ever dropped a membership or the power levels
        // (a state reset, even a passing one, logs "-> nothing";
        // docs/FEDERATION.md tells the one this caught).
        let log = c.process_log();
        let resets: Vec<&str> =
            log.lines().filter(|l| l.contains("state resolution") && l.contains("-> nothing")).collect();
        if !resets.is_empty() {
            // C's whole log, kept (the tail printed below is short).
            let kept = std::env::temp_dir().join(format!("hearth-scenario4-c-room{r}.log"));
            std::fs::write(&kept, &log).unwrap();
            panic!("state resets on C (its log: {}): {resets:#?}", kept.display());
        }
        // Paging back on C to the room's start shows every message made
        // while it was down once, and no event twice. (A state event that
        // reaches C after a later one of the same user may fail the auth
        // rules against C's current state, a second leave say: soft-failed,
        // and not shown, as the spec has it.) Not in their place, though:
        // the part of the gap C backfills is shown before the whole live
        // timeline (docs/FEDERATION.md, "Known limits").
        let seen = paged_back(c, &carol, room).await;
        for (i, id) in made[r].0.iter().enumerate() {
            let times = seen.iter().filter(|s| *s == id).count();
            let message = i % 10 != 0 && i != WHILE_DOWN / 2;
            assert!(times == 1 || (!message && times == 0), "room {r}: {id} (event {i}) {times} times on C");
        }
    }
}

/// `who` joins `room` (`join` true) or leaves it; the membership event's
/// ID, as `reader`, in the room on the same server, sees it.
async fn membership(s: &TestServer, who: &Session, room: &str, join: bool, reader: &Session) -> String {
    if join {
        join_via(s, who, room, "hs1.test").await;
    } else {
        let path = format!("/_matrix/client/v3/rooms/{room}/leave");
        let (status, body) = s.post(&path, Some(&who.token), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    state_ids(s, reader, room).await[&member_key(who)].clone()
}

/// The IDs of `room`'s events as `who` pages back with `/messages` from
/// the newest to the room's start.
async fn paged_back(s: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from = String::new();
    for _ in 0..1000 {
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100{from}");
        let (status, body) = s.get(&path, Some(&who.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let chunk = body["chunk"].as_array().unwrap();
        ids.extend(chunk.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match body["end"].as_str() {
            Some(end) => from = format!("&from={end}"),
            None => return ids,
        }
    }
    panic!("{room}: no end in 1,000 pages");
}
