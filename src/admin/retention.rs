//! Retention and expiry as background jobs: the retention pass (messages
//! past their room's lifetime pruned, with their local media; old
//! notifications deleted; long-inactive rooms shut down and purged), and an
//! admin's history purge of one room (Synapse's `purge_history`).

use std::{sync::Arc, time::Duration};

use ruma::{OwnedRoomId, RoomId};
use serde_json::{Value, json};

use crate::{
    Result,
    jobs::Progress,
    rooms::retention::{PRUNE_BATCH, Pruned},
    services::Services,
    util,
};

/// The action name of the retention pass's jobs.
pub const RETENTION: &str = "retention";
pub const PURGE_HISTORY: &str = "purge_history";

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A room's `max_lifetime` (ms) as the server applies it: its
/// `m.room.retention` within the configured bounds, else the default.
pub fn max_lifetime(services: &Services, room: u64) -> Result<Option<u64>> {
    let config = &services.config.retention;
    let own = services.rooms.current_state_event(room, "m.room.retention", "")?;
    let own = own.and_then(|event| event.content_value()["max_lifetime"].as_u64());
    let Some(lifetime) = own.or(config.default_max_lifetime.map(ms)) else { return Ok(None) };
    let lifetime = lifetime.max(config.allowed_lifetime_min.map_or(0, ms));
    Ok(Some(config.allowed_lifetime_max.map_or(lifetime, |max| lifetime.min(ms(max)))))
}

/// After events are pruned: their search documents go, and the local
/// media their senders uploaded. How many media items went.
async fn forget_pruned(services: &Arc<Services>, pruned: &[Pruned]) -> Result<usize> {
    if let Some(search) = &services.search {
        for event in pruned {
            search.remove(event.short);
        }
        search.commit(search.indexed())?;
    }
    let server = services.media.server_name().to_string();
    let mut doomed = Vec::new();
    for event in pruned {
        for url in crate::media::mxc_urls(&event.content) {
            let Some((origin, media_id)) = url["mxc://".len()..].split_once('/') else { continue };
            if origin != server {
                continue;
            }
            let record = services.media.record(services.media.server_name(), media_id)?;
            if record.is_some_and(|r| r.user_id.as_deref() == Some(&*event.sender)) {
                doomed.push(media_id.to_owned());
            }
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    Ok(services.media.delete_local(&doomed).await?.len())
}

/// Prunes a room's messages sent in `[after, before)` (ms), in batches, with
/// `keep` saying which to spare; how many went and the media removed.
async fn prune_room(
    services: &Arc<Services>,
    room: u64,
    room_id: &RoomId,
    after: u64,
    before: u64,
    keep: &(dyn Fn(&ruma::UserId) -> bool + Sync),
) -> Result<(u64, usize)> {
    let (mut events, mut media) = (0, 0);
    let mut from = after;
    loop {
        let found = services.rooms.messages_between(room, from, before, PRUNE_BATCH)?;
        let Some(&(last, _)) = found.last() else { return Ok((events, media)) };
        let mut shorts = Vec::with_capacity(found.len());
        for &(_, short) in &found {
            let spared = services.rooms.pdu_by_short(short)?.is_some_and(|pdu| keep(&pdu.sender));
            if !spared {
                shorts.push(short);
            }
        }
        let pruned = services.rooms.prune_events(room_id, &shorts).await?;
        events += pruned.len() as u64;
        media += forget_pruned(services, &pruned).await?;
        if found.len() < PRUNE_BATCH {
            return Ok((events, media));
        }
        // Events of the same millisecond as the last may follow: they are
        // read again (pruned ones are skipped).
        from = last.max(from + u64::from(last == from));
        // Let sends and syncs in between batches.
        tokio::task::yield_now().await;
    }
}

/// One retention pass over every room.
pub async fn run_pass(services: &Arc<Services>, progress: &Progress) -> Result<Value> {
    let config = &services.config.retention;
    let now = util::now_ms();
    let rooms = services.rooms.room_ids()?;
    let total = rooms.len() as u64;
    let (mut events, mut media, mut closed, mut failed) = (0, 0, Vec::new(), 0);
    for (done, (room, room_id)) in rooms.into_iter().enumerate() {
        progress.set(done as u64, Some(total));
        // One room that fails does not hold up the others.
        let outcome = async {
            if let Some(idle) = config.inactive_rooms_after
                && services.rooms.last_activity(room)?.is_some_and(|at| at < now.saturating_sub(ms(idle)))
            {
                shut_down_inactive(services, &room_id).await?;
                closed.push(room_id.clone());
                return Ok(());
            }
            if !config.enabled {
                return Ok(());
            }
            let Some(lifetime) = max_lifetime(services, room)? else { return Ok(()) };
            let cutoff = now.saturating_sub(lifetime);
            let cursor = services.rooms.retention_cursor(room)?;
            if cutoff <= cursor {
                return Ok(());
            }
            let (pruned, removed) = prune_room(services, room, &room_id, cursor, cutoff, &|_| false).await?;
            services.rooms.set_retention_cursor(room, cutoff)?;
            events += pruned;
            media += removed;
            Ok::<_, crate::Error>(())
        };
        if let Err(e) = outcome.await {
            tracing::warn!("retention: {room_id} skipped this pass: {e}");
            failed += 1;
        }
    }
    let mut notifications = 0;
    let before = now.saturating_sub(ms(config.notification_lifetime));
    loop {
        let gone = services.rooms.prune_notifications(before, 10_000)?;
        notifications += gone;
        if gone < 10_000 {
            break;
        }
        tokio::task::yield_now().await;
    }
    progress.set(total, Some(total));
    let summary = json!({
        "rooms": total,
        "events_pruned": events,
        "media_deleted": media,
        "notifications_deleted": notifications,
        "rooms_shut_down": closed,
        "rooms_failed": failed,
    });
    tracing::info!("retention pass: {summary}");
    Ok(summary)
}

async fn shut_down_inactive(services: &Arc<Services>, room_id: &OwnedRoomId) -> Result<()> {
    let admin = ruma::UserId::parse(format!("@retention:{}", services.config.server_name))
        .map_err(crate::Error::internal)?;
    let request = super::rooms::Shutdown { force_purge: true, ..Default::default() };
    super::rooms::shut_down(services, room_id, &admin, &request).await?;
    super::rooms::purge(services, room_id, true, None).await
}

/// Starts a retention pass as a job, unless one is running; its ID.
pub fn start_pass(services: &Arc<Services>) -> Result<Option<String>> {
    if !services.jobs.running(RETENTION, "")?.is_empty() {
        return Ok(None);
    }
    let worker = services.clone();
    services
        .jobs
        .start(RETENTION, "", move |progress| async move { run_pass(&worker, &progress).await })
        .map(Some)
}

/// Runs the retention pass every `retention.interval`, for the server's life.
pub async fn run(services: Arc<Services>) {
    loop {
        tokio::time::sleep(services.config.retention.interval).await;
        if let Err(e) = start_pass(&services) {
            tracing::warn!("retention pass not started: {e}");
        }
    }
}

/// Synapse's history purge of a room: the content of its messages before
/// `before` (ms) goes — local users' only with `delete_local_events` —, as
/// a job; its ID.
pub fn start_history_purge(
    services: &Arc<Services>,
    room_id: &RoomId,
    before: u64,
    delete_local_events: bool,
) -> Result<String> {
    let worker = services.clone();
    let room_id = room_id.to_owned();
    let job_room = room_id.clone();
    services.jobs.start(PURGE_HISTORY, room_id.as_str(), move |progress| async move {
        let room =
            worker.rooms.room_short(&job_room)?.ok_or_else(|| crate::Error::not_found("Unknown room"))?;
        let local = |sender: &ruma::UserId| !delete_local_events && worker.users.is_local(sender);
        let (events, media) = prune_room(&worker, room, &job_room, 0, before, &local).await?;
        progress.set(events, Some(events));
        Ok(json!({"events_pruned": events, "media_deleted": media}))
    })
}
