//! Push rules at work: every accepted event is evaluated for each local
//! member of its room (but its sender); the events whose actions notify are
//! stored, written in the event's own batch, so unread counts and the event
//! reach a sync together. Counts are the stored notifications after the
//! user's read position (their receipts, or their own latest event).

use std::{
    collections::BTreeMap,
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use ruma::{
    Int, OwnedEventId, OwnedRoomId, OwnedUserId, UInt, UserId,
    power_levels::NotificationPowerLevels,
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    room_version_rules::{RoomPowerLevelsRules, RoomVersionRules},
    serde::Raw,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Rooms, pdu::Pdu};
use crate::{
    Error, Result,
    storage::{Batch, decode_u64, key, maps, prefix},
    util,
};

/// What `notifications` stores per notified event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub event: u64,
    pub actions: Vec<Action>,
    pub highlight: bool,
    /// The thread root, for events in a thread.
    pub thread: Option<OwnedEventId>,
    pub ts: u64,
}

/// An invite to a room this server is not in that notifies its invitee
/// (`invite_notifications`): the invite itself is the remote invite kept
/// for the room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteNotification {
    pub room_id: OwnedRoomId,
    pub actions: Vec<Action>,
}

/// One entry of `/notifications`.
pub struct Listed {
    pub room_short: u64,
    pub notification: Notification,
    /// Whether the user's read position covers it.
    pub read: bool,
}

/// Unread counts: the main timeline (or everything, unthreaded) and each thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

/// A user no rule can name: the default rules evaluated for them give what
/// every member who is not named gets.
fn nobody() -> OwnedUserId {
    OwnedUserId::try_from("@hearth-nobody:invalid").expect("a valid user ID")
}

/// The thread an event belongs to: the root it names with `m.thread`.
pub fn thread_of(content: &Value) -> Option<OwnedEventId> {
    let relation = content.get("m.relates_to")?;
    (relation["rel_type"] == "m.thread").then(|| relation["event_id"].as_str()?.try_into().ok()).flatten()
}

/// Runs a future that never waits (ruma's rule evaluation is async only
/// for an optional thread-subscription hook we do not use).
fn ready<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

pub(super) fn notification_key(user: &UserId, room_short: u64, position: u64) -> Vec<u8> {
    key(&[user.as_bytes(), &[room_short.to_be_bytes(), position.to_be_bytes()].concat()])
}

fn read_key(user: &UserId, room_short: u64, thread: &str) -> Vec<u8> {
    key(&[user.as_bytes(), &room_short.to_be_bytes(), thread.as_bytes()])
}

impl Rooms {
    /// Evaluates push rules for an event being appended, for every local
    /// member but the sender (and but those who ignore the sender): the
    /// notifications to write with the event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn evaluate_push(
        &self,
        pdu: &Pdu,
        content: &Value,
        object: &ruma::CanonicalJsonObject,
        room_short: u64,
        room_id: &OwnedRoomId,
        rules: &RoomVersionRules,
        event_short: u64,
        snapshot: Option<u64>,
    ) -> Result<Vec<(OwnedUserId, Notification)>> {
        let mut out = Vec::new();
        let is_member_event = pdu.kind.to_string() == "m.room.member";
        let local = |u: &UserId| u.server_name() == self.server_name && u != pdu.sender;
        let joined = || self.joined_count(room_short, snapshot);
        let (joined, mut targets) = if is_member_event {
            // Under the default rules a membership event notifies only its
            // target (an invite): only members with rules of their own need
            // a look, so joins to a big room do not read its member list.
            let mut targets: Vec<OwnedUserId> = Vec::new();
            for user in self.users.custom_push_rule_users()? {
                if local(&user) && self.membership(&user, room_short)?.as_deref() == Some("join") {
                    targets.push(user);
                }
            }
            let joined = match targets.is_empty() {
                true => 0,
                false => joined()?,
            };
            (joined, targets)
        } else {
            let targets: Vec<OwnedUserId> =
                self.local_joined(room_short)?.into_iter().filter(|u| local(u)).collect();
            let joined = match targets.is_empty() {
                true => 0,
                false => joined()?,
            };
            (joined, targets)
        };
        // A membership event's (local) target: an invitee is not yet a member.
        if is_member_event
            && let Some(target) = pdu.state_key.as_deref().and_then(|s| OwnedUserId::try_from(s).ok())
            && local(&target)
            && !targets.contains(&target)
        {
            targets.push(target);
        }
        if targets.is_empty() {
            return Ok(out);
        }
        let raw: Raw<Value> =
            Raw::from_json(serde_json::value::to_raw_value(object).map_err(Error::internal)?);
        let power_levels = self.push_power_levels(room_short, rules)?;
        let thread = thread_of(content);
        let member_count = UInt::try_from(joined).unwrap_or_default();
        // Under the default rules only being named (a mention, an invite's
        // target) makes one user's outcome differ from another's: those
        // users are evaluated alone, everyone else shares one evaluation.
        let mentioned: Vec<&str> = content["m.mentions"]["user_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // Without `m.mentions`, the legacy rule `.m.rule.contains_user_name`
        // names whoever's localpart the body holds (ruma decides exactly;
        // this only picks out whom to evaluate alone).
        let legacy_body = match content.get("m.mentions") {
            None => content["body"].as_str().map(str::to_lowercase),
            Some(_) => None,
        };
        let mut shared: Option<Vec<Action>> = None;
        // Who has rules of their own: everyone else's are the defaults,
        // never read member by member.
        let custom: std::collections::HashSet<OwnedUserId> =
            self.users.custom_push_rule_users()?.into_iter().collect();
        let default_rules = self.users.push_rules(&nobody())?;
        let evaluate = |rules: &crate::users::push_rules::Rules, user: &UserId, display_name: String| {
            let mut ctx =
                PushConditionRoomCtx::new(room_id.clone(), member_count, user.to_owned(), display_name);
            ctx.power_levels = power_levels.clone();
            ready(rules.ruleset.get_actions(&raw, &ctx)).map(<[Action]>::to_vec).unwrap_or_default()
        };
        for user in targets {
            if self.users.ignored_users(&user)?.contains(&pdu.sender) {
                continue;
            }
            let user_rules = match custom.contains(&user) {
                true => self.users.push_rules(&user)?,
                false => default_rules.clone(),
            };
            let named = pdu.state_key.as_deref() == Some(user.as_str())
                || mentioned.contains(&user.as_str())
                || legacy_body.as_deref().is_some_and(|body| {
                    // Localparts are lowercase already (the grammar); no copy per member.
                    let localpart = user.localpart();
                    match localpart.bytes().any(|b| b.is_ascii_uppercase()) {
                        true => body.contains(&localpart.to_lowercase()),
                        false => body.contains(localpart),
                    }
                });
            // A membership event notifies only its target, by default.
            if user_rules.is_default && is_member_event && !named {
                continue;
            }
            let actions = if user_rules.is_default && !named {
                shared.get_or_insert_with(|| evaluate(&user_rules, &nobody(), String::new())).clone()
            } else {
                // The defaults name their user (legacy rules): their own.
                let user_rules = match user_rules.is_default {
                    true => self.users.push_rules(&user)?,
                    false => user_rules,
                };
                let display_name = if user_rules.uses_display_name {
                    self.current_state_event(room_short, "m.room.member", user.as_str())?
                        .and_then(|m| m.content_value()["displayname"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| user.localpart().to_owned())
                } else {
                    String::new()
                };
                evaluate(&user_rules, &user, display_name)
            };
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let notification = Notification {
                event: event_short,
                highlight: actions.iter().any(Action::is_highlight),
                actions,
                thread: thread.clone(),
                ts: util::now_ms(),
            };
            out.push((user, notification));
        }
        Ok(out)
    }

    /// Push rules for an invite of a local user to a room this server is
    /// not in (as Synapse evaluates it: the invitee's rules, the room's
    /// stripped state for context). The notification to write, if any.
    pub(super) fn invite_notification(
        &self,
        user: &UserId,
        room_id: &ruma::RoomId,
        event: &ruma::CanonicalJsonObject,
        stripped: &[Value],
    ) -> Result<Option<InviteNotification>> {
        let sender = match event.get("sender") {
            Some(ruma::CanonicalJsonValue::String(s)) => OwnedUserId::try_from(s.as_str()).ok(),
            _ => None,
        };
        if sender.is_some_and(|s| self.users.ignored_users(user).is_ok_and(|ignored| ignored.contains(&s))) {
            return Ok(None);
        }
        let rules = self.users.push_rules(user)?;
        let joined = stripped
            .iter()
            .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "join")
            .count();
        let display_name = self
            .users
            .profile(user)?
            .and_then(|p| p.get("displayname").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| user.localpart().to_owned());
        let ctx = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::try_from(joined).unwrap_or_default(),
            user.to_owned(),
            display_name,
        );
        let raw: Raw<Value> =
            Raw::from_json(serde_json::value::to_raw_value(event).map_err(Error::internal)?);
        let actions =
            ready(rules.ruleset.get_actions(&raw, &ctx)).map(<[Action]>::to_vec).unwrap_or_default();
        Ok(actions
            .iter()
            .any(Action::should_notify)
            .then(|| InviteNotification { room_id: room_id.to_owned(), actions }))
    }

    /// A user's invite notifications at stream positions in `(after, upto]`,
    /// oldest first, at most `limit`.
    pub fn invite_notifications_after(
        &self,
        user: &UserId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InviteNotification)>> {
        let user_prefix = prefix(&[user.as_bytes()]);
        let start = key(&[user.as_bytes(), &after.saturating_add(1).to_be_bytes()]);
        let mut out = Vec::new();
        for (k, v) in
            self.db.scan_range(&maps::INVITE_NOTIFICATIONS, &user_prefix, Some(&start), false, limit)?
        {
            let position = decode_u64(&k[user_prefix.len()..])?;
            if position > upto {
                break;
            }
            out.push((position, serde_json::from_slice(&v).map_err(Error::internal)?));
        }
        Ok(out)
    }

    /// Writes an event's notifications at its stream position.
    pub(super) fn write_notifications(
        batch: &mut Batch,
        room_short: u64,
        position: u64,
        notifications: Vec<(OwnedUserId, Notification)>,
    ) {
        for (user, notification) in notifications {
            batch.put_json(
                &maps::NOTIFICATIONS,
                notification_key(&user, room_short, position),
                &notification,
            );
            batch.put(
                &maps::NOTIFICATION_LOG,
                key(&[user.as_bytes(), &position.to_be_bytes()]),
                room_short.to_be_bytes(),
            );
        }
    }

    /// The power levels as the `sender_notification_permission` condition
    /// reads them.
    fn push_power_levels(
        &self,
        room_short: u64,
        rules: &RoomVersionRules,
    ) -> Result<Option<PushConditionPowerLevelsCtx>> {
        let Some(levels) = self.current_state_event(room_short, "m.room.power_levels", "")? else {
            return Ok(None);
        };
        let content = levels.content_value();
        let int = |v: &Value| {
            v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).and_then(|i| Int::try_from(i).ok())
        };
        let users: BTreeMap<OwnedUserId, Int> = content["users"]
            .as_object()
            .map(|users| {
                users
                    .iter()
                    .filter_map(|(u, l)| Some((OwnedUserId::try_from(u.as_str()).ok()?, int(l)?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut notifications = NotificationPowerLevels::new();
        if let Some(room) = int(&content["notifications"]["room"]) {
            notifications.room = room;
        }
        let creators = match self.current_state_event(room_short, "m.room.create", "")? {
            Some(create) => {
                let extra =
                    create.content_value()["additional_creators"].as_array().cloned().unwrap_or_default();
                let mut creators = vec![create.sender];
                creators.extend(extra.iter().filter_map(|u| OwnedUserId::try_from(u.as_str()?).ok()));
                creators
            }
            None => Vec::new(),
        };
        Ok(Some(PushConditionPowerLevelsCtx::new(
            users,
            int(&content["users_default"]).unwrap_or_default(),
            notifications,
            RoomPowerLevelsRules::new(&rules.authorization, creators),
        )))
    }

    /// Drops the notifications an event (at `position`) gave the room's
    /// local members.
    pub(super) fn forget_notifications(
        &self,
        batch: &mut Batch,
        room_short: u64,
        position: u64,
    ) -> Result<()> {
        for (user, _) in self.members(room_short)? {
            if user.server_name() == self.server_name {
                batch.delete(&maps::NOTIFICATIONS, notification_key(&user, room_short, position));
                batch.delete(&maps::NOTIFICATION_LOG, key(&[user.as_bytes(), &position.to_be_bytes()]));
            }
        }
        Ok(())
    }

    /// Moves a user's read position in a room (and thread: empty for
    /// unthreaded) forwards to `position`; never backwards.
    pub(super) fn advance_read(
        &self,
        batch: &mut Batch,
        user: &UserId,
        room_short: u64,
        thread: &str,
        position: u64,
    ) -> Result<()> {
        let row = read_key(user, room_short, thread);
        let current = self.db.get(&maps::READ_POSITIONS, &row)?.map(|v| decode_u64(&v)).transpose()?;
        if current.is_none_or(|c| c < position) {
            batch.put(&maps::READ_POSITIONS, row, position.to_be_bytes());
        }
        Ok(())
    }

    fn read_position(&self, user: &UserId, room_short: u64, thread: &str) -> Result<u64> {
        Ok(self
            .db
            .get(&maps::READ_POSITIONS, &read_key(user, room_short, thread))?
            .map(|v| decode_u64(&v))
            .transpose()?
            .unwrap_or(0))
    }

    /// Unread counts in a room. Each event counts after the read position
    /// of its thread (a thread's receipt, `main`'s for the main timeline,
    /// an unthreaded receipt for all). With `by_thread`, the main timeline
    /// and each thread apart; without, all together.
    pub fn unread_counts(
        &self,
        user: &UserId,
        room_short: u64,
        by_thread: bool,
    ) -> Result<(Counts, BTreeMap<OwnedEventId, Counts>)> {
        let unthreaded = self.read_position(user, room_short, "")?;
        let main = unthreaded.max(self.read_position(user, room_short, "main")?);
        let start = notification_key(user, room_short, unthreaded + 1);
        let room_prefix = key(&[user.as_bytes(), &room_short.to_be_bytes()]);
        let mut main_counts = Counts::default();
        let mut threads: BTreeMap<OwnedEventId, Counts> = BTreeMap::new();
        let mut thread_reads: BTreeMap<OwnedEventId, u64> = BTreeMap::new();
        for (k, v) in
            self.db.scan_range(&maps::NOTIFICATIONS, &room_prefix, Some(&start), false, usize::MAX)?
        {
            let position = decode_u64(&k[k.len() - 8..])?;
            let notification: Notification = serde_json::from_slice(&v).map_err(Error::internal)?;
            let counts = match &notification.thread {
                Some(root) => {
                    let read = match thread_reads.get(root) {
                        Some(r) => *r,
                        None => {
                            let r = unthreaded.max(self.read_position(user, room_short, root.as_str())?);
                            thread_reads.insert(root.clone(), r);
                            r
                        }
                    };
                    if position <= read {
                        continue;
                    }
                    threads.entry(root.clone()).or_default()
                }
                None if position <= main => continue,
                None => &mut main_counts,
            };
            counts.notifications += 1;
            counts.highlights += u64::from(notification.highlight);
        }
        if !by_thread {
            for counts in std::mem::take(&mut threads).into_values() {
                main_counts.notifications += counts.notifications;
                main_counts.highlights += counts.highlights;
            }
        }
        Ok((main_counts, threads))
    }

    /// Whether the user has read a notification (at `position` in `room`):
    /// its thread's receipt, or for the main timeline `main`'s, or an
    /// unthreaded receipt is at or past it.
    pub fn is_read(
        &self,
        user: &UserId,
        room: u64,
        position: u64,
        notification: &Notification,
    ) -> Result<bool> {
        let thread = notification.thread.as_ref().map_or("main", |root| root.as_str());
        Ok(position <= self.read_position(user, room, "")?.max(self.read_position(user, room, thread)?))
    }

    /// A user's notifications at stream positions in `(after, upto]`,
    /// oldest first, at most `limit`: (room short ID, position, notification).
    pub fn notifications_after(
        &self,
        user: &UserId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, Notification)>> {
        let user_prefix = prefix(&[user.as_bytes()]);
        let start = key(&[user.as_bytes(), &after.saturating_add(1).to_be_bytes()]);
        let mut out = Vec::new();
        for (k, v) in self.db.scan_range(&maps::NOTIFICATION_LOG, &user_prefix, Some(&start), false, limit)? {
            let position = decode_u64(&k[user_prefix.len()..])?;
            if position > upto {
                break;
            }
            let room = decode_u64(&v)?;
            if let Some(notification) = self
                .db
                .get_json::<Notification>(&maps::NOTIFICATIONS, &notification_key(user, room, position))?
            {
                out.push((room, position, notification));
            }
        }
        Ok(out)
    }

    /// The unread count a phone shows as its badge: the user's rooms with
    /// unread notifications (as Synapse counts by default).
    pub fn badge(&self, user: &UserId) -> Result<u64> {
        let mut rooms = 0;
        for (room, membership) in self.memberships(user)? {
            if membership == "join" && self.unread_counts(user, room, false)?.0.notifications > 0 {
                rooms += 1;
            }
        }
        Ok(rooms)
    }

    /// A user's notifications, newest first, before stream position `from`.
    pub fn notifications(
        &self,
        user: &UserId,
        from: Option<u64>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<(Vec<Listed>, Option<u64>)> {
        let user_prefix = prefix(&[user.as_bytes()]);
        let mut cursor = from.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        loop {
            let start = key(&[user.as_bytes(), &cursor.saturating_sub(1).to_be_bytes()]);
            let slice = self.db.scan_range(&maps::NOTIFICATION_LOG, &user_prefix, Some(&start), true, 100)?;
            if slice.is_empty() || cursor == 0 {
                return Ok((out, None));
            }
            for (k, v) in &slice {
                let position = decode_u64(&k[user_prefix.len()..])?;
                cursor = position;
                let room = decode_u64(v)?;
                let Some(notification) = self.db.get_json::<Notification>(
                    &maps::NOTIFICATIONS,
                    &notification_key(user, room, position),
                )?
                else {
                    continue;
                };
                if only_highlight && !notification.highlight {
                    continue;
                }
                let read = self.is_read(user, room, position, &notification)?;
                out.push(Listed { room_short: room, notification, read });
                if out.len() >= limit {
                    return Ok((out, Some(cursor)));
                }
            }
            if slice.len() < 100 {
                return Ok((out, None));
            }
        }
    }
}
