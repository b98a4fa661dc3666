//! State resolution: where the DAG forks, the states after the branches are
//! merged by ruma's state resolution v2 (v2.1 from room version 12). Hearth
//! supplies what the algorithm needs from storage: the full auth chain of
//! each state and, for v2.1, the conflicted state subgraph.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    OwnedEventId, UInt,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, utils::event_id_set::EventIdSet},
};

use serde::Deserialize;
use sha1::{Digest, Sha1};

use super::{
    Rooms,
    pdu::{EventRef, Pdu},
    short_ids::{Kind, split_state_key_name, state_key_name},
    state::StateMap,
};
use crate::{Error, Result, storage::maps};

type RumaStateMap = state_res::StateMap<OwnedEventId>;

/// The one field of a stored PDU that auth chains need.
#[derive(Deserialize)]
struct AuthEvents {
    auth_events: Vec<EventRef>,
}

/// What of the states ruma is handed: all of them, or (from v12) only the
/// conflicted keys. Tests check the two agree.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handing {
    WhatRumaNeeds,
    #[cfg(test)]
    Everything,
}

/// A conflicted state key and its candidate events.
type Conflict = (u64, Vec<(u64, Pdu)>);

/// Event IDs ⇄ short IDs and auth edges, read once per resolution.
struct Graph<'a> {
    rooms: &'a Rooms,
    /// The event being appended, not yet readable from storage.
    pending: Option<(u64, &'a Pdu)>,
    ids: HashMap<u64, OwnedEventId>,
    shorts: HashMap<OwnedEventId, u64>,
    auth_edges: HashMap<u64, Vec<u64>>,
}

impl<'a> Graph<'a> {
    fn new(rooms: &'a Rooms, pending: Option<(u64, &'a Pdu)>) -> Self {
        let mut graph =
            Self { rooms, pending, ids: HashMap::new(), shorts: HashMap::new(), auth_edges: HashMap::new() };
        if let Some((short, pdu)) = pending {
            graph.ids.insert(short, pdu.event_id.clone());
            graph.shorts.insert(pdu.event_id.clone(), short);
        }
        graph
    }

    fn pdu(&self, short: u64) -> Result<Option<Pdu>> {
        match self.pending {
            Some((pending, pdu)) if pending == short => Ok(Some(pdu.clone())),
            _ => self.rooms.pdu_by_short(short),
        }
    }

    fn id(&mut self, short: u64) -> Result<OwnedEventId> {
        if let Some(id) = self.ids.get(&short) {
            return Ok(id.clone());
        }
        let id = OwnedEventId::try_from(self.rooms.short.name(short)?).map_err(Error::internal)?;
        self.ids.insert(short, id.clone());
        self.shorts.insert(id.clone(), short);
        Ok(id)
    }

    fn short(&mut self, id: &OwnedEventId) -> Result<Option<u64>> {
        if let Some(short) = self.shorts.get(id) {
            return Ok(Some(*short));
        }
        let short = self.rooms.event_short(id)?;
        if let Some(short) = short {
            self.ids.insert(short, id.clone());
            self.shorts.insert(id.clone(), short);
        }
        Ok(short)
    }

    /// The auth events of a stored event, as short IDs (the `auth_edges`
    /// index, kept in memory across resolutions). Every one is stored (the
    /// pipeline stores no event before its auth events:
    /// `AppendError::MissingAuth`), so a missing one is an error, never
    /// skipped: skipping it would resolve differently from the other
    /// servers in the room.
    fn auth_events(&mut self, short: u64) -> Result<Vec<u64>> {
        if let Some(edges) = self.auth_edges.get(&short) {
            return Ok(edges.clone());
        }
        let edges = match self.pending {
            Some((pending, pdu)) if pending == short => {
                let mut edges = Vec::with_capacity(pdu.auth_events.len());
                for id in &pdu.auth_events {
                    edges.push(
                        self.short(id)?
                            .ok_or_else(|| Error::internal(format!("auth event {id} is not stored")))?,
                    );
                }
                edges
            }
            _ => self.rooms.auth_edges(short)?.to_vec(),
        };
        self.auth_edges.insert(short, edges.clone());
        Ok(edges)
    }

    /// Every event reachable from `start` through `auth_events`, excluding
    /// `start` itself unless reached again.
    fn auth_chain(&mut self, start: impl IntoIterator<Item = u64>) -> Result<HashSet<u64>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<u64> = Vec::new();
        for s in start {
            todo.extend(self.auth_events(s)?);
        }
        while let Some(s) = todo.pop() {
            if seen.insert(s) {
                todo.extend(self.auth_events(s)?);
            }
        }
        Ok(seen)
    }

    /// The conflicted state subgraph (room version 12): every event on an
    /// `auth_events` path from one conflicted event to another, endpoints
    /// included.
    fn conflicted_subgraph(&mut self, conflicted: &HashSet<u64>) -> Result<HashSet<u64>> {
        // Post-order walk from every conflicted event: an event is on such a
        // path when it is conflicted or one of its auth events is.
        let mut reaches: HashMap<u64, bool> = HashMap::new();
        for &start in conflicted {
            let mut stack = vec![(start, false)];
            while let Some((event, expanded)) = stack.pop() {
                if reaches.contains_key(&event) && !expanded {
                    continue;
                }
                let parents = self.auth_events(event)?;
                if expanded {
                    let on_path =
                        conflicted.contains(&event) || parents.iter().any(|p| reaches.get(p) == Some(&true));
                    reaches.insert(event, on_path);
                } else {
                    stack.push((event, true));
                    stack
                        .extend(parents.into_iter().filter(|p| !reaches.contains_key(p)).map(|p| (p, false)));
                }
            }
        }
        // An event only reaches a conflicted event through its auth events,
        // so whatever reached one here lies between two of them.
        Ok(reaches.into_iter().filter(|(_, on_path)| *on_path).map(|(e, _)| e).collect())
    }
}

impl Rooms {
    /// A stored event's auth events as short IDs: from memory, else the
    /// `auth_edges` index, else (events stored before it) the event itself,
    /// then indexed.
    pub(super) fn auth_edges(&self, short: u64) -> Result<Arc<[u64]>> {
        if let Some(edges) = self.auth_edge_cache.lock().expect("auth edges").get(short) {
            return Ok(edges);
        }
        let edges: Arc<[u64]> = match self.db.get(&maps::AUTH_EDGES, &short.to_be_bytes())? {
            Some(bytes) => {
                bytes.chunks_exact(8).map(crate::storage::decode_u64).collect::<Result<Vec<_>, _>>()?.into()
            }
            None => {
                let bytes = self.db.get(&maps::PDUS, &short.to_be_bytes())?.ok_or_else(|| {
                    Error::internal(format!("event {short} in an auth chain is not stored"))
                })?;
                let ids = serde_json::from_slice::<AuthEvents>(&bytes).map_err(Error::internal)?.auth_events;
                let ids: Vec<OwnedEventId> = ids.into_iter().map(Into::into).collect();
                let value = self.auth_edge_value(&ids)?;
                let mut batch = crate::storage::Batch::new();
                batch.put(&maps::AUTH_EDGES, short.to_be_bytes(), value.clone());
                self.db.write(batch)?;
                value.chunks_exact(8).map(crate::storage::decode_u64).collect::<Result<Vec<_>, _>>()?.into()
            }
        };
        self.auth_edge_cache.lock().expect("auth edges").insert(short, edges.clone(), edges.len() + 1);
        Ok(edges)
    }

    /// The `auth_edges` value of an event with these auth events (all
    /// stored).
    pub(super) fn auth_edge_value(&self, auth_events: &[OwnedEventId]) -> Result<Vec<u8>> {
        let mut value = Vec::with_capacity(auth_events.len() * 8);
        for id in auth_events {
            let short = self
                .event_short(id)?
                .ok_or_else(|| Error::internal(format!("auth event {id} is not stored")))?;
            value.extend_from_slice(&short.to_be_bytes());
        }
        Ok(value)
    }

    /// Resolves the states of several branches into one. Identical inputs
    /// return as they are. `pending` is an event the states may name that
    /// is being appended and not stored yet.
    pub(super) fn resolve_states(
        &self,
        rules: &RoomVersionRules,
        states: &[Arc<StateMap>],
        pending: Option<(u64, &Pdu)>,
    ) -> Result<StateMap> {
        self.resolve_states_handing(rules, states, pending, Handing::WhatRumaNeeds)
    }

    fn resolve_states_handing(
        &self,
        rules: &RoomVersionRules,
        states: &[Arc<StateMap>],
        pending: Option<(u64, &Pdu)>,
        handing: Handing,
    ) -> Result<StateMap> {
        if let [first, rest @ ..] = states
            && rest.iter().all(|s| s == first)
        {
            return Ok((**first).clone());
        }
        let mut graph = Graph::new(self, pending);
        let Some(v2_rules) = rules.state_res.v2_rules() else {
            return self.resolve_v1(rules, states, graph);
        };

        // The keys the states disagree on (held by some and not others, or
        // with different events).
        let all_keys: HashSet<u64> = states.iter().flat_map(|s| s.keys().copied()).collect();
        let conflicted_keys: HashSet<u64> = all_keys
            .into_iter()
            .filter(|key| states.iter().any(|s| s.get(key) != states[0].get(key)))
            .collect();
        // From v12 the iterative auth checks start from an empty state and
        // the unconflicted state is only laid over the result: ruma needs
        // the conflicted keys alone, and the rest is ours to add (ruma's
        // answer is the same; naming 10,000 unconflicted entries is not).
        let only_conflicted =
            v2_rules.begin_iterative_auth_checks_with_empty_state_map && handing == Handing::WhatRumaNeeds;

        // Our maps in ruma's terms.
        let mut key_names: HashMap<u64, (StateEventType, String)> = HashMap::new();
        let mut key_shorts: HashMap<(StateEventType, String), u64> = HashMap::new();
        let mut maps: Vec<RumaStateMap> = Vec::with_capacity(states.len());
        for state in states {
            let mut map = RumaStateMap::with_capacity(state.len());
            for (&key, &event) in state.iter() {
                if only_conflicted && !conflicted_keys.contains(&key) {
                    continue;
                }
                let name = match key_names.get(&key) {
                    Some(name) => name.clone(),
                    None => {
                        let full = self.short.name(key)?;
                        let (kind, state_key) = split_state_key_name(&full)
                            .ok_or_else(|| Error::internal(format!("bad state key name {full:?}")))?;
                        let name = (StateEventType::from(kind), state_key.to_owned());
                        key_names.insert(key, name.clone());
                        key_shorts.insert(name.clone(), key);
                        name
                    }
                };
                map.insert(name, graph.id(event)?);
            }
            maps.push(map);
        }

        // The full auth chain of each state. Only the auth difference (what
        // is not in every chain) matters, so the common part is left out
        // before naming the events: ruma's difference is the same.
        let mut chains = Vec::with_capacity(states.len());
        for state in states {
            chains.push(graph.auth_chain(state.values().copied())?);
        }
        let common: HashSet<u64> =
            chains[0].iter().filter(|e| chains[1..].iter().all(|c| c.contains(e))).copied().collect();
        let mut auth_chains = Vec::with_capacity(states.len());
        for chain in chains {
            let mut set = EventIdSet::new();
            for short in chain.into_iter().filter(|e| !common.contains(e)) {
                set.insert(graph.id(short)?);
            }
            auth_chains.push(set);
        }

        // The conflicted state subgraph, computed up front (the callback
        // cannot borrow the graph mutably).
        let subgraph = if v2_rules.consider_conflicted_state_subgraph {
            let conflicted: HashSet<u64> = conflicted_keys
                .iter()
                .flat_map(|key| states.iter().filter_map(|s| s.get(key)))
                .copied()
                .collect();
            let mut set = EventIdSet::new();
            for short in graph.conflicted_subgraph(&conflicted)? {
                set.insert(graph.id(short)?);
            }
            Some(set)
        } else {
            None
        };

        // A storage error must fail the resolution, not pass for "unknown
        // event" (the result is stored for good).
        let failed = std::cell::Cell::new(None);
        let fetch_event = |id: &ruma::EventId| -> Option<Pdu> {
            if let Some((_, pdu)) = pending
                && pdu.event_id == id
            {
                return Some(pdu.clone());
            }
            let found = (|| {
                let Some(short) = self.event_short(id)? else { return Ok(None) };
                let Some(mut pdu) = self.pdu_by_short(short)? else { return Ok(None) };
                pdu.rejected = self.event_meta(short)?.is_some_and(|m| m.status == super::Status::Rejected);
                Ok(Some(pdu))
            })();
            found.unwrap_or_else(|e: Error| {
                failed.set(Some(e));
                None
            })
        };
        let resolved =
            state_res::resolve(&rules.authorization, v2_rules, maps.iter(), auth_chains, fetch_event, |_| {
                subgraph.clone()
            });
        if let Some(e) = failed.into_inner() {
            return Err(e);
        }
        let resolved = resolved.map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;

        let mut state = StateMap::new();
        for (name, event_id) in resolved {
            let key = match key_shorts.get(&name) {
                Some(key) => *key,
                None => {
                    self.short.get_or_create(Kind::StateKey, &state_key_name(&name.0.to_string(), &name.1))?
                }
            };
            let event = graph
                .short(&event_id)?
                .ok_or_else(|| Error::internal("resolved state names an unknown event"))?;
            state.insert(key, event);
        }
        if only_conflicted {
            // Laid over the result last, as ruma's final step does.
            state.extend(
                states[0].iter().filter(|(key, _)| !conflicted_keys.contains(key)).map(|(k, e)| (*k, *e)),
            );
        }
        Ok(state)
    }

    /// State resolution v1 (room version 1), which ruma does not provide,
    /// as Synapse does it (the spec's wording leaves details open): a key
    /// is conflicted when the states hold different events for it (a key
    /// some states lack is not). Conflicts are settled for power levels,
    /// then join rules, then memberships, each replayed oldest first (by
    /// depth, then descending SHA-1 of the ID) while the auth rules allow,
    /// against the unconflicted state plus what earlier passes resolved;
    /// any other key takes the deepest event (lowest SHA-1) the auth rules
    /// allow, else the last candidate.
    fn resolve_v1(
        &self,
        rules: &RoomVersionRules,
        states: &[Arc<StateMap>],
        graph: Graph<'_>,
    ) -> Result<StateMap> {
        let mut candidates: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for state in states {
            for (&key, &event) in state.iter() {
                let events = candidates.entry(key).or_default();
                if !events.contains(&event) {
                    events.push(event);
                }
            }
        }
        let mut resolved = StateMap::new();
        // Power levels, join rules, memberships, the rest.
        let mut passes: [Vec<Conflict>; 4] = Default::default();
        for (key, events) in candidates {
            let mut pdus = Vec::new();
            for &event in &events {
                if let Some(pdu) = graph.pdu(event)? {
                    pdus.push((event, pdu));
                }
            }
            match pdus.as_slice() {
                [] => continue,
                [(event, _)] => {
                    resolved.insert(key, *event);
                    continue;
                }
                _ => {}
            }
            let name = self.short.name(key)?;
            let pass = match split_state_key_name(&name).map(|(kind, _)| kind) {
                Some("m.room.power_levels") => 0,
                Some("m.room.join_rules") => 1,
                Some("m.room.member") => 2,
                _ => 3,
            };
            passes[pass].push((key, pdus));
        }
        let allowed = |state: &StateMap, pdu: &Pdu| -> Result<bool> {
            let failed = std::cell::Cell::new(None);
            let fetch = |kind: &StateEventType, state_key: &str| {
                let found = (|| {
                    let Some(key) =
                        self.short.get(Kind::StateKey, &state_key_name(&kind.to_string(), state_key))?
                    else {
                        return Ok(None);
                    };
                    state.get(&key).map_or(Ok(None), |event| graph.pdu(*event))
                })();
                found.unwrap_or_else(|e| {
                    failed.set(Some(e));
                    None
                })
            };
            let ok = state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch).is_ok();
            match failed.into_inner() {
                Some(e) => Err(e),
                None => Ok(ok),
            }
        };
        let order = |pdu: &Pdu| -> (Reverse<UInt>, [u8; 20]) {
            (Reverse(pdu.depth), Sha1::digest(pdu.event_id.as_bytes()).into())
        };
        let [power, join_rules, members, others] = passes;
        for pass in [power, join_rules, members] {
            // Each key of a pass against the state as the pass began.
            let auth = resolved.clone();
            for (key, mut events) in pass {
                events.sort_by_key(|(_, pdu)| order(pdu));
                events.reverse();
                let mut state = auth.clone();
                let mut chosen = events[0].0;
                for (event, pdu) in &events[1..] {
                    state.insert(key, chosen);
                    if !allowed(&state, pdu)? {
                        break;
                    }
                    chosen = *event;
                }
                resolved.insert(key, chosen);
            }
        }
        let auth = resolved.clone();
        for (key, mut events) in others {
            events.sort_by_key(|(_, pdu)| order(pdu));
            let mut chosen = None;
            for (event, pdu) in &events {
                if allowed(&auth, pdu)? {
                    chosen = Some(*event);
                    break;
                }
            }
            resolved.insert(key, chosen.unwrap_or(events[events.len() - 1].0));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{RoomVersionId, user_id};
    use serde_json::json;

    use super::*;
    use crate::rooms::{builder::PduBuilder, create::Preset, pipeline::Outcome, testing::*};

    /// From v12 ruma is handed the conflicted keys only: the result must be
    /// what handing it everything gives.
    #[tokio::test]
    async fn handing_only_the_conflicted_keys_resolves_the_same() {
        let f = fixture_with(RoomVersionId::V12, Preset::PublicChat).await;
        let (alice, bob) = (user_id!("@alice:localhost"), user_id!("@bob:localhost"));
        let join = |user: &ruma::UserId| {
            PduBuilder::state("m.room.member", user.as_str(), json!({"membership": "join"}))
        };
        f.send(bob, join(bob)).await;
        let mut levels = f.current("m.room.power_levels", "").unwrap().content_value();
        levels["users"][bob.as_str()] = json!(50);
        levels["state_default"] = json!(50);
        f.send(alice, PduBuilder::state("m.room.power_levels", "", levels.clone())).await;
        let fork = f.extremities()[0].clone();
        // Three branches: a ban of bob, bob's own changes, a demotion.
        let ban = PduBuilder::state("m.room.member", bob.as_str(), json!({"membership": "ban"}));
        let topic = PduBuilder::state("m.room.topic", "", json!({"topic": "bob's"}));
        levels["users"][bob.as_str()] = json!(0);
        let demote = PduBuilder::state("m.room.power_levels", "", levels);
        let mut tips = Vec::new();
        for (i, (sender, builder)) in [(alice, ban), (bob, topic), (alice, demote)].into_iter().enumerate() {
            let event = f.build_on(&[&fork], sender, builder, 1_000 + i as u64);
            tips.push(event.0.clone());
            assert!(!matches!(f.append_remote(event), Outcome::Rejected(_)));
        }
        let states: Vec<Arc<StateMap>> = tips
            .iter()
            .map(|tip| {
                let meta = f.rooms.event_meta(f.rooms.event_short(tip).unwrap().unwrap()).unwrap().unwrap();
                f.rooms.state.load(meta.state_after.unwrap()).unwrap()
            })
            .collect();
        let rules = RoomVersionId::V12.rules().unwrap();
        for pair in [&states[..2], &states[1..], &states[..]] {
            let ours = f.rooms.resolve_states_handing(&rules, pair, None, Handing::WhatRumaNeeds).unwrap();
            let all = f.rooms.resolve_states_handing(&rules, pair, None, Handing::Everything).unwrap();
            assert_eq!(ours, all);
            assert!(ours.len() >= pair[0].len() - 1, "the unconflicted state is all there");
        }
    }
}
