//! Redactions and power: who may redact what, who is a room admin, and
//! redaction algorithm to the stored event.

use ruma::{
    RoomId, UserId, canonical_json::redact, events::TimelineEventType, room_version_rules::RoomVersionRules,
};

use super::{Rooms, pdu::Pdu, state::StateMap};

/// What waits in `waiting_for_targets` for an event to arrive.
#[derive(Debug, Clone, Copy)]
pub enum Pending {
    Redaction = b'r' as isize,
    Relation = b'l' as isize,
}

fn waiting_prefix(target: &ruma::EventId, kind: Pending) -> Vec<u8> {
    let mut prefix = target.as_bytes().to_vec();
    prefix.extend([SEP, kind as u8]);
    prefix
}
use crate::{
    Error, Result,
    storage::{Batch, SEP, decode_u64, maps},
};

impl Rooms {
    /// A user's power level in a state, with v12's infinitely powerful creators.
    pub fn power_level(&self, state: &StateMap, user: &UserId, rules: &RoomVersionRules) -> Result<i64> {
        if rules.authorization.explicitly_privilege_room_creators
            && let Some(create) = self.state_event(state, "m.room.create", "")?
        {
            let content = create.content_value();
            let additional = content["additional_creators"].as_array().cloned().unwrap_or_default();
            if create.sender == user || additional.iter().any(|u| u.as_str() == Some(user.as_str())) {
                return Ok(i64::MAX);
            }
        }
        let Some(levels) = self.state_event(state, "m.room.power_levels", "")? else {
            // Without power levels, the creator has 100 and everyone else 0.
            let create = self.state_event(state, "m.room.create", "")?;
            return Ok(if create.is_some_and(|c| c.sender == user) { 100 } else { 0 });
        };
        let content = levels.content_value();
        Ok(content["users"][user.as_str()]
            .as_i64()
            .or_else(|| content["users_default"].as_i64())
            .unwrap_or(0))
    }

    /// The level an action named in the power levels needs (`redact`, `kick`, …).
    pub fn required_level(&self, state: &StateMap, action: &str, default: i64) -> Result<i64> {
        Ok(self
            .state_event(state, "m.room.power_levels", "")?
            .and_then(|levels| levels.content_value()[action].as_i64())
            .unwrap_or(default))
    }

    /// Whether `user`'s power level lets them send a state event of `kind`.
    pub fn may_send_state(
        &self,
        state: &StateMap,
        user: &UserId,
        kind: &str,
        rules: &RoomVersionRules,
    ) -> Result<bool> {
        let levels = self.state_event(state, "m.room.power_levels", "")?.map(|p| p.content_value());
        let required = levels
            .as_ref()
            .and_then(|l| l["events"][kind].as_i64().or_else(|| l["state_default"].as_i64()))
            .unwrap_or(if levels.is_some() { 50 } else { 0 });
        Ok(self.power_level(state, user, rules)? >= required)
    }

    /// Refuses (403, with `refusal`) whoever is not joined with the power
    /// to change the room's power levels.
    pub fn check_room_admin(&self, room_id: &RoomId, user: &UserId, refusal: &str) -> Result<()> {
        let (_, record) = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let state = self.current_state(&record)?;
        let rules = record.rules()?;
        let member = self.state_event(&state, "m.room.member", user.as_str())?;
        let joined = member.is_some_and(|m| m.content_value()["membership"] == "join");
        if !joined || !self.may_send_state(&state, user, "m.room.power_levels", &rules)? {
            return Err(Error::forbidden(refusal));
        }
        Ok(())
    }

    /// Whether `sender` may redact `target`: their own event, or with the
    /// power to redact others'.
    pub fn may_redact(
        &self,
        state: &StateMap,
        sender: &UserId,
        target: &Pdu,
        rules: &RoomVersionRules,
    ) -> Result<bool> {
        // Another server vouches for its own users' redactions of its own
        // users' events (the spec's rule from room version 3; in v1–2 the
        // auth rules check it already). Our users need the power.
        let servers_own =
            sender.server_name() != self.server_name && sender.server_name() == target.sender.server_name();
        Ok(target.sender == sender
            || servers_own
            || self.power_level(state, sender, rules)? >= self.required_level(state, "redact", 50)?)
    }

    /// Remembers that `waiting` (a redaction or a relation) names `target`,
    /// which has not arrived.
    pub(super) fn await_target(
        &self,
        batch: &mut Batch,
        target: &ruma::EventId,
        waiting: u64,
        kind: Pending,
    ) {
        batch.put(
            &maps::WAITING_FOR_TARGETS,
            [waiting_prefix(target, kind), waiting.to_be_bytes().to_vec()].concat(),
            Vec::new(),
        );
    }

    /// The events of one kind waiting for `target`.
    pub(super) fn waiting_for(&self, target: &ruma::EventId, kind: Pending) -> Result<Vec<u64>> {
        let prefix = waiting_prefix(target, kind);
        self.db
            .scan_prefix(&maps::WAITING_FOR_TARGETS, &prefix)?
            .iter()
            .map(|(k, _)| Ok(decode_u64(&k[prefix.len()..])?))
            .collect()
    }

    /// Forgets what waited for `target` (it has arrived).
    pub(super) fn stop_waiting(&self, batch: &mut Batch, target: &ruma::EventId) -> Result<()> {
        let mut prefix = target.as_bytes().to_vec();
        prefix.push(SEP);
        self.db.delete_prefix(batch, &maps::WAITING_FOR_TARGETS, &prefix)?;
        Ok(())
    }

    /// The redaction that arrived before `target` and applies to it, if
    /// any: one in the same room, accepted, whose sender may redact it.
    pub(super) fn waiting_redaction(
        &self,
        room_short: u64,
        target: &Pdu,
        rules: &RoomVersionRules,
    ) -> Result<Option<u64>> {
        for redaction in self.waiting_for(&target.event_id, Pending::Redaction)? {
            let (Some(pdu), Some(meta)) = (self.pdu_by_short(redaction)?, self.event_meta(redaction)?) else {
                continue;
            };
            if meta.room != room_short || !meta.accepted() || target.kind == TimelineEventType::RoomCreate {
                continue;
            }
            if self.may_redact(&*self.load_state(meta.state_before)?, &pdu.sender, target, rules)? {
                return Ok(Some(redaction));
            }
        }
        Ok(None)
    }

    /// Whether a redaction is withheld from the room's timeline, as Synapse
    /// withholds it: its target is known, and is in another room or is the
    /// room's creation.
    pub(super) fn withheld_redaction(
        &self,
        redaction: &Pdu,
        room_short: u64,
        rules: &RoomVersionRules,
    ) -> Result<bool> {
        if redaction.kind != TimelineEventType::RoomRedaction {
            return Ok(false);
        }
        let Some(target_id) = redaction.redacted_event(rules) else { return Ok(false) };
        let Some(target_short) = self.event_short(&target_id)? else { return Ok(false) };
        let Some(meta) = self.event_meta(target_short)? else { return Ok(false) };
        Ok(meta.room != room_short
            || self.pdu_by_short(target_short)?.is_some_and(|t| t.kind == TimelineEventType::RoomCreate))
    }

    /// Applies a redaction event to its target, in the same batch, when the
    /// target is in this room and the sender may redact it.
    pub(super) fn apply_redaction(
        &self,
        batch: &mut Batch,
        redaction: &Pdu,
        redaction_short: u64,
        room_short: u64,
        state: &StateMap,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        let Some(target_id) = redaction.redacted_event(rules) else { return Ok(()) };
        let Some(target_short) = self.event_short(&target_id)? else {
            // The target has not arrived: the redaction waits for it, so
            // its content is never shown.
            self.await_target(batch, &target_id, redaction_short, Pending::Redaction);
            return Ok(());
        };
        let (Some(mut meta), Some(target), Some(json)) =
            (self.event_meta(target_short)?, self.pdu_by_short(target_short)?, self.pdu_json(target_short)?)
        else {
            return Ok(());
        };
        if meta.room != room_short
            || meta.redacted_by.is_some()
            || target.kind == TimelineEventType::RoomCreate
        {
            return Ok(());
        }
        if !self.may_redact(state, &redaction.sender, &target, rules)? {
            return Ok(());
        }
        let redacted = redact(json, &rules.redaction, None).map_err(Error::internal)?;
        batch.put_json(&maps::PDUS, target_short.to_be_bytes(), &redacted);
        meta.redacted_by = Some(redaction_short);
        batch.put_json(&maps::EVENT_META, target_short.to_be_bytes(), &meta);
        // A redacted event no longer counts as unread for anyone, nor relates.
        self.forget_notifications(batch, room_short, meta.stream)?;
        self.unindex_relation(batch, &target, target_short, meta.stream, room_short)?;
        Ok(())
    }
}

impl Rooms {
    /// For a join to a `restricted` or `knock_restricted` room by a user who
    /// is not invited: a local member who may invite, to name in
    /// `join_authorised_via_users_server`, when the user is joined to one of
    /// the rooms the join rules allow. `None` when no such grant applies.
    pub fn restricted_join_authoriser(
        &self,
        room_short: u64,
        user: &UserId,
    ) -> Result<Option<ruma::OwnedUserId>> {
        let Some(record) =
            self.db.get_json::<super::RoomRecord>(&crate::storage::maps::ROOMS, &room_short.to_be_bytes())?
        else {
            return Ok(None);
        };
        let rules = record.rules()?;
        if !rules.authorization.restricted_join_rule {
            return Ok(None);
        }
        if matches!(self.membership(user, room_short)?.as_deref(), Some("join" | "invite")) {
            return Ok(None);
        }
        let state = self.current_state(&record)?;
        let Some(join_rules) = self.state_event(&state, "m.room.join_rules", "")? else { return Ok(None) };
        let content = join_rules.content_value();
        if !matches!(content["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            return Ok(None);
        }
        let allowed = content["allow"].as_array().cloned().unwrap_or_default().iter().any(|condition| {
            condition["type"] == "m.room_membership"
                && condition["room_id"]
                    .as_str()
                    .and_then(|r| ruma::RoomId::parse(r).ok())
                    .and_then(|r| self.room_short(&r).ok().flatten())
                    .is_some_and(|short| {
                        self.membership(user, short).ok().flatten().as_deref() == Some("join")
                    })
        });
        if !allowed {
            return Ok(None);
        }
        let invite_level = self.required_level(&state, "invite", 0)?;
        for (member, membership) in self.members(room_short)? {
            if membership == "join"
                && member.server_name() == self.server_name
                && self.power_level(&state, &member, &rules)? >= invite_level
            {
                return Ok(Some(member));
            }
        }
        Ok(None)
    }
}
