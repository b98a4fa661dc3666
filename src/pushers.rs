//! Push notifications to phones: a background task that hands each
//! notification of a user with pushers to their push gateway (the Push
//! Gateway API), in order, with retries and backoff; sends the new unread
//! count when the user reads; removes pushers whose keys the gateway rejects.
//!
//! Progress is stored per pusher (`pushed_upto`), so nothing is lost or sent
//! twice across restarts beyond the one request in flight.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{OwnedUserId, UserId, push::Action};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use crate::{
    Result,
    rooms::notifications::{InviteNotification, Notification},
    services::Services,
    stream::Topic,
    users::pushers::PusherRecord,
    util,
};

/// Notifications one pusher sends per round (others get their turn).
const BATCH: usize = 20;
/// First wait after a failed delivery; it doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 10 * 60 * 1_000;
/// A notification undeliverable for this long is dropped (Synapse: a day).
const GIVE_UP_AFTER_MS: u64 = 24 * 60 * 60 * 1_000;
/// Longest sleep between rounds with nothing to do.
const IDLE: Duration = Duration::from_secs(60);

/// A pusher: its user, app ID and pushkey.
type PusherKey = (OwnedUserId, String, String);

/// How a pusher's turn ended.
#[derive(Default)]
struct Turn {
    /// A full batch went out: there may be more at once.
    more: bool,
    /// Delivery is failing: when to try again (ms since the epoch).
    retry_at: Option<u64>,
}

/// Runs until the server stops. Each pusher is served by a task of its own,
/// one at a time, so a slow gateway holds up no one else's notifications.
/// What a pusher has to push.
enum Pending {
    /// An event in a room of this server.
    Room(u64, Notification),
    /// An invite to a room this server is not in.
    Invite(InviteNotification),
}

pub async fn run(services: Arc<Services>) {
    let Some(mut badge_requests) = services.users.take_badge_requests() else { return };
    // Dropped (so aborted) with this future when the server stops.
    let mut tasks: JoinSet<(PusherKey, Turn, u64)> = JoinSet::new();
    let mut in_flight: HashSet<PusherKey> = HashSet::new();
    // Pushers in backoff, and when they may try again.
    let mut retries: HashMap<PusherKey, u64> = HashMap::new();
    let mut badges: BTreeSet<OwnedUserId> = BTreeSet::new();
    let mut checked = 0;
    let mut pass = true;
    loop {
        if pass {
            let upto = services.stream.visible();
            checked = checked.max(upto);
            match services.users.all_pushers() {
                Ok(all) => {
                    let mut blocked = BTreeSet::new();
                    for (user, pusher) in all {
                        let key = (user.clone(), pusher.app_id.clone(), pusher.pushkey.clone());
                        if pusher.failing_since.is_some() {
                            retries.insert(key.clone(), pusher.retry_at);
                        }
                        if !in_flight.insert(key.clone()) {
                            blocked.insert(user);
                            continue;
                        }
                        let badge = badges.contains(&user);
                        let services = services.clone();
                        tasks.spawn(async move {
                            let turn =
                                serve(&services, &user, pusher, upto, badge).await.unwrap_or_else(|e| {
                                    tracing::warn!("push delivery for {user}: {e}");
                                    Turn::default()
                                });
                            (key, turn, upto)
                        });
                    }
                    // A user whose pusher was busy gets the badge on the next pass.
                    badges.retain(|user| blocked.contains(user));
                }
                Err(e) => tracing::warn!("push delivery: {e}"),
            }
        }
        let now = util::now_ms();
        let sleep = retries
            .values()
            .min()
            .map_or(IDLE, |at| Duration::from_millis(at.saturating_sub(now).max(10)))
            .min(IDLE);
        tokio::select! {
            position = services.stream.wait(checked, sleep, |topic| matches!(topic, Topic::Room(_) | Topic::Pushes)) => {
                // New events, or time for a retry.
                checked = position;
                pass = true;
            }
            Some(user) = badge_requests.recv() => {
                badges.insert(user);
                while let Ok(user) = badge_requests.try_recv() {
                    badges.insert(user);
                }
                pass = true;
            }
            Some(Ok((key, turn, upto))) = tasks.join_next(), if !tasks.is_empty() => {
                in_flight.remove(&key);
                match turn.retry_at {
                    Some(at) => retries.insert(key.clone(), at),
                    None => retries.remove(&key),
                };
                // Its pass may have skipped it, busy as it was.
                pass = turn.more || services.stream.visible() > upto || badges.contains(&key.0);
            }
        }
    }
}

/// One pusher's turn.
async fn serve(
    services: &Services,
    user: &UserId,
    mut pusher: PusherRecord,
    upto: u64,
    badge: bool,
) -> Result<Turn> {
    if pusher.kind != "http" {
        return Ok(Turn::default());
    }
    if pusher.failing_since.is_some() && util::now_ms() < pusher.retry_at {
        return Ok(Turn { more: false, retry_at: Some(pusher.retry_at) });
    }
    let Some(url) = pusher.data["url"].as_str().and_then(|u| url::Url::parse(u).ok()) else {
        return Ok(Turn::default());
    };
    // Notifications in this server's rooms, and invites to rooms it is
    // not in, in stream order.
    let mut pending: Vec<(u64, Pending)> = services
        .rooms
        .notifications_after(user, pusher.pushed_upto, upto, BATCH)?
        .into_iter()
        .map(|(room, position, notification)| (position, Pending::Room(room, notification)))
        .collect();
    let invites = services.rooms.invite_notifications_after(user, pusher.pushed_upto, upto, BATCH)?;
    pending.extend(invites.into_iter().map(|(position, invite)| (position, Pending::Invite(invite))));
    pending.sort_by_key(|(position, _)| *position);
    pending.truncate(BATCH);
    let mut sent_any = false;
    for (position, item) in &pending {
        // Read meanwhile (elsewhere, or while the gateway was failing):
        // no point ringing the phone (Synapse pushes unread ones only).
        if let Pending::Room(room, notification) = item
            && services.rooms.is_read(user, *room, *position, notification)?
        {
            pusher.pushed_upto = *position;
            sent_any = true;
            continue;
        }
        let counts = services.rooms.badge(user)?;
        let body = match item {
            Pending::Room(room, notification) => {
                notification_body(services, user, &pusher, *room, notification, counts)?
            }
            Pending::Invite(invite) => invite_body(services, user, &pusher, invite, counts)?,
        };
        let Some(body) = body else {
            // The event is gone (purged, the invite settled): nothing to say.
            pusher.pushed_upto = *position;
            sent_any = true;
            continue;
        };
        match deliver(services, &url, &body, &pusher).await {
            Delivery::Done => {
                pusher.pushed_upto = *position;
                pusher.last_badge = Some(counts);
                pusher.failing_since = None;
                pusher.backoff_ms = 0;
                sent_any = true;
            }
            Delivery::Rejected => {
                tracing::info!(
                    "push gateway rejected {user}'s pushkey for {}; pusher removed",
                    pusher.app_id
                );
                services.users.remove_pushers_everywhere(&pusher.app_id, &pusher.pushkey)?;
                return Ok(Turn::default());
            }
            Delivery::Failed(why) => {
                let now = util::now_ms();
                let since = *pusher.failing_since.get_or_insert(now);
                if now - since > GIVE_UP_AFTER_MS {
                    tracing::warn!(
                        "push to {url} for {user} failing for a day ({why}); notification dropped"
                    );
                    pusher.pushed_upto = *position;
                    pusher.failing_since = None;
                    pusher.backoff_ms = 0;
                } else {
                    pusher.backoff_ms =
                        pusher.backoff_ms.saturating_mul(2).clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
                    pusher.retry_at = now + pusher.backoff_ms;
                    tracing::info!(
                        "push to {url} for {user} failed ({why}); retrying in {} ms",
                        pusher.backoff_ms
                    );
                }
                services.users.update_pusher(user, &pusher)?;
                let retry_at = pusher.failing_since.map(|_| pusher.retry_at);
                return Ok(Turn { more: false, retry_at });
            }
        }
    }
    if badge && pending.is_empty() {
        let counts = services.rooms.badge(user)?;
        if pusher.last_badge != Some(counts) {
            let body = badge_body(&pusher, counts);
            if let Delivery::Done = deliver(services, &url, &body, &pusher).await {
                pusher.last_badge = Some(counts);
                sent_any = true;
            }
        }
    }
    if sent_any {
        services.users.update_pusher(user, &pusher)?;
    }
    Ok(Turn { more: pending.len() == BATCH, retry_at: None })
}

enum Delivery {
    Done,
    /// The gateway named this pushkey as rejected: the device is gone.
    Rejected,
    Failed(String),
}

async fn deliver(services: &Services, url: &url::Url, body: &Value, pusher: &PusherRecord) -> Delivery {
    match services.outbound.post_json(url, body).await {
        Ok(answer) => {
            let rejected =
                answer["rejected"].as_array().is_some_and(|keys| keys.iter().any(|k| k == &pusher.pushkey));
            if rejected { Delivery::Rejected } else { Delivery::Done }
        }
        Err(e) => Delivery::Failed(e.to_string()),
    }
}

/// The device entry of the Push Gateway API: the pusher's data without
/// what is Hearth's (`url`, `format`), and the rule's tweaks.
fn device(pusher: &PusherRecord, tweaks: Map<String, Value>) -> Value {
    let mut data = pusher.data.as_object().cloned().unwrap_or_default();
    data.remove("url");
    data.remove("format");
    json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.pushkey_ts,
        "data": data,
        "tweaks": tweaks,
    })
}

fn tweaks(actions: &[Action]) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions {
        if let Action::SetTweak(tweak) = action
            && let Ok(Value::Object(object)) = serde_json::to_value(tweak)
            && let Some(name) = object.get("set_tweak").and_then(Value::as_str)
        {
            let value = object.get("value").cloned().unwrap_or(Value::Bool(true));
            // Gateways (Sygnal) refuse a whole request over a sound that is no name.
            if name == "sound" && !value.is_string() {
                continue;
            }
            tweaks.insert(name.to_owned(), value);
        }
    }
    tweaks
}

/// The gateway request for one notification, in full or (`format:
/// event_id_only`) without the event's content and names.
fn notification_body(
    services: &Services,
    user: &UserId,
    pusher: &PusherRecord,
    room_short: u64,
    notification: &Notification,
    unread: u64,
) -> Result<Option<Value>> {
    let rooms = &services.rooms;
    let room_id = rooms.short.name(room_short)?;
    let tweaks = tweaks(&notification.actions);
    let high = tweaks.contains_key("highlight") || tweaks.contains_key("sound");
    let Some(pdu) = rooms.pdu_by_short(notification.event)? else { return Ok(None) };
    let mut body = json!({
        "id": pdu.event_id,
        "event_id": pdu.event_id,
        "room_id": room_id,
        "counts": {"unread": unread},
        "prio": if high || pdu.kind.to_string() == "m.room.encrypted" { "high" } else { "low" },
        "devices": [device(pusher, tweaks)],
    });
    if pusher.data["format"] == "event_id_only" {
        return Ok(Some(json!({ "notification": body })));
    }
    let content = pdu.content_value();
    body["type"] = json!(pdu.kind);
    body["sender"] = json!(pdu.sender);
    body["content"] = content.clone();
    if let Some(name) =
        rooms.current_state_field(room_short, "m.room.member", pdu.sender.as_str(), "displayname")?
    {
        body["sender_display_name"] = json!(name);
    }
    let alias = rooms.current_state_field(room_short, "m.room.canonical_alias", "", "alias")?;
    let name = rooms.current_state_field(room_short, "m.room.name", "", "name")?.filter(|n| !n.is_empty());
    if let Some(name) = name.or_else(|| alias.clone()) {
        body["room_name"] = json!(name);
    }
    if let Some(alias) = alias {
        body["room_alias"] = json!(alias);
    }
    if pdu.kind.to_string() == "m.room.member" {
        body["membership"] = content["membership"].clone();
        body["user_is_target"] = json!(pdu.state_key.as_deref() == Some(user.as_str()));
    }
    Ok(Some(json!({ "notification": body })))
}

/// The Push Gateway API's body for an invite to a room this server is not
/// in, from the invite kept for it and the state its server sent. `None`
/// once the invite is settled (accepted, rejected) or gone.
fn invite_body(
    services: &Services,
    user: &UserId,
    pusher: &PusherRecord,
    invite: &InviteNotification,
    unread: u64,
) -> Result<Option<Value>> {
    let Some(kept) = services.rooms.remote_invite(user, &invite.room_id)? else { return Ok(None) };
    if kept.rejected.is_some() || kept.knock {
        return Ok(None);
    }
    let Some(rules) = kept.room_version.rules() else { return Ok(None) };
    let event_id = crate::rooms::pdu::event_id_of(&kept.event, &rules)?;
    let event = serde_json::to_value(&kept.event).map_err(crate::Error::internal)?;
    let tweaks = tweaks(&invite.actions);
    let high = tweaks.contains_key("highlight") || tweaks.contains_key("sound");
    let mut body = json!({
        "id": event_id,
        "event_id": event_id,
        "room_id": invite.room_id,
        "counts": {"unread": unread},
        "prio": if high { "high" } else { "low" },
        "devices": [device(pusher, tweaks)],
    });
    if pusher.data["format"] == "event_id_only" {
        return Ok(Some(json!({ "notification": body })));
    }
    let state = |kind: &str, state_key: &str, field: &str| {
        kept.stripped
            .iter()
            .find(|e| e["type"] == kind && e["state_key"].as_str().unwrap_or_default() == state_key)
            .and_then(|e| e["content"][field].as_str().filter(|v| !v.is_empty()).map(str::to_owned))
    };
    let sender = event["sender"].as_str().unwrap_or_default();
    body["type"] = json!("m.room.member");
    body["sender"] = json!(sender);
    body["content"] = event["content"].clone();
    body["membership"] = json!("invite");
    body["user_is_target"] = json!(true);
    if let Some(name) = state("m.room.member", sender, "displayname") {
        body["sender_display_name"] = json!(name);
    }
    let alias = state("m.room.canonical_alias", "", "alias");
    if let Some(name) = state("m.room.name", "", "name").or_else(|| alias.clone()) {
        body["room_name"] = json!(name);
    }
    if let Some(alias) = alias {
        body["room_alias"] = json!(alias);
    }
    Ok(Some(json!({ "notification": body })))
}

/// A request that only updates the unread count (after the user read).
fn badge_body(pusher: &PusherRecord, unread: u64) -> Value {
    json!({"notification": {
        "id": "",
        "type": null,
        "sender": "",
        "counts": {"unread": unread},
        "devices": [device(pusher, Map::new())],
    }})
}
