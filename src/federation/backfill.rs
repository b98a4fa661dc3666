//! Backfill: when a client pages back past what this server has of a room
//! (it joined late), the room's other servers are asked for the events
//! before its backward extremities (`/backfill`), which go into the room's
//! history through the pipeline, oldest first: on the state of their prev
//! events, or, where those are missing, on the state the server gives for
//! them (`/state_ids`, as for any event we pulled: `ingest::take_event`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{UInt, api::federation::backfill::get_backfill::v1 as backfill};

use super::ingest;
use crate::{Result, rooms::pipeline::Outcome, services::Services};

/// Backward extremities asked about at once.
const MAX_EXTREMITIES: usize = 20;
/// Events asked for at once, whatever the client's page size (as Synapse
/// asks): a bigger batch more often reaches events whose prev events are
/// stored, sparing a `/state_ids` for the state at the gap.
const BATCH: u32 = 100;
/// A room whose servers had nothing more is not asked again for this long.
const EXHAUSTED_FOR: Duration = Duration::from_secs(60);

/// Fetches a batch of the room's past from its other servers and appends
/// it as history. Returns how many events were added.
pub async fn backfill(services: &Arc<Services>, room_short: u64) -> Result<usize> {
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
        let request = backfill::Request::new(record.room_id.clone(), extremities.clone(), UInt::from(BATCH));
        let response = match services.servers.client.send(&server, request).await {
            Ok(response) => response,
            Err(why) => {
                tracing::info!("backfill of {} from {server}: {why}", record.room_id);
                continue;
            }
        };
        let events = ingest::oldest_first(&response.pdus, &record.room_id, &rules);
        for (event_id, object) in events {
            let arrival = ingest::Arrival::History;
            match ingest::take_event(
                services,
                &server,
                room_short,
                &record.room_id,
                &event_id,
                object,
                &rules,
                arrival,
            )
            .await
            {
                Ok(Outcome::History) => added += 1,
                Ok(_) => {}
                Err(e) => tracing::info!("backfilled {event_id} from {server} not taken: {e}"),
            }
        }
        if added > 0 {
            break;
        }
    }
    if added == 0 {
        exhausted.lock().expect("backfill").insert(room_short, (extremities, Instant::now()));
    } else if let Some(search) = &services.search {
        search.history_added();
    }
    Ok(added)
}
