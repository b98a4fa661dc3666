//! The one pipeline: every event, local or remote, is appended here.
//!
//! Checks, in the spec's order: size and format, hashes and signatures,
//! the auth rules against the event's auth events, then against the state
//! before it. Then the state after it is computed and everything — event,
//! short ID, timeline, state snapshot, current state, forward extremities,
//! membership index, transaction ID — is written in one batch, and waiters
//! are woken.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, OwnedDeviceId, OwnedEventId, OwnedServerName, events::TimelineEventType,
    serde::Base64, signatures::Verified, state_res,
};

use super::{
    EventMeta, RoomRecord, Rooms,
    builder::MAX_PDU_BYTES,
    pdu::Pdu,
    short_ids::{Kind, state_key_name},
    state::StateMap,
};
use crate::{
    Error, Result,
    storage::{Batch, key, maps},
};

/// A local client's transaction, remembered so a retry is not duplicated.
pub struct Txn {
    pub device_id: OwnedDeviceId,
    pub txn_id: String,
}

impl Rooms {
    /// Appends an event to a room. The caller holds the room's lock and
    /// passes the room's record, which is updated in place.
    pub fn append(
        &self,
        room_short: u64,
        record: &mut RoomRecord,
        event_id: OwnedEventId,
        object: CanonicalJsonObject,
        txn: Option<Txn>,
    ) -> Result<u64> {
        let rules = record.rules()?;

        // Size and format.
        let bytes = serde_json::to_vec(&object).map_err(Error::internal)?;
        if bytes.len() > MAX_PDU_BYTES {
            return Err(Error::too_large());
        }
        state_res::check_pdu_format(&object, &rules.event_format).map_err(Error::bad_json)?;

        // Hashes and signatures.
        match ruma::signatures::verify_event(&self.public_keys(), &object, &rules) {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => return Err(Error::forbidden("Event content hash does not match")),
            Err(e) => return Err(Error::forbidden(format!("Event signature check failed: {e}"))),
        }

        let pdu = Pdu::from_canonical(event_id.clone(), &object)?;
        if pdu.kind != TimelineEventType::RoomCreate && pdu.room_id.as_ref() != Some(&record.room_id) {
            return Err(Error::bad_json("Event is for another room"));
        }
        if self.event_short(&event_id)?.is_some() {
            return Err(Error::bad_json("Event already exists"));
        }

        // Auth rules against the auth events.
        let fetch = |id: &ruma::EventId| self.pdu(id).ok().flatten();
        state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, fetch)
            .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))?;

        // Auth rules against the state before the event.
        let state_before_id = self.state_before(&pdu)?;
        let state_before = match state_before_id {
            Some(id) => self.state.load(id)?,
            None => std::sync::Arc::new(StateMap::new()),
        };
        let fetch_state = |kind: &ruma::events::StateEventType, state_key: &str| {
            self.state_event(&state_before, &kind.to_string(), state_key).ok().flatten()
        };
        state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, fetch_state)
            .map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))?;

        // The state after it.
        let mut batch = Batch::new();
        let event_short = self.short.allocate_into(&mut batch, Kind::Event, event_id.as_str());
        let stream = self.next_stream();
        let mut replaces_state = None;
        let state_after_id = match &pdu.state_key {
            Some(state_key) => {
                let key = self
                    .short
                    .get_or_create(Kind::StateKey, &state_key_name(&pdu.kind.to_string(), state_key))?;
                let mut after = (*state_before).clone();
                replaces_state = after.insert(key, event_short);
                let id = self.state.save(&mut batch, state_before_id, after)?;
                let room_state_key = [room_short.to_be_bytes(), key.to_be_bytes()].concat();
                batch.put(&maps::ROOM_STATE, room_state_key, event_short.to_be_bytes());
                Some(id)
            }
            None => state_before_id,
        };
        let depth: u64 = pdu.depth.into();

        batch.put(&maps::PDUS, event_short.to_be_bytes(), bytes);
        batch.put_json(
            &maps::EVENT_META,
            event_short.to_be_bytes(),
            &EventMeta {
                room: room_short,
                stream,
                state_before: state_before_id,
                state_after: state_after_id,
                depth,
                replaces_state,
                txn: txn.as_ref().map(|t| (t.device_id.clone(), t.txn_id.clone())),
            },
        );
        batch.put(
            &maps::TIMELINE,
            [room_short.to_be_bytes(), stream.to_be_bytes()].concat(),
            event_short.to_be_bytes(),
        );
        batch.put(&maps::STREAM, stream.to_be_bytes(), event_short.to_be_bytes());

        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = &pdu.state_key
        {
            let membership = pdu.content_value()["membership"].as_str().unwrap_or("leave").to_owned();
            batch.put(
                &maps::USER_ROOMS,
                key(&[target.as_bytes(), &room_short.to_be_bytes()]),
                membership.as_bytes(),
            );
            batch.put(
                &maps::ROOM_MEMBERS,
                [&room_short.to_be_bytes()[..], target.as_bytes()].concat(),
                membership,
            );
        }
        if let Some(txn) = &txn {
            batch.put(
                &maps::TRANSACTIONS,
                txn_key(&pdu.sender, &txn.device_id, &record.room_id, &txn.txn_id),
                event_id.as_str(),
            );
        }

        // Local events extend the room's only forward extremity.
        record.forward_extremities.retain(|e| !pdu.prev_events.contains(e));
        record.forward_extremities.push(event_id);
        record.current_snapshot = state_after_id;
        batch.put_json(&maps::ROOMS, room_short.to_be_bytes(), record);

        self.db.write(batch)?;
        self.notify.send_replace(stream);
        Ok(stream)
    }

    /// The state before an event: the state after its prev_events.
    fn state_before(&self, pdu: &Pdu) -> Result<Option<u64>> {
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            let short = self
                .event_short(prev)?
                .ok_or_else(|| Error::bad_json(format!("Unknown prev_event {prev}")))?;
            let meta = self.event_meta(short)?.ok_or_else(|| Error::internal("prev_event without meta"))?;
            if !states.contains(&meta.state_after) {
                states.push(meta.state_after);
            }
        }
        match states.as_slice() {
            [] => Ok(None),
            [one] => Ok(*one),
            // Forks only arise with federation; resolving them arrives with it.
            _ => Err(Error::forbidden("Events with diverging prev_events states are not accepted yet")),
        }
    }

    /// The keys that sign our own events.
    fn public_keys(&self) -> BTreeMap<String, BTreeMap<String, Base64>> {
        let mut ours = BTreeMap::new();
        ours.insert(self.keys.key_id.to_string(), Base64::new(self.keys.keypair.public_key().to_vec()));
        BTreeMap::from([(OwnedServerName::to_string(&self.server_name), ours)])
    }

    /// The event a transaction ID already produced, if any.
    pub fn txn_event(
        &self,
        sender: &ruma::UserId,
        device_id: &ruma::DeviceId,
        room_id: &ruma::RoomId,
        txn_id: &str,
    ) -> Result<Option<OwnedEventId>> {
        let value = self.db.get(&maps::TRANSACTIONS, &txn_key(sender, device_id, room_id, txn_id))?;
        value
            .map(|v| {
                OwnedEventId::try_from(String::from_utf8(v).map_err(Error::internal)?)
                    .map_err(Error::internal)
            })
            .transpose()
    }
}

/// Transaction IDs are scoped like Synapse's: per device and per room.
fn txn_key(
    sender: &ruma::UserId,
    device_id: &ruma::DeviceId,
    room_id: &ruma::RoomId,
    txn_id: &str,
) -> Vec<u8> {
    key(&[sender.as_bytes(), device_id.as_bytes(), room_id.as_bytes(), txn_id.as_bytes()])
}
