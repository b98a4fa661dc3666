//! Backfill: when a client pages back past what this server has of a room
//! (it joined late), the room's other servers are asked for the events
//! before its backward extremities (`/backfill`), which go into the room's
//! history through the pipeline, oldest first: on the state of their prev
//! events, or, where those are missing, on the state the server gives for
//! them (`/state_ids`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonValue, OwnedEventId, UInt,
    api::federation::{backfill::get_backfill::v1 as backfill, event::get_room_state_ids::v1 as state_ids},
};

use super::ingest;
use crate::{
    Result,
    rooms::{
        pdu::event_id_of,
        pipeline::{AppendError, Outcome, StateBefore},
    },
    services::Services,
};

/// Backward extremities asked about at once.
const MAX_EXTREMITIES: usize = 20;
/// A room whose servers had nothing more is not asked again for this long.
const EXHAUSTED_FOR: Duration = Duration::from_secs(60);

/// Fetches up to `limit` events of the room's past from its other servers
/// and appends them as history. Returns how many were added.
pub async fn backfill(services: &Arc<Services>, room_short: u64, limit: usize) -> Result<usize> {
    let mut extremities = services.rooms.backward_extremities(room_short)?;
    extremities.truncate(MAX_EXTREMITIES);
    if extremities.is_empty() || !services.config.federation.enabled {
        return Ok(0);
    }
    let exhausted = &services.servers.backfill_exhausted;
    if let Some((then, at)) = exhausted.lock().expect("backfill").get(&room_short)
        && *then == extremities
        && at.elapsed() < EXHAUSTED_FOR
    {
        return Ok(0);
    }
    let record = services.rooms.room_by_short(room_short)?;
    let rules = record.rules()?;
    let ours = &services.config.server_name;
    let mut servers: Vec<_> =
        services.rooms.servers_in_room(room_short)?.into_iter().filter(|s| s != ours).collect();
    if let Some(server) =
        record.room_id.server_name().filter(|s| *s != ours && !servers.iter().any(|k| k == s))
    {
        servers.push(server.to_owned());
    }
    let mut added = 0;
    for server in servers {
        let request = backfill::Request::new(
            record.room_id.clone(),
            extremities.clone(),
            UInt::try_from(limit.clamp(1, 100)).unwrap_or(UInt::MIN),
        );
        let response = match services.servers.client.send(&server, request).await {
            Ok(response) => response,
            Err(why) => {
                tracing::info!("backfill of {} from {server}: {why}", record.room_id);
                continue;
            }
        };
        let mut events = Vec::new();
        for raw in &response.pdus {
            let Ok(object) = ingest::parse_pdu(raw) else { continue };
            if !ingest::belongs_to(&object, &record.room_id, &rules) {
                continue;
            }
            let Ok(event_id) = event_id_of(&object, &rules) else { continue };
            let depth = match object.get("depth") {
                Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
                _ => 0,
            };
            events.push((depth, event_id, object));
        }
        events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for (_, event_id, object) in events {
            let outcome = match ingest::append_remote(
                services,
                room_short,
                &event_id,
                object.clone(),
                StateBefore::FromPrevs,
                &rules,
                true,
            )
            .await
            {
                Err(AppendError::MissingPrevs(_)) => {
                    // The oldest of the batch: on the state the server says it had.
                    match state_before(services, &server, room_short, &record.room_id, &event_id, &rules)
                        .await
                    {
                        Ok(state) => {
                            ingest::append_remote(
                                services,
                                room_short,
                                &event_id,
                                object,
                                StateBefore::Given(state),
                                &rules,
                                true,
                            )
                            .await
                        }
                        Err(e) => Err(AppendError::Refused(e)),
                    }
                }
                other => other,
            };
            match outcome {
                Ok(Outcome::History) => added += 1,
                Ok(_) => {}
                Err(e) => tracing::info!("backfilled {event_id} from {server} not taken: {e:?}"),
            }
        }
        if added > 0 {
            break;
        }
    }
    if added == 0 {
        exhausted.lock().expect("backfill").insert(room_short, (extremities, Instant::now()));
    }
    Ok(added)
}

/// The state before `event_id` as `server` has it, its events stored.
async fn state_before(
    services: &Arc<Services>,
    server: &ruma::ServerName,
    room_short: u64,
    room_id: &ruma::RoomId,
    event_id: &OwnedEventId,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<crate::rooms::state::StateMap> {
    let request = state_ids::Request::new(event_id.clone(), room_id.to_owned());
    let ids = services.servers.client.send(server, request).await.map_err(|f| f.to_client_error(server))?;
    let wanted: Vec<OwnedEventId> = ids.auth_chain_ids.iter().chain(&ids.pdu_ids).cloned().collect();
    ingest::fetch_outliers(services, server, room_short, &wanted, rules).await?;
    services.rooms.state_of_events(room_short, &ids.pdu_ids)
}
