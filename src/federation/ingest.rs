//! Other servers' PDUs into the one pipeline. Before the room is locked:
//! the keys of the servers that must have signed (fetched as needed), the
//! preparation (resolution, push evaluation); then the write under the
//! lock. What the pipeline says is missing is fetched from the server that
//! sent the event: missing prev events with `/get_missing_events`, and
//! where a gap remains, the state at it with `/state_ids` and `/event`
//! (stored as outliers); missing auth events with `/event_auth`.

use std::{collections::BTreeSet, sync::Arc};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization::v1 as event_auth,
        event::{
            get_event::v1 as get_event, get_missing_events::v1 as missing_events,
            get_room_state_ids::v1 as state_ids,
        },
    },
    room_version_rules::RoomVersionRules,
    signatures::PublicKeyMap,
};

use crate::{
    Error, Result,
    rooms::{
        RoomRecord,
        pdu::event_id_of,
        pipeline::{AppendError, Origin, Outcome, StateBefore},
    },
    services::Services,
};

/// Events asked for at once with `/get_missing_events` (not ruma's default
/// of 10, which it leaves out of the request; peers expect the key).
const MISSING_LIMIT: u32 = 20;
/// Largest PDU accepted (the spec's 64 KiB).
pub const MAX_PDU_SIZE: usize = 65_536;

/// How long a transaction's answer is kept for a retry of it.
const ANSWERS_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A transaction's answer as kept (`federation_txns`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Answered {
    ts: u64,
    results: std::collections::BTreeMap<OwnedEventId, PduResult>,
}

fn answer_key(origin: &ServerName, txn_id: &str) -> Vec<u8> {
    [origin.as_bytes(), &[crate::storage::SEP], txn_id.as_bytes()].concat()
}

/// The answer given to `origin`'s transaction `txn_id`, if it came before
/// (within a day).
pub fn answered(
    services: &Services,
    origin: &ServerName,
    txn_id: &str,
) -> Result<Option<std::collections::BTreeMap<OwnedEventId, PduResult>>> {
    let bytes = services.db.get(&crate::storage::maps::FEDERATION_TXNS, &answer_key(origin, txn_id))?;
    // (An answer kept before it carried its time is not reused: its PDUs
    // are known and come out as duplicates.)
    Ok(bytes.and_then(|b| serde_json::from_slice::<Answered>(&b).ok()).map(|a| a.results))
}

/// Keeps the answer to `origin`'s transaction `txn_id` for a retry.
pub fn remember_answer(
    services: &Services,
    origin: &ServerName,
    txn_id: &str,
    results: std::collections::BTreeMap<OwnedEventId, PduResult>,
) -> Result<()> {
    let answered = Answered { ts: crate::util::now_ms(), results };
    Ok(services.db.put_json(
        &crate::storage::maps::FEDERATION_TXNS,
        &answer_key(origin, txn_id),
        &answered,
    )?)
}

/// Drops kept answers older than a day, once an hour, until the server stops.
pub async fn forget_old_answers(services: Arc<Services>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        if let Err(e) = forget_answers_before(
            &services,
            crate::util::now_ms().saturating_sub(ANSWERS_KEPT.as_millis() as u64),
        ) {
            tracing::warn!("federation: cannot prune kept transaction answers: {e}");
        }
    }
}

/// Drops the kept answers older than `before` (ms since the epoch).
pub fn forget_answers_before(services: &Services, before: u64) -> Result<usize> {
    let map = &crate::storage::maps::FEDERATION_TXNS;
    let mut batch = crate::storage::Batch::new();
    let mut dropped = 0;
    for (key, value) in services.db.scan_prefix(map, b"")? {
        let ts = serde_json::from_slice::<Answered>(&value).map_or(0, |a| a.ts);
        if ts < before {
            batch.delete(map, key);
            dropped += 1;
        }
    }
    services.db.write(batch)?;
    Ok(dropped)
}

/// What happened to a PDU, as `/send` reports it.
pub type PduResult = std::result::Result<(), String>;

/// The servers whose signatures an event needs: its sender's, the
/// authorising server of a restricted join, and for room versions 1 and 2
/// the server of its event ID.
fn required_signers(object: &CanonicalJsonObject) -> BTreeSet<OwnedServerName> {
    let mut servers = BTreeSet::new();
    let string = |v: Option<&CanonicalJsonValue>| match v {
        Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if let Some(sender) = string(object.get("sender")).and_then(|s| ruma::OwnedUserId::try_from(s).ok()) {
        servers.insert(sender.server_name().to_owned());
    }
    if let Some(CanonicalJsonValue::Object(content)) = object.get("content")
        && let Some(user) = string(content.get("join_authorised_via_users_server"))
            .and_then(|s| ruma::OwnedUserId::try_from(s).ok())
    {
        servers.insert(user.server_name().to_owned());
    }
    if let Some(event_id) = string(object.get("event_id")).and_then(|s| OwnedEventId::try_from(s).ok())
        && let Some(server) = event_id.server_name()
    {
        servers.insert(server.to_owned());
    }
    servers
}

/// The keys an event's signatures are checked with, fetched where missing;
/// valid at the event's time where the room version says so.
pub async fn event_keys(
    services: &Services,
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<PublicKeyMap> {
    let valid_at = match (rules.enforce_key_validity, object.get("origin_server_ts")) {
        (true, Some(CanonicalJsonValue::Integer(ts))) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => 0,
    };
    let signers = required_signers(object);
    let mut wanted: Vec<(&ServerName, Vec<&str>)> = Vec::new();
    for server in &signers {
        let key_ids = match object.get("signatures") {
            Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().map(String::as_str).collect(),
                _ => vec![],
            },
            _ => vec![],
        };
        wanted.push((server, key_ids));
    }
    services.servers.public_keys(&wanted, valid_at).await
}

fn merge_keys(into: &mut PublicKeyMap, more: PublicKeyMap) {
    for (server, keys) in more {
        into.entry(server).or_default().extend(keys);
    }
}

/// Parses a PDU as it came over the wire.
pub fn parse_pdu(raw: &serde_json::value::RawValue) -> std::result::Result<CanonicalJsonObject, String> {
    if raw.get().len() > MAX_PDU_SIZE {
        return Err(format!("PDU larger than {MAX_PDU_SIZE} bytes"));
    }
    serde_json::from_str(raw.get()).map_err(|e| format!("not a canonical JSON object: {e}"))
}

/// The room a PDU names.
pub fn room_of(object: &CanonicalJsonObject) -> Option<ruma::OwnedRoomId> {
    match object.get("room_id") {
        Some(CanonicalJsonValue::String(s)) => ruma::OwnedRoomId::try_from(s.as_str()).ok(),
        _ => None,
    }
}

/// Whether a PDU is of `room_id`: it names the room, or (from room
/// version 12) it is the create event the room's ID is derived from.
pub fn belongs_to(object: &CanonicalJsonObject, room_id: &RoomId, rules: &RoomVersionRules) -> bool {
    match room_of(object) {
        Some(named) => named == room_id,
        None => {
            object.get("type") == Some(&CanonicalJsonValue::String("m.room.create".into()))
                && event_id_of(object, rules)
                    .is_ok_and(|id| id.as_str().strip_prefix('$') == room_id.as_str().strip_prefix('!'))
        }
    }
}

/// Takes in one live PDU that `origin` sent (in a transaction), fetching
/// from `origin` what the room lacks to place it.
pub async fn take_pdu(
    services: &Arc<Services>,
    origin: &ServerName,
    room_id: &RoomId,
    object: CanonicalJsonObject,
) -> std::result::Result<Outcome, String> {
    let (room_short, record) = known_room(services, room_id).map_err(|e| e.to_string())?;
    let rules = record.rules().map_err(|e| e.to_string())?;
    let event_id = event_id_of(&object, &rules).map_err(|e| e.to_string())?;
    let followed = matches!(
        object.get("type"),
        Some(CanonicalJsonValue::String(kind)) if kind == "m.room.guest_access" || kind == "m.room.member"
    );
    let outcome =
        take_event(services, origin, room_short, room_id, &event_id, object, &rules, Arrival::Pushed).await?;
    if followed && matches!(outcome, Outcome::Accepted { .. }) {
        let stored = services.rooms.event_short(&event_id).and_then(|short| match short {
            Some(short) => services.rooms.pdu_by_short(short),
            None => Ok(None),
        });
        if let Ok(Some(pdu)) = stored {
            after_accepted(services, room_short, room_id, &pdu);
        }
    }
    Ok(outcome)
}

/// What follows some of another server's events in this server's rooms.
fn after_accepted(services: &Arc<Services>, room_short: u64, room_id: &RoomId, pdu: &crate::rooms::pdu::Pdu) {
    match pdu.kind.to_string().as_str() {
        // Guests leave a room closed to them (local changes do the same).
        "m.room.guest_access" => {
            let (services, room_id) = (services.clone(), room_id.to_owned());
            tokio::spawn(async move {
                if let Err(e) = services.rooms.remove_guests(&room_id).await {
                    tracing::warn!("guests of {room_id}: {e}");
                }
            });
        }
        // A user of another server joined: it learns our members' presence.
        "m.room.member" if pdu.content_value()["membership"] == "join" => {
            if let Err(e) = super::edus::presence_for_joiner(services, room_short, &pdu.sender) {
                tracing::warn!("presence for {} in {room_id}: {e}", pdu.sender);
            }
        }
        _ => {}
    }
}

/// How an event reached us.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Its server sent it: prev events we lack are asked for with
    /// `/get_missing_events`, and if some stay missing the event is
    /// refused (as Synapse: gaps are filled only for events we pulled).
    Pushed,
    /// We pulled it (`/get_missing_events`): at a gap, the state the
    /// server says it had (`/state_ids`).
    Pulled,
    /// We pulled it into the room's past (`/backfill`): the same, as history.
    History,
}

/// Appends another server's event, fetching from `origin`, once each,
/// what the pipeline says is missing: its auth events (the auth chain
/// with `/event_auth`, else the events one by one), and its prev events
/// as `arrival` says.
#[allow(clippy::too_many_arguments)]
pub(super) async fn take_event(
    services: &Arc<Services>,
    origin: &ServerName,
    room_short: u64,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    object: CanonicalJsonObject,
    rules: &RoomVersionRules,
    arrival: Arrival,
) -> std::result::Result<Outcome, String> {
    let history = arrival == Arrival::History;
    let mut gap: Option<crate::rooms::state::StateMap> = None;
    let (mut fetched_prevs, mut fetched_auth) = (false, false);
    loop {
        let state_before = gap.clone().map_or(StateBefore::FromPrevs, StateBefore::Given);
        match append_remote(services, room_short, event_id, object.clone(), state_before, rules, history)
            .await
        {
            Err(AppendError::MissingPrevs(_)) if !fetched_prevs && arrival == Arrival::Pushed => {
                fetched_prevs = true;
                Box::pin(fetch_missing_prevs(services, origin, room_id, event_id, rules)).await;
            }
            Err(AppendError::MissingPrevs(missing)) if !fetched_prevs => {
                fetched_prevs = true;
                let state =
                    gap_state(services, origin, room_short, room_id, event_id, &object, &missing, rules)
                        .await
                        .map_err(|e| format!("no state for the gap before it: {e}"))?;
                gap = Some(state);
            }
            Err(AppendError::MissingPrevs(missing)) if arrival == Arrival::Pushed => {
                return Err(format!("the sending server does not divulge the prev events {missing:?}"));
            }
            Err(AppendError::MissingAuth(missing)) if !fetched_auth => {
                fetched_auth = true;
                if let Err(e) = fetch_auth_chain(services, origin, room_short, room_id, event_id).await {
                    tracing::debug!("event_auth of {event_id} from {origin}: {e}");
                    fetch_outliers(services, origin, room_short, &missing, rules)
                        .await
                        .map_err(|e| format!("cannot get the auth events: {e}"))?;
                }
            }
            other => return other.map_err(describe),
        }
    }
}

fn describe(error: AppendError) -> String {
    match error {
        AppendError::MissingPrevs(ids) => format!("missing prev events {ids:?}"),
        AppendError::MissingAuth(ids) => format!("missing auth events {ids:?}"),
        AppendError::Refused(e) => e.to_string(),
    }
}

fn known_room(services: &Services, room_id: &RoomId) -> Result<(u64, RoomRecord)> {
    services.rooms.room(room_id)?.ok_or_else(|| Error::not_found(format!("Unknown room {room_id}")))
}

/// Another server's event into the room: live, or (`history`) into the
/// room's past (backfill). Prepared without the room's lock, written under it.
async fn append_remote(
    services: &Arc<Services>,
    room_short: u64,
    event_id: &OwnedEventId,
    object: CanonicalJsonObject,
    state_before: StateBefore,
    rules: &RoomVersionRules,
    history: bool,
) -> std::result::Result<Outcome, AppendError> {
    let keys = event_keys(services, &object, rules).await?;
    let origin = if history { Origin::History(keys) } else { Origin::Remote(keys) };
    let record = services.rooms.room_by_short(room_short)?;
    let rooms = &services.rooms;
    let prepared = crate::util::heavy(|| {
        rooms.prepare(room_short, &record, event_id.clone(), object, origin, state_before)
    })?;
    let Some(prepared) = prepared else { return Ok(Outcome::Duplicate) };
    let _guard = rooms.lock(&record.room_id).await;
    let mut record = rooms.room_by_short(room_short)?;
    crate::util::heavy(|| rooms.commit_prepared(room_short, &mut record, prepared))
}

/// Asks `origin` for the events between the room's forward extremities and
/// `event_id`, and takes them in oldest first (each may itself leave a gap,
/// filled with the state the origin gives).
async fn fetch_missing_prevs(
    services: &Arc<Services>,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    rules: &RoomVersionRules,
) {
    let Ok((room_short, record)) = known_room(services, room_id) else { return };
    let mut request = missing_events::Request::new(
        room_id.to_owned(),
        record.forward_extremities.clone(),
        vec![event_id.clone()],
    );
    request.limit = UInt::from(MISSING_LIMIT);
    let response = match services.servers.client.send(origin, request).await {
        Ok(response) => response,
        Err(why) => {
            tracing::info!("get_missing_events for {event_id} from {origin}: {why}");
            return;
        }
    };
    let events =
        oldest_first(&response.events[..response.events.len().min(MISSING_LIMIT as usize)], room_id, rules);
    for (id, object) in events {
        match take_event(services, origin, room_short, room_id, &id, object, rules, Arrival::Pulled).await {
            Ok(outcome) => tracing::debug!("missing event {id} from {origin}: {outcome:?}"),
            Err(e) => tracing::info!("missing event {id} from {origin} not taken: {e}"),
        }
    }
}

/// A batch of pulled PDUs (`/get_missing_events`, `/backfill`) in the
/// order to take them: oldest (least deep) first. What does not parse or
/// is of another room is left out.
pub(super) fn oldest_first(
    raws: &[Box<serde_json::value::RawValue>],
    room_id: &RoomId,
    rules: &RoomVersionRules,
) -> Vec<(OwnedEventId, CanonicalJsonObject)> {
    let mut events: Vec<(i64, OwnedEventId, CanonicalJsonObject)> = Vec::new();
    for raw in raws {
        let parsed = parse_pdu(raw).and_then(|object| {
            if !belongs_to(&object, room_id, rules) {
                return Err("of another room".to_owned());
            }
            Ok((event_id_of(&object, rules).map_err(|e| e.to_string())?, object))
        });
        let (id, object) = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                tracing::debug!("a pulled PDU of {room_id} left out: {why}");
                continue;
            }
        };
        let depth = match object.get("depth") {
            Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
            _ => 0,
        };
        events.push((depth, id, object));
    }
    events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    events.into_iter().map(|(_, id, object)| (id, object)).collect()
}

/// The state before an event some of whose prevs we lack: the states
/// after its known prevs and, for each missing one, the state `origin`
/// says it had (`/state_ids`, the events fetched and stored as outliers),
/// resolved together.
#[allow(clippy::too_many_arguments)]
async fn gap_state(
    services: &Arc<Services>,
    origin: &ServerName,
    room_short: u64,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    object: &CanonicalJsonObject,
    missing: &[OwnedEventId],
    rules: &RoomVersionRules,
) -> Result<crate::rooms::state::StateMap> {
    // (Parsed as the room version writes them: ID and hashes before v3.)
    let prevs = crate::rooms::pdu::Pdu::from_canonical(event_id.clone(), object)?.prev_events;
    let mut states = Vec::new();
    for prev in &prevs {
        if !missing.contains(prev)
            && let Some(state) = services.rooms.state_after(prev)?
        {
            tracing::debug!("gap before {event_id}: state after known prev {prev}: {} keys", state.len());
            states.push(state);
            continue;
        }
        let request = state_ids::Request::new(prev.clone(), room_id.to_owned());
        let ids =
            services.servers.client.send(origin, request).await.map_err(|f| f.to_client_error(origin))?;
        let mut wanted: Vec<OwnedEventId> = ids.auth_chain_ids.iter().chain(&ids.pdu_ids).cloned().collect();
        wanted.push(prev.clone());
        fetch_outliers(services, origin, room_short, &wanted, rules).await?;
        // A state missing some of its events would drop their keys (a
        // state reset): no state rather than part of one.
        let mut absent = 0;
        for id in ids.pdu_ids.iter().chain([prev]) {
            if services.rooms.event_short(id)?.is_none() {
                absent += 1;
            }
        }
        if absent > 0 {
            return Err(Error::internal(format!(
                "{origin} named {absent} events of the state at {prev} it would not give"
            )));
        }
        let state = services.rooms.state_after_missing(room_short, &ids.pdu_ids, prev)?;
        tracing::debug!(
            "gap before {event_id}: state after missing prev {prev} from {origin}: {} of {} ids",
            state.len(),
            ids.pdu_ids.len()
        );
        states.push(Arc::new(state));
    }
    let record = services.rooms.room_by_short(room_short)?;
    services.rooms.resolve_gap(&record, states)
}

/// Fetches the events of `ids` we do not have (`/event`, each) and stores
/// them as outliers.
pub(super) async fn fetch_outliers(
    services: &Arc<Services>,
    origin: &ServerName,
    room_short: u64,
    ids: &[OwnedEventId],
    rules: &RoomVersionRules,
) -> Result<()> {
    let mut objects = Vec::new();
    let mut keys = PublicKeyMap::new();
    for id in ids {
        if services.rooms.event_short(id)?.is_some() {
            continue;
        }
        let response = match services.servers.client.send(origin, get_event::Request::new(id.clone())).await {
            Ok(response) => response,
            Err(why) => {
                tracing::info!("cannot fetch {id} from {origin}: {why}");
                continue;
            }
        };
        let Ok(object) = parse_pdu(&response.pdu) else { continue };
        if event_id_of(&object, rules).ok().as_ref() != Some(id) {
            continue;
        }
        merge_keys(&mut keys, event_keys(services, &object, rules).await?);
        objects.push(object);
    }
    let record = services.rooms.room_by_short(room_short)?;
    crate::util::heavy(|| services.rooms.store_outliers(room_short, &record, objects, &keys))
}

/// Fetches an event's auth chain (`/event_auth`) and stores what we lack
/// as outliers.
async fn fetch_auth_chain(
    services: &Arc<Services>,
    origin: &ServerName,
    room_short: u64,
    room_id: &RoomId,
    event_id: &OwnedEventId,
) -> Result<()> {
    let record = services.rooms.room_by_short(room_short)?;
    let rules = record.rules()?;
    let request = event_auth::Request::new(room_id.to_owned(), event_id.clone());
    let response =
        services.servers.client.send(origin, request).await.map_err(|f| f.to_client_error(origin))?;
    let mut objects = Vec::new();
    let mut keys = PublicKeyMap::new();
    for raw in &response.auth_chain {
        let Ok(object) = parse_pdu(raw) else { continue };
        if !belongs_to(&object, room_id, &rules) {
            continue;
        }
        if let Ok(id) = event_id_of(&object, &rules)
            && services.rooms.event_short(&id)?.is_some()
        {
            continue;
        }
        merge_keys(&mut keys, event_keys(services, &object, &rules).await?);
        objects.push(object);
    }
    crate::util::heavy(|| services.rooms.store_outliers(room_short, &record, objects, &keys))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn kept_answers_are_reused_then_dropped_after_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::for_tests(dir.path());
        let origin = ruma::server_name!("other.test");
        let results = BTreeMap::from([(OwnedEventId::try_from("$e:other.test").unwrap(), Ok(()))]);
        assert!(answered(&services, origin, "t1").unwrap().is_none());
        remember_answer(&services, origin, "t1", results.clone()).unwrap();
        assert_eq!(answered(&services, origin, "t1").unwrap(), Some(results));
        assert_eq!(
            forget_answers_before(&services, crate::util::now_ms() - 60_000).unwrap(),
            0,
            "fresh: kept"
        );
        assert_eq!(forget_answers_before(&services, crate::util::now_ms() + 1).unwrap(), 1);
        assert!(answered(&services, origin, "t1").unwrap().is_none());
    }
}
