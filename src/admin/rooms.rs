//! Rooms as server admins act on them: shutting one down (its local
//! members leave — into a new room with a notice, if asked —, its local
//! aliases follow them or go, it leaves the directory, it may be blocked)
//! and then purging it; making a local user a room admin.

use std::sync::Arc;

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    rooms::{
        builder::PduBuilder,
        create::{CreateRoom, Preset},
        state::StateMap,
    },
    services::Services,
    util,
};

/// What a shutdown is asked to do (Synapse's delete-room body).
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Move the local members to a new room made by this user.
    pub new_room_user_id: Option<OwnedUserId>,
    pub room_name: String,
    pub message: String,
    pub block: bool,
    pub purge: bool,
    /// Purge even with local users still joined.
    pub force_purge: bool,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            new_room_user_id: None,
            room_name: "Content Violation Notification".into(),
            message: "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
                .into(),
            block: false,
            purge: true,
            force_purge: false,
        }
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Default)]
pub struct ShutdownResult {
    pub kicked_users: Vec<OwnedUserId>,
    pub failed_to_kick_users: Vec<OwnedUserId>,
    pub local_aliases: Vec<OwnedRoomAliasId>,
    pub new_room_id: Option<OwnedRoomId>,
}

impl ShutdownResult {
    pub fn to_json(&self) -> Value {
        json!({
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": self.new_room_id,
        })
    }
}

/// Synapse's plain 400 (`M_UNKNOWN`).
fn bad(message: impl Into<String>) -> Error {
    Error::custom(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
}

/// Shuts a room down; an unknown room only gets blocked (if asked).
pub async fn shut_down(
    services: &Arc<Services>,
    room_id: &RoomId,
    admin: &UserId,
    request: &Shutdown,
) -> Result<ShutdownResult> {
    let rooms = &services.rooms;
    if request.block {
        rooms.set_blocked(room_id, Some(admin))?;
    }
    let mut result = ShutdownResult::default();
    let Some(room_short) = rooms.room_short(room_id)? else { return Ok(result) };
    if let Some(owner) = &request.new_room_user_id {
        let mut create = CreateRoom::new(RoomVersionId::V11, Preset::PublicChat);
        create.name = Some(request.room_name.clone());
        create.power_level_override = Some(util::object(json!({"users_default": -10})));
        let new_room = rooms.create_room(owner, create).await?;
        let content = util::object(json!({"msgtype": "m.text", "body": request.message}));
        rooms
            .send(&new_room, owner, PduBuilder::message("m.room.message", Value::Object(content)), None)
            .await?;
        result.new_room_id = Some(new_room);
    }
    for (user, membership) in rooms.members(room_short)? {
        if !services.users.is_local(&user) || !matches!(membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        let leave = util::object(json!({"membership": "leave"}));
        let moved = async {
            crate::federation::membership::change_membership(services, room_id, &user, &user, leave).await?;
            if let Some(new_room) = &result.new_room_id
                && membership == "join"
            {
                rooms
                    .change_membership(new_room, &user, &user, util::object(json!({"membership": "join"})))
                    .await?;
            }
            rooms.forget(&user, room_short)
        };
        match moved.await {
            Ok(()) => result.kicked_users.push(user),
            Err(e) => {
                tracing::warn!("shutting down {room_id}: {user} could not be moved out: {e}");
                result.failed_to_kick_users.push(user);
            }
        }
    }
    for alias in rooms.room_aliases(room_short)? {
        let Some(record) = rooms.alias(&alias)? else { continue };
        rooms.remove_alias(&alias, &record)?;
        if let Some(new_room) = &result.new_room_id {
            rooms.put_alias(&alias, new_room, &record.creator)?;
        }
        result.local_aliases.push(alias);
    }
    rooms.set_published(room_id, false)?;
    tracing::info!(
        "{admin} shut down {room_id}: {} local users out, {} aliases, new room {:?}",
        result.kicked_users.len(),
        result.local_aliases.len(),
        result.new_room_id
    );
    Ok(result)
}

/// The room's most powerful local member and their level (`i64::MAX` for
/// the creators of rooms that privilege them).
pub(super) fn strongest_local(
    services: &Services,
    room_short: u64,
    state: &StateMap,
    rules: &RoomVersionRules,
) -> Result<Option<(OwnedUserId, i64)>> {
    let mut best: Option<(OwnedUserId, i64)> = None;
    for user in services.rooms.local_joined(room_short)? {
        let level = services.rooms.power_level(state, &user, rules)?;
        if best.as_ref().is_none_or(|(_, top)| level > *top) {
            best = Some((user, level));
        }
    }
    Ok(best)
}

/// Synapse's make-room-admin: the room's most powerful local member gives
/// `user` the same power (inviting them first unless they are in the room
/// or it is public).
pub async fn make_room_admin(services: &Arc<Services>, room_id: &RoomId, user: &UserId) -> Result<()> {
    let rooms = &services.rooms;
    let unknown = || bad(format!("Server not in room {room_id}"));
    let (room_short, record) = rooms.room(room_id)?.ok_or_else(unknown)?;
    let state = rooms.current_state(&record)?;
    let rules = record.rules()?;
    let (best, best_level) = strongest_local(services, room_short, &state, &rules)?
        .ok_or_else(|| bad("No local admin user in room"))?;
    if !rooms.may_send_state(&state, &best, "m.room.power_levels", &rules)? {
        return Err(bad("No local admin user in room with power to update power levels."));
    }
    let join_rule = rooms.current_state_field(room_short, "m.room.join_rules", "", "join_rule")?;
    let membership = rooms.membership(user, room_short)?;
    if !matches!(membership.as_deref(), Some("join" | "invite")) && join_rule.as_deref() != Some("public") {
        let invite = util::object(json!({"membership": "invite"}));
        crate::federation::membership::change_membership(services, room_id, &best, user, invite).await?;
    }
    if rooms.power_level(&state, user, &rules)? == i64::MAX {
        // A creator already outranks everyone.
        return Ok(());
    }
    let level = if best_level == i64::MAX { 100 } else { best_level };
    let levels = rooms.state_event(&state, "m.room.power_levels", "")?.map(|e| e.content_value());
    let mut content = levels.unwrap_or_else(|| json!({"users": {}}));
    if !content["users"].is_object() {
        content["users"] = json!({});
    }
    content["users"][user.as_str()] = json!(level);
    let builder = PduBuilder::state("m.room.power_levels", "", content);
    rooms.send(room_id, &best, builder, None).await?;
    tracing::info!("{user} made an admin of {room_id} by {best}");
    Ok(())
}

/// Purges a room: every trace of it leaves the database
/// (`rooms/purge.rs`). Refused while local users are still joined, unless
/// `force`. Resumes a purge a restart interrupted.
pub async fn purge(
    services: &Arc<Services>,
    room_id: &RoomId,
    force: bool,
    progress: Option<&crate::jobs::Progress>,
) -> Result<()> {
    let rooms = &services.rooms;
    let Some(room_short) = rooms.room_short(room_id)? else { return Ok(()) };
    if !rooms.is_purging(room_short) {
        if !force && rooms.has_local_member(room_short)? {
            return Err(bad("Users are still joined to this room"));
        }
        wait_for_federation(services, room_short).await;
        rooms.start_purge(room_id).await?;
    }
    let worker = services.clone();
    let reporter = progress.cloned();
    let purged = tokio::task::spawn_blocking(move || {
        worker.rooms.purge_room(room_short, &|done| {
            if let Some(progress) = &reporter {
                progress.set(done, None);
            }
        })
    })
    .await
    .map_err(Error::internal)??;
    if let Some(search) = &services.search {
        search.remove_room(room_short);
        search.commit(search.indexed())?;
    }
    services.servers.backfill_exhausted.lock().expect("backfill").remove(&room_short);
    rooms.finish_purge(room_short)?;
    tracing::info!("purged {room_id}: {purged} events");
    Ok(())
}

/// Waits (bounded) until the room's last events — the shutdown's leaves —
/// have gone to the other servers, whose queue names them only by short
/// ID: once purged, they could no longer be sent.
async fn wait_for_federation(services: &Arc<Services>, room_short: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let outbox = &services.servers.outbox;
    loop {
        let pending = (|| -> Result<bool> {
            let latest = services.rooms.latest_position(room_short)?;
            if crate::federation::sender::fanned_out(&services.db)? < latest {
                return Ok(true);
            }
            for destination in outbox.destinations()? {
                for (_, item) in outbox.peek(&destination, 1000)? {
                    if let crate::servers::outbox::Item::Pdu(short) = item
                        && services.rooms.event_meta(short)?.is_some_and(|meta| meta.room == room_short)
                    {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })();
        match pending {
            Ok(false) => return,
            Ok(true) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Ok(true) => {
                tracing::warn!("purging room {room_short}: some servers may not hear its last events");
                return;
            }
            Err(e) => {
                tracing::warn!("purging room {room_short}: cannot tell what other servers have: {e}");
                return;
            }
        }
    }
}

/// Starts again, as jobs, the purges a stop interrupted.
pub fn resume_purges(services: &Arc<Services>) -> Result<()> {
    for (_, record) in services.rooms.purges()? {
        let worker = services.clone();
        let room_id = record.room_id.clone();
        tracing::info!("resuming the purge of {room_id}");
        services.jobs.start("purge_room", record.room_id.as_str(), move |progress| async move {
            purge(&worker, &room_id, true, Some(&progress)).await?;
            Ok(Value::Null)
        })?;
    }
    Ok(())
}
