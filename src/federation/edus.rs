//! EDUs: what goes out when a local user types, reads, changes presence
//! or sends to another server's devices; and what comes in, each taken
//! only when its user belongs to the server that sent it. Device lists are
//! `devices`'.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use super::audience::{other_servers, queue_edu, servers_sharing};
use crate::{Result, rooms::receipts::ReceiptKey, services::Services, users::to_device::Recipient};

/// How long a remote typing notice lasts unless renewed (Synapse's).
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// A local user started or stopped typing.
pub fn send_typing(
    services: &Services,
    room_id: &RoomId,
    room_short: u64,
    user: &UserId,
    typing: bool,
) -> Result<()> {
    let content = json!({"room_id": room_id, "user_id": user, "typing": typing});
    queue_edu(services, &other_servers(services, room_short)?, "m.typing", content)
}

/// A local user's public read receipt.
pub fn send_receipt(
    services: &Services,
    room_id: &RoomId,
    room_short: u64,
    key: &ReceiptKey,
    event_id: &ruma::EventId,
) -> Result<()> {
    if key.kind != "m.read" {
        return Ok(());
    }
    let mut data = json!({"ts": crate::util::now_ms()});
    if !key.thread.is_empty() {
        data["thread_id"] = json!(key.thread);
    }
    let content =
        json!({room_id.as_str(): {"m.read": {key.user.as_str(): {"event_ids": [event_id], "data": data}}}});
    queue_edu(services, &other_servers(services, room_short)?, "m.receipt", content)
}

/// A local user's presence changed.
pub fn send_presence(
    services: &Services,
    user: &UserId,
    presence: &str,
    status_msg: Option<&str>,
) -> Result<()> {
    let mut update = json!({"user_id": user, "presence": presence, "last_active_ago": 0, "currently_active": presence == "online"});
    if let Some(status) = status_msg {
        update["status_msg"] = json!(status);
    }
    queue_edu(services, &servers_sharing(services, user)?, "m.presence", json!({"push": [update]}))
}

/// A local user's presence as it stands, as an `m.presence` update.
fn presence_update(services: &Services, user: &UserId) -> Result<Option<Value>> {
    let Some(record) = services.presence.record(user)? else { return Ok(None) };
    let mut update = json!({
        "user_id": user, "presence": record.presence,
        "last_active_ago": crate::util::now_ms().saturating_sub(record.last_active_ts),
        "currently_active": record.presence == "online",
    });
    if let Some(status) = &record.status_msg {
        update["status_msg"] = json!(status);
    }
    Ok(Some(update))
}

/// A local user's presence changed other than by `send_presence` (a sync
/// set it): the servers sharing a room with them hear it as it stands.
pub fn announce_presence(services: &Services, user: &UserId) -> Result<()> {
    let Some(update) = presence_update(services, user)? else { return Ok(()) };
    queue_edu(services, &servers_sharing(services, user)?, "m.presence", json!({"push": [update]}))
}

/// Someone joined a room: as Synapse, a server new to our members hears
/// their presence (a remote joiner's server, of the room's local members),
/// and the room's other servers hear a local joiner's.
pub fn presence_for_joiner(services: &Services, room_short: u64, joiner: &UserId) -> Result<()> {
    if services.users.is_local(joiner) {
        let Some(update) = presence_update(services, joiner)? else { return Ok(()) };
        return queue_edu(
            services,
            &other_servers(services, room_short)?,
            "m.presence",
            json!({"push": [update]}),
        );
    }
    // (Offline is what the other server assumes of anyone it has not heard of.)
    let mut updates = Vec::new();
    for member in services.rooms.local_joined(room_short)? {
        updates.extend(presence_update(services, &member)?.filter(|u| u["presence"] != "offline"));
    }
    let destination = [joiner.server_name().to_owned()];
    for chunk in updates.chunks(PRESENCE_PER_EDU) {
        queue_edu(services, &destination, "m.presence", json!({"push": chunk}))?;
    }
    Ok(())
}

/// Presence updates per EDU when a server learns a room's members at once.
const PRESENCE_PER_EDU: usize = 100;

/// Send-to-device messages for other servers' users: one EDU per server.
pub fn send_to_device(
    services: &Services,
    sender: &UserId,
    event_type: &str,
    message_id: &str,
    messages: &BTreeMap<OwnedUserId, BTreeMap<Recipient, Box<serde_json::value::RawValue>>>,
) -> Result<()> {
    let mut by_server: BTreeMap<OwnedServerName, serde_json::Map<String, Value>> = BTreeMap::new();
    for (user, by_device) in messages {
        if services.users.is_local(user) || !services.config.federation.allows(user.server_name()) {
            continue;
        }
        let mut devices = serde_json::Map::new();
        for (recipient, content) in by_device {
            let device = match recipient {
                Recipient::AllDevices => "*".to_owned(),
                Recipient::Device(device) => device.to_string(),
            };
            devices.insert(device, serde_json::from_str(content.get()).unwrap_or(Value::Null));
        }
        by_server
            .entry(user.server_name().to_owned())
            .or_default()
            .insert(user.to_string(), Value::Object(devices));
    }
    for (server, messages) in by_server {
        let content =
            json!({"sender": sender, "type": event_type, "message_id": message_id, "messages": messages});
        queue_edu(services, &[server], "m.direct_to_device", content)?;
    }
    Ok(())
}

/// Takes in one EDU from `origin`.
pub async fn take(services: &Arc<Services>, origin: &ServerName, edu: &Value) {
    let content = &edu["content"];
    let result = match edu["edu_type"].as_str() {
        Some("m.typing") => take_typing(services, origin, content),
        Some("m.receipt") => take_receipts(services, origin, content),
        Some("m.presence") => take_presence(services, origin, content),
        Some("m.direct_to_device") => take_to_device(services, origin, content),
        Some("m.device_list_update") => super::devices::take_list_update(services, origin, content).await,
        Some("m.signing_key_update") => {
            super::devices::take_signing_key_update(services, origin, content).await
        }
        other => {
            tracing::debug!("EDU {other:?} from {origin} ignored");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::info!("EDU from {origin} not taken: {e}");
    }
}

/// A user ID from `value` that belongs to `origin`.
fn origin_user(value: &Value, origin: &ServerName) -> Option<OwnedUserId> {
    let user = OwnedUserId::try_from(value.as_str()?).ok()?;
    (user.server_name() == origin).then_some(user)
}

/// The room, when `user` is joined to it.
fn joined_room(services: &Services, room: &Value, user: &UserId) -> Result<Option<u64>> {
    let Some(room_id) = room.as_str().and_then(|r| ruma::OwnedRoomId::try_from(r).ok()) else {
        return Ok(None);
    };
    let Some(short) = services.rooms.room_short(&room_id)? else { return Ok(None) };
    Ok((services.rooms.membership(user, short)?.as_deref() == Some("join")).then_some(short))
}

fn take_typing(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    let Some(user) = origin_user(&content["user_id"], origin) else { return Ok(()) };
    let Some(room_short) = joined_room(services, &content["room_id"], &user)? else { return Ok(()) };
    if !services.rooms.acl_allows(origin, room_short)? {
        return Ok(());
    }
    let timeout = (content["typing"] == true).then_some(REMOTE_TYPING);
    services.rooms.typing.set(room_short, &user, timeout)
}

fn take_receipts(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    let Some(rooms) = content.as_object() else { return Ok(()) };
    for (room, kinds) in rooms {
        let Some(users) = kinds["m.read"].as_object() else { continue };
        for (user, receipt) in users {
            let Some(user) = origin_user(&json!(user), origin) else { continue };
            let Some(room_short) = joined_room(services, &json!(room), &user)? else { continue };
            if !services.rooms.acl_allows(origin, room_short)? {
                continue;
            }
            let thread = receipt["data"]["thread_id"].as_str().unwrap_or_default().to_owned();
            for event_id in receipt["event_ids"].as_array().into_iter().flatten() {
                let Some(event_id) = event_id.as_str().and_then(|e| ruma::OwnedEventId::try_from(e).ok())
                else {
                    continue;
                };
                let key =
                    ReceiptKey { kind: "m.read".to_owned(), thread: thread.clone(), user: user.clone() };
                // An event not (yet) here: the receipt is dropped.
                if let Err(e) = services.rooms.set_receipt(room_short, key, event_id) {
                    tracing::debug!("receipt from {origin}: {e}");
                }
            }
        }
    }
    Ok(())
}

fn take_presence(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    for update in content["push"].as_array().into_iter().flatten() {
        let Some(user) = origin_user(&update["user_id"], origin) else { continue };
        let Some(presence) =
            update["presence"].as_str().filter(|p| matches!(*p, "online" | "unavailable" | "offline"))
        else {
            continue;
        };
        let status = update["status_msg"].as_str().map(str::to_owned);
        services.presence.set(&user, presence, status)?;
    }
    Ok(())
}

fn take_to_device(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    let Some(sender) = origin_user(&content["sender"], origin) else { return Ok(()) };
    let (Some(event_type), Some(message_id)) = (content["type"].as_str(), content["message_id"].as_str())
    else {
        return Ok(());
    };
    let mut messages = BTreeMap::new();
    for (user, devices) in content["messages"].as_object().into_iter().flatten() {
        let Ok(user) = OwnedUserId::try_from(user.as_str()) else { continue };
        let mut recipients = BTreeMap::new();
        for (device, message) in devices.as_object().into_iter().flatten() {
            let recipient = match device.as_str() {
                "*" => Recipient::AllDevices,
                device => Recipient::Device(device.into()),
            };
            recipients
                .insert(recipient, serde_json::value::to_raw_value(message).map_err(crate::Error::internal)?);
        }
        messages.insert(user, recipients);
    }
    // Once per origin and message ID: the sending device is the origin.
    let device: ruma::OwnedDeviceId = format!("federation:{origin}").into();
    services.users.send_to_device(&sender, &device, event_type, message_id, &messages)
}
