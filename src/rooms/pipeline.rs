//! The one pipeline: every event, local or remote, is appended here.
//!
//! Checks, in the spec's order: size and format; hashes and signatures; the
//! state-independent auth rules (the auth events are the right ones); the
//! auth rules with the event's auth events taken as the state; the auth
//! rules against the state before the event. Then the state after it is
//! computed and everything — event, short ID, timeline, state snapshot,
//! current state, forward extremities, membership index, transaction ID —
//! is written in one batch, and waiters are woken. A refused event changes
//! nothing.

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
    /// The endpoint the ID was used on (`send`, `redact`): each has its own
    /// namespace, and the bare ID is what clients see in `unsigned`.
    pub endpoint: &'static str,
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

        // ... and with the auth events taken as the state: an event must
        // prove its own authorisation.
        let mut auth_state = BTreeMap::new();
        for id in &pdu.auth_events {
            let auth = self
                .pdu(id)?
                .ok_or_else(|| Error::forbidden(format!("Event not allowed: unknown auth event {id}")))?;
            if let Some(state_key) = &auth.state_key {
                auth_state.insert((auth.kind.to_string(), state_key.clone()), auth);
            }
        }
        // From v12 the create event is implied by the room ID, never listed.
        if pdu.kind != TimelineEventType::RoomCreate
            && let Some(create) = self.current_state_event(room_short, "m.room.create", "")?
        {
            auth_state.entry(("m.room.create".to_owned(), String::new())).or_insert(create);
        }
        let fetch_auth = |kind: &ruma::events::StateEventType, state_key: &str| {
            auth_state.get(&(kind.to_string(), state_key.to_owned())).cloned()
        };
        state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, fetch_auth)
            .map_err(|reason| Error::forbidden(format!("Event not allowed by its auth events: {reason}")))?;

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
                redacted_by: None,
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
                membership.as_bytes(),
            );
            if membership == "join" || membership == "invite" {
                batch.delete(&maps::FORGOTTEN_ROOMS, key(&[target.as_bytes(), &room_short.to_be_bytes()]));
            }
        }
        if pdu.kind == TimelineEventType::RoomRedaction {
            self.apply_redaction(&mut batch, &pdu, event_short, room_short, &state_before, &rules)?;
        }
        if let Some(txn) = &txn {
            batch.put(
                &maps::TRANSACTIONS,
                txn_key(&pdu.sender, &txn.device_id, &record.room_id, txn.endpoint, &txn.txn_id),
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
        endpoint: &str,
        txn_id: &str,
    ) -> Result<Option<OwnedEventId>> {
        let value =
            self.db.get(&maps::TRANSACTIONS, &txn_key(sender, device_id, room_id, endpoint, txn_id))?;
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
    endpoint: &str,
    txn_id: &str,
) -> Vec<u8> {
    key(&[
        sender.as_bytes(),
        device_id.as_bytes(),
        room_id.as_bytes(),
        endpoint.as_bytes(),
        txn_id.as_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{CanonicalJsonValue, OwnedRoomId, RoomVersionId, user_id};
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        keys::ServerKeys,
        rooms::{
            builder::PduBuilder,
            create::{CreateRoom, Preset},
        },
        storage::Db,
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        rooms: Rooms,
        room_id: OwnedRoomId,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8).unwrap();
        let keys = Arc::new(ServerKeys::load_or_generate(&db).unwrap());
        let rooms = Rooms::open(db, "localhost".try_into().unwrap(), keys).unwrap();
        let request = CreateRoom::new(RoomVersionId::V12, Preset::PrivateChat);
        let room_id = rooms.create_room(user_id!("@alice:localhost"), request).await.unwrap();
        Fixture { _dir: dir, rooms, room_id }
    }

    impl Fixture {
        /// A correctly built and signed message from `sender`, as JSON.
        fn event(&self, sender: &ruma::UserId) -> Value {
            let (_, record) = self.rooms.room(&self.room_id).unwrap().unwrap();
            let state = self.rooms.current_state(&record).unwrap();
            let builder = PduBuilder::message("m.room.message", json!({"body": "hi", "msgtype": "m.text"}));
            let (_, object) = self.rooms.build(&record, &state, sender, &builder).unwrap();
            serde_json::to_value(&object).unwrap()
        }

        /// Re-hashes and re-signs edited JSON, so only the edit is wrong.
        fn resign(&self, mut event: Value) -> (OwnedEventId, CanonicalJsonObject) {
            let object = event.as_object_mut().unwrap();
            object.remove("hashes");
            object.remove("signatures");
            let rules = RoomVersionId::V12.rules().unwrap();
            self.rooms.finish(event, &rules, &RoomVersionId::V12).unwrap()
        }

        fn append(&self, event_id: OwnedEventId, object: CanonicalJsonObject) -> Result<u64> {
            let (short, mut record) = self.rooms.room(&self.room_id).unwrap().unwrap();
            self.rooms.append(short, &mut record, event_id, object, None)
        }

        /// Appends raw JSON under the ID its own reference hash gives.
        fn append_json(&self, event: Value) -> Result<u64> {
            let CanonicalJsonValue::Object(object) = CanonicalJsonValue::try_from(event).unwrap() else {
                panic!()
            };
            let rules = RoomVersionId::V12.rules().unwrap();
            let hash = ruma::signatures::reference_hash(&object, &rules).unwrap();
            self.append(OwnedEventId::try_from(format!("${hash}")).unwrap(), object)
        }

        fn extremities(&self) -> Vec<OwnedEventId> {
            self.rooms.room(&self.room_id).unwrap().unwrap().1.forward_extremities
        }
    }

    #[track_caller]
    fn assert_forbidden(result: Result<u64>, needle: &str) {
        match result {
            Err(Error::Matrix { kind: ruma::api::error::ErrorKind::Forbidden, message, .. }) => {
                assert!(message.contains(needle), "{message:?} does not mention {needle:?}")
            }
            other => panic!("expected M_FORBIDDEN ({needle}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_good_event_is_appended() {
        let f = fixture().await;
        let (event_id, object) = f.resign(f.event(user_id!("@alice:localhost")));
        f.append(event_id.clone(), object).unwrap();
        assert_eq!(f.extremities(), [event_id]);
    }

    #[tokio::test]
    async fn a_bad_content_hash_is_refused() {
        let f = fixture().await;
        let before = f.extremities();
        let mut event = f.event(user_id!("@alice:localhost"));
        event["content"]["body"] = json!("tampered after signing");
        assert_forbidden(f.append_json(event), "hash");
        assert_eq!(f.extremities(), before, "the room is unchanged");
    }

    #[tokio::test]
    async fn a_bad_signature_is_refused() {
        let f = fixture().await;
        let before = f.extremities();
        let mut event = f.event(user_id!("@alice:localhost"));
        let signatures = event["signatures"]["localhost"].as_object_mut().unwrap();
        for sig in signatures.values_mut() {
            *sig = json!("AAAA".repeat(21) + "AA");
        }
        assert_forbidden(f.append_json(event), "signature");
        // Signed by a key nobody knows.
        let mut event = f.event(user_id!("@alice:localhost"));
        event["origin_server_ts"] = json!(1);
        let (_, mut object) = f.resign(event);
        let other_key = ruma::signatures::Ed25519KeyPair::from_der(
            &ruma::signatures::Ed25519KeyPair::generate(),
            "other".into(),
        )
        .unwrap();
        object.remove("signatures");
        ruma::signatures::sign_event(
            "localhost",
            &other_key,
            &mut object,
            &RoomVersionId::V12.rules().unwrap().redaction,
        )
        .unwrap();
        assert_forbidden(f.append_json(serde_json::to_value(&object).unwrap()), "signature");
        assert_eq!(f.extremities(), before);
    }

    #[tokio::test]
    async fn a_missing_auth_event_is_refused() {
        let f = fixture().await;
        let before = f.extremities();
        let mut event = f.event(user_id!("@alice:localhost"));
        // Drop the sender's membership from auth_events: the event no longer
        // proves the sender may post.
        let member = f.rooms.current_state_event(
            f.rooms.room_short(&f.room_id).unwrap().unwrap(),
            "m.room.member",
            "@alice:localhost",
        );
        let member_id = member.unwrap().unwrap().event_id;
        event["auth_events"].as_array_mut().unwrap().retain(|id| id != member_id.as_str());
        let (event_id, object) = f.resign(event);
        assert_forbidden(f.append(event_id, object), "not allowed");
        // An auth event that does not exist.
        let mut event = f.event(user_id!("@alice:localhost"));
        event["auth_events"].as_array_mut().unwrap().push(json!("$doesnotexist"));
        let (event_id, object) = f.resign(event);
        assert_forbidden(f.append(event_id, object), "not allowed");
        assert_eq!(f.extremities(), before);
    }

    #[tokio::test]
    async fn a_sender_not_in_the_room_is_refused() {
        let f = fixture().await;
        let before = f.extremities();
        let (event_id, object) = f.resign(f.event(user_id!("@mallory:localhost")));
        assert_forbidden(f.append(event_id.clone(), object), "not allowed");
        assert_eq!(f.extremities(), before);
        assert!(f.rooms.event_short(&event_id).unwrap().is_none(), "nothing stored");
    }

    #[tokio::test]
    async fn unknown_prev_events_and_other_rooms_are_refused() {
        let f = fixture().await;
        let mut event = f.event(user_id!("@alice:localhost"));
        event["prev_events"] = json!(["$unknown"]);
        let (event_id, object) = f.resign(event);
        assert!(matches!(
            f.append(event_id, object),
            Err(Error::Matrix { kind: ruma::api::error::ErrorKind::BadJson, .. })
        ));
        let mut event = f.event(user_id!("@alice:localhost"));
        event["room_id"] = json!("!elsewhere:localhost");
        let (event_id, object) = f.resign(event);
        assert!(f.append(event_id, object).is_err());
    }
}
