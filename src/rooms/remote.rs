//! Rooms learned from other servers: a room first known from a join
//! response is installed from the state and auth chain it carries.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use ruma::{CanonicalJsonObject, OwnedEventId, RoomId, RoomVersionId, signatures::PublicKeyMap};

use super::{
    RoomRecord, Rooms, Status,
    pdu::{Pdu, event_id_of},
    pipeline::{AppendError, Origin, Outcome, StateBefore},
    short_ids::{Kind, state_key_name},
    state::StateMap,
};
use crate::{Error, Result, storage::maps, util};

/// What a join response (`/send_join`) brings: the room's state before the
/// join, the auth chain of that state and of the join, and the join event
/// (as the resident server returned it, signed by both).
pub struct JoinResponse {
    pub state: Vec<CanonicalJsonObject>,
    pub auth_chain: Vec<CanonicalJsonObject>,
    pub join: CanonicalJsonObject,
}

impl Rooms {
    /// Installs a room from a join response: its auth chain and state are
    /// stored as outliers, auth events first (each checked against its own
    /// auth events), and the join is appended with that state as the state
    /// before it. The join is the room's forward extremity; the events it
    /// names, which we do not have, are its backward extremities. A room
    /// already known (a rejoin) keeps its record.
    pub async fn install_remote_room(
        &self,
        room_id: &RoomId,
        version: RoomVersionId,
        response: JoinResponse,
        keys: PublicKeyMap,
    ) -> Result<Outcome, AppendError> {
        let rules =
            version.rules().ok_or_else(|| Error::bad_json(format!("Unknown room version {version}")))?;
        let _guard = self.lock(room_id).await;
        let room_short = self.short.get_or_create(Kind::Room, room_id.as_str())?;
        let mut record = match self.room(room_id)? {
            Some((_, record)) if record.version != version => {
                return Err(Error::bad_json("The room's version changed").into());
            }
            Some((_, record)) => record,
            None => {
                let record = RoomRecord {
                    room_id: room_id.to_owned(),
                    version: version.clone(),
                    current_snapshot: None,
                    forward_extremities: Vec::new(),
                    created_ts: util::now_ms(),
                };
                self.db.put_json(&maps::ROOMS, &room_short.to_be_bytes(), &record)?;
                record
            }
        };
        // A rejoin: what we have of the room is stale. The join, on the
        // resident's state, becomes its one forward extremity (the old ones
        // are not resolved against it with every later event), and it is
        // not soft-failed against the stale state (see `compute`).
        if !self.has_local_member(room_short)? {
            record.forward_extremities.clear();
        }

        let state_ids =
            response.state.iter().map(|object| event_id_of(object, &rules)).collect::<Result<Vec<_>>>()?;
        self.store_outliers(
            room_short,
            &record,
            response.auth_chain.into_iter().chain(response.state),
            &keys,
        )?;
        let state = self.state_of_events(room_short, &state_ids)?;
        let join_id = event_id_of(&response.join, &rules)?;
        let origin = Origin::Remote(keys);
        crate::util::heavy(|| {
            self.append(room_short, &mut record, join_id, response.join, origin, StateBefore::Given(state))
        })
    }
}

impl Rooms {
    /// Stores events known only as auth or state events (from a join
    /// response, `/state_ids`, `/event_auth`) as outliers, each after those
    /// of its auth events that are among them. An event that cannot be
    /// stored (bad signature, …) is left out; events that need it fail too.
    pub fn store_outliers(
        &self,
        room_short: u64,
        record: &RoomRecord,
        objects: impl IntoIterator<Item = CanonicalJsonObject>,
        keys: &PublicKeyMap,
    ) -> Result<()> {
        let rules = record.rules()?;
        let mut events = HashMap::new();
        for object in objects {
            events.insert(event_id_of(&object, &rules)?, object);
        }
        for event_id in auth_first(&events)? {
            let object = events.remove(&event_id).expect("sorted from the map");
            if let Err(e) = self.append_outlier(room_short, record, event_id.clone(), object, keys.clone()) {
                tracing::debug!("{event_id} of {} not stored: {e:?}", record.room_id);
            }
        }
        Ok(())
    }

    /// The state made of the given state events: those stored in the room
    /// and not rejected.
    pub fn state_of_events(&self, room_short: u64, event_ids: &[OwnedEventId]) -> Result<StateMap> {
        let mut state = StateMap::new();
        for event_id in event_ids {
            let Some(short) = self.event_short(event_id)? else { continue };
            let (Some(pdu), Some(meta)) = (self.pdu_by_short(short)?, self.event_meta(short)?) else {
                continue;
            };
            let Some(state_key) = &pdu.state_key else { continue };
            if meta.status == Status::Rejected || meta.room != room_short {
                continue;
            }
            let key = self
                .short
                .get_or_create(Kind::StateKey, &state_key_name(&pdu.kind.to_string(), state_key))?;
            state.insert(key, short);
        }
        Ok(state)
    }

    /// The state after an event in the room's DAG (`None` for one we do
    /// not have there: unknown, or an outlier, rejected or not).
    pub fn state_after(&self, event_id: &ruma::EventId) -> Result<Option<Arc<StateMap>>> {
        let Some(short) = self.event_short(event_id)? else { return Ok(None) };
        let Some(meta) = self.event_meta(short)? else { return Ok(None) };
        if !meta.in_dag() {
            return Ok(None);
        }
        Ok(Some(self.load_state(meta.state_after)?))
    }

    /// The state after a prev event we lack in the DAG: the state before
    /// it (fetched with `/state_ids`, its events stored) and the event itself
    /// when it is a state event (stored as an outlier).
    pub fn state_after_missing(
        &self,
        room_short: u64,
        state_before: &[OwnedEventId],
        event_id: &ruma::EventId,
    ) -> Result<StateMap> {
        let mut ids = state_before.to_vec();
        ids.push(event_id.to_owned());
        // The event itself last: it replaces what it follows.
        self.state_of_events(room_short, &ids)
    }

    /// Whether an event built here (not yet appended) is allowed by its auth
    /// events: checked before it is sent to another server for signing.
    pub fn check_built(
        &self,
        room_short: u64,
        record: &RoomRecord,
        event_id: &ruma::EventId,
        object: &CanonicalJsonObject,
    ) -> Result<()> {
        let rules = record.rules()?;
        let pdu = Pdu::from_canonical(event_id.to_owned(), object)?;
        match self.check_against_auth_events(&pdu, &rules, room_short, &record.room_id) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::forbidden(reason)),
            Err(AppendError::Refused(e)) => Err(e),
            Err(other) => Err(Error::internal(format!("{other:?}"))),
        }
    }

    /// Resolves the states after an event's prevs (a gap: some fetched).
    pub fn resolve_gap(&self, record: &RoomRecord, states: Vec<Arc<StateMap>>) -> Result<StateMap> {
        let rules = record.rules()?;
        match states.len() {
            0 => Ok(StateMap::new()),
            1 => Ok((*states[0]).clone()),
            _ => crate::util::heavy(|| self.resolve_states(&rules, &states, None)),
        }
    }
}

/// The events in an order where each comes after those of its auth events
/// that are among them (the rest must be stored already).
fn auth_first(events: &HashMap<OwnedEventId, CanonicalJsonObject>) -> Result<Vec<OwnedEventId>> {
    let mut waiting_on: BTreeMap<OwnedEventId, usize> = BTreeMap::new();
    let mut dependents: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let pdus = events
        .iter()
        .map(|(event_id, object)| Pdu::from_canonical(event_id.clone(), object))
        .collect::<Result<Vec<_>>>()?;
    // The create event first (from v12 it is implied, never listed).
    let create =
        pdus.iter().find(|p| p.kind == ruma::events::TimelineEventType::RoomCreate).map(|p| &p.event_id);
    for pdu in &pdus {
        let event_id = &pdu.event_id;
        let mut within: Vec<_> = pdu.auth_events.iter().filter(|a| events.contains_key(*a)).collect();
        if let Some(create) = create.filter(|c| *c != event_id && !within.contains(c)) {
            within.push(create);
        }
        waiting_on.insert(event_id.clone(), within.len());
        for auth in within {
            dependents.entry(auth.clone()).or_default().push(event_id.clone());
        }
    }
    let mut ready: Vec<OwnedEventId> =
        waiting_on.iter().filter(|(_, n)| **n == 0).map(|(id, _)| id.clone()).collect();
    let mut order = Vec::with_capacity(events.len());
    while let Some(event_id) = ready.pop() {
        for dependent in dependents.remove(&event_id).unwrap_or_default() {
            let n = waiting_on.get_mut(&dependent).expect("every event counted");
            *n -= 1;
            if *n == 0 {
                ready.push(dependent);
            }
        }
        order.push(event_id);
    }
    if order.len() != events.len() {
        return Err(Error::bad_json("The auth chain has a cycle"));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, UserId, user_id};
    use serde_json::json;

    use super::*;
    use crate::rooms::{builder::PduBuilder, testing::*};

    const BOB: &str = "@bob:localhost";

    /// Bob (local) joins a room that lives on remote.test: the join built
    /// on the room's latest event and signed by us, the response carrying
    /// the room's whole state as its auth chain too, and a forged power
    /// levels change by someone not in the room.
    async fn join_remote_room(
        f: &Fixture,
        remote: &Remote,
        version: RoomVersionId,
    ) -> (RemoteRoom, OwnedEventId, OwnedEventId, Outcome) {
        let mut room = RemoteRoom::new(remote, version.clone());
        let (creator, mallory) = ("@creator:remote.test", "@mallory:remote.test");
        let mut forged =
            room.next(mallory, "m.room.power_levels", Some(""), json!({"users": {mallory: 100}}));
        // Signed by the room's server, naming the creator's auth events.
        forged["auth_events"] = json!(room.auth_events(creator, "m.room.power_levels", Some("")));
        let forged = remote.sign(forged, &version);
        let forged_id = forged.0.clone();
        let event = room.next(BOB, "m.room.member", Some(BOB), json!({"membership": "join"}));
        let join = f.rooms.finish(event, &version.rules().unwrap(), &version).unwrap();
        let state: Vec<_> = room.events.iter().map(|(_, o)| o.clone()).chain([forged.1]).collect();
        let response = JoinResponse { auth_chain: state.clone(), state, join: join.1.clone() };
        let outcome =
            f.rooms.install_remote_room(&room.room_id, version, response, remote.keys()).await.unwrap();
        room.push(join.clone());
        (room, join.0, forged_id, outcome)
    }

    fn status(f: &Fixture, event_id: &ruma::EventId) -> Status {
        f.rooms.event_meta(f.rooms.event_short(event_id).unwrap().unwrap()).unwrap().unwrap().status
    }

    #[tokio::test]
    async fn a_room_is_installed_from_a_join_response() {
        for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
            let f = fixture().await;
            let remote = Remote::new("remote.test");
            let (room, join_id, forged_id, outcome) = join_remote_room(&f, &remote, version.clone()).await;
            assert!(matches!(outcome, Outcome::Accepted { .. }), "{version}: {outcome:?}");
            let (short, record) = f.rooms.room(&room.room_id).unwrap().unwrap();
            let bob = UserId::parse(BOB).unwrap();
            assert_eq!(f.rooms.membership(&bob, short).unwrap().as_deref(), Some("join"));
            let creator = UserId::parse("@creator:remote.test").unwrap();
            assert_eq!(f.rooms.membership(&creator, short).unwrap().as_deref(), Some("join"));
            let servers: Vec<String> =
                f.rooms.servers_in_room(short).unwrap().iter().map(ToString::to_string).collect();
            assert_eq!(servers, [bob.server_name().as_str(), "remote.test"]);
            assert_eq!(record.forward_extremities, std::slice::from_ref(&join_id));
            // The state events are outliers; the join names the latest of
            // them, which we lack in the DAG: a backward extremity.
            let create = &room.events[0].0;
            assert_eq!(status(&f, create), Status::Outlier);
            assert_eq!(
                f.rooms.backward_extremities(short).unwrap(),
                [room.events[room.events.len() - 2].0.clone()]
            );
            // The forged event is rejected and kept out of the state.
            assert_eq!(status(&f, &forged_id), Status::Rejected);
            let levels = f.rooms.current_state_event(short, "m.room.power_levels", "").unwrap().unwrap();
            assert_eq!(levels.sender, creator);
            // Bob sends on the join.
            let builder = PduBuilder::message("m.room.message", json!({"body": "hello"}));
            let sent = f.rooms.send(&room.room_id, &bob, builder, None).await.unwrap();
            assert_eq!(f.rooms.pdu(&sent).unwrap().unwrap().prev_events, [join_id]);
        }
    }

    /// The create event of a v12 room is found by its ID, not in the
    /// room's (not yet installed) state: a join response whose state lacks
    /// nothing else installs, and one whose auth chain lacks the create
    /// event is refused naming it, with nothing installed.
    #[tokio::test]
    async fn a_v12_create_event_is_looked_up_by_id() {
        let f = fixture().await;
        let remote = Remote::new("remote.test");
        let mut room2 = RemoteRoom::new(&remote, RoomVersionId::V12);
        let event = room2.next(BOB, "m.room.member", Some(BOB), json!({"membership": "join"}));
        let version = RoomVersionId::V12;
        let join = f.rooms.finish(event, &version.rules().unwrap(), &version).unwrap();
        let without_create: Vec<_> = room2.events[1..].iter().map(|(_, o)| o.clone()).collect();
        let response =
            JoinResponse { auth_chain: without_create.clone(), state: without_create, join: join.1 };
        match f.rooms.install_remote_room(&room2.room_id, version, response, remote.keys()).await {
            Err(AppendError::MissingAuth(ids)) => assert!(ids.contains(&room2.events[0].0), "{ids:?}"),
            other => panic!("expected MissingAuth, got {other:?}"),
        }
        let bob = user_id!("@bob:localhost");
        let short = f.rooms.room_short(&room2.room_id).unwrap().unwrap();
        assert_eq!(f.rooms.membership(bob, short).unwrap(), None);
    }

    #[tokio::test]
    async fn a_gap_is_filled_with_a_supplied_state() {
        let f = fixture().await;
        let remote = Remote::new("remote.test");
        let (mut room, join_id, _, _) = join_remote_room(&f, &remote, RoomVersionId::V11).await;
        let creator = "@creator:remote.test";
        let first = room.next(creator, "m.room.message", None, json!({"body": "one"}));
        let first = remote.sign(first, &room.version);
        let first_id = room.push(first.clone());
        let second = room.next(creator, "m.room.message", None, json!({"body": "two"}));
        let second = remote.sign(second, &room.version);
        let second_id = room.push(second.clone());

        let (short, mut record) = f.rooms.room(&room.room_id).unwrap().unwrap();
        // The second arrives first: its prev is missing.
        match f.rooms.append(
            short,
            &mut record,
            second.0.clone(),
            second.1.clone(),
            Origin::Remote(remote.keys()),
            StateBefore::FromPrevs,
        ) {
            Err(AppendError::MissingPrevs(ids)) => assert_eq!(ids, std::slice::from_ref(&first_id)),
            other => panic!("expected MissingPrevs, got {other:?}"),
        }
        // With the state before it given (as /state_ids would), it goes in,
        // and the missing prev is a backward extremity.
        let state = (*f.rooms.current_state(&record).unwrap()).clone();
        let outcome = f
            .rooms
            .append(
                short,
                &mut record,
                second.0,
                second.1,
                Origin::Remote(remote.keys()),
                StateBefore::Given(state),
            )
            .unwrap();
        assert!(matches!(outcome, Outcome::Accepted { .. }));
        // (The join stays an extremity: nothing we have builds on it yet.)
        assert_eq!(record.forward_extremities, [join_id, second_id.clone()]);
        assert!(f.rooms.backward_extremities(short).unwrap().contains(&first_id));
        // The first arrives (get_missing_events): it is no extremity, for
        // its child is here, and no longer missing.
        let outcome = f
            .rooms
            .append(
                short,
                &mut record,
                first.0,
                first.1,
                Origin::Remote(remote.keys()),
                StateBefore::FromPrevs,
            )
            .unwrap();
        assert!(matches!(outcome, Outcome::Accepted { .. }));
        assert_eq!(record.forward_extremities, [second_id]);
        assert!(!f.rooms.backward_extremities(short).unwrap().contains(&first_id));
        assert_eq!(f.rooms.children_in_dag(&first_id).unwrap().len(), 1);
        assert_eq!(
            f.rooms.room(&room.room_id).unwrap().unwrap().1.forward_extremities,
            record.forward_extremities
        );
    }

    /// Appends a remote event to the installed room.
    fn deliver(
        f: &Fixture,
        room: &RemoteRoom,
        remote: &Remote,
        event: (OwnedEventId, CanonicalJsonObject),
        state: StateBefore,
    ) -> Result<Outcome, AppendError> {
        let (short, mut record) = f.rooms.room(&room.room_id).unwrap().unwrap();
        f.rooms.append(short, &mut record, event.0, event.1, Origin::Remote(remote.keys()), state)
    }

    /// The current state, as a caller filling a gap would supply it.
    fn current(f: &Fixture, room: &RemoteRoom) -> StateBefore {
        let (_, record) = f.rooms.room(&room.room_id).unwrap().unwrap();
        StateBefore::Given((*f.rooms.current_state(&record).unwrap()).clone())
    }

    /// Review §1h: a redaction or a reaction that arrives before its target
    /// waits for it: the target is stored redacted, the reaction relates.
    #[tokio::test]
    async fn redactions_and_relations_before_their_target_apply_when_it_arrives() {
        let f = fixture().await;
        let remote = Remote::new("remote.test");
        let (mut room, _, _, _) = join_remote_room(&f, &remote, RoomVersionId::V11).await;
        let creator = "@creator:remote.test";
        let sign_next = |room: &mut RemoteRoom, kind: &str, content: serde_json::Value| {
            let event = room.next(creator, kind, None, content);
            let signed = remote.sign(event, &room.version);
            room.push(signed.clone());
            signed
        };
        let secret = sign_next(&mut room, "m.room.message", json!({"body": "secret", "msgtype": "m.text"}));
        let redaction = sign_next(&mut room, "m.room.redaction", json!({"redacts": secret.0}));
        let liked = sign_next(&mut room, "m.room.message", json!({"body": "like me", "msgtype": "m.text"}));
        let reaction = sign_next(
            &mut room,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": liked.0, "key": "+1"}}),
        );
        // Each arrives before its target (the gaps' state supplied).
        for early in [&redaction, &reaction] {
            let outcome = deliver(&f, &room, &remote, early.clone(), current(&f, &room)).unwrap();
            assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
        }
        for late in [&secret, &liked] {
            let outcome = deliver(&f, &room, &remote, late.clone(), current(&f, &room)).unwrap();
            assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
        }
        let stored = f.rooms.pdu(&secret.0).unwrap().unwrap();
        assert_eq!(stored.content_value(), json!({}), "stored redacted");
        let meta = f.rooms.event_meta(f.rooms.event_short(&secret.0).unwrap().unwrap()).unwrap().unwrap();
        assert_eq!(meta.redacted_by, f.rooms.event_short(&redaction.0).unwrap());
        let bob = UserId::parse(BOB).unwrap();
        let liked_short = f.rooms.event_short(&liked.0).unwrap().unwrap();
        let query = crate::rooms::relations::RelationsQuery {
            rel_type: Some("m.annotation"),
            event_type: None,
            recurse: false,
            from: None,
            to: None,
            backwards: true,
            limit: 10,
        };
        let (children, _) = f.rooms.relations_page(liked_short, &bob, &query).unwrap();
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].1, f.rooms.event_short(&reaction.0).unwrap().unwrap());
    }

    /// From room version 3 a server may redact its own users' events
    /// without power; a local user without power may not redact a remote
    /// one's.
    #[tokio::test]
    async fn a_server_redacts_its_own_users_events() {
        let f = fixture().await;
        let remote = Remote::new("remote.test");
        let (mut room, _, _, _) = join_remote_room(&f, &remote, RoomVersionId::V11).await;
        let (dave, eve) = ("@dave:remote.test", "@eve:remote.test");
        let mut events = Vec::new();
        for user in [dave, eve] {
            room.state(&remote, user, "m.room.member", user, json!({"membership": "join"}));
            events.push(room.events.last().unwrap().clone());
        }
        let said = room.next(dave, "m.room.message", None, json!({"body": "oops", "msgtype": "m.text"}));
        let said = remote.sign(said, &room.version);
        room.push(said.clone());
        let redaction = room.next(eve, "m.room.redaction", None, json!({"redacts": said.0}));
        let redaction = remote.sign(redaction, &room.version);
        room.push(redaction.clone());
        for event in events.into_iter().chain([said.clone(), redaction]) {
            let outcome = deliver(&f, &room, &remote, event, StateBefore::FromPrevs).unwrap();
            assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
        }
        assert_eq!(f.rooms.pdu(&said.0).unwrap().unwrap().content_value(), json!({}));

        let another = room.next(dave, "m.room.message", None, json!({"body": "mine", "msgtype": "m.text"}));
        let another = remote.sign(another, &room.version);
        room.push(another.clone());
        deliver(&f, &room, &remote, another.clone(), StateBefore::FromPrevs).unwrap();
        let bob = UserId::parse(BOB).unwrap();
        let builder = PduBuilder {
            redacts: Some(another.0.clone()),
            ..PduBuilder::message("m.room.redaction", json!({"redacts": another.0}))
        };
        f.rooms.send(&room.room_id, &bob, builder, None).await.unwrap();
        assert_eq!(
            f.rooms.pdu(&another.0).unwrap().unwrap().content_value()["body"],
            "mine",
            "bob has no power over dave"
        );
    }

    /// Review §1e: history a server backfills goes to the old end of the
    /// room, never live: no stream position (so no sync sees it or wakes),
    /// no extremity, and a user who joined later sees it under `shared`.
    #[tokio::test]
    async fn backfilled_history_is_placed_before_the_timeline_and_never_live() {
        use crate::rooms::read::Gap;
        let f = fixture().await;
        let remote = Remote::new("remote.test");
        let version = RoomVersionId::V11;
        let mut room = RemoteRoom::new(&remote, version.clone());
        let creator = "@creator:remote.test";
        let mut history = Vec::new();
        for body in ["one", "two"] {
            let event =
                room.next(creator, "m.room.message", None, json!({"body": body, "msgtype": "m.text"}));
            history.push(room.push(remote.sign(event, &version)));
        }
        let state: Vec<_> =
            room.events.iter().filter(|(_, o)| o.contains_key("state_key")).map(|(_, o)| o.clone()).collect();
        let event = room.next(BOB, "m.room.member", Some(BOB), json!({"membership": "join"}));
        let join = f.rooms.finish(event, &version.rules().unwrap(), &version).unwrap();
        let response = JoinResponse { auth_chain: state.clone(), state, join: join.1 };
        f.rooms.install_remote_room(&room.room_id, version, response, remote.keys()).await.unwrap();
        let (short, mut record) = f.rooms.room(&room.room_id).unwrap().unwrap();
        assert_eq!(f.rooms.backward_extremities(short).unwrap(), [history[1].clone()]);

        // Backfill, newest first, each on the state the join was made on.
        let join_meta = f.rooms.event_meta(f.rooms.event_short(&join.0).unwrap().unwrap()).unwrap().unwrap();
        let before_join = (*f.rooms.state.load(join_meta.state_before.unwrap()).unwrap()).clone();
        let position = f.rooms.stream.visible();
        for event_id in history.iter().rev() {
            let object = room.events.iter().find(|(id, _)| id == event_id).unwrap().1.clone();
            let origin = Origin::History(remote.keys());
            let outcome = f
                .rooms
                .append(
                    short,
                    &mut record,
                    event_id.clone(),
                    object,
                    origin,
                    StateBefore::Given(before_join.clone()),
                )
                .unwrap();
            assert_eq!(outcome, Outcome::History);
        }
        assert_eq!(f.rooms.stream.visible(), position, "nothing live: no sync sees it or wakes");
        assert_eq!(record.forward_extremities, std::slice::from_ref(&join.0));
        assert!(!f.rooms.backward_extremities(short).unwrap().contains(&history[1]));
        assert!(f.rooms.backward_extremities(short).unwrap().contains(&room.events[room.events.len() - 3].0));

        // Paging back from the end: the join, then the history, newest
        // first; Bob, who joined after it, sees it (`shared`).
        let bob = UserId::parse(BOB).unwrap();
        let end = Gap::Live(f.rooms.latest_position(short).unwrap() + 1);
        let page = f.rooms.page_all(short, &bob, None, end, None, true, 10, |_| true).unwrap();
        let ids: Vec<_> = page.events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, [join.0.to_string(), history[1].to_string(), history[0].to_string()]);
        // And forwards from the very start: the history, then the timeline.
        let start = Gap::History { depth: 0, short: 0 };
        let page = f.rooms.page_all(short, &bob, None, start, None, false, 2, |_| true).unwrap();
        let ids: Vec<_> = page.events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, [history[0].to_string(), history[1].to_string()]);
        let next = page.next.expect("the timeline follows");
        let page = f.rooms.page_all(short, &bob, None, next, None, false, 10, |_| true).unwrap();
        assert_eq!(page.events[0]["event_id"], join.0.as_str());
    }

    /// An append prepared without the room's lock is written under it; if
    /// the room moved meanwhile, it is appended anew on the room as it is.
    #[tokio::test]
    async fn prepared_appends_are_committed_or_redone() {
        let f = fixture().await;
        let remote = Remote::new("remote.test");
        let (mut room, _, _, _) = join_remote_room(&f, &remote, RoomVersionId::V11).await;
        let creator = "@creator:remote.test";
        // Two concurrent events on the join: a topic and a message.
        let topic = room.next(creator, "m.room.topic", Some(""), json!({"topic": "prepared"}));
        let topic = remote.sign(topic, &room.version);
        let message = room.next(creator, "m.room.message", None, json!({"body": "hi", "msgtype": "m.text"}));
        let message = remote.sign(message, &room.version);
        let (short, record) = f.rooms.room(&room.room_id).unwrap().unwrap();
        let prepare = |event: &(OwnedEventId, CanonicalJsonObject)| {
            let (id, object) = event.clone();
            f.rooms.prepare(short, &record, id, object, Origin::Remote(remote.keys()), StateBefore::FromPrevs)
        };
        let (first, second) = (prepare(&topic).unwrap().unwrap(), prepare(&message).unwrap().unwrap());

        let lock = f.rooms.lock(&room.room_id).await;
        let mut record = f.rooms.room(&room.room_id).unwrap().unwrap().1;
        assert!(matches!(
            f.rooms.commit_prepared(short, &mut record, first).unwrap(),
            Outcome::Accepted { .. }
        ));
        assert_eq!(record.forward_extremities, std::slice::from_ref(&topic.0));
        // The room moved (the topic replaced the join as extremity): the
        // message is appended anew, forking beside the topic.
        assert!(matches!(
            f.rooms.commit_prepared(short, &mut record, second).unwrap(),
            Outcome::Accepted { .. }
        ));
        drop(lock);
        assert_eq!(record.forward_extremities, [topic.0.clone(), message.0.clone()]);
        let stored = f.rooms.room(&room.room_id).unwrap().unwrap().1;
        assert_eq!(stored.forward_extremities, record.forward_extremities);
        let current = f.rooms.current_state_event(short, "m.room.topic", "").unwrap().unwrap();
        assert_eq!(current.event_id, topic.0, "the resolved state keeps the topic");
    }
}
