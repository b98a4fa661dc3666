//! Server notices: messages from the server's admins to one user, sent by
//! a notices user that is never a registered account, in a room made for
//! that user (private, they cannot speak, tagged `m.server_notice`) which
//! they cannot reject. When they leave it, the next notice makes a new one.

use std::sync::Arc;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    rooms::{
        builder::PduBuilder,
        create::{CreateRoom, Preset},
        pipeline::Txn,
    },
    services::Services,
    storage::maps,
    util,
};

/// The notices user, when notices are on.
pub fn notices_user(services: &Services) -> Option<OwnedUserId> {
    let localpart = services.config.server_notices.system_mxid_localpart.as_deref()?;
    UserId::parse(format!("@{localpart}:{}", services.config.server_name)).ok()
}

/// Whether `room_id` is `user`'s notices room.
pub fn is_notices_room(services: &Services, user: &UserId, room_id: &RoomId) -> Result<bool> {
    let stored = services.db.get(&maps::SERVER_NOTICE_ROOMS, user.as_bytes())?;
    Ok(stored.is_some_and(|room| room == room_id.as_bytes()))
}

/// The user's notices room where the notices user is joined and the user
/// joined or invited; a new one otherwise.
async fn notices_room(services: &Arc<Services>, sender: &UserId, user: &UserId) -> Result<OwnedRoomId> {
    let rooms = &services.rooms;
    let config = &services.config.server_notices;
    if let Some(stored) = services.db.get(&maps::SERVER_NOTICE_ROOMS, user.as_bytes())? {
        let room_id = OwnedRoomId::try_from(String::from_utf8(stored).map_err(Error::internal)?)
            .map_err(Error::internal)?;
        if let Some(short) = rooms.room_short(&room_id)?
            && rooms.membership(sender, short)?.as_deref() == Some("join")
            && matches!(rooms.membership(user, short)?.as_deref(), Some("join" | "invite"))
        {
            return Ok(room_id);
        }
    }
    let mut create = CreateRoom::new(RoomVersionId::V11, Preset::PrivateChat);
    create.name = Some(config.room_name.clone());
    create.topic = config.room_topic.clone();
    create.power_level_override = Some(util::object(json!({"users_default": -10})));
    create.displayname = config.system_mxid_display_name.clone();
    create.avatar_url = config.system_mxid_avatar_url.clone();
    let room_id = rooms.create_room(sender, create).await?;
    // The user's tag marks it for clients (kept with the user's other tags).
    let mut tags: Value = match services.users.account_data(user, Some(&room_id), "m.tag")? {
        Some(raw) => serde_json::from_str(raw.get()).map_err(Error::internal)?,
        None => json!({"tags": {}}),
    };
    tags["tags"]["m.server_notice"] = json!({});
    let tags = serde_json::value::to_raw_value(&tags).map_err(Error::internal)?;
    services.users.set_account_data(user, Some(&room_id), "m.tag", &tags)?;
    let mut batch = crate::storage::Batch::new();
    batch.put(&maps::SERVER_NOTICE_ROOMS, user.as_bytes(), room_id.as_bytes().to_vec());
    services.db.write(batch)?;
    Ok(room_id)
}

/// Sends a notice to a local user: an event of `kind` (a state event with
/// `state_key`). With `txn` (the admin's device and transaction ID), a
/// retry answers the first event and sends nothing.
pub async fn send(
    services: &Arc<Services>,
    user: &UserId,
    kind: &str,
    state_key: Option<&str>,
    content: Value,
    txn: Option<Txn>,
) -> Result<OwnedEventId> {
    let sender = notices_user(services).ok_or_else(|| {
        Error::custom(
            http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Server notices are not enabled on this server",
        )
    })?;
    let rooms = &services.rooms;
    let room_id = notices_room(services, &sender, user).await?;
    if let Some(txn) = &txn
        && let Some(event_id) =
            rooms.txn_event(&sender, &txn.device_id, &room_id, txn.endpoint, &txn.txn_id)?
    {
        return Ok(event_id);
    }
    let short = rooms.room_short(&room_id)?.ok_or_else(|| Error::internal("the notices room vanished"))?;
    if !matches!(rooms.membership(user, short)?.as_deref(), Some("join" | "invite")) {
        rooms
            .change_membership(&room_id, &sender, user, util::object(json!({"membership": "invite"})))
            .await?;
    }
    if services.config.server_notices.auto_join && rooms.membership(user, short)?.as_deref() == Some("invite")
    {
        rooms.change_membership(&room_id, user, user, util::object(json!({"membership": "join"}))).await?;
    }
    let builder = match state_key {
        Some(key) => PduBuilder::state(kind, key, content),
        None => PduBuilder::message(kind, content),
    };
    let event_id = rooms.send(&room_id, &sender, builder, txn).await?;
    tracing::info!("server notice {event_id} sent to {user}");
    Ok(event_id)
}

/// Where reports are announced: the notices user's room for the server's
/// admins (made on first use; admins not yet in it are invited).
async fn reports_room(services: &Arc<Services>, sender: &UserId) -> Result<OwnedRoomId> {
    const KEY: &[u8] = b"moderation.reports_room";
    let _guard = services.admin_lock.lock().await;
    let rooms = &services.rooms;
    let stored = services.db.get(&maps::GLOBAL, KEY)?;
    let known = match stored {
        Some(id) => OwnedRoomId::try_from(String::from_utf8(id).map_err(Error::internal)?).ok(),
        None => None,
    };
    let room_id = match known.filter(|room| rooms.room_short(room).ok().flatten().is_some()) {
        Some(room_id) => room_id,
        None => {
            let mut create = CreateRoom::new(RoomVersionId::V11, Preset::PrivateChat);
            create.name = Some(services.config.moderation.reports_room_name.clone());
            create.topic = Some("Reports of content and users, as they arrive".into());
            create.displayname = services.config.server_notices.system_mxid_display_name.clone();
            let room_id = rooms.create_room(sender, create).await?;
            let mut batch = crate::storage::Batch::new();
            batch.put(&maps::GLOBAL, KEY, room_id.as_bytes().to_vec());
            services.db.write(batch)?;
            room_id
        }
    };
    let short = rooms.room_short(&room_id)?.ok_or_else(|| Error::internal("the reports room vanished"))?;
    for (admin, record) in services.users.records()? {
        if record.admin && !record.deactivated && rooms.membership(&admin, short)?.is_none() {
            rooms
                .change_membership(&room_id, sender, &admin, util::object(json!({"membership": "invite"})))
                .await?;
        }
    }
    Ok(room_id)
}

/// Announces a report to the server's admins (when configured).
pub async fn announce_report(services: &Arc<Services>, id: u64) -> Result<()> {
    if !services.config.moderation.notify_admins {
        return Ok(());
    }
    let Some(sender) = notices_user(services) else { return Ok(()) };
    let Some(report) = services.rooms.get_report(id)? else { return Ok(()) };
    let what = match (&report.event_id, &report.user_id, &report.room_id) {
        (Some(event), _, Some(room)) => {
            let by =
                services.rooms.pdu(event)?.map(|pdu| pdu.sender.to_string()).unwrap_or_else(|| "?".into());
            format!("an event by {by} ({event}) in {room}")
        }
        (_, Some(user), _) => format!("the user {user}"),
        (_, _, Some(room)) => format!("the room {room}"),
        _ => "something".into(),
    };
    let reason = report.reason.as_deref().filter(|r| !r.is_empty()).unwrap_or("no reason given");
    let body = format!("Report #{id}: {} reported {what}: “{reason}”.", report.reporter);
    let room_id = reports_room(services, &sender).await?;
    let content = json!({"msgtype": "m.notice", "body": body, "dev.hearth.report_id": id});
    services.rooms.send(&room_id, &sender, PduBuilder::message("m.room.message", content), None).await?;
    Ok(())
}
