//! Sending to other servers. Two loops: the fan-out follows the stream
//! and queues each event of a local user for every other server in its
//! room (and the server of a member event's target); the delivery sends
//! each destination's queue as transactions (at most 50 PDUs and 100 EDUs,
//! one in flight per destination), backing off from servers that fail
//! without holding up the others, and starting again at once when a
//! server contacts us. A server that was down gets its queue replayed in
//! full up to `REPLAY_MAX` PDUs; past that, each room's newest.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::send_transaction_message::v1 as send,
};
use tokio::task::JoinSet;

use crate::{
    Error, Result,
    servers::outbox::Item,
    services::Services,
    storage::{Batch, decode_u64, maps},
};

/// Where the fan-out has got to in the stream.
const CURSOR_KEY: &[u8] = b"federation.fanned_out";
/// Stream rows read at once.
const CHUNK: usize = 500;
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// How long the fan-out sleeps with nothing to do (a safety net: it is woken).
const IDLE: Duration = Duration::from_secs(60);
/// PDUs replayed in full to a server that was down. Beyond this, its queue
/// keeps each room's newest PDU only (and every EDU): on the next event the
/// server fetches what leads to it (`/get_missing_events`, the state at the
/// gap), as after Synapse's catch-up, and has no full history of the gap.
const REPLAY_MAX: usize = 10_000;

/// Runs until the server stops.
pub async fn run(services: Arc<Services>) {
    let fan_out = fan_out(services.clone());
    let deliver = deliver(services);
    tokio::join!(fan_out, deliver);
}

/// Where the fan-out has got to: local events up to this stream position
/// are queued for other servers (0 before its first round).
pub fn fanned_out(db: &crate::storage::Db) -> Result<u64> {
    Ok(db.get(&maps::GLOBAL, CURSOR_KEY)?.map(|bytes| decode_u64(&bytes)).transpose()?.unwrap_or(0))
}

async fn fan_out(services: Arc<Services>) {
    let mut cursor = match services.db.get(&maps::GLOBAL, CURSOR_KEY) {
        Ok(Some(bytes)) => decode_u64(&bytes).unwrap_or(0),
        // First start: nothing before now goes out.
        _ => services.stream.visible(),
    };
    loop {
        let upto = services.stream.visible();
        if upto > cursor {
            match queue_events(&services, cursor, upto) {
                Ok(()) => cursor = upto,
                Err(e) => tracing::warn!("federation: cannot queue events {cursor}..{upto}: {e}"),
            }
        }
        // Room events, and device-list changes (user topics).
        services.stream.wait(cursor, IDLE, |_| true).await;
    }
}

/// Queues the local events at stream positions in (after, upto] and moves
/// the cursor, in one write.
fn queue_events(services: &Services, after: u64, upto: u64) -> Result<()> {
    let mut from = after + 1;
    while from <= upto {
        let rows = services.db.scan_range(&maps::STREAM, b"", Some(&from.to_be_bytes()), false, CHUNK)?;
        let mut batch = Batch::new();
        let mut woken = HashSet::new();
        let mut last = upto;
        for (key, value) in &rows {
            let position = decode_u64(key)?;
            if position > upto {
                break;
            }
            last = position;
            if value.len() < 16 {
                continue;
            }
            let (event_short, room_short) = (decode_u64(&value[..8])?, decode_u64(&value[8..16])?);
            let destinations = destinations(services, event_short, room_short)?;
            services.servers.outbox.queue_into(&mut batch, &destinations, &Item::Pdu(event_short));
            woken.extend(destinations);
        }
        if rows.len() < CHUNK {
            last = upto;
        }
        // Device-list changes of local users in the same window, queued
        // before the cursor moves past them.
        for user in device_list_changes(services, from, last)? {
            let destinations = super::audience::servers_sharing(services, &user)?;
            super::devices::send_change(services, &user, &destinations)?;
        }
        batch.put(&maps::GLOBAL, CURSOR_KEY, last.to_be_bytes());
        services.db.write(batch)?;
        services.servers.outbox.wake(woken);
        from = last + 1;
    }
    Ok(())
}

/// Local users whose device list changed in [from, upto]
/// (changes told to one user only are not announced).
fn device_list_changes(services: &Services, from: u64, upto: u64) -> Result<Vec<ruma::OwnedUserId>> {
    let mut users = std::collections::BTreeSet::new();
    let mut start = from;
    loop {
        let rows = services.db.scan_range(
            &maps::DEVICE_LIST_CHANGES,
            b"",
            Some(&start.to_be_bytes()),
            false,
            CHUNK,
        )?;
        for (key, value) in &rows {
            let position = decode_u64(key)?;
            if position > upto {
                return Ok(users.into_iter().collect());
            }
            let (user, audience) = match value.iter().position(|b| *b == crate::storage::SEP) {
                Some(at) => (&value[..at], &value[at + 1..]),
                None => (&value[..], &b""[..]),
            };
            if let Ok(user) = ruma::OwnedUserId::try_from(String::from_utf8_lossy(user).as_ref())
                && audience.is_empty()
                && services.users.is_local(&user)
            {
                users.insert(user);
            }
            start = position + 1;
        }
        if rows.len() < CHUNK {
            return Ok(users.into_iter().collect());
        }
    }
}

/// The other servers an event goes to: none unless a local user sent it;
/// then every server in the room, and the server of a kicked or banned user.
fn destinations(services: &Services, event_short: u64, room_short: u64) -> Result<Vec<OwnedServerName>> {
    let ours = &services.config.server_name;
    let Some(pdu) = services.rooms.pdu_by_short(event_short)? else { return Ok(vec![]) };
    if pdu.sender.server_name() != ours {
        return Ok(vec![]);
    }
    let mut servers = services.rooms.servers_in_room(room_short)?;
    // A kick or ban also goes to the target's server, which may have had no
    // one else in the room; an invite went there through `/invite` already.
    if pdu.kind == ruma::events::TimelineEventType::RoomMember
        && pdu.state_key.as_deref() != Some(pdu.sender.as_str())
        && matches!(pdu.content_value()["membership"].as_str(), Some("leave" | "ban"))
        && let Some(target) = pdu.state_key.as_deref().and_then(|key| <&ruma::UserId>::try_from(key).ok())
        && !servers.iter().any(|s| s == target.server_name())
    {
        servers.push(target.server_name().to_owned());
    }
    servers.retain(|server| server != ours && services.config.federation.allows(server));
    Ok(servers)
}

/// A destination that failed: when to try again, and the wait after that.
struct Backoff {
    until: Instant,
    next: Duration,
}

async fn deliver(services: Arc<Services>) {
    let outbox = &services.servers.outbox;
    match outbox.destinations() {
        Ok(queued) => outbox.wake(queued),
        Err(e) => tracing::warn!("federation: cannot read the queue: {e}"),
    }
    // A transaction ID never used before, even across restarts.
    let boot = crate::util::now_ms();
    let mut tasks: JoinSet<(OwnedServerName, bool)> = JoinSet::new();
    let mut in_flight: HashSet<OwnedServerName> = HashSet::new();
    let mut backoff: HashMap<OwnedServerName, Backoff> = HashMap::new();
    let mut pending: HashSet<OwnedServerName> = HashSet::new();
    let config = &services.config.federation;
    let first_backoff = Duration::from_millis(config.destination_min_retry_interval_ms);
    let max_backoff = Duration::from_millis(config.destination_max_retry_interval_ms);
    loop {
        let now = Instant::now();
        for destination in std::mem::take(&mut pending) {
            if outbox.take_contacted(&destination) {
                backoff.remove(&destination);
            }
            if backoff.get(&destination).is_some_and(|b| b.until > now) {
                continue;
            }
            if in_flight.insert(destination.clone()) {
                let services = services.clone();
                let was_down = backoff.contains_key(&destination);
                tasks.spawn(async move {
                    // Down since the last try: its queue is bounded first.
                    if was_down && let Err(e) = compact_queue(&services, &destination, REPLAY_MAX) {
                        tracing::warn!("federation: cannot shorten the queue for {destination}: {e}");
                    }
                    let ok = match drain(&services, &destination, boot).await {
                        Ok(()) => true,
                        Err(why) => {
                            tracing::info!("federation: sending to {destination} failed: {why}");
                            false
                        }
                    };
                    (destination, ok)
                });
            } else {
                // Busy: looked at again when its task ends.
                pending.insert(destination);
            }
        }
        let next_retry = backoff.values().map(|b| b.until).min();
        tokio::select! {
            woken = outbox.woken() => pending.extend(woken),
            Some(Ok((destination, ok))) = tasks.join_next(), if !tasks.is_empty() => {
                in_flight.remove(&destination);
                if ok {
                    backoff.remove(&destination);
                    outbox.record_try(&destination, true, Duration::ZERO);
                } else {
                    let wait = backoff.get(&destination).map_or(first_backoff, |b| b.next);
                    outbox.record_try(&destination, false, wait);
                    backoff.insert(destination, Backoff { until: Instant::now() + wait, next: (wait * 2).min(max_backoff) });
                }
            }
            _ = sleep_until(next_retry) => {
                let now = Instant::now();
                pending.extend(backoff.iter().filter(|(_, b)| b.until <= now).map(|(d, _)| d.clone()));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// When more than `max` PDUs wait for `destination`, drops all but each
/// room's newest (EDUs stay). Returns how many were dropped.
fn compact_queue(services: &Services, destination: &ServerName, max: usize) -> Result<usize> {
    let outbox = &services.servers.outbox;
    let pdus: Vec<(u64, u64)> = outbox
        .peek(destination, usize::MAX)?
        .into_iter()
        .filter_map(|(seq, item)| match item {
            Item::Pdu(short) => Some((seq, short)),
            Item::Edu(_) => None,
        })
        .collect();
    if pdus.len() <= max {
        return Ok(0);
    }
    // In queue order: the last one seen per room is its newest.
    let mut newest = HashMap::new();
    for (seq, short) in &pdus {
        let room = services.rooms.event_meta(*short)?.map(|meta| meta.room);
        newest.insert(room, *seq);
    }
    let kept: HashSet<u64> = newest.into_values().collect();
    let dropped: Vec<u64> = pdus.iter().map(|(seq, _)| *seq).filter(|seq| !kept.contains(seq)).collect();
    outbox.remove(destination, dropped.iter().copied())?;
    tracing::info!(
        "federation: {destination} was down with {} PDUs waiting: sending each room's newest, {} dropped",
        pdus.len(),
        dropped.len()
    );
    Ok(dropped.len())
}

/// The ID of a transaction of the queue items `sent`: the same for the
/// same items (a retry after a lost answer is taken once), another one
/// as soon as they differ. A receiver answers a transaction ID it has
/// seen from its records without reading the body, so a retry that had
/// gathered more items under the same ID would have lost them.
fn transaction_id(boot: u64, sent: &[u64]) -> OwnedTransactionId {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for seq in sent {
        hasher.update(seq.to_be_bytes());
    }
    let digest = hasher.finalize();
    OwnedTransactionId::from(format!("{boot}_{}_{}", sent[0], hex::encode(&digest[..8])))
}

/// Sends everything queued for `destination`, a transaction at a time.
async fn drain(services: &Services, destination: &ServerName, boot: u64) -> Result<(), String> {
    let outbox = &services.servers.outbox;
    loop {
        let queued = outbox.peek(destination, MAX_PDUS + MAX_EDUS).map_err(|e| e.to_string())?;
        if queued.is_empty() {
            return Ok(());
        }
        let (mut pdus, mut edus, mut sent) = (Vec::new(), Vec::new(), Vec::new());
        for (seq, item) in queued {
            match item {
                Item::Pdu(_) if pdus.len() == MAX_PDUS => break,
                Item::Edu(_) if edus.len() == MAX_EDUS => break,
                Item::Pdu(short) => {
                    if let Some(object) = services.rooms.pdu_json(short).map_err(|e| e.to_string())? {
                        let json = serde_json::to_string(&object).map_err(|e| e.to_string())?;
                        pdus.push(serde_json::value::RawValue::from_string(json).map_err(|e| e.to_string())?);
                    }
                }
                Item::Edu(edu) => edus.push(ruma::serde::Raw::from_json(
                    serde_json::value::to_raw_value(&edu).map_err(|e| e.to_string())?,
                )),
            }
            sent.push(seq);
        }
        let mut request = send::Request::new(
            transaction_id(boot, &sent),
            services.config.server_name.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus;
        request.edus = edus;
        match services.servers.client.send(destination, request).await {
            Ok(response) => {
                for (event_id, result) in response.pdus {
                    if let Err(why) = result {
                        tracing::debug!("federation: {destination} did not take {event_id}: {why}");
                    }
                }
            }
            // A 2xx whose body is not the spec's answer (no `pdus`): taken
            // all the same (Synapse reads the per-PDU results leniently too).
            Err(crate::servers::client::Failure::Unreadable(why)) => {
                tracing::debug!("federation: {destination} took a transaction, answering oddly: {why}");
            }
            Err(failure) => return Err(failure.to_string()),
        }
        outbox.remove(destination, sent).map_err(|e: Error| e.to_string())?;
    }
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, server_name, user_id};
    use serde_json::json;

    use super::*;
    use crate::rooms::{
        builder::PduBuilder,
        create::{CreateRoom, Preset},
    };

    /// A retry of the same items keeps its ID; one that gathered more
    /// items since (its first unchanged) gets a new one.
    #[test]
    fn a_transaction_id_names_its_items() {
        assert_eq!(transaction_id(7, &[3, 4, 5]), transaction_id(7, &[3, 4, 5]));
        assert_ne!(transaction_id(7, &[3, 4, 5]), transaction_id(7, &[3, 4, 5, 6]));
        assert_ne!(transaction_id(7, &[3, 4, 5]), transaction_id(7, &[3, 5]));
        assert_ne!(transaction_id(7, &[3]), transaction_id(8, &[3]));
        assert!(transaction_id(7, &[3, 4]).as_str().starts_with("7_3_"));
    }

    #[tokio::test]
    async fn a_long_queue_keeps_each_rooms_newest_pdu_and_every_edu() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services::for_tests(dir.path());
        let alice = user_id!("@alice:localhost");
        let mut queued = Vec::new();
        let mut newest = Vec::new();
        for _ in 0..2 {
            let room = services
                .rooms
                .create_room(alice, CreateRoom::new(RoomVersionId::V11, Preset::PublicChat))
                .await
                .unwrap();
            for i in 0..3 {
                let builder = PduBuilder::message("m.room.message", json!({"body": format!("m{i}")}));
                let event_id = services.rooms.send(&room, alice, builder, None).await.unwrap();
                let short = services.rooms.event_short(&event_id).unwrap().unwrap();
                queued.push(Item::Pdu(short));
                if i == 2 {
                    newest.push(Item::Pdu(short));
                }
            }
        }
        let edu = Item::Edu(json!({"edu_type": "m.typing", "content": {}}));
        queued.insert(1, edu.clone());
        let there = server_name!("other.test").to_owned();
        for item in queued {
            services.servers.outbox.queue(std::slice::from_ref(&there), item).unwrap();
        }
        let left = |services: &Services| -> Vec<Item> {
            services.servers.outbox.peek(&there, 100).unwrap().into_iter().map(|(_, item)| item).collect()
        };
        assert_eq!(compact_queue(&services, &there, 6).unwrap(), 0, "short enough: all replayed");
        assert_eq!(left(&services).len(), 7);
        assert_eq!(compact_queue(&services, &there, 5).unwrap(), 4);
        assert_eq!(left(&services), [edu, newest[0].clone(), newest[1].clone()]);
    }
}
