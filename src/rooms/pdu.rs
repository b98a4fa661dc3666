//! A stored or incoming PDU, parsed for the auth rules, state resolution
//! and serving to clients. The canonical JSON stays the source of truth.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId, events::TimelineEventType,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Error, Result};

/// An event's ID: in the v1 event format the `event_id` it carries, from
/// v3 its reference hash.
pub fn event_id_of(
    object: &CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<OwnedEventId> {
    let id = match object.get("event_id").and_then(|id| id.as_str()) {
        Some(id) if rules.event_format.require_event_id => id.to_owned(),
        _ => format!(
            "${}",
            ruma::signatures::reference_hash(object, rules)
                .map_err(|e| Error::bad_json(format!("Cannot hash event: {e}")))?
        ),
    };
    OwnedEventId::try_from(id).map_err(|e| Error::bad_json(format!("Bad event ID: {e}")))
}

#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: UInt,
    /// The top-level `redacts` (where room versions 1–10 keep it); see
    /// [`Pdu::redacted_event`] for the version-aware answer.
    pub redacts: Option<OwnedEventId>,
    pub rejected: bool,
}

/// An event reference: a bare ID (v3+) or `[id, hashes]` (v1–2).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum EventRef {
    Id(OwnedEventId),
    WithHashes(OwnedEventId, serde::de::IgnoredAny),
}

impl From<EventRef> for OwnedEventId {
    fn from(r: EventRef) -> Self {
        match r {
            EventRef::Id(id) | EventRef::WithHashes(id, _) => id,
        }
    }
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<EventRef>,
    auth_events: Vec<EventRef>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct ContentRedacts {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a PDU's canonical JSON; `event_id` comes from the caller (it is
    /// the reference hash in v3+).
    pub fn from_canonical(event_id: OwnedEventId, json: &CanonicalJsonObject) -> Result<Self> {
        let value = serde_json::to_value(json).map_err(Error::internal)?;
        let f = serde_json::from_value(value).map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
        Ok(Self::from_fields(event_id, f))
    }

    /// Parses a PDU's JSON text (as stored) straight into its fields.
    pub fn from_json(event_id: OwnedEventId, json: &[u8]) -> Result<Self> {
        let f = serde_json::from_slice(json).map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
        Ok(Self::from_fields(event_id, f))
    }

    fn from_fields(event_id: OwnedEventId, f: Fields) -> Self {
        Self {
            event_id,
            room_id: f.room_id,
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events.into_iter().map(Into::into).collect(),
            auth_events: f.auth_events.into_iter().map(Into::into).collect(),
            depth: f.depth,
            redacts: f.redacts,
            rejected: false,
        }
    }

    /// The event a redaction redacts, where the room version says to look:
    /// the content from v11 on, the top level before.
    pub fn redacted_event(&self, rules: &ruma::room_version_rules::RoomVersionRules) -> Option<OwnedEventId> {
        if self.kind != TimelineEventType::RoomRedaction {
            return None;
        }
        if rules.redaction.content_field_redacts {
            serde_json::from_str::<ContentRedacts>(self.content.get()).ok().and_then(|c| c.redacts)
        } else {
            self.redacts.clone()
        }
    }

    /// The content as a JSON value.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// The client-facing form of an event (the spec's ClientEvent), built from
/// the stored canonical JSON and the `unsigned` data Hearth adds.
pub fn client_event(
    event_id: &OwnedEventId,
    room_id: &RoomId,
    json: &CanonicalJsonObject,
    unsigned: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut event = serde_json::Map::new();
    for key in ["content", "origin_server_ts", "sender", "type", "state_key", "redacts"] {
        if let Some(value) = json.get(key) {
            event.insert(key.to_owned(), CanonicalJsonValue::into(value.clone()));
        }
    }
    event.insert("event_id".into(), event_id.as_str().into());
    event.insert("room_id".into(), room_id.as_str().into());
    if !unsigned.is_empty() {
        event.insert("unsigned".into(), serde_json::Value::Object(unsigned));
    }
    serde_json::Value::Object(event)
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &serde_json::value::RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
