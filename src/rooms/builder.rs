//! Building local events exactly as a federating server must: auth events
//! chosen by the room version's rules, prev_events from the forward
//! extremities, depth, content hash, signature, and the event ID as the
//! reference hash.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomVersionId, UserId,
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    signatures::{Ed25519KeyPair, hash_and_sign_event, reference_hash},
    state_res::auth_types_for_event,
};
use serde_json::{Value, json};

use super::{RoomRecord, Rooms, state::StateMap};
use crate::{Error, Result, util};

/// The parts of an event its sender chooses.
#[derive(Debug, Clone)]
pub struct PduBuilder {
    pub event_type: String,
    pub content: Value,
    pub state_key: Option<String>,
    /// For redactions: the event redacted.
    pub redacts: Option<OwnedEventId>,
}

impl PduBuilder {
    pub fn state(event_type: &str, state_key: &str, content: Value) -> Self {
        Self {
            event_type: event_type.to_owned(),
            content,
            state_key: Some(state_key.to_owned()),
            redacts: None,
        }
    }

    pub fn message(event_type: &str, content: Value) -> Self {
        Self { event_type: event_type.to_owned(), content, state_key: None, redacts: None }
    }
}

/// Largest PDU, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;
/// The most prev_events a local event names (the spec allows 20; Synapse
/// names 10): a room with more forward extremities merges them over a few
/// events.
pub const MAX_PREV_EVENTS: usize = 10;
/// The greatest depth: the largest integer canonical JSON allows.
pub const MAX_DEPTH: u64 = (1 << 53) - 1;

impl Rooms {
    /// Builds, hashes and signs a local event on top of the room's forward
    /// extremities (the [`MAX_PREV_EVENTS`] deepest) and the state after
    /// them; `state` is the room's current state, the state after all of
    /// them. Returns its ID and canonical JSON.
    pub fn build(
        &self,
        record: &RoomRecord,
        state: &StateMap,
        sender: &UserId,
        builder: &PduBuilder,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        let rules = record.rules()?;
        if !builder.content.is_object() {
            return Err(Error::bad_json("Event content must be a JSON object"));
        }
        let mut content = builder.content.clone();
        if let Some(redacts) = &builder.redacts
            && rules.redaction.content_field_redacts
        {
            content["redacts"] = json!(redacts);
        }
        let (prevs, depth) = self.choose_prevs(record)?;
        let partial;
        let state = if prevs.len() == record.forward_extremities.len() {
            state
        } else {
            partial = self.state_after_events(&rules, &prevs)?;
            &*partial
        };
        let raw_content = serde_json::value::to_raw_value(&content).map_err(Error::internal)?;
        let event_type = TimelineEventType::from(builder.event_type.as_str());
        let auth_types = auth_types_for_event(
            &event_type,
            sender,
            builder.state_key.as_deref(),
            &raw_content,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        let mut auth_events = Vec::new();
        for (kind, state_key) in auth_types {
            if let Some(pdu) = self.state_event(state, &kind.to_string(), &state_key)? {
                auth_events.push(pdu.event_id);
            }
        }
        let mut event = json!({
            "room_id": record.room_id,
            "sender": sender,
            "origin_server_ts": util::now_ms(),
            "type": builder.event_type,
            "content": content,
            "prev_events": self.event_refs(&rules, &prevs)?,
            "auth_events": self.event_refs(&rules, &auth_events)?,
            // Canonical JSON stops at 2^53 - 1: a remote event that deep
            // must not stop the room.
            "depth": (depth + 1).min(MAX_DEPTH),
        });
        if let Some(state_key) = &builder.state_key {
            event["state_key"] = json!(state_key);
        }
        if let Some(redacts) = &builder.redacts
            && !rules.redaction.content_field_redacts
        {
            event["redacts"] = json!(redacts);
        }
        self.finish(event, &rules, &record.version)
    }

    /// A new event's prev_events: the deepest [`MAX_PREV_EVENTS`] forward
    /// extremities (all of them, in the common case of one to a few), and
    /// their greatest depth.
    fn choose_prevs(&self, record: &RoomRecord) -> Result<(Vec<OwnedEventId>, u64)> {
        let mut deepest = Vec::with_capacity(record.forward_extremities.len());
        for prev in &record.forward_extremities {
            let short =
                self.event_short(prev)?.ok_or_else(|| Error::internal("unknown forward extremity"))?;
            let meta =
                self.event_meta(short)?.ok_or_else(|| Error::internal("forward extremity without meta"))?;
            deepest.push((meta.depth, prev.clone()));
        }
        // Deepest first; among equals, the latest to arrive.
        deepest.reverse();
        deepest.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
        deepest.truncate(MAX_PREV_EVENTS);
        let depth = deepest.first().map_or(0, |(depth, _)| *depth);
        // In the room's own order, so an unchanged room builds as before.
        let chosen: Vec<OwnedEventId> = record
            .forward_extremities
            .iter()
            .filter(|e| deepest.iter().any(|(_, d)| d == *e))
            .cloned()
            .collect();
        Ok((chosen, depth))
    }

    /// How an event names others: bare IDs, or from the v1 event format on
    /// `[ID, {"sha256": reference hash}]`.
    fn event_refs(&self, rules: &RoomVersionRules, ids: &[OwnedEventId]) -> Result<Value> {
        if !rules.event_format.require_event_id {
            return Ok(json!(ids));
        }
        let mut refs = Vec::with_capacity(ids.len());
        for id in ids {
            let unknown = || Error::internal(format!("unknown event {id}"));
            let object = self.pdu_json(self.event_short(id)?.ok_or_else(unknown)?)?.ok_or_else(unknown)?;
            let hash = reference_hash(&object, rules).map_err(Error::internal)?;
            refs.push(json!([id, {"sha256": hash}]));
        }
        Ok(Value::Array(refs))
    }

    /// Hashes and signs an event object as this server (see [`finish_event`]).
    pub fn finish(
        &self,
        event: Value,
        rules: &RoomVersionRules,
        version: &RoomVersionId,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        finish_event(self.server_name.as_str(), &self.keys.keypair, event, rules, version)
    }
}

/// Hashes and signs an event object as `server_name` and derives its ID:
/// the reference hash, or in the v1 event format a random ID on that
/// server, carried in the event itself.
pub fn finish_event(
    server_name: &str,
    keypair: &Ed25519KeyPair,
    mut event: Value,
    rules: &RoomVersionRules,
    version: &RoomVersionId,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    if rules.event_format.require_event_id && event.get("event_id").is_none() {
        event["event_id"] = json!(format!("${}:{server_name}", util::random_string(18)));
    }
    let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(event)
        .map_err(|e| Error::bad_json(format!("Event is not canonical JSON: {e}")))?
    else {
        return Err(Error::internal("an event is an object"));
    };
    let json_error = |e: ruma::signatures::JsonError| match e {
        ruma::signatures::JsonError::PduTooLarge => Error::too_large(),
        e => Error::internal(format!("cannot hash or sign event: {e}")),
    };
    hash_and_sign_event(server_name, keypair, &mut object, &rules.redaction).map_err(json_error)?;
    let event_id = super::pdu::event_id_of(&object, rules)
        .map_err(|e| Error::internal(format!("event ID for room version {version}: {e}")))?;
    Ok((event_id, object))
}
