//! An oracle for a room's state, independent of Hearth's pipeline: from the
//! create event on, the state before every event of a server's DAG is
//! worked out again from the spec's definition (the state after its only
//! prev event, or ruma's state resolution of the states after its prev
//! events), each event's rejection decided again with ruma's auth rules,
//! and both compared with what the server stored.

use std::collections::{BTreeMap, HashMap, HashSet};

use hearth::rooms::{Rooms, Status};
use ruma::{
    OwnedEventId, RoomId,
    events::StateEventType,
    state_res::{self, utils::event_id_set::EventIdSet},
};

type Key = (StateEventType, String);
type State = HashMap<Key, OwnedEventId>;

/// Checks every event of the room's DAG on `rooms`, which must hold it all
/// from the create event on (the room's creator's server). The number of
/// events checked; the first disagreement as an error.
pub fn check_room(rooms: &Rooms, room_id: &RoomId) -> Result<usize, String> {
    let (_, record) = rooms.room(room_id).unwrap().unwrap();
    let rules = record.rules().unwrap();
    let v2 = rules.state_res.v2_rules().expect("state resolution v2");
    // Every event of the DAG, by depth (a topological order).
    let mut events = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut next: Vec<OwnedEventId> = record.forward_extremities.clone();
    while let Some(id) = next.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let short = rooms.event_short(&id).unwrap().ok_or(format!("{id} is not stored"))?;
        let meta = rooms.event_meta(short).unwrap().unwrap();
        if !meta.in_dag() {
            return Err(format!("{id} is not in the DAG"));
        }
        let pdu = rooms.pdu_by_short(short).unwrap().unwrap();
        next.extend(pdu.prev_events.iter().cloned());
        events.insert((meta.depth, id.clone()), (id, meta));
    }
    let fetch = |id: &ruma::EventId| {
        let short = rooms.event_short(id).unwrap()?;
        let mut pdu = rooms.pdu_by_short(short).unwrap()?;
        pdu.rejected = rooms.event_meta(short).unwrap().is_some_and(|m| m.status == Status::Rejected);
        Some(pdu)
    };
    let mut after: HashMap<OwnedEventId, State> = HashMap::new();
    for (id, meta) in events.values() {
        let pdu = fetch(id).unwrap();
        let prevs: Vec<&State> = pdu.prev_events.iter().map(|p| &after[p]).collect();
        let before: State = match prevs.as_slice() {
            [] => State::new(),
            [one] => (*one).clone(),
            many => {
                let chains = many.iter().map(|s| auth_chain(s.values(), &fetch)).collect();
                let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
                    Some(conflicted_subgraph(conflicted.values().flatten(), &fetch))
                };
                state_res::resolve(&rules.authorization, v2, many.iter().copied(), chains, fetch, subgraph)
                    .map_err(|e| format!("ruma cannot resolve the state before {id}: {e}"))?
            }
        };
        // The server's own record of the state before the event.
        let stored: State = match meta.state_before {
            Some(snapshot) => rooms
                .state
                .load(snapshot)
                .unwrap()
                .values()
                .map(|short| {
                    let pdu = rooms.pdu_by_short(*short).unwrap().unwrap();
                    ((pdu.kind.to_string().into(), pdu.state_key.clone().unwrap()), pdu.event_id)
                })
                .collect(),
            None => State::new(),
        };
        if stored != before {
            let mut diff = Vec::new();
            for key in stored.keys().chain(before.keys()).collect::<HashSet<_>>() {
                if stored.get(key) != before.get(key) {
                    diff.push(format!("{key:?}: stored {:?}, spec {:?}", stored.get(key), before.get(key)));
                }
            }
            return Err(format!("the state before {id} differs: {}", diff.join("; ")));
        }
        // Rejected, or not, as the auth rules decide against its auth
        // events and the state before it.
        let by_state = |kind: &StateEventType, key: &str| {
            before.get(&(kind.clone(), key.to_owned())).and_then(|id| fetch(id))
        };
        let allowed = state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, fetch)
            .is_ok()
            && state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, by_state).is_ok();
        let rejected = meta.status == Status::Rejected;
        if allowed == rejected {
            return Err(format!("{id}: stored as {:?}, the auth rules say allowed = {allowed}", meta.status));
        }
        let mut state = before;
        if let (Some(key), false) = (&pdu.state_key, rejected) {
            state.insert((pdu.kind.to_string().into(), key.clone()), id.clone());
        }
        after.insert(id.clone(), state);
    }
    Ok(events.len())
}

/// The events reachable from `events` through `auth_events`.
fn auth_chain<'a>(
    events: impl Iterator<Item = &'a OwnedEventId>,
    fetch: &impl Fn(&ruma::EventId) -> Option<hearth::rooms::pdu::Pdu>,
) -> EventIdSet<OwnedEventId> {
    let mut chain = EventIdSet::new();
    let mut next: Vec<OwnedEventId> = events.flat_map(|e| fetch(e).unwrap().auth_events).collect();
    while let Some(id) = next.pop() {
        if !chain.contains(&id) {
            next.extend(fetch(&id).unwrap().auth_events);
            chain.insert(id);
        }
    }
    chain
}

/// The conflicted state subgraph (state resolution v2.1): the events on
/// an auth path from one conflicted event to another.
fn conflicted_subgraph<'a>(
    conflicted: impl Iterator<Item = &'a OwnedEventId>,
    fetch: &impl Fn(&ruma::EventId) -> Option<hearth::rooms::pdu::Pdu>,
) -> EventIdSet<OwnedEventId> {
    let conflicted: HashSet<OwnedEventId> = conflicted.cloned().collect();
    // Whether an event reaches a conflicted event (itself included).
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    fn walk(
        id: &OwnedEventId,
        conflicted: &HashSet<OwnedEventId>,
        reaches: &mut HashMap<OwnedEventId, bool>,
        fetch: &impl Fn(&ruma::EventId) -> Option<hearth::rooms::pdu::Pdu>,
    ) -> bool {
        if let Some(known) = reaches.get(id) {
            return *known;
        }
        let mut found = conflicted.contains(id);
        for auth in fetch(id).unwrap().auth_events {
            found |= walk(&auth, conflicted, reaches, fetch);
        }
        reaches.insert(id.clone(), found);
        found
    }
    let mut subgraph = EventIdSet::new();
    for start in &conflicted {
        walk(start, &conflicted, &mut reaches, fetch);
        // Everything below a conflicted event that reaches another one.
        let mut next = fetch(start).unwrap().auth_events;
        let mut seen = HashSet::new();
        while let Some(id) = next.pop() {
            if seen.insert(id.clone()) && walk(&id, &conflicted, &mut reaches, fetch) {
                next.extend(fetch(&id).unwrap().auth_events);
                subgraph.insert(id);
            }
        }
        subgraph.insert(start.clone());
    }
    subgraph
}
